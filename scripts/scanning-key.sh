#!/usr/bin/env bash
# The local stand-in for GitHub's secret-scanning keys: a P-256 key pair whose private half,
# .tools/dev-secret-scanning-key.pem (made once, with openssl), signs reports the way GitHub signs
# them, and whose public half this prints as the SECRET_SCANNING_KEYS document (the shape of
# GitHub's /meta/public_keys/secret_scanning answer), under the identifier `local-dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
key=.tools/dev-secret-scanning-key.pem
mkdir -p .tools
if [ ! -s "$key" ]; then
  (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$key.tmp" 2>/dev/null)
  mv "$key.tmp" "$key"
fi
openssl ec -in "$key" -pubout 2>/dev/null | python3 -c '
import json, sys
print(json.dumps({"public_keys": [
    {"key_identifier": "local-dev", "key": sys.stdin.read(), "is_current": True}]}))'
