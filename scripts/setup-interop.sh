#!/usr/bin/env bash
# Install the interop tier's third-party peers into the repository, idempotently:
#   - npm packages (oidc-provider, @modelcontextprotocol/sdk) into tests/interop/node_modules,
#     with `npm ci` from the committed package-lock.json;
#   - Python packages (bedrock-agentcore, mcp, botocore, opentelemetry-proto, grpcio) into a venv at
#     .interop/venv, from the fully pinned tests/interop/requirements.txt;
#   - the 1.x MCP SDK (FastMCP) into .interop/venv-mcp1 from tests/interop/requirements-mcp1.txt.
# Each part is skipped when a stamp says it is already installed from the same pins and toolchain.
#
# usage: scripts/setup-interop.sh [--check] [--force] [--node-only | --python-only]
#   --check        install nothing; exit 0 when everything is up to date, 1 otherwise
#   --force        reinstall even when up to date
#   --node-only / --python-only   do one half only
# Needs: node >= 20 with npm, python3 >= 3.10 with the venv module, and the npm registry and PyPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
INTEROP="$ROOT/tests/interop"
VENV="$ROOT/.interop/venv"
REQS="$INTEROP/requirements.txt"
NODE_STAMP="$INTEROP/node_modules/.gatehouse-interop-stamp"
PY_STAMP="$VENV/.gatehouse-interop-stamp"

CHECK=0 FORCE=0 DO_NODE=1 DO_PY=1
for arg in "$@"; do
  case "$arg" in
    --check) CHECK=1 ;;
    --force) FORCE=1 ;;
    --node-only) DO_PY=0 ;;
    --python-only) DO_NODE=0 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup-interop: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "setup-interop: $*"; }
die() {
  echo "setup-interop: ERROR: $*" >&2
  exit 1
}

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

STALE=0

# ---------------------------------------------------------------------------------------------
setup_node() {
  command -v node >/dev/null 2>&1 || die "node not found on PATH; install Node.js >= 20 (with npm)"
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install npm (it ships with Node.js)"
  local node_version node_major
  node_version="$(node --version)"
  node_major="${node_version#v}"; node_major="${node_major%%.*}"
  [ "$node_major" -ge 20 ] 2>/dev/null || die "node $node_version is too old; need >= 20"
  [ -f "$INTEROP/package.json" ] || die "missing $INTEROP/package.json"

  local lock="$INTEROP/package-lock.json"
  local want
  if [ -f "$lock" ]; then
    want="$(hash_of "$INTEROP/package.json" "$lock") node$node_major"
  else
    want="nolock:$(hash_of "$INTEROP/package.json") node$node_major"
  fi

  if [ "$FORCE" = 0 ] && [ -f "$NODE_STAMP" ] && [ "$(cat "$NODE_STAMP")" = "$want" ] \
     && node_pins_ok; then
    say "npm: up to date in tests/interop/node_modules ($(node_versions))"
    return 0
  fi
  if [ "$CHECK" = 1 ]; then
    say "npm: NOT up to date (run scripts/setup-interop.sh)"
    STALE=1
    return 0
  fi

  local log="$ROOT/.interop/npm-install.log"
  mkdir -p "$ROOT/.interop"
  rm -f "$NODE_STAMP"
  if [ -f "$lock" ]; then
    say "npm: npm ci in tests/interop (log: .interop/npm-install.log)"
    if ! (cd "$INTEROP" && npm ci --no-audit --no-fund --ignore-scripts) >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "npm ci failed in tests/interop (full log: $log). Is the npm registry reachable, and does package-lock.json match package.json?"
    fi
  else
    say "npm: no package-lock.json; npm install (creates it: commit it)"
    if ! (cd "$INTEROP" && npm install --no-audit --no-fund --ignore-scripts) >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "npm install failed in tests/interop (full log: $log)"
    fi
    want="$(hash_of "$INTEROP/package.json" "$lock") node$node_major"
  fi
  node_pins_ok || die "npm finished but the installed versions do not match package.json's pins ($(node_versions))"
  echo "$want" >"$NODE_STAMP"
  say "npm: installed ($(node_versions))"
}

# Every dependency in package.json is installed at exactly the pinned version.
node_pins_ok() {
  (cd "$INTEROP" && node -e '
    const fs = require("fs");
    const deps = JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies || {};
    for (const [name, want] of Object.entries(deps)) {
      let got;
      try { got = JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, "utf8")).version; } catch { process.exit(1); }
      if (got !== want) process.exit(1);
    }') >/dev/null 2>&1
}

node_versions() {
  (cd "$INTEROP" && node -e '
    const fs = require("fs");
    const deps = JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies || {};
    console.log(Object.keys(deps).map((n) => {
      try { return `${n}@${JSON.parse(fs.readFileSync(`node_modules/${n}/package.json`, "utf8")).version}`; }
      catch { return `${n}@missing`; }
    }).join(" "));') 2>/dev/null || echo "unknown"
}

# ---------------------------------------------------------------------------------------------
setup_python() {
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || die "$py not found on PATH; install Python >= 3.10 (set PYTHON=... to pick another)"
  "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "$("$py" --version 2>&1) is too old; need Python >= 3.10"
  [ -f "$REQS" ] || die "missing $REQS"
  local pyver want
  pyver="$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  want="$(hash_of "$REQS") py$pyver"

  if [ "$FORCE" = 0 ] && [ -f "$PY_STAMP" ] && [ "$(cat "$PY_STAMP")" = "$want" ] \
     && "$VENV/bin/python" -c 'import bedrock_agentcore, mcp, botocore, grpc, opentelemetry.proto' >/dev/null 2>&1; then
    say "pip: up to date in .interop/venv ($(py_versions))"
    return 0
  fi
  if [ "$CHECK" = 1 ]; then
    say "pip: NOT up to date (run scripts/setup-interop.sh)"
    STALE=1
    return 0
  fi

  mkdir -p "$ROOT/.interop"
  if [ "$FORCE" = 1 ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1 \
     || [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" != "$pyver" ]; then
    say "pip: creating venv .interop/venv with $py ($pyver)"
    rm -rf "$VENV"
    "$py" -m venv "$VENV" 2>"$ROOT/.interop/venv.log" \
      || { cat "$ROOT/.interop/venv.log" >&2; die "python3 -m venv failed; on Debian install python3-venv"; }
  fi

  local log="$ROOT/.interop/pip-install.log"
  rm -f "$PY_STAMP"
  say "pip: installing tests/interop/requirements.txt into .interop/venv (log: .interop/pip-install.log)"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$REQS" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip install failed (full log: $log). Is PyPI reachable?"
  fi
  if ! "$VENV/bin/python" -m pip check >>"$log" 2>&1; then
    tail -n 10 "$log" >&2
    die "pip check found broken requirements in .interop/venv (log: $log)"
  fi
  "$VENV/bin/python" -c 'import bedrock_agentcore, mcp, botocore, grpc, opentelemetry.proto' \
    || die "packages installed but do not import"
  echo "$want" >"$PY_STAMP"
  say "pip: installed ($(py_versions))"
}

# The 1.x MCP SDK in its own venv (it cannot share one with 2.x).
setup_python_mcp1() {
  local py="${PYTHON:-python3}" venv="$ROOT/.interop/venv-mcp1" reqs="$INTEROP/requirements-mcp1.txt"
  local stamp="$venv/.gatehouse-interop-stamp" pyver want
  pyver="$("$py" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
  want="$(hash_of "$reqs") py$pyver"
  if [ "$FORCE" = 0 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
     && "$venv/bin/python" -c 'import mcp.server.fastmcp' >/dev/null 2>&1; then
    say "pip: up to date in .interop/venv-mcp1 (mcp 1.x)"
    return 0
  fi
  if [ "$CHECK" = 1 ]; then
    say "pip: .interop/venv-mcp1 NOT up to date (run scripts/setup-interop.sh)"
    STALE=1
    return 0
  fi
  local log="$ROOT/.interop/pip-install-mcp1.log"
  rm -rf "$venv"
  "$py" -m venv "$venv" 2>"$log" || { cat "$log" >&2; die "python3 -m venv failed for .interop/venv-mcp1"; }
  say "pip: installing tests/interop/requirements-mcp1.txt into .interop/venv-mcp1 (log: .interop/pip-install-mcp1.log)"
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet -r "$reqs" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "pip install failed for .interop/venv-mcp1 (full log: $log). Is PyPI reachable?"
  fi
  "$venv/bin/python" -c 'import mcp.server.fastmcp' || die "mcp 1.x installed but does not import"
  echo "$want" >"$stamp"
  say "pip: installed mcp 1.x into .interop/venv-mcp1"
}

py_versions() {
  "$VENV/bin/python" - <<'EOF' 2>/dev/null || echo unknown
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in ["bedrock-agentcore", "mcp", "botocore", "opentelemetry-proto", "grpcio"]))
EOF
}

# ---------------------------------------------------------------------------------------------
[ "$DO_NODE" = 1 ] && setup_node
[ "$DO_PY" = 1 ] && setup_python
[ "$DO_PY" = 1 ] && setup_python_mcp1
if [ "$CHECK" = 1 ] && [ "$STALE" = 1 ]; then
  exit 1
fi
say "ok"
