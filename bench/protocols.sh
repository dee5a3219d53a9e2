#!/usr/bin/env bash
# HTTP/2 from clients and TLS, gatehouse vs HAProxy 2.6, one interleaved run on this machine
# (issue 9). Same method as bench/compare.sh (../shared/bench): every server pinned to core 0
# (gatehouse `serve --threads 1`, HAProxy `nbthread 1`, nginx one worker), the load generator
# alone on core 1, proxy CPU from /proc/PID/stat (utime+stime) around each run, interleaved
# rounds, medians.
#
#   bench/protocols.sh [BIN]          BIN defaults to target/release/gatehouse
#   ROUNDS=3 DURATION=8 WARMUP=2 HS_DURATION=8 bench/protocols.sh BIN
#
# Part 1, requests (h2load, one thread, route `/` authorizerType NONE → nginx's 98-byte 200):
#   h1     HTTP/1.1 cleartext, 128 connections × 1 request in flight
#   h2c    HTTP/2 prior knowledge, 8 connections × 16 streams
#   h1tls  HTTP/1.1 over TLS 1.3, 128 connections × 1
#   h2tls  HTTP/2 over TLS 1.3 (ALPN h2), 8 connections × 16 streams
# h2load prints no percentiles: p50/p99 come from its --log-file (one line per request, the
# response time in µs). HTTP/1.1 uses 128 connections because h2load's -m on HTTP/1.1 means
# pipelining, which no real client does; 128 = 8 × 16 in flight either way.
# Part 2, TLS handshakes (`openssl s_time`, one client process): full handshakes (-new) and
# resumed ones (-reuse), TLS 1.3 and TLS 1.2, ECDSA P-256 and RSA-2048 certificates; the
# proxy's CPU per handshake; whether the server actually resumed (s_time -reuse prints one
# character per connection: 'r' resumed, '*' full handshake).
#
# Ports 18400–18419 on 127.0.0.1. Needs: haproxy nginx h2load (apt nghttp2-client) openssl
# python3 taskset. Every load is bounded by -D / -time; everything started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
BIN=$(realpath "${1:-target/release/gatehouse}")
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}; WARMUP=${WARMUP:-2}; HS_DURATION=${HS_DURATION:-8}
SERVER_CPU=${SERVER_CPU:-0}; LOAD_CPU=${LOAD_CPU:-1}
for tool in haproxy nginx h2load openssl python3 taskset; do
  command -v $tool >/dev/null || { echo "missing $tool: apt-get install -y haproxy nginx nghttp2-client openssl" >&2; exit 1; }
done
work=$(mktemp -d /tmp/gh-protocols.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.3; [ "${KEEP:-0}" = 1 ] && echo "kept $work" >&2 || rm -rf "$work"; }
trap cleanup EXIT
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port() { # port [tls]
  for _ in $(seq 100); do
    if [ "${2:-}" = tls ]; then curl -sk -o /dev/null --max-time 1 "https://127.0.0.1:$1/" && return 0
    else curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/" && return 0; fi
    sleep 0.1
  done
  echo "nothing answers on 127.0.0.1:$1" >&2; return 1
}

# ---- certificates: self-signed, CN/SAN 127.0.0.1 and localhost --------------------------
for kind in ec rsa; do
  if [ $kind = ec ]; then newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); else newkey=(-newkey rsa:2048); fi
  openssl req -x509 "${newkey[@]}" -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$work/$kind.key" -out "$work/$kind.crt" 2>/dev/null
  cat "$work/$kind.crt" "$work/$kind.key" > "$work/$kind.pem"   # HAProxy wants both in one file
done

# ---- nginx upstream (the shared harness's: 98-byte 200 for any path, one worker) ----------
mkdir -p "$work/nginx"
nginx_upstream "$work" 18400 > "$work/nginx.conf"
taskset -c "$SERVER_CPU" nginx -p "$work/nginx/" -c "$work/nginx.conf" > "$work/nginx.out" 2>&1 &
pids+=($!); nginx_pid=$!
wait_port 18400

# ---- HAProxy: plain h1 18401, h2c 18402, TLS ECDSA 18403, TLS RSA 18404 ------------------
{ haproxy_head 8000; cat <<EOF
backend upstream_nginx
    server nginx1 127.0.0.1:18400 maxconn 1000
frontend plain
    bind 127.0.0.1:18401
    default_backend upstream_nginx
frontend h2c
    bind 127.0.0.1:18402 proto h2
    default_backend upstream_nginx
frontend tls_ec
    bind 127.0.0.1:18403 ssl crt $work/ec.pem alpn h2,http/1.1
    default_backend upstream_nginx
frontend tls_rsa
    bind 127.0.0.1:18404 ssl crt $work/rsa.pem alpn h2,http/1.1
    default_backend upstream_nginx
EOF
} > "$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg"
taskset -c "$SERVER_CPU" haproxy -f "$work/haproxy.cfg" -db > "$work/haproxy.out" 2>&1 &
pids+=($!); haproxy_pid=$!
wait_port 18401; wait_port 18403 tls

# ---- gatehouse: plain 18410 (HTTP/1.1 + h2c), TLS ECDSA 18411, TLS RSA 18412 -------------
gatehouse() { # name port [tls-kind]
  local tls=""
  [ -n "${3:-}" ] && tls="tls: { certFile: $work/$3.crt, keyFile: $work/$3.key }"
  cat > "$work/$1.yaml" <<EOF
listen: 127.0.0.1:$2
$tls
telemetry: { accessLog: "off" }
routes:
  - name: bench
    path: /
    authorizerType: NONE
    upstream: { url: "http://127.0.0.1:18400" }
EOF
  taskset -c "$SERVER_CPU" "$BIN" serve --threads 1 --config "$work/$1.yaml" > "$work/$1.out" 2>&1 &
  pids+=($!)
  eval "${1//-/_}_pid=$!"
}
gatehouse gh-plain 18410; gatehouse gh-tls-ec 18411 ec; gatehouse gh-tls-rsa 18412 rsa
wait_port 18410; wait_port 18411 tls; wait_port 18412 tls

# ---- functional check: every case answers 200 over the protocol it claims -----------------
check() { # label expected-http-version curl-args...
  local label=$1 want=$2; shift 2
  local got; got=$(curl -s -o /dev/null -w '%{http_code} %{http_version}' --max-time 3 "$@")
  [ "$got" = "200 $want" ] || { echo "check $label: got '$got', want '200 $want'" >&2; exit 1; }
}
for p in 18401 18410; do
  check "h1 $p" 1.1 --http1.1 "http://127.0.0.1:$p/"
  check "h2c $p" 2 --http2-prior-knowledge "http://127.0.0.1:$p/"
done
check "h2c 18402" 2 --http2-prior-knowledge "http://127.0.0.1:18402/"
for p in 18403 18404 18411 18412; do
  check "h1tls $p" 1.1 -k --http1.1 "https://127.0.0.1:$p/"
  check "h2tls $p" 2 -k --http2 "https://127.0.0.1:$p/"
done
echo "functional check: all cases answer 200 over the expected protocol" >&2

# ---- part 1: requests ----------------------------------------------------------------------
# case -> "pid url h2load-args"
declare -A CASE
CASE[nginx_h1]="$nginx_pid http://127.0.0.1:18400/ --h1 -c128 -m1"
CASE[haproxy_h1]="$haproxy_pid http://127.0.0.1:18401/ --h1 -c128 -m1"
CASE[gatehouse_h1]="$gh_plain_pid http://127.0.0.1:18410/ --h1 -c128 -m1"
CASE[haproxy_h2c]="$haproxy_pid http://127.0.0.1:18402/ -c8 -m16"
CASE[gatehouse_h2c]="$gh_plain_pid http://127.0.0.1:18410/ -c8 -m16"
CASE[haproxy_h1tls]="$haproxy_pid https://127.0.0.1:18403/ --h1 -c128 -m1"
CASE[gatehouse_h1tls]="$gh_tls_ec_pid https://127.0.0.1:18411/ --h1 -c128 -m1"
CASE[haproxy_h2tls]="$haproxy_pid https://127.0.0.1:18403/ -c8 -m16"
CASE[gatehouse_h2tls]="$gh_tls_ec_pid https://127.0.0.1:18411/ -c8 -m16"
ORDER=(nginx_h1 haproxy_h1 gatehouse_h1 haproxy_h2c gatehouse_h2c haproxy_h1tls gatehouse_h1tls haproxy_h2tls gatehouse_h2tls)
results=$work/requests.tsv
: > "$results"
for round in $(seq "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    read -r pid url args <<< "${CASE[$name]}"
    # shellcheck disable=SC2086
    taskset -c "$LOAD_CPU" h2load -t1 $args -D "$WARMUP" "$url" > /dev/null 2>&1
    t0=$(ticks "$pid"); n0=$(ticks "$nginx_pid")
    # shellcheck disable=SC2086
    taskset -c "$LOAD_CPU" h2load -t1 $args -D "$DURATION" --log-file "$work/log" "$url" > "$work/out" 2>&1 || true
    t1=$(ticks "$pid"); n1=$(ticks "$nginx_pid")
    python3 - "$name" "$round" "$work/log" "$t0" "$t1" "$n0" "$n1" "$hz" "$pid" "$nginx_pid" "$work/out" >> "$results" <<'PY'
import re, sys
name, rnd, log, t0, t1, n0, n1, hz, pid, npid, outf = sys.argv[1:]
out = open(outf).read()
done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out).group(2))
failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out).groups()
ok2xx = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out).group(1))
proto = re.search(r"Application protocol: (\S+)", out).group(1)
lat = sorted(int(l.split("\t")[2]) for l in open(log) if l.strip())
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
hz = int(hz)
proxy_cpu = (int(t1) - int(t0)) / hz
proxy_us = proxy_cpu / done * 1e6 if pid != npid else 0.0
nginx_us = (int(n1) - int(n0)) / hz / done * 1e6
print("\t".join(map(str, [name, rnd, proto, f"{rps:.0f}", p(0.5), p(0.99), f"{proxy_us:.1f}", f"{nginx_us:.1f}", done, ok2xx, "/".join(failed)])))
PY
    tail -1 "$results" | awk -F'\t' '{printf "round %s %-16s %s %s req/s p50 %s µs p99 %s µs proxy %s µs/req (2xx %s, failed/errored/timeout %s)\n", $2, $1, $3, $4, $5, $6, $7, $10, $11}' >&2
  done
done

# ---- part 2: TLS handshakes ------------------------------------------------------------------
# s_time -new: a full handshake per connection; -reuse: the first connection full, every next one
# offers that session (TLS 1.2: session id or ticket; TLS 1.3: the PSK from a NewSessionTicket,
# which arrives after the handshake — hence `-www /`, so that s_time reads the response and with
# it the tickets, for both peers and both modes).
hs=$work/handshakes.tsv
: > "$hs"
declare -A HS
HS[haproxy_ec]="$haproxy_pid 18403"; HS[gatehouse_ec]="$gh_tls_ec_pid 18411"
HS[haproxy_rsa]="$haproxy_pid 18404"; HS[gatehouse_rsa]="$gh_tls_rsa_pid 18412"
HS_ORDER=(haproxy_ec gatehouse_ec haproxy_rsa gatehouse_rsa)
for round in $(seq "$ROUNDS"); do
  for ver in tls1_3 tls1_2; do
    for mode in new reuse; do
      for name in "${HS_ORDER[@]}"; do
        read -r pid port <<< "${HS[$name]}"
        t0=$(ticks "$pid"); w0=$(date +%s%N)
        taskset -c "$LOAD_CPU" openssl s_time -connect "127.0.0.1:$port" -"$ver" -"$mode" \
          -www / -time "$HS_DURATION" > "$work/out" 2>&1 || true
        t1=$(ticks "$pid"); w1=$(date +%s%N)
        python3 - "$name" "$ver" "$mode" "$round" "$t0" "$t1" "$hz" "$(( (w1 - w0) / 1000000 ))" "$work/out" >> "$hs" <<'PY'
import re, sys
name, ver, mode, rnd, t0, t1, hz, wall_ms, outf = sys.argv[1:]
out = open(outf).read()
m = re.search(r"(\d+) connections in \d+ real seconds", out)
conns = int(m.group(1)) if m else 0
# the marks line: one char per connection ('r' = resumed), printed before the summary
marks = "".join(l for l in out.splitlines() if re.fullmatch(r"[*r]+", l.strip() or "x"))
resumed = marks.count("r")
cpu = (int(t1) - int(t0)) / int(hz)
rate = conns / (int(wall_ms) / 1000)  # s_time overruns -time; the wall clock around it
print("\t".join(map(str, [name, ver, mode, rnd, f"{rate:.0f}", f"{cpu / conns * 1e6:.0f}" if conns else "-", conns, resumed])))
PY
        tail -1 "$hs" | awk -F'\t' '{printf "round %s %-14s %s %-5s %s handshakes/s, proxy %s µs/handshake, resumed %s of %s\n", $4, $1, $2, $3, $5, $6, $8, $7}' >&2
      done
    done
  done
done

# ---- tables ------------------------------------------------------------------------------
python3 - "$results" "$hs" "$BIN" "$ROUNDS" "$DURATION" "$HS_DURATION" <<'PY'
import statistics as st, sys, collections
req, hs, binary, rounds, dur, hsdur = sys.argv[1:]
rows = collections.defaultdict(list)
for l in open(req):
    f = l.rstrip("\n").split("\t"); rows[f[0]].append(f)
med = lambda xs: st.median(float(x) for x in xs)
print(f"### Requests: HTTP/1.1, h2c, TLS ({rounds} interleaved rounds × {dur} s, medians; h2load -t1 on core {1})\n")
print("| case | protocol | connections × streams | req/s | p50 µs | p99 µs | proxy CPU µs/req | nginx CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|---|---|")
shape = {"h1": "128 × 1", "h1tls": "128 × 1", "h2c": "8 × 16", "h2tls": "8 × 16"}
for name, fs in rows.items():
    peer, kind = name.split("_", 1)
    errs = sum(int(f[8]) - int(f[9]) for f in fs) + sum(sum(map(int, f[10].split("/"))) for f in fs)
    proxy = "—" if peer == "nginx" else f"{med(f[6] for f in fs):.1f}"
    print(f"| {peer} {kind} | {fs[0][2]} | {shape[kind]} | {med(f[3] for f in fs):,.0f} "
          f"({min(int(f[3]) for f in fs):,}–{max(int(f[3]) for f in fs):,}) | {med(f[4] for f in fs):.0f} | "
          f"{med(f[5] for f in fs):.0f} | {proxy} | {med(f[7] for f in fs):.1f} | {errs} |")
hrows = collections.defaultdict(list)
for l in open(hs):
    f = l.rstrip("\n").split("\t"); hrows[(f[0], f[1], f[2])].append(f)
print(f"\n### TLS handshakes (openssl s_time -www /, one client, {rounds} rounds × {hsdur} s, medians)\n")
print("| server | cert | TLS | mode | handshakes/s | proxy CPU µs/handshake | resumed / connections (all rounds) |")
print("|---|---|---|---|---|---|---|")
for (name, ver, mode), fs in sorted(hrows.items(), key=lambda kv: (kv[0][0].split("_")[1], kv[0][1], kv[0][2], kv[0][0])):
    peer, cert = name.split("_")
    cpu = [float(f[5]) for f in fs if f[5] != "-"]
    print(f"| {peer} | {'ECDSA P-256' if cert == 'ec' else 'RSA-2048'} | {ver.replace('tls1_', '1.')} | {mode} | "
          f"{med(f[4] for f in fs):,.0f} | {st.median(cpu) if cpu else float('nan'):.0f} | "
          f"{sum(int(f[7]) for f in fs)} / {sum(int(f[6]) for f in fs)} |")
PY
echo
echo "gatehouse: $BIN ($(stat -c %y "$BIN" | cut -d. -f1)); $(haproxy -v | head -1); $(h2load --version); $(openssl version)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
