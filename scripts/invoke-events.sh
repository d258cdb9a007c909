#!/usr/bin/env bash
# Every events/*.json through the real Lambda runtime API: `cargo lambda watch` (the runtime API
# emulator, running the functions' own binaries) and `cargo lambda invoke`, against the DynamoDB
# at AWS_ENDPOINT_URL_DYNAMODB with the demo directory seeded in a fresh table.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AWS_ENDPOINT_URL_DYNAMODB:?start DynamoDB Local first (make test does)}"
scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH"

table="invoke-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
export TABLE_NAME=$table
export PERMANENT_TOKEN_KEY
PERMANENT_TOKEN_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
export SECRET_SCANNING_KEYS
SECRET_SCANNING_KEYS=$(scripts/scanning-key.sh)
cargo build --quiet -p tokenctl
target/debug/tokenctl init >/dev/null
demo=$(target/debug/tokenctl seed-demo --json)

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# EventBridge has no emulator: the events function publishes to a local recorder of PutEvents.
recorder_port=$(free_port)
export PUTEVENTS_LOG EVENT_BUS_NAME=tokens-invoke AWS_ENDPOINT_URL_EVENTBRIDGE="http://127.0.0.1:$recorder_port"
PUTEVENTS_LOG=$(mktemp)
python3 scripts/putevents_recorder.py 127.0.0.1 "$recorder_port" "$PUTEVENTS_LOG" &
recorder=$!
port=$(free_port)
log=$(mktemp)
cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$port" --ignore-changes >"$log" 2>&1 &
watch=$!
trap 'kill $watch $recorder 2>/dev/null || true; wait $watch 2>/dev/null || true; rm -f "$log" "$PUTEVENTS_LOG"' EXIT
for _ in $(seq 1 100); do
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
  kill -0 "$watch" 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.2
done
python3 scripts/invoke_events.py cargo "$port" "$demo" || { echo "cargo lambda watch log:"; tail -50 "$log"; exit 1; }
