#!/usr/bin/env bash
# Runs ../shared/bench (HAProxy jwt_verify, direct nginx) with gatehouse added as cases, all
# in one interleaved run on this machine. The shared harness is copied to a scratch directory
# so that nothing under ../shared changes.
#
#   bench/compare.sh                 # verify, then the whole matrix (~25 min)
#   CASES="a_direct c_haproxy_rs256 g_gh_rs256" bench/compare.sh   # a subset
#   VERIFY_ONLY=1 bench/compare.sh   # start everything, run verify.sh, stop
#
# Needs: haproxy nginx wrk hey bc (apt), python3 with pyjwt + cryptography (installed into
# .bench/venv here). Everything listens on 127.0.0.1; every run is bounded by wrk/hey -d/-z.
#
# gatehouse cases (each process pinned to core 0 with one worker thread, like HAProxy's nbthread 1):
#   18090 gh-hot     verified-token cache on  (route `/` → nginx, clients bench-client-1/2, scope invoke)
#   18091 gh-nocache verified-token cache off (every request verifies the signature)
#   18092 gh-plain   same proxy, authorizerType NONE (the proxy's own cost)
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

(cd "$here" && cargo build --release --quiet)
bin=$here/target/release/gatehouse

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

cat >> cases.tsv <<'TSV'
g_gh_plain            18092  rs256      run/gh-plain.pid       gatehouse, authorizerType NONE
g_gh_rs256            18090  rs256      run/gh-hot.pid         gatehouse RS256, verified-token cache on (hot token)
g_gh_rs256_rot        18090  rs256_rot  run/gh-hot.pid         same, rotating 1000 distinct tokens (each cached once)
g_gh_rs256_nocache    18091  rs256      run/gh-nocache.pid     gatehouse RS256, cache off (every request verified)
g_gh_es256_nocache    18091  es256      run/gh-nocache.pid     gatehouse ES256, cache off (every request verified)
TSV

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
./verify.sh 18090:rs256 18090:es256 18091:rs256 18091:es256 | tee run/verify.md
[ "${VERIFY_ONLY:-0}" = 1 ] && exit 0
raw=$(./run_bench.sh | tail -1)
python3 summarize.py "$raw" > "$here/.bench/results.md"
cp "$raw" "$here/.bench/"
echo "results: $here/.bench/results.md (raw: $here/.bench/$(basename "$raw"))"
