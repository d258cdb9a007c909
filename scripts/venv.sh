#!/usr/bin/env bash
# The git-ignored virtual environment with the SAM CLI, cargo-lambda and zig (from PyPI).
# Re-installs only when scripts/requirements.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements
if [ -x .venv/bin/sam ] && [ -f "$stamp" ] && cmp -s scripts/requirements.txt "$stamp"; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
cp scripts/requirements.txt "$stamp"
