#!/usr/bin/env bash
# HTTP benchmarks of the risk service with wrk (apt-get install wrk), in separate processes:
#   scripts/bench-http.sh [SECONDS]                  (default 30 s per run)
#
# Starts a release `pmargin serve --demo` (bundled book, live replayed price feed) on a free
# 127.0.0.1 port with a temporary data directory, then measures
#   1. GET /v1/accounts/retail-btc at 100 and at 10 connections (p50/p99, requests/s), each
#      connection sending its next request as soon as it has the answer (a saturating closed
#      loop: with N connections the mean latency is N / throughput by construction);
#   2. the same GET from 100 connections each waiting a random 0-20 ms, then 0-2 ms, between
#      an answer and its next request (scripts/paced.lua): 100 clients offering about 10,000
#      and then as many requests/s as the service answers, with think times that keep them
#      out of step;
#   3. durable ingest: deposits POSTed to /v1/events with unique idempotency keys from 100
#      connections (scripts/ingest.lua), acknowledged only once committed.
# Prints the load average with each run: other processes on the machine skew the numbers.
set -euo pipefail
SECS=${1:-30}
ACCOUNT=${ACCOUNT:-retail-btc}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
command -v wrk >/dev/null || { echo "bench-http: wrk is not installed" >&2; exit 2; }
# PMARGIN_BIN: a pmargin binary to use instead of building one.
BIN=${PMARGIN_BIN:-$TARGET/release/pmargin}
[ -n "${PMARGIN_BIN:-}" ] || cargo build --release -q -p pmargin
DATA=$(mktemp -d "${TMPDIR:-/tmp}/pmbench.XXXXXX")
KEY="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PMARGIN_ADMIN_KEY=$KEY "$BIN" serve --demo --listen 127.0.0.1:0 \
  --data-dir "$DATA" >"$DATA/serve.log" 2>&1 &
SERVER=$!
trap 'kill -INT $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
URL=
for _ in $(seq 100); do
  URL=$(sed -n 's/^pmargin serve: listening on \(http:[^ ]*\).*/\1/p' "$DATA/serve.log")
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { cat "$DATA/serve.log"; exit 2; }
curl -sf -o /dev/null -H "Authorization: Bearer $KEY" "$URL/v1/accounts/$ACCOUNT"

for c in 100 10; do
  echo "== GET /v1/accounts/$ACCOUNT, $c connections, $SECS s (load average $(uptime | sed 's/.*load average: //'))"
  wrk -t1 -c"$c" -d"${SECS}s" --latency -H "Authorization: Bearer $KEY" "$URL/v1/accounts/$ACCOUNT" |
    grep -E "50%|90%|99%|Requests/sec|Non-2xx|Socket errors"
done
for pace in 10 1; do
  echo "== GET /v1/accounts/$ACCOUNT, 100 connections pausing 0-$((2 * pace)) ms, $SECS s (load average $(uptime | sed 's/.*load average: //'))"
  PMARGIN_KEY=$KEY PACE_MS=$pace wrk -t1 -c100 -d"${SECS}s" --latency -s scripts/paced.lua "$URL/v1/accounts/$ACCOUNT" |
    grep -E "50%|90%|99%|Requests/sec|Non-2xx|Socket errors"
done
echo "== POST /v1/events (durable deposits), 100 connections, $SECS s (load average $(uptime | sed 's/.*load average: //'))"
PMARGIN_KEY=$KEY wrk -t1 -c100 -d"${SECS}s" -s scripts/ingest.lua "$URL" |
  grep -E "acknowledged|latency p50|Non-2xx|Socket errors"
curl -s -H "Authorization: Bearer $KEY" "$URL/metrics" | grep -E "^pmargin_(commit_seconds_(sum|count)|committed_events_total)"
echo "load average after: $(uptime | sed 's/.*load average: //')"
