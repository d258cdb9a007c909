# The first two targets are the README's first two commands.
.PHONY: dev test lint sam-build invoke sam-api bench

## Run the service locally on DynamoDB Local (or AWS_ENDPOINT_URL_DYNAMODB when set).
dev:
	@scripts/dev.sh

## Lint, build for AWS, and run every test against a DynamoDB Local this starts and stops.
test:
	@scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked

## sam validate --lint, sam build (arm64, cargo-lambda + zig from PyPI), artifact check.
sam-build:
	@scripts/sam-build.sh

## Every events/*.json through cargo lambda watch + invoke (needs AWS_ENDPOINT_URL_DYNAMODB).
invoke:
	@scripts/invoke-events.sh

## Every route through `sam local start-api` (template.yaml's API, the arm64 bootstraps in Lambda
## containers; Docker set up by scripts/docker-engine.sh) over DynamoDB Local, like `make dev`.
sam-api:
	@scripts/sam-local.sh api

## Figures: handlers vs raw DynamoDB operations, cold starts vs a bare lambda_http binary.
bench:
	@scripts/bench.sh
