#!/usr/bin/env bash
# Fuzzes gatehouse's parsers on the stable toolchain: libFuzzer (libfuzzer-sys) with
# SanitizerCoverage instrumentation through stable codegen flags (-C passes=sancov-module and
# -C llvm-args), i.e. what `cargo fuzz run --sanitizer none` does. No AddressSanitizer (that
# needs nightly's -Z sanitizer); the crate forbids unsafe code, so what fuzzing finds here is
# panics, arithmetic overflow (debug assertions are on), hangs and memory blow-ups.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Seeds and the kept corpus are in fuzz/corpus/TARGET (read only here); new inputs go to
# fuzz/target/corpus/TARGET; a crash is written to fuzz/artifacts/TARGET/ and fails the run.
# `FUZZ_MERGE=1` minimises the new inputs into fuzz/corpus/TARGET (to commit after a long run).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
all=(token authorization claims jwks session_baggage traceparent config jsonrpc token_response)
targets=("${@:-${all[@]}}")

host=$(rustc -vV | sed -n 's/^host: //p')
# --target keeps these flags off build scripts and proc macros, which do not link libFuzzer.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# Not --locked: the lock follows gatehouse's own dependencies as they change.
cargo build --release --target "$host" --bins

status=0
for target in "${targets[@]}"; do
    printf '\n== fuzz %s (%ss)\n' "$target" "$seconds"
    mkdir -p "target/corpus/$target" "artifacts/$target"
    bin="target/$host/release/$target"
    if ! "$bin" "target/corpus/$target" "corpus/$target" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 2>"target/$target.log"; then
        status=1
        tail -n 40 "target/$target.log"
        echo "fuzz $target: FAILED (reproduce: fuzz/$bin fuzz/artifacts/$target/<file>)"
    else
        grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)|cov:' "target/$target.log" | tail -n 4
    fi
    if [[ "${FUZZ_MERGE:-0}" == 1 ]]; then
        "$bin" -merge=1 "corpus/$target" "target/corpus/$target" -max_len=65536 2>/dev/null
    fi
done
exit $status
