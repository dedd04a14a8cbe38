#!/usr/bin/env bash
# Load test of the risk service in its own process (issue 5):
#   scripts/loadtest.sh [SECONDS] [CLIENTS]        (default 30 s, 100 clients)
#
# Builds the release binary and the load generator, starts `pmargin serve` on a free
# 127.0.0.1 port with a temporary data directory (the demo book, no price feed, so that only
# the load writes events), runs crates/server/examples/load.rs against it (8 GETs : 1 what-if :
# 1 durable write, trades and deposits alternately), then restarts the server on the same
# data directory and checks that it recovers every event the run saw acknowledged.
# Exit status 0 only with zero errors and zero lost events.
set -euo pipefail
SECS=${1:-30}
CLIENTS=${2:-100}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# PMARGIN_BIN, LOAD_BIN: binaries to use instead of building them. PMARGIN_SERVE_ARGS: more
# arguments for `serve`, e.g. "--event-log nats://127.0.0.1:4222 --node-id A" to measure the
# replicated log (docs/DEPLOYMENT.md) on the same load.
BIN=${PMARGIN_BIN:-$TARGET/release/pmargin}
LOAD=${LOAD_BIN:-$TARGET/release/examples/load}
[ -n "${PMARGIN_BIN:-}" ] || cargo build --release -q -p pmargin
[ -n "${LOAD_BIN:-}" ] || cargo build --release -q -p pmargin-server --example load

DATA=$(mktemp -d "${TMPDIR:-/tmp}/pmlt.XXXXXX")
KEY="loadtest-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
SERVER=
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

serve() { # starts the server, sets SERVER and URL
  # Every write of the load comes from one key: far beyond the default per-key rate limit
  # (1,000 writes/s), which a venue adapter fits; the load sets its own.
  PMARGIN_ADMIN_KEY=$KEY "$BIN" serve --listen 127.0.0.1:0 --data-dir "$DATA" \
    --portfolio crates/cli/demo/portfolio.json --insurance-fund 1000000 \
    --rate-limit 1000000 --rate-burst 1000000 ${PMARGIN_SERVE_ARGS:-} >"$DATA/serve.log" 2>&1 &
  SERVER=$!
  URL=
  for _ in $(seq 100); do
    URL=$(sed -n 's/^pmargin serve: listening on \(http:[^ ]*\).*/\1/p' "$DATA/serve.log")
    [ -n "$URL" ] && break
    sleep 0.1
  done
  [ -n "$URL" ] || { cat "$DATA/serve.log"; echo "loadtest: the server did not start" >&2; exit 2; }
}

stop() {
  kill -INT "$SERVER"
  wait "$SERVER" || true
  SERVER=
}

serve
echo "load average before: $(uptime | sed 's/.*load average: //')"
set +e
"$LOAD" --url "$URL" --key "$KEY" --clients "$CLIENTS" --seconds "$SECS" | tee "$DATA/load.txt"
STATUS=${PIPESTATUS[0]}
set -e
echo "load average after:  $(uptime | sed 's/.*load average: //')"
SEQ=$(curl -s "$URL/healthz" | sed -n 's/.*"sequence":\([0-9]*\).*/\1/p')
stop

# Durability: a restart replays the log to the same sequence.
serve
RECOVERED=$(sed -n 's/.*recovered \([0-9]*\) events.*/\1/p' "$DATA/serve.log")
AFTER=$(curl -s "$URL/healthz" | sed -n 's/.*"sequence":\([0-9]*\).*/\1/p')
stop
echo "restart: recovered $RECOVERED events from the log, sequence $AFTER (before the restart: $SEQ)"
if [ "$RECOVERED" != "$SEQ" ] || [ "$AFTER" != "$SEQ" ]; then
  echo "loadtest: events lost across the restart" >&2
  exit 1
fi
exit "$STATUS"
