#!/usr/bin/env bash
# Run the official MCP conformance suite against Scalytics Connect serving this directory.
#
#   examples/mcp-conformance/run.sh [--scenario NAME] [other options of `conformance server`]
#
# Starts `sconnect serve` on free loopback ports with a throwaway state directory and
# the anonymous role `conformance` (the suite sends no token), runs every server scenario
# (`--suite all`, pending ones included) with expected-failures.yaml as the baseline,
# saves the results under $RESULTS (default: ./conformance-results), stops the server.
# Exit code: the suite's (0 = every applicable scenario passed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sconnect=${SCONNECT:-sconnect}
command -v "$sconnect" >/dev/null 2>&1 || sconnect="python3 -m engine"
suite_dir=$("$here/install-suite.sh")
state=$(mktemp -d /tmp/sconnect-conformance.XXXXXX)
chmod 711 "$state"  # tools run as the sandbox user and must reach their work dirs
log="$state/serve.log"
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$state" "$state-keys"
}
trap cleanup EXIT
# --dev: a signing secret in the throwaway state directory (no token is used anyway).
$sconnect serve --dev --config "$here" --state-dir "$state" --host 127.0.0.1 --port 0 \
    --mcp-port 0 --mcp-anonymous-role conformance >"$log" 2>&1 &
server=$!
url=""
for _ in $(seq 300); do
    url=$(grep -m1 -o '^mcp: http://[^ ]*' "$log" | cut -c6- || true)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; echo "the server did not start" >&2; exit 1; }
    sleep 0.1
done
[ -n "$url" ] || { cat "$log" >&2; echo "no MCP endpoint after 30 s" >&2; exit 1; }
echo "server: $url" >&2
"$suite_dir/node_modules/.bin/node" "$suite_dir/node_modules/@modelcontextprotocol/conformance/dist/index.js" \
    server --url "$url" --suite all --expected-failures "$here/expected-failures.yaml" \
    -o "${RESULTS:-conformance-results}" "$@"
