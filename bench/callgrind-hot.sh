#!/usr/bin/env bash
# Instructions per request on a JWT route with a hot token (the verified-token cache's hit), by
# callgrind: `gatehouse dev` (its issuer, echo agent and edge in one process; route "echo":
# RS256, allowed client and scope, session id, claims to headers, access log) under callgrind,
# 200 requests of warm-up, then N on one keep-alive connection with the dev token, counted
# alone (`callgrind_control -z`). The count includes the in-process echo agent and the access
# log line, so it is for A/B between builds (e.g. the auth phase's changes), not an absolute
# cost of the edge: bench/callgrind.sh is that, on a plain route in front of nginx.
#
#   bench/callgrind-hot.sh BINARY [BINARY...]
#   N=2000 bench/callgrind-hot.sh ...
#
# Needs valgrind, hey. Listens on 127.0.0.1:18320 (edge) and 18321 (admin) only.
set -euo pipefail
N=${N:-2000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for bin in "$@"; do
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.out" \
    "$bin" dev --port 18320 --admin-port 18321 >/dev/null 2>"$work/dev.err" &
  pid=$!
  for _ in $(seq 1 300); do grep -q "export TOKEN=" "$work/dev.err" && break; sleep 0.2; done
  sleep 1
  token=$(grep "export TOKEN=" "$work/dev.err" | sed 's/.*TOKEN=//')
  url=http://127.0.0.1:18320/runtimes/echo/invocations
  callgrind_control -i on $pid >/dev/null 2>&1
  hey -n 200 -c 1 -m POST -d '{"prompt":"hi"}' -T application/json -H "Authorization: Bearer $token" "$url" >/dev/null
  callgrind_control -z $pid >/dev/null 2>&1
  hey -n "$N" -c 1 -m POST -d '{"prompt":"hi"}' -T application/json -H "Authorization: Bearer $token" "$url" >"$work/hey.out"
  grep -qE "\[200\]\s+$N" "$work/hey.out" || { cat "$work/hey.out" >&2; exit 1; }
  callgrind_control -i off $pid >/dev/null 2>&1
  kill -INT $pid; wait $pid || true
  total=$(callgrind_annotate --auto=no --threshold=100 "$work/cg.out" 2>/dev/null | sed -n '/file:function/,$p' | tail -n +3 \
    | awk '{x=$1; gsub(",","",x); s+=x} END {printf "%.0f", s}')
  echo "$bin (dev, hot token): $((total / N)) instructions per request"
done
