#!/usr/bin/env bash
# A flood of forged tokens from one address against valid traffic from another, with and
# without limits.authFailuresPerIp (docs/performance.md, "Forged-token floods").
#
#   bench/forged-flood.sh                  # release build, 3 rounds of 10 s per case
#   ROUNDS=1 DURATION=5s bench/forged-flood.sh
#
# Everything is on loopback and bounded: `gatehouse dev` (issuer + echo agent), two edges
# (A: no budget, B: authFailuresPerIp 20/s), each pinned to core 0 with one worker thread;
# the load generators (gatehouse bench) on core 1. Valid traffic comes from 127.0.0.1 (IPv4),
# the flood from ::1 (each edge listens on both loopbacks), two different client addresses. Forged tokens carry the issuer's kid and claims
# but are signed by another RSA key, so each one costs the edge an RS256 verification.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# GATEHOUSE_BIN: measure that binary instead of building this tree's.
if [ -z "${GATEHOUSE_BIN:-}" ]; then (cd "$here" && cargo build --release --quiet); fi
bin=${GATEHOUSE_BIN:-$here/target/release/gatehouse}

# Issuer and echo agent from `gatehouse dev` (its own edge on 18480 is not used).
(cd "$work" && exec "$bin" dev --port 18480 --admin-port 18481 > dev.out 2> dev.err) &
pids+=($!)
for _ in $(seq 100); do grep -q "^  agent" "$work/dev.err" 2>/dev/null && break; sleep 0.1; done
discovery=$(awk '/^  issuer/ {print $2}' "$work/dev.err")
agent=$(awk '/^  agent/ {print $2}' "$work/dev.err")
token=$(sed -n 's/^  export TOKEN=//p' "$work/dev.err")
issuer=${discovery%/.well-known/openid-configuration}
kid=$(python3 -c "import base64,json,sys; h=sys.argv[1].split('.')[0]; print(json.loads(base64.urlsafe_b64decode(h+'='*(-len(h)%4)))['kid'])" "$token")

openssl genrsa -out "$work/forger.pem" 2048 2>/dev/null
forged=$("$bin" token --key "$work/forger.pem" --kid "$kid" --iss "$issuer" --sub dev-user \
  --client-id dev-client --scope invoke --ttl 1h)

edge() { # port admin_port extra_limits
  cat > "$work/edge-$1.yaml" <<YAML
listen: ["127.0.0.1:$1", "[::1]:$1"]
admin: { listen: 127.0.0.1:$2 }
telemetry: { accessLog: "off" }
limits: { maxConnections: 10000 $3 }
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
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return; sleep 0.1; done
  echo "edge on $1 did not start" >&2; cat "$work/edge-$1.err" >&2; exit 1
}
edge 18490 18491 ""
edge 18492 18493 ", authFailuresPerIp: 20/s"

load() { # port host token connections -> the bench's JSON
  taskset -c 1 "$bin" bench --url "http://$2:$1/runtimes/echo/invocations" \
    --token "$3" -c "$4" -d "$duration" --json
}
ok_rate() { python3 -c "import json,sys; r=json.load(sys.stdin); s=r['status']; print(round(float(s.get('200',0))/r['duration_s'],1) if 'duration_s' in r else json.dumps(r))"; }

printf '| round | edge | valid alone (req/s) | valid during flood (req/s) | kept | flood answered (req/s) |\n|---|---|---|---|---|---|\n'
for round in $(seq "$rounds"); do
  for port in 18490 18492; do
    name=$([ $port = 18490 ] && echo "A: no budget" || echo "B: authFailuresPerIp 20/s")
    alone=$(load $port 127.0.0.1 "$token" 8 | tee "$work/alone.json" | ok_rate)
    load $port "[::1]" "$forged" 8 > "$work/flood.json" &
    flood=$!
    during=$(load $port 127.0.0.1 "$token" 8 | tee "$work/during.json" | ok_rate)
    wait $flood
    flood_rate=$(python3 -c "import json; r=json.load(open('$work/flood.json')); print(round(r['requests']/r['duration_s'],1))")
    kept=$(python3 -c "print(f'{$during/$alone*100:.0f}%')")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$round" "$name" "$alone" "$during" "$kept" "$flood_rate"
  done
done
