#!/usr/bin/env bash
# `make bench`: release builds of every function, the bench harness and its baseline, then the
# figures (handlers vs raw DynamoDB operations, cold starts) against a DynamoDB Local started here,
# then the fault run against a DynamoDB Local of its own, which it pauses (SIGSTOP) and resumes.
# `scripts/bench.sh coldstart` prints only the cold starts, which need no database;
# `scripts/bench.sh faults` only the fault run.
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

# The fault run pauses the process: always an instance of its own, never the user's.
fault_run() {
  trap 'scripts/dynamodb-local.sh stop faults' RETURN
  local endpoint pid
  endpoint=$(scripts/dynamodb-local.sh start faults)
  pid=$(sed -n 's/^PID=//p' .tools/run/faults.env)
  AWS_ENDPOINT_URL_DYNAMODB=$endpoint DYNAMODB_LOCAL_PID=$pid target/release/bench faults
}

if [ "${1:-}" = faults ]; then
  fault_run
  exit 0
fi

own=
if [ -z "${AWS_ENDPOINT_URL_DYNAMODB:-}" ]; then
  own=bench
  trap 'scripts/dynamodb-local.sh stop bench' EXIT
  AWS_ENDPOINT_URL_DYNAMODB=$(scripts/dynamodb-local.sh start bench)
fi
echo "DynamoDB Local: $AWS_ENDPOINT_URL_DYNAMODB ($(nproc) cores)"
AWS_ENDPOINT_URL_DYNAMODB=$AWS_ENDPOINT_URL_DYNAMODB BENCH_BIN_DIR=target/release target/release/bench
[ -n "$own" ] && scripts/dynamodb-local.sh stop bench
fault_run
