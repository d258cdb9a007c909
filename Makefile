# The first two targets are the README's first two commands.
.PHONY: dev test lint

## Run the service locally on DynamoDB Local (or AWS_ENDPOINT_URL_DYNAMODB when set).
dev:
	@scripts/dev.sh

## Lint and run every test against a DynamoDB Local this starts and stops.
test:
	@scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
