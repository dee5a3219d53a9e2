#!/usr/bin/env bash
# Every test tier, as CI runs it:
#   1. installs the interop peers (npm + pip into local directories; idempotent),
#   2. cargo fmt --check and cargo clippy -D warnings,
#   3. unit tests, property tests, the in-process integration tests (tests/edge) and doc tests,
#   4. the slow tier: load and resource tests (tests/edge/load.rs) and the soak
#      (tests/edge/soak.rs: 60 s at 500 req/s by default; GATEHOUSE_SOAK_SECONDS and
#      GATEHOUSE_SOAK_RATE change it), ignored by a plain `cargo test`, one at a time so the
#      memory they measure is theirs,
#   5. the Kubernetes manifests (deploy/kubernetes/test: rendered with kubectl kustomize,
#      validated against the Kubernetes OpenAPI schemas, their config through gatehouse validate),
#   6. a short fuzzing run of every target (scripts/fuzz.sh; FUZZ_SECONDS per target, 20 by
#      default, 0 skips it),
#   7. the interop tier against real third-party peers (tests/interop).
# Load and fault tests only target 127.0.0.1 and stop by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "interop peers"
scripts/setup-interop.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --all-targets --all-features -- -D warnings

step "unit, integration and doc tests"
cargo test --all-targets

step "doc tests"
cargo test --doc

step "slow tier: load, resource and soak tests"
cargo test --test edge -- --ignored --test-threads=1 --nocapture

step "kubernetes manifests: render, schemas, gatehouse validate"
(cd deploy/kubernetes/test && npm ci --no-audit --no-fund --loglevel=error)
GATEHOUSE_BIN="$PWD/target/debug/gatehouse" node deploy/kubernetes/test/check.mjs

fuzz_seconds=${FUZZ_SECONDS:-20}
if [[ "$fuzz_seconds" != 0 ]]; then
    step "fuzzing (${fuzz_seconds}s per target, stable toolchain)"
    scripts/fuzz.sh "$fuzz_seconds"
fi

step "interop tests (real peers)"
cargo test --features interop --test interop

step "all green"
