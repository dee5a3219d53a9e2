#!/usr/bin/env bash
# Memory of one gatehouse process (issue 9), and HAProxy 2.6 for the idle-connection case:
#   1. RSS idle after start, a JWT route (issuer: `gatehouse dev`), after /readyz;
#   2. RSS after TOKENS (100,000) distinct valid tokens, each verified and cached once
#      (goal: ≤ 50 MiB idle, ≤ +100 MiB at 100k); bytes per cached token;
#   3. CONNS (10,000) keep-alive client connections, one request each, then held idle HOLD
#      seconds: RSS per connection for gatehouse (authorizerType NONE → nginx) and HAProxy
#      (nbthread 1, plain → nginx), and how many connections the server still holds at the end.
# Servers on core 0 (gatehouse `serve --threads 1`), clients on core 1, as in bench/compare.sh.
#
#   bench/memory.sh [BIN]            BIN defaults to target/release/gatehouse
#   TOKENS=100000 CONNS=10000 HOLD=15 bench/memory.sh BIN
#
# Ports 18420–18439 on 127.0.0.1. Needs: haproxy nginx python3 curl taskset, and an open-files
# limit above CONNS + a few hundred (each process: the client's sockets, or the server's).
# Everything started here is stopped on exit; the loads stop by themselves (-n, HOLD).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(realpath "${1:-target/release/gatehouse}")
TOKENS=${TOKENS:-100000}; CONNS=${CONNS:-10000}; HOLD=${HOLD:-15}
SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
for tool in haproxy nginx python3 curl taskset; do
  command -v $tool >/dev/null || { echo "missing $tool: apt-get install -y haproxy nginx curl" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((CONNS + 200)) ] || { echo "open-files limit $(ulimit -n) is too low for CONNS=$CONNS" >&2; exit 1; }
work=$(mktemp -d /tmp/gh-memory.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
# `gatehouse dev` writes its key state to ${TMPDIR:-/tmp}/gatehouse-dev-$UID (read by `bench --dev`):
# a private TMPDIR keeps it away from any other `gatehouse dev` on the machine.
export TMPDIR=$work; unset XDG_RUNTIME_DIR
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
mib() { echo "scale=1; $1 / 1024" | bc; }
wait_http() { # url
  for _ in $(seq 200); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; return 1
}
wait_ready() { # admin port
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ] && return 0; sleep 0.1
  done
  echo "not ready: admin 127.0.0.1:$1" >&2; return 1
}

# ---- upstream: nginx, 98-byte 200 for any path and method --------------------------------
mkdir -p "$work/nginx"
nginx_upstream "$work" 18430 > "$work/nginx.conf"
taskset -c "$SERVER_CPU" nginx -p "$work/nginx/" -c "$work/nginx.conf" > "$work/nginx.out" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:18430/

# ---- the issuer: `gatehouse dev` (its own edge on 18420 is not measured) ------------------
( cd "$work" && exec "$BIN" dev --port 18420 --admin-port 18421 ) > "$work/dev.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "^  agent" "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
discovery=$(awk '$1 == "issuer" {print $2}' "$work/dev.out")
[ -n "$discovery" ] || { echo "gatehouse dev did not start:" >&2; cat "$work/dev.out" >&2; exit 1; }

serve() { # name port admin-port top-yaml route-yaml -> sets pid
  cat > "$work/$1.yaml" <<EOF
listen: 127.0.0.1:$2
admin: { listen: 127.0.0.1:$3 }
telemetry: { accessLog: "off" }
$4
routes:
$5
EOF
  taskset -c "$SERVER_CPU" "$BIN" serve --threads 1 --config "$work/$1.yaml" > "$work/$1.out" 2>&1 &
  pid=$!; pids+=("$pid")
  wait_ready "$3"
}

# ---- 1 + 2: idle, then TOKENS distinct cached tokens ---------------------------------------
serve jwt 18422 18423 "jwt: { verifiedTokenCache: { maxEntries: $((TOKENS * 2)) } }" \
"  - name: bench
    path: /
    authorizerConfiguration:
      customJwtAuthorizer: { discoveryUrl: \"$discovery\", allowedClients: [dev-client], allowedScopes: [invoke] }
    upstream: { url: \"http://127.0.0.1:18430\" }"
jwt_pid=$pid
sleep 1
idle=$(rss_kib "$jwt_pid")
url=http://127.0.0.1:18422/
# warm-up: one token, 2000 requests (allocator arenas, the upstream pool, the first cache entry)
( cd "$work" && taskset -c "$LOAD_CPU" "$BIN" bench --url "$url" --mint --dev -n 2000 -c 8 --json > warm.json )
sleep 1
warm=$(rss_kib "$jwt_pid")
t0=$(date +%s)
( cd "$work" && taskset -c "$LOAD_CPU" "$BIN" bench --url "$url" --mint --dev --distinct-tokens "$TOKENS" \
    -n "$TOKENS" -c 8 --json > tokens.json )
mint_s=$(( $(date +%s) - t0 ))
sleep 1
after=$(rss_kib "$jwt_pid")
entries=$(curl -s http://127.0.0.1:18423/metrics | awk '/^gatehouse_token_cache_entries/ {print $2}')
status=$(python3 -c 'import json,sys; o=json.load(open(sys.argv[1])); print(o["status"], o["errors"])' "$work/tokens.json")
sleep 5
after5=$(rss_kib "$jwt_pid")

# ---- 3: CONNS idle keep-alive connections: gatehouse, then HAProxy ---------------------------
serve conns 18424 18425 "limits: { maxConnections: $((CONNS + 2000)) }" \
"  - name: open
    path: /
    authorizerType: NONE
    upstream: { url: \"http://127.0.0.1:18430\" }"
gh_conns_pid=$pid
# HAProxy reserves two descriptors per connection (maxsock = 2 × maxconn + …) and refuses to
# start when that exceeds the open-files limit: under a 20,000 hard limit its maxconn stays
# below 10,000, and the HAProxy case opens that many connections instead (the per-connection
# figure is what compares).
ha_maxconn=$(( CONNS + 500 )); fd_cap=$(( ($(ulimit -n) - 100) / 2 ))
[ "$ha_maxconn" -le "$fd_cap" ] || ha_maxconn=$fd_cap
ha_conns=$(( CONNS < ha_maxconn - 50 ? CONNS : ha_maxconn - 50 ))
{ haproxy_head $ha_maxconn; cat <<EOF
backend upstream_nginx
    server nginx1 127.0.0.1:18430 maxconn 1000
frontend plain
    bind 127.0.0.1:18426
    default_backend upstream_nginx
EOF
} > "$work/haproxy.cfg"
taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.out" 2>&1 &
haproxy_pid=$!; pids+=("$haproxy_pid")
wait_http http://127.0.0.1:18426/

cat > "$work/idle.py" <<'PY'
"""Open N keep-alive connections, one GET each (at most 256 in flight), hold them idle, and
report the server's RSS before, with the connections open, and how many survived the hold."""
import asyncio, sys, time
port, n, hold, pid = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

async def one(sem, conns, failures):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(REQ)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
            await asyncio.wait_for(r.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                failures.append(head[:40])
            conns.append((r, w))
        except Exception as e:  # counted, reported, never retried
            failures.append(repr(e)[:80])

async def main():
    before = rss()
    conns, failures, sem = [], [], asyncio.Semaphore(256)
    t0 = time.monotonic()
    await asyncio.gather(*(one(sem, conns, failures) for _ in range(n)))
    opened_s = time.monotonic() - t0
    idle_from = time.monotonic()  # the last response has been read: every connection is idle
    await asyncio.sleep(2)
    held = rss()
    first_close = None  # seconds of idleness when the server closed the first connection
    while time.monotonic() - idle_from < hold:
        await asyncio.sleep(0.25)
        if first_close is None and any(r.at_eof() for r, _ in conns):
            first_close = time.monotonic() - idle_from
    closed = sum(1 for r, _ in conns if r.at_eof())
    end = rss()
    for _, w in conns:
        w.close()
    closing = "-" if first_close is None else f"{first_close:.1f}"
    print(f"{before} {held} {end} {len(conns)} {len(failures)} {closed} {opened_s:.1f} {closing} {failures[:1]}")

asyncio.run(main())
PY
idle_run() { # label port pid connections -> one result line
  local out; out=$(taskset -c "$LOAD_CPU" python3 "$work/idle.py" "$2" "$4" "$HOLD" "$3")
  echo "$1 $out"
}
gh_idle=$(idle_run gatehouse 18424 "$gh_conns_pid" "$CONNS")
sleep 2
ha_idle=$(idle_run haproxy 18426 "$haproxy_pid" "$ha_conns")

# ---- the tables ------------------------------------------------------------------------------
echo "### Memory: one gatehouse process, JWT route (\`gatehouse dev\` issuer), ${TOKENS} distinct tokens"
echo
echo "| state | RSS | note |"
echo "|---|---|---|"
echo "| idle after start (/readyz 200) | $(mib "$idle") MiB | goal ≤ 50 MiB |"
echo "| after 2,000 requests with one token | $(mib "$warm") MiB | |"
echo "| after $TOKENS distinct tokens (each verified once, cached) | $(mib "$after") MiB | +$(mib $((after - warm))) MiB (goal ≤ +100 MiB); cache entries: $entries; responses: $status; ${mint_s} s including minting |"
echo "| 5 s later | $(mib "$after5") MiB | |"
echo
echo "Per cached token: $(( (after - warm) * 1024 / TOKENS )) bytes of RSS."
echo
echo "### $CONNS idle keep-alive client connections (one GET each, then idle ${HOLD} s; HAProxy: $ha_conns, its maxconn $ha_maxconn under the open-files limit $(ulimit -n))"
echo
echo "| server | RSS before | RSS with the connections (2 s after) | RSS after ${HOLD} s | per connection | connections served | failed | closed by the server during the hold | first close after … s idle |"
echo "|---|---|---|---|---|---|---|---|---|"
for line in "$gh_idle" "$ha_idle"; do
  read -r name before held end ok failed closed secs closing first <<< "$line"
  per=$(( ok > 0 ? (held - before) * 1024 / ok : 0 ))
  echo "| $name | $(mib "$before") MiB | $(mib "$held") MiB | $(mib "$end") MiB | $per bytes | $ok (in ${secs} s) | $failed | $closed | $closing |"
  [ "$failed" = 0 ] || echo "first failure ($name): $first" >&2
done
echo
echo "gatehouse: $BIN ($(stat -c %y "$BIN" | cut -d. -f1)); $(haproxy -v | head -1)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
