#!/usr/bin/env python3
"""Prints .tools/demo.env for a running server: its base URL and the demo keys.

usage: demo_env.py DEMO_JSON BASE_URL   (DEMO_JSON: the output of `tokenctl seed-demo --json`)
"""
import json
import sys

if len(sys.argv) != 3:
    sys.exit(__doc__)
demo = json.loads(sys.argv[1])
print(f"BASE_URL={sys.argv[2]}")
print(f"ADMIN_KEY={demo['admin_key']}")
print(f"USER_KEY={demo['user_key']}")
