#!/usr/bin/env bash
# DynamoDB Local (Amazon's own emulator, shipped inside the npm package amplify-dynamodb-simulator)
# in the git-ignored .tools folder.
#
#   scripts/dynamodb-local.sh fetch         download and unpack it once
#   scripts/dynamodb-local.sh start NAME    start it on a free 127.0.0.1 port; prints the endpoint URL
#   scripts/dynamodb-local.sh stop NAME     stop the instance NAME started
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
version=2.9.30
dir="$root/.tools/dynamodb-local"
run="$root/.tools/run"

fetch() {
  [ -f "$dir/DynamoDBLocal.jar" ] && return 0
  command -v java >/dev/null || { echo "java (17 or later) is needed to run DynamoDB Local" >&2; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack "amplify-dynamodb-simulator@$version" --silent >/dev/null)
  tar xzf "$tmp"/amplify-dynamodb-simulator-*.tgz -C "$tmp"
  mkdir -p "$dir"
  cp -R "$tmp/package/emulator/." "$dir/"
  rm -rf "$tmp"
  [ -f "$dir/DynamoDBLocal.jar" ] || { echo "the package holds no DynamoDBLocal.jar" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local name=$1 port pid
  fetch
  mkdir -p "$run"
  stop "$name" 2>/dev/null || true
  port=$(free_port)
  (cd "$dir" && exec java -Xmx1g -Djava.library.path=DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -port "$port" >"$run/$name.log" 2>&1) &
  pid=$!
  printf 'PID=%s\nPORT=%s\n' "$pid" "$port" >"$run/$name.env"
  for _ in $(seq 1 150); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "DynamoDB Local did not answer on port $port; its log:" >&2
  cat "$run/$name.log" >&2
  stop "$name"
  exit 1
}

stop() {
  local name=$1
  [ -f "$run/$name.env" ] || return 0
  # shellcheck disable=SC1090
  . "$run/$name.env"
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  rm -f "$run/$name.env"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start "${2:?name}" ;;
  stop) stop "${2:?name}" ;;
  *) echo "usage: $0 fetch | start NAME | stop NAME" >&2; exit 2 ;;
esac
