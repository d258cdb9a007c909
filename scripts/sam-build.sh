#!/usr/bin/env bash
# `sam validate --lint` and `sam build` (cargo-lambda + zig cross-compiling every function to
# arm64, no Docker), then a check that each bootstrap is an aarch64 ELF, with its zipped size.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
sam validate --lint
if command -v rustup >/dev/null; then
  rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
fi
sam build --beta-features
python3 scripts/check_artifacts.py
