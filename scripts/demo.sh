#!/usr/bin/env bash
# The local demo: one global and two zone control planes on the memory store, synced over KDS
# with TLS, and cross-zone traffic: `web` in zone-1 calls `backend`, which runs only in zone-2,
# through zone-2's ingress, with mTLS end to end (real Envoy behind kuma-dp); a MeshTimeout
# taking effect; a builtin gateway in zone-1 serving HTTPS. Ctrl-C stops it all. Ports: global
# 5681 (API/GUI) and 5685 (KDS); zone-1 6681; zone-2 7681; web's outbound to backend 8080; the
# gateway 8443. Logs go to .demo/ in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=envoy.sh
source scripts/envoy.sh
cargo build --bin kuma-cp --bin kumactl --bin kuma-dp --bin kuma-tcp-echo
BIN="$PWD/target/debug/kuma-cp"
TARGET="$PWD/target/debug"
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
# inter-CP = +3, MADS = +4, data plane server = -2.
start() { # name base extra-env...
  local name=$1 base=$2; shift 2
  mkdir -p "$DIR/$name"
  env KUMA_API_SERVER_HTTP_PORT=$((base + 1)) KUMA_API_SERVER_HTTPS_PORT=$((base + 2)) \
      KUMA_DIAGNOSTICS_SERVER_PORT=$base KUMA_INTER_CP_SERVER_PORT=$((base + 3)) \
      KUMA_DP_SERVER_PORT=$((base - 2)) KUMA_MONITORING_ASSIGNMENT_SERVER_PORT=$((base + 4)) \
      KUMA_GENERAL_WORK_DIR="$DIR/$name" \
      "$@" "$BIN" run >"$DIR/$name.log" 2>&1 &
  pids+=($!)
  wait_ready "$base" "$name"
}

start global 5680 KUMA_MODE=global KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT=5685

# Zones trust global's generated KDS certificate, read from global's API on this host.
curl -fs http://127.0.0.1:5681/globalsecrets/kds-server-tls \
  | python3 -c 'import sys, json, base64; print(json.loads(base64.b64decode(json.load(sys.stdin)["data"]))["cert_pem"], end="")' \
  >"$DIR/kds-ca.pem"

# Tokens come from global (localhost is admin on its API); a 503 while a signing key is
# being created is retried.
token() { # kind file json
  for _ in $(seq 1 100); do
    if curl -fs -X POST "http://127.0.0.1:5681/tokens/$1" -H 'content-type: application/json' \
        -d "$3" >"$DIR/$2.token"; then
      return 0
    fi
    sleep 0.2
  done
  echo "could not issue the $1 token $2; see $DIR/global.log" >&2
  exit 1
}

# Global accepts only zones with a token it issued.
for zone in zone-1 zone-2; do
  token zone "$zone" "{\"zone\": \"$zone\", \"scope\": [\"cp\"], \"validFor\": \"720h\"}"
done
start zone-1 6680 KUMA_MODE=zone KUMA_MULTIZONE_ZONE_NAME=zone-1 \
  KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS=grpcs://127.0.0.1:5685 KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE="$DIR/kds-ca.pem" \
  KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH="$DIR/zone-1.token"
start zone-2 7680 KUMA_MODE=zone KUMA_MULTIZONE_ZONE_NAME=zone-2 \
  KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS=grpcs://127.0.0.1:5685 KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE="$DIR/kds-ca.pem" \
  KUMA_MULTIZONE_ZONE_KDS_AUTH_CP_TOKEN_PATH="$DIR/zone-2.token"

# Cross-zone traffic needs mTLS: global creates the mesh's CA and both zones receive it.
curl -fs -X PUT http://127.0.0.1:5681/meshes/default -H 'content-type: application/json' \
  -d '{"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [{"name": "ca-1", "type": "builtin"}]}}' >/dev/null
for port in 6681 7681; do
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/meshes/default/secrets/default.ca-builtin-cert-ca-1" >/dev/null 2>&1 && break
    sleep 0.2
  done
done
token zone ingress-2 '{"zone": "zone-2", "scope": ["ingress"], "validFor": "720h"}'
for dp in web backend edge; do
  token dataplane "$dp" "{\"name\": \"$dp\", \"mesh\": \"default\"}"
done

kuma_dp() { # name proxy-type zone-dp-port zone-dir admin-port resource
  echo "$6" >"$DIR/$1.yaml"
  "$TARGET/kuma-dp" run --proxy-type "$2" --cp-address "https://127.0.0.1:$3" \
    --ca-cert-file "$DIR/$4/dp-server-ca.pem" --dataplane-token-file "$DIR/$1.token" \
    --dataplane-file "$DIR/$1.yaml" --admin-port "$5" --binary-path "$ENVOY_BINARY" \
    --config-dir "$DIR/envoy-$1" >"$DIR/kuma-dp-$1.log" 2>&1 &
  pids+=($!)
}
"$TARGET/kuma-tcp-echo" --http --port 9001 --instance web --zone zone-1 >"$DIR/web.log" 2>&1 &
pids+=($!)
"$TARGET/kuma-tcp-echo" --http --port 9002 --instance backend-zone-2 --zone zone-2 >"$DIR/backend.log" 2>&1 &
pids+=($!)
kuma_dp ingress-2 ingress 7678 zone-2 9903 'type: ZoneIngress
name: ingress-2
networking: {address: 127.0.0.1, port: 10001, advertisedAddress: 127.0.0.1, advertisedPort: 10001}'
kuma_dp backend dataplane 7678 zone-2 9902 'type: Dataplane
mesh: default
name: backend
networking:
  address: 127.0.0.1
  inbound:
  - {port: 20002, servicePort: 9002, tags: {kuma.io/service: backend, kuma.io/protocol: http}}'
kuma_dp web dataplane 6678 zone-1 9901 'type: Dataplane
mesh: default
name: web
networking:
  address: 127.0.0.1
  inbound:
  - {port: 20001, servicePort: 9001, tags: {kuma.io/service: web, kuma.io/protocol: http}}
  outbound:
  - {port: 8080, tags: {kuma.io/service: backend}}'
traffic=no
for _ in $(seq 1 150); do
  if curl -fs http://127.0.0.1:8080/ 2>/dev/null | grep -q '"zone":"zone-2"'; then traffic=yes; break; fi
  sleep 0.2
done
if [ "$traffic" = no ]; then
  echo "web in zone-1 does not reach backend in zone-2 yet; see $DIR/kuma-dp-*.log" >&2
fi

# A policy taking effect: a MeshTimeout applied on global reaches web's Envoy in zone-1 and
# cuts calls to backend that take longer than 1 s (the demo app answers late on ?delay=).
curl -fs -X PUT http://127.0.0.1:5681/meshes/default/meshtimeouts/backend-1s \
  -H 'content-type: application/json' \
  -d '{"type":"MeshTimeout","name":"backend-1s","mesh":"default","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"MeshService","name":"backend"},"default":{"http":{"requestTimeout":"1s"}}}]}}' >/dev/null
timeout_policy=no
if [ "$traffic" = yes ]; then
  for _ in $(seq 1 20); do
    status=$(curl -s -o /dev/null -w '%{http_code}' 'http://127.0.0.1:8080/?delay=2s' || true)
    if [ "$status" = 504 ]; then timeout_policy=yes; break; fi
    sleep 0.5
  done
fi
if [ "$timeout_policy" = yes ]; then
  policy_line="MeshTimeout backend-1s (applied on global): curl -s 'localhost:8080/?delay=2s' is cut at 1 s (504)"
else
  policy_line="MeshTimeout backend-1s applied on global; it had not reached web yet (see $DIR/zone-1.log)"
fi

# Metrics: a MeshMetric (applied on global) gives web's sidecar a Prometheus endpoint on 5670
# that merges Envoy's figures with the demo app's own /metrics, labelled with the proxy; zone-1's
# monitoring assignment server (6684) lists it for Prometheus.
curl -fs -X PUT http://127.0.0.1:5681/meshes/default/meshmetrics/web-metrics -H 'content-type: application/json' \
  -d '{"type": "MeshMetric", "name": "web-metrics", "mesh": "default", "spec": {
       "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}},
       "default": {"applications": [{"name": "demo-app", "port": 9001, "path": "/metrics"}],
         "backends": [{"type": "Prometheus", "prometheus": {"port": 5670, "path": "/metrics"}}]}}}' >/dev/null
metrics=no
for _ in $(seq 1 100); do
  if curl -fs http://127.0.0.1:5670/metrics 2>/dev/null | grep -q '^echo_requests_total{'; then metrics=yes; break; fi
  sleep 0.2
done
if [ "$metrics" = yes ]; then
  metrics_line="MeshMetric web-metrics: curl -s localhost:5670/metrics (Envoy + the app, labelled); targets: curl -s localhost:6684/http_sd"
else
  metrics_line="MeshMetric web-metrics applied; web's endpoint on 5670 did not answer yet (see $DIR/kuma-dp-web.log)"
fi

# The builtin gateway: an edge proxy in zone-1 serving https://shop.example.com:8443 with a
# certificate from kumactl generate tls-certificate (kept in a mesh Secret created on global),
# routing / to backend in zone-2 through its ingress and /web to web in zone-1.
"$TARGET/kumactl" generate tls-certificate --type=server --hostname=shop.example.com \
  --key-file "$DIR/shop-key.pem" --cert-file "$DIR/shop-cert.pem"
shop_pem=$(cat "$DIR/shop-key.pem" "$DIR/shop-cert.pem" | base64 -w0)
curl -fs -X PUT http://127.0.0.1:5681/meshes/default/secrets/shop-cert -H 'content-type: application/json' \
  -d "{\"type\": \"Secret\", \"name\": \"shop-cert\", \"mesh\": \"default\", \"data\": \"$shop_pem\"}" >/dev/null
curl -fs -X PUT http://127.0.0.1:5681/meshes/default/meshgateways/edge -H 'content-type: application/json' \
  -d '{"type": "MeshGateway", "name": "edge", "mesh": "default", "selectors": [{"match": {"kuma.io/service": "edge"}}],
       "conf": {"listeners": [{"port": 8443, "protocol": "HTTPS", "hostname": "shop.example.com",
         "tls": {"mode": "TERMINATE", "certificates": [{"secret": "shop-cert"}]}}]}}' >/dev/null
curl -fs -X PUT http://127.0.0.1:5681/meshes/default/meshhttproutes/edge-routes -H 'content-type: application/json' \
  -d '{"type": "MeshHTTPRoute", "name": "edge-routes", "mesh": "default", "spec": {
       "targetRef": {"kind": "MeshGateway", "name": "edge"},
       "to": [{"targetRef": {"kind": "Mesh"}, "rules": [
         {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"}]}},
         {"matches": [{"path": {"type": "PathPrefix", "value": "/web"}}], "default": {"backendRefs": [{"kind": "MeshService", "name": "web"}]}}]}]}}' >/dev/null
kuma_dp edge dataplane 6678 zone-1 9904 'type: Dataplane
mesh: default
name: edge
networking:
  address: 127.0.0.1
  gateway: {type: BUILTIN, tags: {kuma.io/service: edge}}'
gateway=no
for _ in $(seq 1 100); do
  if curl -fs --resolve shop.example.com:8443:127.0.0.1 --cacert "$DIR/shop-cert.pem" \
      https://shop.example.com:8443/ 2>/dev/null | grep -q '"zone":"zone-2"'; then gateway=yes; break; fi
  sleep 0.2
done
if [ "$gateway" = yes ]; then
  gateway_line="edge gateway (zone-1) serves https://shop.example.com:8443: / -> backend (zone-2), /web -> web (zone-1)"
else
  gateway_line="edge gateway started; it did not answer on 8443 yet (see $DIR/kuma-dp-edge.log)"
fi

cat <<MSG

Multi-zone demo running (memory stores; everything is lost on exit):
  global   API and GUI  http://localhost:5681  (/gui)   KDS grpcs://localhost:5685
  zone-1   API and GUI  http://localhost:6681
  zone-2   API and GUI  http://localhost:7681
  logs     $DIR/*.log
  traffic  web (zone-1) -> backend (zone-2 only), through zone-2's ingress, mTLS end to end
  policy   $policy_line
  gateway  $gateway_line
  metrics  $metrics_line
  GUI      http://localhost:5681/gui/meshes/default/topology   (both zones, their services, the route through zone-2's ingress)
           http://localhost:5681/gui/zones/zone-1 -> web -> its rules and Envoy configuration, read through global

Try:
  curl -s localhost:8080/                # answered by backend-zone-2; see x-forwarded-client-cert
  curl -s localhost:5670/metrics | grep -E '^(echo_requests_total|envoy_cluster_upstream_rq_total)'
  curl -s localhost:6684/http_sd         # zone-1's Prometheus targets (MADS: POST /v3/discovery:monitoringassignments)
  curl -s --resolve shop.example.com:8443:127.0.0.1 --cacert $DIR/shop-cert.pem https://shop.example.com:8443/web
  export PATH="$PWD/target/debug:\$PATH"
  kumactl config control-planes add --name global --address http://localhost:5681 --overwrite
  kumactl inspect zones                  # both Online, with their CP version
  kumactl inspect dataplanes             # web and backend (global names carry their zone's hash)
  curl -s localhost:5681/global-insight
  curl -s localhost:6681/meshes          # the default mesh, synced from global
  kumactl config control-planes add --name zone-1 --address http://localhost:6681 --overwrite
  kumactl inspect dataplane web --type=rules   # the MeshTimeout as web's outbound gets it
  curl -X DELETE localhost:5681/meshes/default/meshtimeouts/backend-1s   # slow calls complete again
  (then the tour in the README: policies applied on global show up on both zones)

Ctrl-C stops the demo.
MSG
wait
