#!/usr/bin/env bash
# The local demo: one global and two zone control planes on the memory store, synced over KDS
# with TLS. Ctrl-C stops all three. Ports: global 5681 (API/GUI) and 5685 (KDS); zone-1 6681;
# zone-2 7681. Logs go to .demo/ in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bin kuma-cp --bin kumactl
BIN="$PWD/target/debug/kuma-cp"
DIR="$PWD/.demo"
rm -rf "$DIR" && mkdir -p "$DIR"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped"
}
trap cleanup EXIT INT TERM

wait_ready() { # port name
  for _ in $(seq 1 300); do
    if curl -fs "http://127.0.0.1:$1/ready" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not become ready; see $DIR/$2.log" >&2
  exit 1
}

# Each control plane gets its own port block: API = base+1, HTTPS = +2, diagnostics = +0,
# inter-CP = +3, data plane server = -3.
start() { # name base extra-env...
  local name=$1 base=$2; shift 2
  env KUMA_API_SERVER_HTTP_PORT=$((base + 1)) KUMA_API_SERVER_HTTPS_PORT=$((base + 2)) \
      KUMA_DIAGNOSTICS_SERVER_PORT=$base KUMA_INTER_CP_SERVER_PORT=$((base + 3)) \
      KUMA_DP_SERVER_PORT=$((base - 2)) "$@" "$BIN" run >"$DIR/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "$base" "$name"
}

start global 5680 KUMA_MODE=global KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT=5685

# Zones trust global's generated KDS certificate, read from global's API on this host.
curl -fs http://127.0.0.1:5681/globalsecrets/kds-server-tls \
  | python3 -c 'import sys, json, base64; print(json.loads(base64.b64decode(json.load(sys.stdin)["data"]))["cert_pem"], end="")' \
  >"$DIR/kds-ca.pem"

# Global accepts only zones with a token it issued (localhost is admin on global's API).
zone_token() { # zone
  for _ in $(seq 1 50); do
    if curl -fs -X POST http://127.0.0.1:5681/tokens/zone -H 'content-type: application/json' \
        -d "{\"zone\": \"$1\", \"scope\": [\"cp\"], \"validFor\": \"720h\"}" >"$DIR/$1.token"; then
      return 0
    fi
    sleep 0.2
  done
  echo "could not issue a zone token for $1; see $DIR/global.log" >&2
  exit 1
}

for zone in zone-1 zone-2; do zone_token "$zone"; done
start zone-1 6680 KUMA_MODE=zone KUMA_MULTIZONE_ZONE_NAME=zone-1 \
  KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS=grpcs://127.0.0.1:5685 KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE="$DIR/kds-ca.pem" \
  KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH="$DIR/zone-1.token"
start zone-2 7680 KUMA_MODE=zone KUMA_MULTIZONE_ZONE_NAME=zone-2 \
  KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS=grpcs://127.0.0.1:5685 KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE="$DIR/kds-ca.pem" \
  KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH="$DIR/zone-2.token"

cat <<MSG

Multi-zone demo running (memory stores; everything is lost on exit):
  global   API and GUI  http://localhost:5681  (/gui)   KDS grpcs://localhost:5685
  zone-1   API and GUI  http://localhost:6681
  zone-2   API and GUI  http://localhost:7681
  logs     $DIR/*.log

Try:
  export PATH="$PWD/target/debug:\$PATH"
  kumactl config control-planes add --name global --address http://localhost:5681 --overwrite
  kumactl inspect zones                  # both Online, with their CP version
  curl -s localhost:5681/global-insight
  curl -s localhost:6681/meshes          # the default mesh, synced from global
  (then the tour in the README: policies applied on global show up on both zones)

Ctrl-C stops the demo.
MSG
wait
