#!/usr/bin/env bash
# `make test`: lint, the SAM template and arm64 build, every test against a DynamoDB Local started
# here, every sample event through the Lambda runtime API, schemathesis, then the deployable form
# under SAM local (Docker set up as needed). Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-local}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-local}
export SAM_CLI_TELEMETRY=0

echo "== format, lint and docs"
cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

echo "== tools (SAM CLI, cargo-lambda, zig) and DynamoDB Local"
scripts/venv.sh
scripts/dynamodb-local.sh fetch

echo "== SAM: validate --lint, build arm64"
scripts/sam-build.sh

echo "== DynamoDB Local"
if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  trap 'scripts/dynamodb-local.sh stop test' EXIT
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start test)
  export AWS_ENDPOINT_URL_DYNAMODB
fi
echo "endpoint: $AWS_ENDPOINT_URL_DYNAMODB"

log=$(mktemp)
echo "== tests"
cargo test --workspace --all-features --locked 2>&1 | tee "$log"

echo "== sample events through the Lambda runtime API (cargo lambda watch + invoke)"
scripts/invoke-events.sh 2>&1 | tee -a "$log"

echo "== schemathesis against tokenctl serve (openapi.yaml)"
scripts/schemathesis.sh

echo "== SAM local: every event through sam local invoke, then the walkthrough and the matrix through start-api"
scripts/sam-local.sh invoke 2>&1 | tee -a "$log"
scripts/sam-local.sh suites 2>&1 | tee -a "$log"

# One closing line over every cargo test binary and the invocations.
awk '/^test result:/ { passed += $4; failed += $6 }
     /^invoke: [0-9]+ passed/ { passed += $2; failed += $4 }
     END { printf "%d passed, %d failed\n", passed, failed }' "$log"
rm -f "$log"
