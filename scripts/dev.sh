#!/usr/bin/env bash
# `make dev`: every route on http://127.0.0.1:${PORT:-3000}, over DynamoDB Local (in memory; or
# your own endpoint when AWS_ENDPOINT_URL_DYNAMODB is set), with a demo directory and its keys.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export TABLE_NAME=${TABLE_NAME:-tokens-dev}
port=${PORT:-3000}

mkdir -p .tools
key_file=.tools/dev-permanent-token-key
if [ -z "${PERMANENT_TOKEN_KEY:-}" ]; then
  [ -s "$key_file" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$key_file"
  PERMANENT_TOKEN_KEY=$(cat "$key_file")
  export PERMANENT_TOKEN_KEY
fi
# Reports signed with the local key pair are accepted, as GitHub's are on AWS (see docs/LEAK-RESPONSE.md).
if [ -z "${SECRET_SCANNING_KEYS:-}" ]; then
  SECRET_SCANNING_KEYS=$(scripts/scanning-key.sh)
  export SECRET_SCANNING_KEYS
fi

if ! python3 -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' "$port" 2>/dev/null; then
  echo "port $port on 127.0.0.1 is in use (another make dev?); stop it or run PORT=3001 make dev" >&2
  exit 1
fi

server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  if [ -n "${started_dynamodb:-}" ]; then scripts/dynamodb-local.sh stop dev || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  started_dynamodb=1
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start dev)
  export AWS_ENDPOINT_URL_DYNAMODB
fi
echo "DynamoDB: $AWS_ENDPOINT_URL_DYNAMODB, table $TABLE_NAME"

cargo build --quiet -p tokenctl
tokenctl=target/debug/tokenctl
$tokenctl init
demo=$($tokenctl seed-demo --json)
python3 scripts/demo_env.py "$demo" "http://127.0.0.1:$port" >.tools/demo.env
cat <<INFO

Demo directory:
  admin 1001 (admin@demo.test), user 1002 (john@example.com, customer id 048372910564),
  blocked user 1003. Their keys are in .tools/demo.env:
$(sed 's/^/    /' .tools/demo.env)

In another shell:  . .tools/demo.env   then follow docs/WALKTHROUGH.md.
INFO
$tokenctl serve --port "$port" &
server=$!
wait "$server"
