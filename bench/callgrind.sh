#!/usr/bin/env bash
# Instructions per proxied request, by callgrind: deterministic where wall time on a shared
# 2-core machine is not. Each binary serves a plain HTTP route (authorizerType NONE, the proxy's
# own cost) in front of nginx; `hey` sends N and then 2N requests on one keep-alive connection
# to a fresh process under callgrind, and (Ir(2N) - Ir(N)) / N is the cost of one request,
# start-up and shutdown cancelled out. The same difference of the calls into mimalloc's
# allocation entry points (`mi_malloc_aligned`, `mi_zalloc_aligned`, `mi_realloc_aligned`:
# what Rust's global allocator calls) is the heap allocations per request.
#
#   bench/callgrind.sh BINARY [BINARY...]        # e.g. a build of main and one of a branch
#   N=2000 bench/callgrind.sh ...
#   ROUTE=mcp bench/callgrind.sh ...             # an MCP route without `mcp` policy instead:
#                                                # hey POSTs a JSON-RPC tools/call to /mcp
#
# ROUTE=mcp uses only keys every build since MCP routes has accepted (protocol, path), so a
# binary from before the MCP policy phase (SPEC §11) runs the same config: the A/B shows what
# that phase costs a route that has no `mcp` block (its body should stream as before).
#
# Build both binaries with the same profile (e.g. release, or
# CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 for a quicker build).
# Needs valgrind, nginx, hey. Listens on 127.0.0.1:18301/18302 only.
set -euo pipefail
N=${N:-2000}
work=$(mktemp -d)
trap 'kill $(cat "$work/nginx.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work;
  server { listen 127.0.0.1:18302; location / { return 200 '{"ok":true}'; } }
}
NGINX
nginx -c "$work/nginx.conf"
case ${ROUTE:-plain} in
plain)
    route='  - name: plain
    authorizerType: NONE
    upstream: { url: http://127.0.0.1:18302 }'
    url=http://127.0.0.1:18301/runtimes/plain/invocations
    body='{"prompt":"hi"}'
    accept=application/json ;;
mcp)
    route='  - name: tools
    protocol: MCP
    path: /mcp
    authorizerType: NONE
    upstream: { url: http://127.0.0.1:18302 }'
    url=http://127.0.0.1:18301/mcp
    body='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}'
    accept='application/json, text/event-stream' ;;
*) echo "ROUTE must be plain or mcp (got $ROUTE)" >&2; exit 2 ;;
esac
cat >"$work/gatehouse.yaml" <<YAML
listen: 127.0.0.1:18301
telemetry: { accessLog: "off" }
routes:
$route
YAML

run() { # binary requests -> total Ir
  local bin=$1 n=$2 out=$work/cg.out
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" serve --config "$work/gatehouse.yaml" >/dev/null 2>"$work/vg.err" &
  local pid=$!
  for _ in $(seq 1 300); do curl -s -o /dev/null "http://127.0.0.1:18301/" && break; sleep 0.1; done
  hey -n "$n" -c 1 -m POST -d "$body" -T application/json -H "Accept: $accept" \
    "$url" >"$work/hey.out"
  grep -q '\[200\]' "$work/hey.out" || { cat "$work/hey.out" >&2; exit 1; }
  kill -INT $pid; wait $pid || true
  echo "$(grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}') $(allocations "$out")"
}

allocations() { # callgrind output -> calls into the allocator's entry points
  python3 - "$1" <<'PY'
import re, sys
names, total, target = {}, 0, False
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?)fn=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        target = m.group(1) == "c" and re.fullmatch(
            r"mi_(malloc|zalloc|realloc)_aligned", names.get(m.group(2), "")) is not None
    elif line.startswith("calls=") and target:
        total += int(line[6:].split()[0])
        target = False
print(total)
PY
}

for bin in "$@"; do
  read -r one one_allocs < <(run "$bin" "$N")
  read -r two two_allocs < <(run "$bin" $((2 * N)))
  echo "$bin (${ROUTE:-plain}): $(( (two - one) / N )) instructions and $(( (two_allocs - one_allocs) / N )).$(( (two_allocs - one_allocs) * 10 / N % 10 )) allocations per request (Ir $one for $N, $two for $((2 * N)))"
done
