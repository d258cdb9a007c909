#!/usr/bin/env bash
# `make test`: lint, then every test against a DynamoDB Local started here and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export SAM_CLI_TELEMETRY=0

echo "== format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "== DynamoDB Local"
if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  trap 'scripts/dynamodb-local.sh stop test' EXIT
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start test)
  export AWS_ENDPOINT_URL_DYNAMODB
fi
echo "endpoint: $AWS_ENDPOINT_URL_DYNAMODB"

echo "== tests"
log=$(mktemp)
cargo test --workspace --all-features --locked 2>&1 | tee "$log"
# One closing line over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
