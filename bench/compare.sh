#!/usr/bin/env bash
# Runs ../shared/bench (HAProxy jwt_verify, direct nginx) with gatehouse added as cases, all
# in one interleaved run on this machine. The shared harness is copied to a scratch directory
# so that nothing under ../shared changes.
#
#   bench/compare.sh                 # verify, then the whole matrix (~25 min)
#   CASES="a_direct c_haproxy_rs256 g_gh_rs256" bench/compare.sh   # a subset
#   VERIFY_ONLY=1 bench/compare.sh   # start everything, run verify.sh, stop
#   GATEHOUSE_BIN=/tmp/gatehouse-x bench/compare.sh   # a given build instead of target/release
#
# Needs: haproxy nginx wrk hey bc (apt), python3 with pyjwt + cryptography (installed into
# .bench/venv here). Everything listens on 127.0.0.1; every run is bounded by wrk/hey -d/-z.
#
# gatehouse cases (each process pinned to core 0 with one worker thread, like HAProxy's nbthread 1):
#   18090 gh-hot     verified-token cache on  (route `/` → nginx, clients bench-client-1/2, scope invoke)
#   18091 gh-nocache verified-token cache off (every request verifies the signature)
#   18092 gh-plain   same proxy, authorizerType NONE (the proxy's own cost)
# and, beyond one core (both cores, sharing core 1 with the load generator — read the core
# busy columns), `serve --threads 2` against HAProxy `nbthread 2` (a second HAProxy process):
#   18093 gh-plain-t2  the plain proxy, two worker threads
#   18094 gh-hot-t2    the hot-token route, two worker threads
#   18095 haproxy-t2   HAProxy plain and (18096) jwt_verify RS256, nbthread 2
# and the floor under all of them: examples/hyper_floor.rs, a bare proxy on the same hyper
# server and client connections and tokio runtime with none of the edge (no phases):
#   18098 floor        (FLOOR_BIN=path, or built with target/release/gatehouse)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$here/../shared/bench}
work=${BENCH_WORK:-$here/.bench/harness}
mkdir -p "$here/.bench"
[ -d "$shared" ] || { echo "no shared harness at $shared" >&2; exit 1; }
for tool in haproxy nginx wrk hey bc taskset; do
  command -v $tool >/dev/null || { echo "missing $tool: apt-get install -y haproxy nginx wrk hey bc" >&2; exit 1; }
done

# Python with PyJWT for the harness's token minting.
if [ ! -x "$here/.bench/venv/bin/python" ]; then
  python3 -m venv "$here/.bench/venv"
  "$here/.bench/venv/bin/pip" install -q pyjwt==2.10.1 cryptography==46.0.3
fi
export PATH="$here/.bench/venv/bin:$PATH"

# GATEHOUSE_BIN=path measures that binary instead of building target/release/gatehouse.
if [ -n "${GATEHOUSE_BIN:-}" ]; then
  bin=$(realpath "$GATEHOUSE_BIN")
else
  (cd "$here" && cargo build --release --quiet --bin gatehouse --example hyper_floor)
  bin=$here/target/release/gatehouse
  FLOOR_BIN=${FLOOR_BIN:-$here/target/release/examples/hyper_floor}
fi
floor=${FLOOR_BIN:+$(realpath "$FLOOR_BIN")}

rsync -a --delete --exclude gen --exclude run --exclude out "$shared/" "$work/"
cd "$work"
python3 mint_tokens.py >&2

# The issuer: a static discovery document + the harness's JWKS on 127.0.0.1:18099.
mkdir -p run/idp/.well-known
cp gen/jwks.json run/idp/jwks.json
printf '{"issuer":"bench-issuer","jwks_uri":"http://127.0.0.1:18099/jwks.json"}' > run/idp/.well-known/openid-configuration

config() { # port cache_entries authorizer(jwt|none)
  local auth
  if [ "$3" = jwt ]; then
    auth='    authorizerConfiguration:
      customJwtAuthorizer:
        discoveryUrl: http://127.0.0.1:18099/.well-known/openid-configuration
        allowedClients: [bench-client-1, bench-client-2]
        allowedScopes: [invoke]'
  else
    auth='    authorizerType: NONE'
  fi
  cat <<YAML
listen: 127.0.0.1:$1
jwt:
  algorithms: [RS256, ES256]
  verifiedTokenCache: { maxEntries: $2 }
telemetry: { accessLog: "off" }
routes:
  - name: bench
    path: /
$auth
    upstream: { url: "http://127.0.0.1:18080" }
YAML
}
config 18090 100000 jwt > run/gh-hot.yaml
config 18091 0 jwt > run/gh-nocache.yaml
config 18092 100000 none > run/gh-plain.yaml
config 18093 100000 none > run/gh-plain-t2.yaml
config 18094 100000 jwt > run/gh-hot-t2.yaml
config 18098 0 none > run/floor.yaml
# HAProxy with two threads: the harness's own frontends on other ports.
sed -e 's/nbthread 1/nbthread 2/' -e 's/:18081/:18095/' -e 's/:18082/:18096/' -e 's/:18083/:18097/' \
  conf/haproxy.cfg > run/haproxy-t2.cfg

cat >> cases.tsv <<'TSV'
g_gh_plain            18092  rs256      run/gh-plain.pid       gatehouse, authorizerType NONE
g_gh_rs256            18090  rs256      run/gh-hot.pid         gatehouse RS256, verified-token cache on (hot token)
g_gh_rs256_rot        18090  rs256_rot  run/gh-hot.pid         same, rotating 1000 distinct tokens (each cached once)
g_gh_rs256_nocache    18091  rs256      run/gh-nocache.pid     gatehouse RS256, cache off (every request verified)
g_gh_es256_nocache    18091  es256      run/gh-nocache.pid     gatehouse ES256, cache off (every request verified)
t_haproxy_plain_t2    18095  rs256      run/haproxy-t2.pid     HAProxy plain, nbthread 2 on both cores
t_haproxy_rs256_t2    18096  rs256      run/haproxy-t2.pid     HAProxy jwt_verify RS256, nbthread 2 on both cores
t_gh_plain_t2         18093  rs256      run/gh-plain-t2.pid    gatehouse NONE, --threads 2 on both cores
t_gh_rs256_t2         18094  rs256      run/gh-hot-t2.pid      gatehouse RS256 hot token, --threads 2 on both cores
TSV
if [ -n "$floor" ]; then
  echo "f_hyper_floor         18098  rs256      run/floor.pid          bare hyper proxy (examples/hyper_floor): the parts' floor" >> cases.tsv
fi

cleanup() { ./peers.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
./peers.sh stop >/dev/null 2>&1 || true
( cd run/idp && exec taskset -c 0 python3 -m http.server 18099 --bind 127.0.0.1 ) > run/idp.out 2>&1 &
echo $! > run/idp.pid
./peers.sh start
for p in gh-hot:18090 gh-nocache:18091 gh-plain:18092; do
  name=${p%%:*}; port=${p##*:}
  ./peers.sh start-custom "$name" "$port" -- "$bin" serve --config "run/$name.yaml" --threads 1
done
if [ -n "$floor" ]; then
  ./peers.sh start-custom floor 18098 -- "$floor" serve --config run/floor.yaml
fi
# The two-thread cases span both cores (peers.sh pins to one).
taskset -c 0,1 haproxy -f run/haproxy-t2.cfg -db > run/haproxy-t2.out 2>&1 &
echo $! > run/haproxy-t2.pid
for name in gh-plain-t2 gh-hot-t2; do
  taskset -c 0,1 "$bin" serve --config "run/$name.yaml" --threads 2 > "run/$name.out" 2>&1 &
  echo $! > "run/$name.pid"
done
stop_t2() { for f in run/haproxy-t2.pid run/gh-plain-t2.pid run/gh-hot-t2.pid; do kill "$(cat "$f")" 2>/dev/null || true; done; }
trap 'stop_t2; cleanup' EXIT
for port in 18095 18093 18094; do
  for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
./verify.sh 18090:rs256 18090:es256 18091:rs256 18091:es256 18094:rs256 | tee run/verify.md
[ "${VERIFY_ONLY:-0}" = 1 ] && exit 0
raw=$(./run_bench.sh | tail -1)
python3 summarize.py "$raw" > "$here/.bench/results.md"
cp "$raw" "$here/.bench/"
echo "results: $here/.bench/results.md (raw: $here/.bench/$(basename "$raw"))"
