//! `tokenctl` as an operator runs it, against DynamoDB Local: every command's JSON, and the
//! local server answering real HTTP.

use std::process::{Command, Output};

use serde_json::{json, Value};

use shared::test_support::{command_on, http, random_hex, LocalServer};

const KEY: &str = "cli-test-key-0123456789abcdef0123456789";

/// Runs tokenctl on `table`.
fn tokenctl(table: &str, args: &[&str]) -> Output {
    command_on(env!("CARGO_BIN_EXE_tokenctl"), table, KEY)
        .args(args)
        .output()
        .expect("run tokenctl")
}

/// Runs tokenctl with `--json`, expecting success and one JSON object on stdout.
fn ok(table: &str, args: &[&str]) -> Value {
    let output = tokenctl(table, args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{args:?}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).expect("JSON output")
}

fn table() -> String {
    let table = format!("cli-{}", random_hex(6));
    assert_eq!(
        ok(&table, &["init", "--json"]),
        json!({"table": table, "created": true})
    );
    table
}

fn serve(table: &str) -> (LocalServer, u16) {
    let server = LocalServer::start(command_on(env!("CARGO_BIN_EXE_tokenctl"), table, KEY));
    let port = server.port;
    (server, port)
}

#[test]
fn the_operator_path_from_an_empty_table_to_a_revoked_key() {
    let table = table();
    assert_eq!(ok(&table, &["init", "--json"])["created"], false);
    // A table of this release has nothing to backfill.
    assert_eq!(
        ok(&table, &["backfill", "--json"]),
        json!({"table": table, "found": 0, "expiry_days": 0, "credits_full": 0})
    );
    let platform = ok(&table, &["--json", "platform", "create", "--name", "Acme"]);
    let pid = platform["id"].as_u64().unwrap().to_string();
    let admin = ok(
        &table,
        &[
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "Admin@Acme.test",
            "--name",
            "Ada",
            "--admin",
            "--json",
        ],
    );
    assert_eq!(admin["customer_id"], Value::Null);
    assert_eq!(admin["role"], "admin");
    let customer = ok(
        &table,
        &[
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "c@acme.test",
            "--name",
            "Cy",
            "--id",
            "4242",
            "--customer-id",
            "048372910564",
            "--workspace",
            "Main",
            "--inactive-workspace",
            "Old",
            "--json",
        ],
    );
    assert_eq!(customer["id"], 4242);
    assert_eq!(customer["customer_id"], "048372910564");

    // Refusals are one JSON object with an error on stderr, nothing on stdout, and exit code 2
    // (the command line is the operator's to correct).
    let duplicate = tokenctl(
        &table,
        &[
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "admin@acme.test",
            "--name",
            "X",
            "--json",
        ],
    );
    assert_eq!(duplicate.status.code(), Some(2));
    assert!(duplicate.stdout.is_empty());
    let error: Value = serde_json::from_slice(&duplicate.stderr).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("email"),
        "{error}"
    );
    let bad = tokenctl(
        &table,
        &[
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "z@acme.test",
            "--name",
            "X",
            "--customer-id",
            "123",
            "--json",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    // A duplicate external id in the platform too; a bad one is refused before any write.
    let external = |email: &str, external: &str| {
        tokenctl(
            &table,
            &[
                "user",
                "create",
                "--platform",
                &pid,
                "--email",
                email,
                "--name",
                "E",
                "--external-id",
                external,
                "--meta",
                r#"{"plan":"pro"}"#,
                "--json",
            ],
        )
    };
    let first = external("e1@acme.test", "crm-1");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        (&first["external_id"], &first["meta"]),
        (&json!("crm-1"), &json!({"plan": "pro"}))
    );
    let again = external("e2@acme.test", "crm-1");
    assert_eq!(again.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&again.stderr).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("external id"),
        "{error}"
    );
    let too_long = external("e3@acme.test", &"x".repeat(129));
    assert_eq!(too_long.status.code(), Some(2));
    // A usage error clap finds is one JSON object on stderr too.
    let clap_error = tokenctl(&table, &["user", "create", "--platform", "x", "--json"]);
    assert_eq!(clap_error.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&clap_error.stderr).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("--platform"),
        "{error}"
    );

    let admin_id = admin["id"].as_u64().unwrap().to_string();
    let minted = ok(
        &table,
        &[
            "token",
            "mint",
            "--user",
            &admin_id,
            "--name",
            "bootstrap",
            "--json",
        ],
    );
    let token = minted["token"].as_str().unwrap().to_string();
    let id = minted["id"].as_str().unwrap().to_string();
    assert!(token.starts_with("tkna_"));
    let limited = ok(
        &table,
        &[
            "token",
            "mint",
            "--user",
            "4242",
            "--name",
            "ro",
            "--abilities",
            "calls:read,leads:read,tokens:manage",
            "--expires-in-days",
            "7",
            "--json",
        ],
    );
    assert_eq!(
        limited["abilities"],
        json!(["calls:read", "leads:read", "tokens:manage"])
    );
    assert!(limited["expires_at"].as_u64().is_some());

    let (_server, port) = serve(&table);
    let auth = format!("Bearer {token}");
    let (status, listed) = http(
        port,
        "GET",
        "/api/user/api-keys",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["api_keys"][0]["id"], id.as_str());
    let (status, body) = http(
        port,
        "POST",
        "/api/v1/global/users/gettokenbycustomerid",
        &[("token", &token), ("Content-Type", "application/json")],
        r#"{"customer_id":"048372910564","expiration_days":30}"#,
    );
    assert_eq!(status, 200, "{body}");

    assert_eq!(
        ok(&table, &["token", "revoke", &id, "--json"]),
        json!({"id": id, "revoked": true})
    );
    let after = http(
        port,
        "GET",
        "/api/user/api-keys",
        &[("Authorization", &auth)],
        "",
    );
    assert_eq!(after.0, 401);
    assert!(!tokenctl(&table, &["token", "revoke", &id, "--json"])
        .status
        .success());

    assert_eq!(
        ok(&table, &["user", "block", "4242", "--json"]),
        json!({"id": 4242, "status": "blocked"})
    );
    let limited_auth = format!("Bearer {}", limited["token"].as_str().unwrap());
    let blocked = http(
        port,
        "GET",
        "/api/v1/user/api-tokens",
        &[("Authorization", &limited_auth)],
        "",
    );
    assert_eq!(blocked.0, 401);
    assert_eq!(
        ok(&table, &["user", "unblock", "4242", "--json"])["status"],
        "active"
    );
    let unblocked = http(
        port,
        "GET",
        "/api/user/api-keys",
        &[("Authorization", &limited_auth)],
        "",
    );
    assert_eq!(unblocked.0, 200);
}

#[test]
fn seed_demo_is_repeatable_and_its_keys_work_over_http() {
    let table = table();
    let first = ok(&table, &["seed-demo", "--json"]);
    let second = ok(&table, &["seed-demo", "--json"]);
    assert_eq!(first["admin_id"], 1001);
    assert_eq!(first["platform_id"], second["platform_id"]);
    assert_ne!(first["admin_key"], second["admin_key"]);

    let (_server, port) = serve(&table);
    let admin = format!("Bearer {}", first["admin_key"].as_str().unwrap());
    let (status, body) = http(
        port,
        "POST",
        "/api/white-label/token",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        r#"{"email":"john@example.com"}"#,
    );
    assert_eq!((status, &body["user"]["id"]), (200, &json!(1002)), "{body}");
    let (status, body) = http(
        port,
        "GET",
        "/ext/get-user-token?userId=1002",
        &[("Authorization", &admin), ("authtype", "Key")],
        "",
    );
    assert_eq!((status, &body["success"]), (200, &json!(true)), "{body}");
    // `user rotate-permanent`: the key just read is refused at once, and the route answers
    // another one, which works.
    let permanent = format!(
        "Bearer {}",
        body["data"]["permanentToken"]["key"].as_str().unwrap()
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/user/me",
            &[("Authorization", &permanent)],
            ""
        )
        .0,
        200
    );
    assert_eq!(
        ok(&table, &["user", "rotate-permanent", "1002", "--json"]),
        json!({"id": 1002, "rotated": true})
    );
    assert_eq!(
        http(
            port,
            "GET",
            "/api/user/me",
            &[("Authorization", &permanent)],
            ""
        )
        .0,
        401
    );
    let (_, rotated) = http(
        port,
        "GET",
        "/ext/get-user-token?userId=1002",
        &[("Authorization", &admin), ("authtype", "Key")],
        "",
    );
    let next = format!(
        "Bearer {}",
        rotated["data"]["permanentToken"]["key"].as_str().unwrap()
    );
    assert_ne!(next, permanent);
    assert_eq!(
        http(port, "GET", "/api/user/me", &[("Authorization", &next)], "").0,
        200
    );
    assert!(
        !tokenctl(&table, &["user", "rotate-permanent", "424242", "--json"])
            .status
            .success()
    );
    let (status, body) = http(port, "GET", "/nowhere", &[], "");
    assert_eq!(
        (status, body),
        (
            404,
            json!({"message": "The route nowhere could not be found."})
        )
    );
    let huge = format!(r#"{{"name":"{}"}}"#, "x".repeat(20_000));
    let user = format!("Bearer {}", first["user_key"].as_str().unwrap());
    let (status, _) = http(
        port,
        "POST",
        "/api/user/api-keys",
        &[("Authorization", &user)],
        &huge,
    );
    assert_eq!(status, 413);
}

#[test]
fn text_output_and_usage_errors() {
    let table = table();
    let output = tokenctl(&table, &["platform", "create", "--name", "Text Co"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("name: Text Co"), "{text}");
    let missing = tokenctl(
        &table,
        &["token", "mint", "--user", "999999", "--name", "x", "--json"],
    );
    assert_eq!(missing.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&missing.stderr).unwrap();
    assert_eq!(error["error"], "no user with id 999999");
    let no_table = Command::new(env!("CARGO_BIN_EXE_tokenctl"))
        .args(["init", "--json"])
        .env_remove("TABLE_NAME")
        .output()
        .unwrap();
    assert_eq!(no_table.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_table.stderr).contains("TABLE_NAME"));
}

#[test]
fn usage_limits_are_set_replaced_and_cleared_by_the_operator() {
    let table = table();
    let platform = ok(
        &table,
        &["--json", "platform", "create", "--name", "Metered"],
    );
    let pid = platform["id"].as_u64().unwrap().to_string();
    let user = ok(
        &table,
        &[
            "--json",
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "m@m.test",
            "--name",
            "M",
        ],
    );
    let uid = user["id"].as_u64().unwrap().to_string();
    let minted = ok(
        &table,
        &["--json", "token", "mint", "--user", &uid, "--name", "k"],
    );
    let token_id = minted["id"].as_str().unwrap();

    let set = ok(
        &table,
        &[
            "--json",
            "limits",
            "user",
            &uid,
            "--credits",
            "5",
            "--refill-amount",
            "100",
            "--refill-interval",
            "day",
        ],
    );
    assert_eq!(
        set,
        json!({"data": {"credits": {"remaining": 5, "refill": {"amount": 100, "interval": "day"}}, "rate_limit": null}})
    );
    let set = ok(
        &table,
        &[
            "--json",
            "limits",
            "token",
            token_id,
            "--rate-limit",
            "3",
            "--window-seconds",
            "60",
        ],
    );
    assert_eq!(
        set,
        json!({"data": {"credits": null, "rate_limit": {"limit": 3, "window_seconds": 60}}})
    );
    // Each change is audited as the operator's.
    let events = ok(&table, &["--json", "audit", "--user", &uid, "--limit", "2"]);
    let actions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["limits.updated", "limits.updated"]);
    assert_eq!(events["data"][0]["actor"]["type"], "operator");
    assert_eq!(
        ok(&table, &["--json", "limits", "user", &uid, "--unlimited"]),
        json!({"data": {"credits": null, "rate_limit": null}})
    );

    // Refusals: what the route would answer 422 or 404 for, and no limit at all by accident.
    let uid = uid.as_str();
    for (args, expected) in [
        (vec!["limits", "user", uid], "--unlimited"),
        (
            vec!["limits", "user", uid, "--credits", "2000000000"],
            "credits.remaining",
        ),
        (
            vec![
                "limits",
                "user",
                uid,
                "--credits",
                "1",
                "--refill-amount",
                "5",
                "--refill-interval",
                "week",
            ],
            "credits.refill.interval",
        ),
        (
            vec!["limits", "user", "999999", "--credits", "1"],
            "no user 999999",
        ),
        (
            vec!["limits", "token", "nonsense", "--credits", "1"],
            "is not a token id",
        ),
        (
            vec![
                "limits",
                "token",
                "1-0123456789abcdef0123",
                "--credits",
                "1",
            ],
            "no token 1-0123456789abcdef0123",
        ),
    ] {
        let mut args = args;
        args.push("--json");
        let output = tokenctl(&table, &args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let error: Value = serde_json::from_slice(&output.stderr).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(expected),
            "{args:?}: {error}"
        );
    }
    // None of them changed anything.
    let events = ok(&table, &["--json", "audit", "--user", uid, "--limit", "5"]);
    assert_eq!(events["data"].as_array().unwrap().len(), 5);
    assert_eq!(
        events["data"][0]["details"]["limits"]["credits"],
        Value::Null
    );
}

#[test]
fn the_operator_can_answer_what_a_user_holds() {
    let table = table();
    let platform = ok(
        &table,
        &["--json", "platform", "create", "--name", "Show Co"],
    );
    let pid = platform["id"].as_u64().unwrap().to_string();
    let shown = ok(&table, &["--json", "platform", "show", &pid]);
    assert_eq!(shown["name"], "Show Co");
    let user = ok(
        &table,
        &[
            "--json",
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "Ann@Show.test",
            "--name",
            "Ann",
            "--external-id",
            "crm-ann",
            "--meta",
            r#"{"tier":"gold"}"#,
        ],
    );
    let uid = user["id"].as_u64().unwrap().to_string();
    assert_eq!(ok(&table, &["--json", "user", "show", &uid]), user);
    for find in [["--email", "ann@show.test"], ["--external-id", "crm-ann"]] {
        let found = ok(
            &table,
            &[
                "--json",
                "user",
                "find",
                "--platform",
                &pid,
                find[0],
                find[1],
            ],
        );
        assert_eq!(found["id"], user["id"], "{find:?}");
    }
    let missing = tokenctl(
        &table,
        &[
            "--json",
            "user",
            "find",
            "--platform",
            &pid,
            "--external-id",
            "crm-bob",
        ],
    );
    assert_eq!(missing.status.code(), Some(2));
    // Two keys, one revoked: the listing shows the live one, `show` either; no secret or hash.
    let first = ok(
        &table,
        &["--json", "token", "mint", "--user", &uid, "--name", "one"],
    );
    let second = ok(
        &table,
        &["--json", "token", "mint", "--user", &uid, "--name", "two"],
    );
    let first_id = first["id"].as_str().unwrap();
    ok(&table, &["--json", "token", "revoke", first_id]);
    let listed = ok(&table, &["--json", "token", "list", "--user", &uid]);
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second["id"].as_str().unwrap()]);
    let shown = ok(&table, &["--json", "token", "show", first_id]);
    assert_eq!(
        (&shown["state"], &shown["revoked_reason"], &shown["name"]),
        (&json!("revoked"), &json!("deleted"), &json!("one"))
    );
    let text = listed.to_string() + &shown.to_string();
    for secret in [&first["token"], &second["token"]] {
        assert!(!text.contains(secret.as_str().unwrap()));
    }
    assert!(!text.contains("hash"), "{text}");
}

#[test]
fn platforms_users_and_service_keys_are_listed_and_a_service_key_works_over_http() {
    let table = table();
    let mut platform_ids = Vec::new();
    for name in ["One", "Two"] {
        let made = ok(&table, &["--json", "platform", "create", "--name", name]);
        platform_ids.push(made["id"].as_u64().unwrap());
    }
    let listed = ok(&table, &["--json", "platform", "list"]);
    let ids: Vec<u64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, platform_ids);
    let pid = platform_ids[0].to_string();
    // Three users, listed two a page, every one once.
    let mut made = Vec::new();
    for i in 0..3 {
        let email = format!("u{i}@one.test");
        let user = ok(
            &table,
            &[
                "--json",
                "user",
                "create",
                "--platform",
                &pid,
                "--email",
                &email,
                "--name",
                "U",
            ],
        );
        made.push(user["id"].as_u64().unwrap());
    }
    let first = ok(
        &table,
        &["--json", "user", "list", "--platform", &pid, "--limit", "2"],
    );
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_u64().unwrap().to_string();
    let second = ok(
        &table,
        &[
            "--json",
            "user",
            "list",
            "--platform",
            &pid,
            "--limit",
            "2",
            "--cursor",
            &cursor,
        ],
    );
    let mut seen: Vec<u64> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|u| u["id"].as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, made);
    assert_eq!(second["next_cursor"], Value::Null);
    // A service key: bad permissions are a usage error (exit 2, one JSON object on stderr).
    let bad = tokenctl(
        &table,
        &[
            "--json",
            "service-key",
            "create",
            "--platform",
            &pid,
            "--name",
            "b",
            "--permissions",
            "root",
        ],
    );
    assert_eq!(bad.status.code(), Some(2));
    let error: Value = serde_json::from_slice(&bad.stderr).expect("a JSON error");
    assert!(
        error["error"].as_str().unwrap().contains("users:read"),
        "{error}"
    );
    let key = ok(
        &table,
        &[
            "--json",
            "service-key",
            "create",
            "--platform",
            &pid,
            "--name",
            "crm",
            "--permissions",
            "users:read,verify",
        ],
    );
    assert_eq!(key["permissions"], json!(["users:read", "verify"]));
    let token = key["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("tkns_"));
    let listed = ok(
        &table,
        &["--json", "service-key", "list", "--platform", &pid],
    );
    assert_eq!(listed["data"][0]["id"], key["id"]);
    assert!(!listed.to_string().contains(&token));
    let (_server, port) = serve(&table);
    let auth = format!("Bearer {token}");
    let path = format!("/api/v1/users/{}", made[0]);
    let (status, body) = http(port, "GET", &path, &[("Authorization", &auth)], "");
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        port,
        "POST",
        "/api/v1/users",
        &[("Authorization", &auth)],
        r#"{"email":"x@one.test","name":"X"}"#,
    );
    assert_eq!(status, 403);
    ok(
        &table,
        &[
            "--json",
            "service-key",
            "revoke",
            key["id"].as_str().unwrap(),
        ],
    );
    let (status, _) = http(port, "GET", &path, &[("Authorization", &auth)], "");
    assert_eq!(status, 401);
    let again = tokenctl(
        &table,
        &[
            "--json",
            "service-key",
            "revoke",
            key["id"].as_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_json_lines_file_of_any_size_imports_in_batches_and_again_as_existing() {
    let table = table();
    let platform = ok(
        &table,
        &["--json", "platform", "create", "--name", "Imports"],
    );
    let pid = platform["id"].as_u64().unwrap().to_string();
    let user = ok(
        &table,
        &[
            "--json",
            "user",
            "create",
            "--platform",
            &pid,
            "--email",
            "legacy@imports.test",
            "--name",
            "Legacy",
            "--external-id",
            "crm-9",
        ],
    );
    let id = user["id"].as_u64().unwrap();
    // 1001 good entries (past one batch), a blank line, a line that is not JSON, and an entry
    // of an unknown user: lines are numbered as in the file.
    let mut lines: Vec<String> = (0..1001)
        .map(|i| match i % 2 {
            0 => json!({"user_id": id, "name": format!("k{i}"), "token": format!("{i}|legacy-secret-{i:05}")}),
            _ => json!({"external_id": "crm-9", "name": format!("k{i}"), "sha256": shared::token::hex(&shared::token::hash_token(&format!("export-{i:05}")).0)}),
        }.to_string())
        .collect();
    lines.insert(10, String::new());
    lines.insert(20, "{not json".into());
    lines.push(
        json!({"user_id": 999_999_999, "name": "nobody", "token": "nobody-legacy-1"}).to_string(),
    );
    let file = std::env::temp_dir().join(format!("import-{}.jsonl", random_hex(4)));
    std::fs::write(&file, lines.join("\n")).unwrap();
    let path = file.to_str().unwrap();
    let run = |json: bool| {
        let mut args = vec!["token", "import", path, "--platform", &pid];
        if json {
            args.push("--json");
        }
        command_on(env!("CARGO_BIN_EXE_tokenctl"), &table, KEY)
            .env("MAX_TOKENS_PER_USER", "5000")
            .args(&args)
            .output()
            .unwrap()
    };
    let first = run(false);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let progress = String::from_utf8_lossy(&first.stderr);
    assert!(
        progress.contains("tokenctl: 1000/1003 entries: 999 imported, 0 existing, 1 errors"),
        "{progress}"
    );
    assert!(
        progress.contains("tokenctl: 1003/1003 entries: 1001 imported, 0 existing, 2 errors"),
        "{progress}"
    );
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("imported: 1001"), "{text}");
    let again = run(true);
    assert!(again.status.success());
    assert!(again.stderr.is_empty(), "no progress lines under --json");
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["entries"], 1003);
    assert_eq!(summary["imported"], 0);
    assert_eq!(summary["existing"], 1001);
    let errors = summary["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{summary}");
    assert_eq!(errors[0]["line"], 21);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .starts_with("The line is not JSON"));
    assert_eq!(errors[1]["line"], 1004);
    assert_eq!(errors[1]["error"], "The user was not found.");
    let listed = ok(
        &table,
        &["--json", "token", "list", "--user", &id.to_string()],
    );
    let tokens = listed["data"].as_array().unwrap();
    assert_eq!(tokens.len(), 1001);
    assert!(tokens
        .iter()
        .all(|t| t["imported"] == json!(true) && t["kind"] == "api_key"));
    std::fs::remove_file(&file).unwrap();
}
