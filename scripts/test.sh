#!/usr/bin/env bash
# The project's test command: installs what the suites need, then runs every test in the
# workspace. README and .ci/run both call this script, so they cannot drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."

# Nothing outside the Rust toolchain is needed yet; Postgres, etcd and Envoy installs land
# here with the suites that use them.

cargo test --workspace --all-targets --locked
