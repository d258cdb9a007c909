#!/usr/bin/env bash
# schemathesis (from PyPI) against `tokenctl serve` with the demo directory in a fresh table:
# generated requests for every operation of openapi.yaml; no 5xx, and every response (status,
# content type, body) as openapi.yaml describes it. Bounded by examples per operation and time.
# One worker: with two threads, hypothesis' ast.parse calls race in CPython 3.11 and schemathesis
# reports "AST constructor recursion depth mismatch" (CPython gh-106905), a crash of the tool.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${AWS_ENDPOINT_URL_DYNAMODB:?start DynamoDB Local first (make test does)}"
scripts/venv.sh

export TABLE_NAME="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
export PERMANENT_TOKEN_KEY
PERMANENT_TOKEN_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cargo build --quiet -p tokenctl
target/debug/tokenctl init >/dev/null
admin=$(target/debug/tokenctl seed-demo --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["admin_key"])')

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/tokenctl serve --port "$port" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$port" 2>/dev/null && break
  sleep 0.1
done

.venv/bin/schemathesis run openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $admin" \
  --header "authtype: Key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
  --max-time "${SCHEMATHESIS_SECONDS:-120}" \
  --seed 20261123 \
  --workers 1 \
  --no-color
