#!/usr/bin/env python3
"""Sends every sample event in events/ through a real Lambda runtime and checks each response's
statusCode and body shape.

usage: invoke_events.py cargo PORT DEMO_JSON
           through `cargo lambda watch` (must be running on PORT) and `cargo lambda invoke`
       invoke_events.py sam DEMO_JSON SAM_ARGS...
           through `sam local invoke FUNCTION -e EVENT SAM_ARGS...`: the arm64 bootstraps of
           `sam build`, each in a Lambda container
(DEMO_JSON: the output of `tokenctl seed-demo --json`.) Prints one line per event and a closing
'invoke: N passed, N failed'; exits non-zero on any failure.
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = sys.argv[1]
if runner == "cargo":
    port, demo = sys.argv[2], json.loads(sys.argv[3])
    how = "the runtime API"

    def command(function, path):
        return ["cargo", "lambda", "invoke", function, "--data-file", path, "--invoke-address",
                "127.0.0.1", "--invoke-port", port, "--output-format", "json"]
elif runner == "sam":
    demo, sam_args = json.loads(sys.argv[2]), sys.argv[3:]
    how = "sam local invoke"

    def command(function, path):
        return ["sam", "local", "invoke", logical_ids[function], "-e", path, *sam_args]
else:
    sys.exit(__doc__)

# From template.yaml: each function folder's logical id (CodeUri: functions/<folder>), the folder
# that serves each (METHOD, path) of the API's events, and the folder of the API's authorizer.
logical_ids, folders, routes, authorizer_id = {}, {}, {}, None
current, path = None, None
with open(os.path.join(root, "template.yaml")) as f:
    for line in f:
        if match := re.match(r"^  ([A-Za-z0-9]+):\s*$", line):
            current = match.group(1)
        elif match := re.match(r"^\s+CodeUri: functions/([a-z0-9-]+)\s*$", line):
            logical_ids[match.group(1)] = current
            folders[current] = match.group(1)
        elif match := re.match(r"^\s+Path: (/\S*)\s*$", line):
            path = match.group(1)
        elif match := re.match(r"^\s+Method: ([a-z]+)\s*$", line):
            routes[(match.group(1).upper(), path)] = current
        elif match := re.match(r"^\s+FunctionArn: !GetAtt ([A-Za-z0-9]+)\.Arn\s*$", line):
            authorizer_id = match.group(1)


def function_of(event):
    """The folder of the function that receives `event`, as API Gateway routes it."""
    if event.get("type") == "REQUEST":
        return folders[authorizer_id]
    if "Records" in event:
        return "events"
    return folders[routes[(event["httpMethod"], event["resource"])]]


values = {"ADMIN_KEY": demo["admin_key"], "USER_KEY": demo["user_key"]}


def keys(*names):
    return lambda body: set(body) == set(names)


# (event, expected status, body check, placeholder the response's id fills)
def published_once(response):
    """The stream sample: nothing to send again, and its one audit event on the recorder of
    PutEvents (PUTEVENTS_LOG) with its id, on the bus, from token-service."""
    if response != {"batchItemFailures": []}:
        return False
    with open(os.environ["PUTEVENTS_LOG"]) as log:
        entries = [json.loads(line) for line in log if line.strip()]
    return [(e["Source"], e["DetailType"], json.loads(e["Detail"])["id"], e["EventBusName"])
            for e in entries] == [("token-service", "token.created", "000661e0c4a5b4c0a1b2c3d4",
                                   os.environ["EVENT_BUS_NAME"])]


STEPS = [
    ("admin-token-post", 200,
     lambda b: keys("message", "user", "token", "token_name")(b) and b["user"]["id"] == 1002, None),
    ("customer-token-post", 200,
     lambda b: keys("message", "customerid", "customer_api_key", "name", "expires", "id")(b)
     and isinstance(b["expires"], int), "CUSTOMER_TOKEN_ID"),
    ("customer-token-delete", 200,
     lambda b: b["message"] == "API token revoked successfully" and keys("message", "id")(b), None),
    ("get-user-token-get", 200,
     lambda b: b["success"] is True and keys("key", "active")(b["data"]["permanentToken"]), None),
    ("get-user-token-rotate", 200,
     lambda b: b["success"] is True and keys("key", "active")(b["data"]["permanentToken"]), None),
    ("api-keys-post", 201,
     lambda b: keys("id", "name", "token", "created_at", "expires_at")(b["api_key"]), "KEY_ID"),
    ("api-keys-get", 200,
     lambda b: all(keys("id", "name", "created_at", "last_used_at", "expires_at", "enabled")(k)
                   for k in b["api_keys"])
     and len(b["api_keys"]) == 3, None),
    ("api-keys-patch", 200,
     lambda b: b["message"] == "API key updated successfully."
     and b["api_key"]["name"] == "Production API Key (renamed)", None),
    ("api-keys-roll", 201,
     lambda b: b["message"] == "API key rolled successfully." and keys("id", "expires_at")(b["previous"]),
     "KEY_ID"),
    ("api-keys-delete", 200, keys("message"), None),
    ("api-tokens-post", 201,
     lambda b: keys("id", "name", "abilities", "token", "created_at", "expires_at")(b["data"]),
     "TOKEN_ID"),
    ("api-tokens-get", 200, lambda b: len(b["data"]) == 1, None),
    ("api-tokens-patch", 200, lambda b: b["data"]["abilities"] == ["calls:read"], None),
    ("api-tokens-roll", 201,
     lambda b: b["data"]["abilities"] == ["calls:read"] and keys("id", "expires_at")(b["previous"]),
     "TOKEN_ID"),
    # The rolled personal token's own limits, before it is deleted.
    ("token-limits-put", 200,
     lambda b: b == {"data": {"credits": {"remaining": 500, "refill": None}, "rate_limit": None}},
     None),
    ("api-tokens-delete", 200, keys("message"), None),
    # Limits shared by every key of user 1002; verify (without consume) reports them.
    ("user-limits-put", 200,
     lambda b: b["data"]["credits"]["remaining"] == 10000
     and b["data"]["rate_limit"] == {"limit": 50, "window_seconds": 1}, None),
    ("tokens-verify-post", 200,
     lambda b: b["valid"] is True and b["code"] == "VALID" and b["token"]["user_id"] == 1002
     and b["credits"] == {"remaining": 10000} and b["ratelimit"]["limit"] == 50, None),
    ("user-me-get", 200,
     lambda b: b["user"]["id"] == 1002 and b["token"]["abilities"] == ["*"], None),
    # Not an HTTP event: the response is the policy itself (checked below).
    ("authorizer-request", None,
     lambda p: p["policyDocument"]["Statement"][0]["Effect"] == "Allow"
     and p["policyDocument"]["Statement"][0]["Resource"].endswith("/prod/GET/api/user/me")
     and p["context"]["user_id"] == 1002 and p["context"]["credits_remaining"] == 9999, None),
    # The changes above, newest first (the admin's platform: its users' events).
    ("audit-events-get", 200,
     lambda b: keys("data", "next_cursor")(b) and len(b["data"]) == 5
     and b["data"][0]["action"] == "limits.updated"
     and all(keys("id", "at", "platform_id", "action", "actor", "target", "source", "details")(e)
             for e in b["data"]), None),
    # The integration API, with the admin's `*` token: a service key made, listed and revoked;
    # a user created, found by external id, read, changed; a key minted for 1002, listed,
    # revoked.
    ("service-keys-post", 201,
     lambda b: keys("id", "name", "permissions", "token", "created_at", "expires_at")(b["data"])
     and b["data"]["token"].startswith("tkns_"), "SERVICE_KEY_ID"),
    ("service-keys-get", 200,
     lambda b: len(b["data"]) == 1 and "token" not in b["data"][0], None),
    ("service-keys-delete", 200,
     lambda b: b == {"message": "Service key revoked successfully."}, None),
    ("users-post", 201,
     lambda b: b["data"]["external_id"] == "crm-2001" and b["data"]["meta"] == {"plan": "team"}, None),
    ("users-get", 200, lambda b: b["data"]["id"] == 1002, None),
    ("user-get", 200, lambda b: b["data"]["external_id"] == "crm-1002", None),
    ("user-patch", 200, lambda b: b["data"]["meta"] == {"plan": "enterprise"}, None),
    # Another system's keys for 1002: a Sanctum plaintext by id, an export's hash by external
    # id, the first again (existing), and an entry with an unknown owner and a bad hash.
    ("tokens-import-post", 200,
     lambda b: [e["status"] for e in b["data"]] == ["imported", "imported", "existing", "error"]
     and b["data"][2]["id"] == b["data"][0]["id"] and "error" in b["data"][3], None),
    ("user-tokens-post", 201,
     lambda b: b["data"]["kind"] == "api_key" and b["data"]["meta"] == {"env": "prod"}, "USER_TOKEN_ID"),
    ("user-tokens-get", 200,
     lambda b: len(b["data"]) >= 2 and all("token" not in t for t in b["data"]), None),
    ("user-tokens-delete", 200,
     lambda b: b == {"message": "Token revoked successfully."}, None),
    # Last, as they revoke the demo keys: the user's key reported leaked, the admin's revoked by
    # its holder.
    ("secret-scanning-verify-post", 200,
     lambda b: [e["label"] for e in b] == ["true_positive", "false_positive"]
     and all(set(e) == {"token_hash", "token_type", "label"} for e in b), None),
    ("tokens-revoke-post", 202, lambda b: b == {"message": "Accepted."}, None),
    # A stream batch to the events function: its audit event on the local PutEvents recorder.
    ("events-stream", None, published_once, None),
]


def signed(text):
    """The event with its body signed by the local secret-scanning key, as GitHub signs a report
    (scripts/scanning-key.sh made the key and the functions trust it as `local-dev`)."""
    event = json.loads(text)
    signature = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", os.path.join(root, ".tools/dev-secret-scanning-key.pem")],
        input=event["body"].encode(), capture_output=True, check=True).stdout
    return text.replace("{{SCANNING_SIGNATURE}}", base64.b64encode(signature).decode())

covered = {step[0] for step in STEPS}
on_disk = {name[:-5] for name in os.listdir(os.path.join(root, "events")) if name.endswith(".json")}
failures = [f"{name}: no invocation step" for name in sorted(on_disk - covered)]
passed = 0
# INVOKE_ONLY=step[,step...]: those steps alone (the ones whose ids they need must be among them).
only = set(filter(None, os.environ.get("INVOKE_ONLY", "").split(",")))
for event, status, check, fills in STEPS:
    if only and event not in only:
        continue
    with open(os.path.join(root, "events", event + ".json")) as f:
        text = f.read()
    function = function_of(json.loads(text))
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{SCANNING_SIGNATURE}}" in text:
        text = signed(text)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(text)
        path = f.name
    result = subprocess.run(command(function, path), capture_output=True, text=True, timeout=600)
    os.unlink(path)
    try:
        # The whole output (cargo lambda), or its last line (sam prints its progress before it).
        try:
            response = json.loads(result.stdout)
        except ValueError:
            response = json.loads(result.stdout.strip().splitlines()[-1])
        if status is None:
            body = response
            ok = check(response)
            response = {"statusCode": "policy"}
        else:
            body = json.loads(response["body"])
            ok = response["statusCode"] == status and check(body)
    except Exception as error:  # a Lambda error, or not an API Gateway response
        response, body, ok = None, f"{error}: {result.stdout} {result.stderr}", False
    if not ok:
        # The function's own log (sam prints the container's output on stderr).
        print("\n".join(result.stderr.strip().splitlines()[-40:]), file=sys.stderr)
    if ok:
        passed += 1
        print(f"ok   {event}: {response['statusCode']} via {how} ({function})")
        if fills:
            inner = body.get("api_key") or body.get("data") or body
            values[fills] = inner["id"]
    else:
        failures.append(f"{event}: {response and response.get('statusCode')} {body}")
        print(f"FAIL {event}: {failures[-1]}")

for failure in failures:
    print("failure:", failure)
print(f"invoke: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
