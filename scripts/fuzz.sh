#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser that takes input from
# outside: builds the targets in fuzz/ and runs each for FUZZ_SECONDS on a copy of its seed
# corpus (fuzz/corpus/<target>, so runs never grow the repository). Fails on any crash:
# panic, overflow, timeout or out-of-memory; the input is kept in fuzz/artifacts/<target>/.
#
#   FUZZ_SECONDS=60 bash scripts/fuzz.sh                 # every target, 60 s each (CI)
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh jwt kds_delta  # some targets, longer
#
# Reproduce a crash: fuzz/target/<host triple>/release/<target> fuzz/artifacts/<target>/crash-...
set -euo pipefail

cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
ALL_TARGETS=(api_resource kds_delta ads_request jwt bootstrap_request kumactl_yaml)
if [ $# -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

# The fuzz build instruments every crate; it stays in fuzz/target, away from the workspace's.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# No sanitizer: the code under test is safe Rust (unsafe_code is forbidden in the workspace),
# so the bugs to find are panics, overflows, hangs and runaway memory, which need none, and
# ASan needs a nightly compiler. Debug assertions on, so arithmetic overflow panics. Cargo's
# usual 16 codegen units rather than cargo-fuzz's 1: the build is most of a CI run on 2 cores.
BUILD_FLAGS=(--sanitizer none --debug-assertions --codegen-units 16)
cargo fuzz build "${BUILD_FLAGS[@]}"
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="fuzz/target/$triple/release"

# Longest input per target: big enough for its seeds with room to grow.
max_len() {
    case "$1" in
        jwt) echo 4096 ;;
        bootstrap_request | ads_request) echo 16384 ;;
        *) echo 65536 ;;
    esac
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
rows=()
for t in "${TARGETS[@]}"; do
    bin="$bindir/$t"
    [ -x "$bin" ] || { echo "fuzz target $t was not built" >&2; exit 1; }
    corpus="$work/corpus-$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    cp -R "fuzz/corpus/$t/." "$corpus/"
    seeds=$(find "$corpus" -type f | wc -l)
    log="$work/$t.log"
    echo "== $t: ${FUZZ_SECONDS}s on $seeds seeds"
    status=0
    "$bin" "$corpus" \
        -max_total_time="$FUZZ_SECONDS" \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 \
        -timeout=30 \
        -max_len="$(max_len "$t")" \
        -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" \
        >"$log" 2>&1 || status=$?
    # libFuzzer's last status line: "#N DONE cov: C ft: F corp: K/S lim: ... exec/s: E ...".
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    field() { sed -nE "s/.* $1:? ([0-9]+).*/\\1/p" <<<"$last"; }
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log")
    rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log")
    corp=$(sed -nE 's/.* corp: ([0-9]+)\/.*/\1/p' <<<"$last")
    rss=$(sed -nE 's/^stat::peak_rss_mb: *([0-9]+)/\1/p' "$log")
    rows+=("$(printf '%-18s %10s %8s %7s %7s %7s %8s' "$t" "${execs:-?}" "${rate:-?}" \
        "$(field cov)" "$(field ft)" "${corp:-?}" "${rss:-?}")")
    if [ "$status" -ne 0 ] || grep -qE '^==[0-9]+== ERROR|^SUMMARY: libFuzzer|panicked at' "$log"; then
        echo "!! $t failed (exit $status); the input is in fuzz/artifacts/$t/:" >&2
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || true
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done

echo
printf '%-18s %10s %8s %7s %7s %7s %8s\n' target execs exec/s cov ft corpus rss_mb
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${FUZZ_SECONDS}s each, no crash"
