#!/usr/bin/env bash
# Collector-down latency (docs/performance.md): `gatehouse dev` (release) with no exporter, an
# OTLP endpoint that refuses connections, and one that accepts and never answers; a fixed-rate
# `gatehouse bench` of 10,000 requests against each. Loopback only; every step is bounded.
#   bench/collector-down.sh            # results in $OUT (default .bench/collector-down)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release/gatehouse
out=${OUT:-$here/.bench/collector-down}
mkdir -p "$out"
python3 "$here/bench/silent-collector.py" & silent=$!
one() { # label env...
  local label=$1; shift
  env "$@" $bin dev --port 28573 --admin-port 28574 >$out/dev-$label.log 2>&1 & local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:28574/readyz && break; sleep 0.1; done
  sleep 1
  $bin bench --url http://127.0.0.1:28573/runtimes/echo/invocations --mint --dev -c 4 --rate 1000 -d 10s --json > $out/$label.json
  curl -s http://127.0.0.1:28574/metrics | grep '^gatehouse_spans_dropped_total' > $out/$label.drops
  kill -INT $pid; wait $pid
}
one none1
one refused OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1
one silent OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:28599 OTEL_EXPORTER_OTLP_TIMEOUT=2000
one none2
kill $silent
for f in none1 refused silent none2; do echo "== $f"; cat "$out/$f.json"; echo; cat "$out/$f.drops"; done
