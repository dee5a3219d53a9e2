#!/usr/bin/env bash
# What a quota rule costs on the hot-token path (docs/performance.md, "Quotas"): the same
# route with no rule, one local rule, and one rule on a Redis store, interleaved.
#
#   bench/quota-overhead.sh                  # release build, 5 rounds of 10 s per case
#   ROUNDS=3 DURATION=5s bench/quota-overhead.sh
#
# Loopback only, bounded: `gatehouse dev` (issuer + echo agent), a redis-server of our own on
# a free port (--save '' --appendonly no), three edges each pinned to core 0 with one worker
# thread, `gatehouse bench` (closed loop, 32 connections, one hot token) on core 1. The rule is
# per client at a rate no run reaches, so every request is a decision that allows.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install -y redis-server)" >&2; exit 1; }

# GATEHOUSE_BIN: measure that binary instead of building this tree's.
if [ -z "${GATEHOUSE_BIN:-}" ]; then (cd "$here" && cargo build --release --quiet); fi
bin=${GATEHOUSE_BIN:-$here/target/release/gatehouse}

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no > "$work/redis.log" 2>&1 &
pids+=($!)

(cd "$work" && exec "$bin" dev --port 18580 --admin-port 18581 > dev.out 2> dev.err) &
pids+=($!)
for _ in $(seq 100); do grep -q "^  agent" "$work/dev.err" 2>/dev/null && break; sleep 0.1; done
discovery=$(awk '/^  issuer/ {print $2}' "$work/dev.err")
agent=$(awk '/^  agent/ {print $2}' "$work/dev.err")
token=$(sed -n 's/^  export TOKEN=//p' "$work/dev.err")

declare -A edge_pid
# CPU time (user + system) of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
edge() { # port admin_port quotas-block
  cat > "$work/edge-$1.yaml" <<YAML
listen: 127.0.0.1:$1
admin: { listen: 127.0.0.1:$2 }
telemetry: { accessLog: "off" }
$3
routes:
  - name: echo
    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: $discovery
        allowedClients: [dev-client]
        allowedScopes: [invoke]
    upstream: { url: "$agent" }
YAML
  taskset -c 0 "$bin" serve --threads 1 --config "$work/edge-$1.yaml" 2> "$work/edge-$1.err" &
  pids+=($!)
  edge_pid[$1]=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return; sleep 0.1; done
  echo "edge on $1 did not start" >&2; cat "$work/edge-$1.err" >&2; exit 1
}
rule='    - { name: per-client, key: [client_id], rate: 1000000/s }'
edge 18590 18591 ""
edge 18592 18593 "quotas:
  rules:
$rule"
edge 18594 18595 "quotas:
  store: { type: redis, url: \"redis://127.0.0.1:$redis_port/0\", timeout: 50ms }
  rules:
$rule"

printf '| round | case | req/s | p50 ms | p99 ms | edge CPU µs/req | non-2xx |\n|---|---|---|---|---|---|---|\n'
for round in $(seq "$rounds"); do
  for port in 18590 18592 18594; do
    case $port in 18590) name="no rule";; 18592) name="one local rule";; 18594) name="one rule, Redis store";; esac
    before=$(cpu_ticks "${edge_pid[$port]}")
    taskset -c 1 "$bin" bench --url "http://127.0.0.1:$port/runtimes/echo/invocations" \
      --token "$token" -c 32 -d "$duration" --json > "$work/out.json"
    after=$(cpu_ticks "${edge_pid[$port]}")
    python3 - "$round" "$name" "$work/out.json" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[3]))
ok = r["status"].get("200", 0)
other = r["requests"] - ok
lat = r["latency_ms"]
cpu_us = int(sys.argv[4]) / int(sys.argv[5]) * 1e6 / max(r["requests"], 1)
print(f"| {sys.argv[1]} | {sys.argv[2]} | {ok / r['duration_s']:.0f} | {lat['p50']:.2f} | {lat['p99']:.2f} | {cpu_us:.1f} | {other} |")
PY
  done
done
curl -s "http://127.0.0.1:18595/metrics" | grep -E '^gatehouse_quota_store_(errors_total|duration_seconds_(sum|count))' || true
