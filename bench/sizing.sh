#!/usr/bin/env bash
# The numbers behind docs/operations.md#sizing, on this machine, one replica:
#   - start-up: process start to the first /readyz 200 (one JWKS fetch over loopback), 5 runs;
#   - CPU per request at a fixed rate, for a hot token, the token cache off, an MCP route
#     (tools/call JSON-RPC bodies), and that MCP route with policy (SPEC §11: 10 `mcp.rules`,
#     the call matching the last; a 20-policy Cedar set, the call permitted by the last), read
#     from /proc/PID/stat around a `gatehouse bench` run;
#   - memory per verified-token cache entry: RSS before and after N distinct tokens.
# Everything on 127.0.0.1: `gatehouse dev` is the issuer and the upstream (its echo agent).
#   bench/sizing.sh [target/release/gatehouse]     (RATE, DURATION in seconds, TOKENS override)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/gatehouse}
RATE=${RATE:-2000}
SECONDS_PER_CASE=${DURATION:-10}
TOKENS=${TOKENS:-20000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

dev_port=$(free_port); dev_admin=$(free_port)
"$BIN" dev --port "$dev_port" --admin-port "$dev_admin" >"$work/dev.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "^  agent" "$work/dev.out" 2>/dev/null && break; sleep 0.1; done
discovery=$(awk '$1 == "issuer" {print $2}' "$work/dev.out")
agent=$(awk '$1 == "agent" {print $2}' "$work/dev.out")
token=$("$BIN" token --dev --scope invoke)

# serve NAME ROUTE_YAML [TOP_YAML]: starts the edge (one worker thread); sets pid, port, admin.
serve() {
    local name=$1 route=$2 top=${3:-}
    port=$(free_port); admin=$(free_port)
    cat >"$work/$name.yaml" <<EOF
listen: 127.0.0.1:$port
admin: { listen: 127.0.0.1:$admin }
telemetry: { accessLog: "off" }
$top
routes:
$route
EOF
    "$BIN" serve --threads 1 --config "$work/$name.yaml" 2>"$work/$name.err" &
    pid=$!
    pids+=("$pid")
}

ready_ms() { # waits for /readyz 200, prints ms since $1 (ns)
    while [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" != 200 ]]; do sleep 0.005; done
    echo $(( ($(date +%s%N) - $1) / 1000000 ))
}

http_route="  - name: echo
    authorizerConfiguration:
      customJwtAuthorizer: { discoveryUrl: \"$discovery\", allowedClients: [dev-client], allowedScopes: [invoke] }
    upstream: { url: \"$agent\" }"
mcp_route="  - name: tools
    protocol: MCP
    path: /mcp
    authorizerConfiguration:
      customJwtAuthorizer: { discoveryUrl: \"$discovery\", allowedClients: [dev-client], allowedScopes: [invoke] }
    upstream: { url: \"$agent\" }"

# MCP with policy: ten rules (the call matches the tenth, so all are tried) ...
mcp_rules_route="$mcp_route
    mcp:
      rules:"
for i in 0 1 2 3 4 5 6 7 8; do
    mcp_rules_route+="
        - { match: { method: tools/call, name: \"team${i}_*\" }, allowedScopes: [team$i] }"
done
mcp_rules_route+="
        - { match: { method: \"tools/*\", name: \"search*\" }, allowedScopes: [invoke], allowedClients: [dev-client] }"
# ... and twenty Cedar policies in AgentCore's style (the call is permitted by the last).
for i in $(seq 0 18); do
    echo "permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::\"team${i}_tool\", resource == AgentCore::Gateway::\"tools\") when { principal.getTag(\"scope\") like \"*team$i*\" };"
done >"$work/tools.cedar"
echo 'permit(principal is AgentCore::OAuthUser, action == AgentCore::Action::"search", resource == AgentCore::Gateway::"tools") when { principal.getTag("scope") like "*invoke*" && context.input.q == "x" };' >>"$work/tools.cedar"
mcp_cedar_route="$mcp_route
    mcp:
      cedar: { policies: tools.cedar }"

none_route="  - name: open
    authorizerType: NONE
    upstream: { url: \"$agent\" }"
# Timed from Python (process start to the first /readyz 200, polled every millisecond): a shell
# loop of curl processes would time itself.
startup() { # NAME ROUTE
    local port admin; port=$(free_port); admin=$(free_port)
    printf 'listen: 127.0.0.1:%s\nadmin: { listen: 127.0.0.1:%s }\ntelemetry: { accessLog: "off" }\nroutes:\n%s\n' \
        "$port" "$admin" "$2" >"$work/$1.yaml"
    python3 - "$BIN" "$work/$1.yaml" "$admin" "$1" <<'PY'
import subprocess, sys, time, urllib.request
binary, config, admin, name = sys.argv[1:5]
runs = []
for _ in range(5):
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "serve", "--config", config], stderr=subprocess.DEVNULL)
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1).status == 200:
                break
        except Exception:
            time.sleep(0.001)
    runs.append((time.monotonic() - t0) * 1000)
    p.terminate(); p.wait()
print(f"{name}: " + ", ".join(f"{r:.0f}" for r in runs) + f" ms (median {sorted(runs)[2]:.0f})")
PY
}
echo "== start-up to /readyz 200, 5 runs each"
startup "JWT route (one discovery + JWKS fetch over loopback)" "$http_route"
startup "NONE route (no issuer)" "$none_route"

# case NAME URL BODY ROUTE [TOP]: CPU µs per request at RATE.
case_cpu() {
    local name=$1 url_path=$2 body=$3 route=$4 top=${5:-}
    serve "$name" "$route" "$top"
    ready_ms "$(date +%s%N)" >/dev/null
    local url="http://127.0.0.1:$port$url_path"
    "$BIN" bench --url "$url" --token "$token" --body "$body" -H 'accept: application/json, text/event-stream' \
        --rate "$RATE" --duration 2s -c 16 >/dev/null   # warm-up
    local before; before=$(cpu_ticks "$pid")
    "$BIN" bench --url "$url" --token "$token" --body "$body" -H 'accept: application/json, text/event-stream' \
        --rate "$RATE" --duration "${SECONDS_PER_CASE}s" -c 16 --json >"$work/$name.json"
    local after; after=$(cpu_ticks "$pid")
    python3 - "$work/$name.json" "$before" "$after" "$hz" "$name" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); before, after, hz = map(int, sys.argv[2:5])
n = o["requests"]; cpu = (after - before) / hz
print(f"{sys.argv[5]}: {n} requests, status {o['status']}, errors {o['errors']}, "
      f"{cpu:.2f} CPU s -> {cpu / n * 1e6:.1f} µs/request = {cpu / n * 1000:.3f} cores per 1k req/s")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

if [[ "${STARTUP_ONLY:-}" == 1 ]]; then exit 0; fi
echo "== CPU per request at $RATE req/s, ${SECONDS_PER_CASE}s, one worker thread"
case_cpu hot /runtimes/echo/invocations '{}' "$http_route"
case_cpu nocache /runtimes/echo/invocations '{}' "$http_route" "jwt: { verifiedTokenCache: { maxEntries: 0 } }"
call='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"q":"x"}}}'
case_cpu mcp /mcp "$call" "$mcp_route"
case_cpu mcp-rules /mcp "$call" "$mcp_rules_route"
case_cpu mcp-cedar /mcp "$call" "$mcp_cedar_route"

echo "== memory per verified-token cache entry ($TOKENS distinct tokens)"
serve cache "$http_route" "jwt: { verifiedTokenCache: { maxEntries: 1000000 } }"
ready_ms "$(date +%s%N)" >/dev/null
"$BIN" bench --url "http://127.0.0.1:$port/runtimes/echo/invocations" --mint --dev --distinct-tokens 1000 -n 2000 -c 8 >/dev/null
sleep 1; before=$(rss_kib "$pid")
"$BIN" bench --url "http://127.0.0.1:$port/runtimes/echo/invocations" --mint --dev --distinct-tokens "$TOKENS" -n "$TOKENS" -c 8 --json >"$work/cache.json"
sleep 1; after=$(rss_kib "$pid")
entries=$(curl -s "http://127.0.0.1:$admin/metrics" | awk '/^gatehouse_token_cache_entries/ {print $2}')
echo "RSS $before KiB -> $after KiB with $entries cache entries: $(( (after - before) * 1024 / TOKENS )) bytes per token"
