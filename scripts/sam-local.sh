#!/usr/bin/env bash
# The deployable form, run for real: template.yaml's API and the arm64 `bootstrap` files of
# `sam build`, each function in a Lambda container (SAM's runtime interface emulator on a base
# image built here, never pulled), against DynamoDB Local or AWS_ENDPOINT_URL_DYNAMODB.
#
#   scripts/sam-local.sh api      `make sam-api`: every route through `sam local start-api` on
#                                 http://127.0.0.1:${PORT:-3000}, the demo directory in
#                                 ${TABLE_NAME:-tokens-sam}, its keys in .tools/demo.env
#   scripts/sam-local.sh invoke   every events/*.json through `sam local invoke` (make test)
#   scripts/sam-local.sh suites   start-api in the background, then the walkthrough (docs/WALKTHROUGH.md) and the
#                                 HTTP authorization matrix against it (make test)
#
# Stops what it started (start-api and its containers, the port forwarder, DynamoDB Local, and a
# dockerd it started), also after a failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in api | invoke | suites) ;; *) echo "usage: $0 api|invoke|suites" >&2; exit 2 ;; esac

export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export SAM_CLI_TELEMETRY=0
scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p .tools/run

sam_pid= forwarder= recorder= tail_pid= started_dynamodb= work=$(mktemp -d)
cleanup() {
  if [ -n "$sam_pid" ]; then
    # start-api leaves its warm containers and lingers after SIGINT: end its group, then the
    # containers go with the engine's cleanup below.
    kill -INT -- "-$sam_pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$sam_pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$sam_pid" 2>/dev/null || true
  fi
  for pid in $forwarder $recorder $tail_pid; do kill "$pid" 2>/dev/null || true; done
  scripts/docker-engine.sh stop || true
  if [ -n "$started_dynamodb" ]; then scripts/dynamodb-local.sh stop sam || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stage() { echo "sam-local: $1 in $((SECONDS - stage_start)) s"; stage_start=$SECONDS; }
stage_start=$SECONDS
[ -f .aws-sam/build/template.yaml ] || scripts/sam-build.sh
scripts/docker-engine.sh start
stage "Docker engine ready"
image=$(scripts/docker-engine.sh image)
stage "base image $image ready"

if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  started_dynamodb=1
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start sam)
  export AWS_ENDPOINT_URL_DYNAMODB
fi

# The endpoint as the containers reach it: a loopback one through Docker's bridge gateway, where
# DynamoDB Local listens on every interface, or through a forwarder on the gateway otherwise.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
reachable() { python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)' "$1" "$2" 2>/dev/null; }
read -r scheme host port < <(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(p.scheme, p.hostname, p.port or (443 if p.scheme == "https" else 80))' "$AWS_ENDPOINT_URL_DYNAMODB")
container_endpoint=$AWS_ENDPOINT_URL_DYNAMODB
if [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; then
  # The bridge's gateway address (dockerd 20.10 leaves it out of the network's IPAM settings).
  gateway=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
  [ -n "$gateway" ] || gateway=$(ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]}')
  [ -n "$gateway" ] || gateway=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' \
    | python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.stdin.read().strip()).hosts()))')
  if reachable "$gateway" "$port"; then
    container_endpoint="$scheme://$gateway:$port"
  else
    relay=$(free_port)
    python3 scripts/forward.py "$gateway" "$relay" 127.0.0.1 "$port" &
    forwarder=$!
    for _ in $(seq 1 50); do reachable "$gateway" "$relay" && break; sleep 0.1; done
    container_endpoint="$scheme://$gateway:$relay"
  fi
fi

if [ "$mode" = api ]; then
  table=${TABLE_NAME:-tokens-sam}
else
  table="sam-$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
fi
export TABLE_NAME=$table
key_file=.tools/dev-permanent-token-key
if [ -z "${PERMANENT_TOKEN_KEY:-}" ]; then
  [ -s "$key_file" ] || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$key_file"
  PERMANENT_TOKEN_KEY=$(cat "$key_file")
fi
export PERMANENT_TOKEN_KEY
echo "DynamoDB: $AWS_ENDPOINT_URL_DYNAMODB (containers: $container_endpoint), table $table; base image $image"

cargo build --quiet -p tokenctl
target/debug/tokenctl init >/dev/null
# The suites seed the walkthrough's demo directory themselves, on the fresh table.
demo='{"admin_key": "", "user_key": ""}'
[ "$mode" = suites ] || demo=$(target/debug/tokenctl seed-demo --json)

# TABLE_NAME is !Ref TokensTable in the template, which SAM resolves to the logical id: set it
# for every function. The endpoint is declared through a template parameter, and set here too,
# since SAM would otherwise take this shell's own (loopback) value of a declared variable.
# SECRET_SCANNING_KEYS (declared by the leak-response function) trusts the local key pair of
# scripts/scanning-key.sh, which the walkthrough and the sample event sign reports with.
SECRET_SCANNING_KEYS=${SECRET_SCANNING_KEYS:-$(scripts/scanning-key.sh)}
# EventBridge has no emulator: the events function publishes to a local recorder of PutEvents,
# listening on the bridge's gateway for the containers. Its endpoint goes in env.json too: SAM
# resolves the template's conditional value of it to an empty string.
export PUTEVENTS_LOG="$work/putevents.jsonl" EVENT_BUS_NAME=tokens-sam
: >"$PUTEVENTS_LOG"
recorder_host=${gateway:-127.0.0.1}
recorder_port=$(free_port)
python3 -c 'import json, sys; print(json.dumps({"Parameters": {"TABLE_NAME": sys.argv[1],
  "AWS_ENDPOINT_URL_DYNAMODB": sys.argv[2], "SECRET_SCANNING_KEYS": sys.argv[3],
  "AWS_ENDPOINT_URL_EVENTBRIDGE": sys.argv[4]}}))' \
  "$table" "$container_endpoint" "$SECRET_SCANNING_KEYS" "http://$recorder_host:$recorder_port" >"$work/env.json"
python3 scripts/putevents_recorder.py "$recorder_host" "$recorder_port" "$PUTEVENTS_LOG" &
recorder=$!
sam_args=(--invoke-image "$image" --skip-pull-image --env-vars "$work/env.json"
  --parameter-overrides "DynamoDbEndpoint=$container_endpoint PermanentTokenKey=$PERMANENT_TOKEN_KEY EventBusName=$EVENT_BUS_NAME EventBridgeEndpoint=http://$recorder_host:$recorder_port")

if [ "$mode" = invoke ]; then
  python3 scripts/invoke_events.py sam "$demo" "${sam_args[@]}"
  stage "every event through sam local invoke"
  exit 0
fi

api_port=${PORT:-3000}
[ "$mode" = api ] || api_port=$(free_port)
if ! python3 -c 'import socket, sys; socket.create_server(("127.0.0.1", int(sys.argv[1]))).close()' "$api_port" 2>/dev/null; then
  echo "port $api_port on 127.0.0.1 is in use; stop what holds it or set PORT" >&2
  exit 1
fi
setsid sam local start-api --host 127.0.0.1 --port "$api_port" --warm-containers EAGER \
  "${sam_args[@]}" >"$work/start-api.log" 2>&1 &
sam_pid=$!
base_url="http://127.0.0.1:$api_port"
for _ in $(seq 1 600); do
  reachable 127.0.0.1 "$api_port" && break
  kill -0 "$sam_pid" 2>/dev/null || { cat "$work/start-api.log" >&2; exit 1; }
  sleep 0.5
done
stage "sam local start-api listening on $base_url"
if [ "$mode" = api ]; then
  python3 scripts/demo_env.py "$demo" "$base_url" >.tools/demo.env
  cat <<INFO

Every route through sam local start-api on $base_url (each function the arm64 bootstrap of
sam build, in a Lambda container). The demo keys are in .tools/demo.env:
$(sed 's/^/    /' .tools/demo.env)

In another shell:  . .tools/demo.env   then follow docs/WALKTHROUGH.md. Ctrl-C stops it all.
INFO
  tail -n +1 -f "$work/start-api.log" &
  tail_pid=$!
  wait "$sam_pid"
  exit 0
fi

export SAM_API_URL=$base_url SAM_API_TABLE=$table
# The walkthrough first, on the fresh table (it expects the demo platform to be the first).
for suite in readme hardening; do
  cargo test --locked -p system-tests --test "$suite" -- --ignored --test-threads 1 \
    || { echo "sam local start-api log:"; tail -80 "$work/start-api.log"; exit 1; }
  stage "the $suite suite through start-api"
done
