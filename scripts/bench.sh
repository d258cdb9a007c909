#!/usr/bin/env bash
# `make bench`: release builds of every function, the bench harness and its baseline, then the
# figures (handlers vs raw DynamoDB operations, cold starts) against a DynamoDB Local started here.
# `scripts/bench.sh coldstart` prints only the cold starts, which need no database.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}

# The bench and every function under functions/ (each is one of template.yaml's functions).
packages=(-p bench)
for function in functions/*/; do packages+=(-p "$(basename "$function")"); done
cargo build --release --locked --bins "${packages[@]}"

if [ "${1:-}" = coldstart ]; then
  exec env BENCH_BIN_DIR=target/release target/release/bench coldstart
fi

if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  trap 'scripts/dynamodb-local.sh stop bench' EXIT
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start bench)
  export AWS_ENDPOINT_URL_DYNAMODB
fi
echo "DynamoDB Local: $AWS_ENDPOINT_URL_DYNAMODB ($(nproc) cores)"
BENCH_BIN_DIR=target/release target/release/bench
