#!/usr/bin/env bash
# Large bodies and streams, gatehouse vs HAProxy 2.6 vs nginx direct, one interleaved run (issue 9):
#   1. 10 MB responses: GET of a 10,000,000-byte static file from nginx, wrk -c4;
#   2. 10 MB requests: POST of a 10,000,000-byte body (wrk -c4, body from a file); nginx reads
#      all of it into memory, then answers 200;
#      → MB/s (10^6 bytes) and the proxy's CPU ms per MB (/proc/PID/stat utime+stime), medians;
#   3. SSE first byte: an upstream (Python asyncio, raw socket) that answers text/event-stream,
#      writes its first event at once and ends the stream 100 ms later; the time from sending the
#      request to the first byte of the event, SAMPLES per target, interleaved direct / gatehouse /
#      HAProxy on one keep-alive connection each; median and p99, and what the proxy adds
#      (goal: gatehouse adds ≤ 1 ms).
# Servers on core 0 (gatehouse `serve --threads 1`, HAProxy `nbthread 1`, nginx one worker),
# clients on core 1, as in bench/compare.sh. gatehouse's limits.maxRequestBodyBytes (default
# 100MB) is set to 16MB here: above the 10 MB body, as a deployment that wants such bodies would.
#
#   bench/bodies.sh [BIN]               BIN defaults to target/release/gatehouse
#   ROUNDS=3 DURATION=8 WARMUP=2 CONNS=4 SAMPLES=300 bench/bodies.sh BIN
#
# Ports 18440–18459 on 127.0.0.1. Needs: haproxy nginx wrk python3 curl taskset. Every load is
# bounded (wrk -d, SAMPLES × 100 ms); everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(realpath "${1:-target/release/gatehouse}")
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}; CONNS=${CONNS:-4}; SAMPLES=${SAMPLES:-300}
SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
SIZE=10000000
for tool in haproxy nginx wrk python3 curl taskset; do
  command -v $tool >/dev/null || { echo "missing $tool: apt-get install -y haproxy nginx wrk curl" >&2; exit 1; }
done
work=$(mktemp -d /tmp/gh-bodies.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$work"; }
trap cleanup EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_http() { # url
  for _ in $(seq 200); do curl -s -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done
  echo "nothing answers at $1" >&2; return 1
}

mkdir -p "$work/www" "$work/nginx"
head -c "$SIZE" /dev/urandom > "$work/www/big.bin"
cp "$work/www/big.bin" "$work/body.bin"

# ---- nginx 18440: /big.bin static, /upload reads the whole body, then 200 ---------------------
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server_tokens off;
    sendfile on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_max_body_size 16m;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:18440 backlog=4096;
        default_type application/octet-stream;
        location = /big.bin { root $work/www; }
        # the whole body is read (into memory) before the answer: nginx's proxy reads the body
        # first; it then asks /ok without it. (A bare return 200 answers before the body is
        # read, and wrk, seeing the response, stalls on its unfinished 10 MB write.)
        location = /upload {
            client_body_buffer_size 16m;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_pass http://127.0.0.1:18440/ok;
        }
        location = /ok { return 200 'ok\n'; }
    }
}
EOF
taskset -c "$SERVER_CPU" nginx -p "$work/nginx/" -c "$work/nginx.conf" > "$work/nginx.out" 2>&1 &
nginx_pid=$!; pids+=("$nginx_pid")
wait_http http://127.0.0.1:18440/upload

# ---- SSE upstream 18443 (Python asyncio, raw HTTP/1.1, keep-alive) ----------------------------
cat > "$work/sse.py" <<'PY'
"""Answers every request with text/event-stream (chunked): the first event at once, the end of
the stream 100 ms later. Keep-alive, so proxies can reuse their upstream connection."""
import asyncio, sys
EVENT = b'data: {"n":1}\n\n'
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await r.readexactly(int(line.split(b":")[1]))
            w.write(HEAD + b"%x\r\n%s\r\n" % (len(EVENT), EVENT))
            await w.drain()
            await asyncio.sleep(0.1)
            w.write(b"0\r\n\r\n")
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
taskset -c "$SERVER_CPU" python3 "$work/sse.py" 18443 > "$work/sse.out" 2>&1 &
pids+=($!)

# ---- HAProxy 18441 → nginx, 18444 → SSE upstream ---------------------------------------------
{ haproxy_head 1000; cat <<EOF
backend upstream_nginx
    server nginx1 127.0.0.1:18440 maxconn 1000
backend upstream_sse
    server sse1 127.0.0.1:18443 maxconn 1000
frontend plain
    bind 127.0.0.1:18441
    default_backend upstream_nginx
frontend sse
    bind 127.0.0.1:18444
    default_backend upstream_sse
# the same with option http-no-delay: HAProxy's default may hold a small chunk back while it
# expects more (MSG_MORE / Nagle); this option is what its manual prescribes for streams
frontend sse_nodelay
    bind 127.0.0.1:18445
    option http-no-delay
    default_backend upstream_sse
EOF
} > "$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"
taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.out" 2>&1 &
haproxy_pid=$!; pids+=("$haproxy_pid")

# ---- gatehouse 18442: the same paths upstream (a route's upstream path is fixed) ----------------
cat > "$work/gatehouse.yaml" <<EOF
listen: 127.0.0.1:18442
telemetry: { accessLog: "off" }
limits: { maxRequestBodyBytes: 16MB }
routes:
  - name: big
    path: /big.bin
    authorizerType: NONE
    upstream: { url: "http://127.0.0.1:18440", path: /big.bin }
  - name: upload
    path: /upload
    authorizerType: NONE
    upstream: { url: "http://127.0.0.1:18440", path: /upload }
  - name: sse
    path: /sse
    authorizerType: NONE
    upstream: { url: "http://127.0.0.1:18443", path: /sse }
EOF
taskset -c "$SERVER_CPU" "$BIN" serve --threads 1 --config "$work/gatehouse.yaml" > "$work/gatehouse.out" 2>&1 &
gh_pid=$!; pids+=("$gh_pid")
wait_http http://127.0.0.1:18441/upload; wait_http http://127.0.0.1:18442/upload; wait_http http://127.0.0.1:18444/sse; wait_http http://127.0.0.1:18445/sse

# ---- functional check: the same 10 MB through every peer, both ways; SSE arrives ---------------
want=$(sha256sum < "$work/www/big.bin" | cut -d' ' -f1)
for port in 18440 18441 18442; do
  got=$(curl -sf --max-time 20 "http://127.0.0.1:$port/big.bin" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || { echo "GET /big.bin on $port: body differs" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 --data-binary @"$work/body.bin" \
    -H 'content-type: application/octet-stream' "http://127.0.0.1:$port/upload")
  [ "$code" = 200 ] || { echo "POST /upload (10 MB) on $port: $code" >&2; exit 1; }
done
for port in 18443 18444 18445 18442; do
  curl -s --max-time 3 "http://127.0.0.1:$port/sse" | grep -q '^data: {"n":1}' \
    || { echo "SSE on $port: no event" >&2; exit 1; }
done
echo "functional check: 10 MB GET (same sha256) and POST (200) through nginx, HAProxy, gatehouse; SSE events arrive" >&2

# ---- 1 + 2: throughput ----------------------------------------------------------------------------
cat > "$work/report.lua" <<'LUA'
local path = os.getenv("BODY_FILE")
if path then
  local f = assert(io.open(path, "rb")); wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
  wrk.headers["Content-Type"] = "application/octet-stream"
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status))
end
LUA
declare -A PEER=([nginx]="$nginx_pid 18440" [haproxy]="$haproxy_pid 18441" [gatehouse]="$gh_pid 18442")
results=$work/tput.tsv
: > "$results"
for round in $(seq "$ROUNDS"); do
  for kind in get post; do
    for peer in nginx haproxy gatehouse; do
      read -r pid port <<< "${PEER[$peer]}"
      if [ $kind = get ]; then url=http://127.0.0.1:$port/big.bin; envs=(); else url=http://127.0.0.1:$port/upload; envs=(BODY_FILE="$work/body.bin"); fi
      env "${envs[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" -s "$work/report.lua" "$url" > /dev/null
      t0=$(ticks "$pid")
      out=$(env "${envs[@]}" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$work/report.lua" "$url")
      t1=$(ticks "$pid")
      read -r _ reqs dur_us bytes errs non2xx <<< "$(grep '^RESULT' <<< "$out")"
      python3 - "$peer" "$kind" "$round" "$reqs" "$dur_us" "$bytes" "$errs" "$non2xx" "$t0" "$t1" "$hz" "$SIZE" >> "$results" <<'PY'
import sys
peer, kind, rnd, reqs, dur_us, bytes_read, errs, non2xx, t0, t1, hz, size = sys.argv[1:]
reqs, dur, size = int(reqs), int(dur_us) / 1e6, int(size)
moved = reqs * size  # GET: the body read; POST: the body sent (each request carries all of it)
mbps = moved / 1e6 / dur
cpu_ms = (int(t1) - int(t0)) / int(hz) * 1000
print("\t".join(map(str, [peer, kind, rnd, reqs, f"{mbps:.0f}", f"{cpu_ms / (moved / 1e6):.3f}", int(errs) + int(non2xx)])))
PY
      tail -1 "$results" | awk -F'\t' '{printf "round %s %-4s %-9s %s requests, %s MB/s, %s CPU ms/MB (errors %s)\n", $3, $2, $1, $4, $5, $6, $7}' >&2
    done
  done
done

# ---- 3: SSE first byte -------------------------------------------------------------------------
cat > "$work/ttfb.py" <<'PY'
"""Time from writing the request to the first byte of the first event (`data:`), on one keep-alive
connection per target, targets interleaved sample by sample; then the rest of the stream is read
to its end (the terminating chunk) before the next request."""
import socket, sys, time, statistics
samples = int(sys.argv[1]); targets = [(name, int(port)) for name, port in (a.split(":") for a in sys.argv[2:])]
REQ = b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
def connect(port):
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); return s
socks = {name: connect(port) for name, port in targets}
times = {name: [] for name, _ in targets}
for i in range(samples + 5):
    for name, port in targets:
        s = socks[name]
        t0 = time.perf_counter_ns(); s.sendall(REQ)
        buf = b""; first = None
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit(f"{name}: connection closed mid-stream")
            buf += chunk
            if first is None and b"data:" in buf:
                first = time.perf_counter_ns()
            if first is not None and buf.endswith(b"0\r\n\r\n"):
                break
        if i >= 5:  # the first 5 are warm-up
            times[name].append((first - t0) / 1000)
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))]
base = times[targets[0][0]]
for name, _ in targets:
    xs = times[name]
    print(f"{name}\t{statistics.median(xs):.0f}\t{pct(xs, 0.99):.0f}\t{statistics.median(xs) - statistics.median(base):.0f}\t{pct(xs, 0.99) - pct(base, 0.99):.0f}\t{len(xs)}")
PY
sse=$(taskset -c "$LOAD_CPU" python3 "$work/ttfb.py" "$SAMPLES" direct:18443 gatehouse:18442 haproxy:18444 haproxy-http-no-delay:18445)

# ---- tables ---------------------------------------------------------------------------------------
python3 - "$results" "$ROUNDS" "$DURATION" "$CONNS" <<'PY'
import collections, statistics as st, sys
path, rounds, dur, conns = sys.argv[1:]
rows = collections.defaultdict(list)
for l in open(path):
    f = l.rstrip("\n").split("\t"); rows[(f[1], f[0])].append(f)
print(f"### 10 MB bodies (wrk -t1 -c{conns}, {rounds} interleaved rounds × {dur} s, medians)\n")
print("| direction | peer | MB/s | proxy CPU ms per MB | requests (all rounds) | errors |")
print("|---|---|---|---|---|---|")
for kind in ("get", "post"):
    for peer in ("nginx", "haproxy", "gatehouse"):
        fs = rows[(kind, peer)]
        cpu = "— (nginx alone)" if peer == "nginx" else f"{st.median(float(f[5]) for f in fs):.2f}"
        label = "GET 10 MB response" if kind == "get" else "POST 10 MB request"
        print(f"| {label} | {peer} | {st.median(float(f[4]) for f in fs):,.0f} ({min(int(f[4]) for f in fs):,}–{max(int(f[4]) for f in fs):,}) | "
              f"{cpu} | {sum(int(f[3]) for f in fs)} | {sum(int(f[6]) for f in fs)} |")
PY
echo
echo "### SSE: request sent → first event byte ($SAMPLES samples per target, interleaved, one keep-alive connection each)"
echo
echo "| target | median µs | p99 µs | added vs direct, median µs | added vs direct, p99 µs |"
echo "|---|---|---|---|---|"
while IFS=$'\t' read -r name p50 p99 add50 add99 n; do
  echo "| $name | $p50 | $p99 | $add50 | $add99 |"
done <<< "$sse"
echo
echo "gatehouse: $BIN ($(stat -c %y "$BIN" | cut -d. -f1)); $(haproxy -v | head -1); $(nginx -v 2>&1); wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
