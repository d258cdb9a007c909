//! A deployment's own token prefix (issue 29): a changed prefix mints the new one while every
//! accepted prefix keeps working on the routes, the authorizer, verify, the leak route and the
//! permanent token; a retired prefix stops working. On DynamoDB Local, through every function's
//! router as `tokenctl serve` merges them.

use lambda_http::http::Method;
use serde_json::{json, Value};

use shared::auth::VerificationCode;
use shared::error::ApiError;
use shared::service::Service;
use shared::store::{now_ms, PermanentGeneration};
use shared::test_support::faults::CallCounter;
use shared::test_support::{request, service, service_intercepted, tenant, Scanner};
use shared::token::{self, Prefix, TokenFormat, TokenKind};

/// `service` on the same table, minting with `prefix` and accepting `accepted` too.
fn with_prefixes(service: &Service, prefix: &str, accepted: &[&str]) -> Service {
    let prefix = Prefix::parse(prefix).unwrap();
    let accepted = accepted.iter().map(|p| Prefix::parse(p).unwrap());
    let mut moved = service.clone();
    moved.config.token_format = TokenFormat::new(prefix, accepted);
    moved
}

async fn send(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let request = request(method, path, &headers, &body);
    shared::test_support::call(|s| tokenctl::serve::router(&s), service, request).await
}

/// The authorizer's effect for `token` (`None`: "Unauthorized").
async fn authorizer_effect(service: &Service, token: &str) -> Option<String> {
    let event = json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:api/prod/GET/api/user/me",
        "headers": {"Authorization": format!("Bearer {token}")},
    });
    let policy = authorizer::authorize(service, &event).await.ok()?;
    Some(
        policy["policyDocument"]["Statement"][0]["Effect"]
            .as_str()?
            .to_string(),
    )
}

#[tokio::test]
async fn a_changed_prefix_mints_the_new_one_and_every_accepted_prefix_keeps_working() {
    let (before, store) = service().await;
    let t = tenant(&store).await;
    assert!(t.user_token.starts_with("tkna_"));
    let moved = with_prefixes(&before, "acme", &["acme", "tkn"]);

    // A token of the old prefix works on the routes, the authorizer and verify.
    let (status, listed) = send(
        &moved,
        Method::GET,
        "/api/user/api-keys",
        &t.user_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        authorizer_effect(&moved, &t.user_token).await.as_deref(),
        Some("Allow")
    );
    let verified = moved.verify(&t.user_token, now_ms()).await.unwrap();
    assert_eq!(verified.code, VerificationCode::Valid);

    // New tokens carry the new prefix; the old deployment never accepted it.
    let (status, created) = send(
        &moved,
        Method::POST,
        "/api/user/api-keys",
        &t.user_token,
        Some(json!({"name": "after the move"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let new = created["api_key"]["token"].as_str().unwrap().to_string();
    assert!(new.starts_with("acmea_"), "{new}");
    assert_eq!(new.len(), 4 + 65);
    let (status, _) = send(&moved, Method::GET, "/api/user/api-keys", &new, None).await;
    assert_eq!(status, 200);
    let (status, body) = send(&before, Method::GET, "/api/user/api-keys", &new, None).await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "Unauthenticated."}))
    );

    // A roll of an old-prefix key makes a successor of the new prefix; both work in the grace.
    let old_id = token::parse_any_prefix(&t.user_token).unwrap();
    let id = format!("{}-{}", old_id.user_id, old_id.token_id);
    let (status, rolled) = send(
        &moved,
        Method::POST,
        &format!("/api/user/api-keys/{id}/roll"),
        &t.user_token,
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    let successor = rolled["api_key"]["token"].as_str().unwrap().to_string();
    assert!(successor.starts_with("acmea_"), "{successor}");
    for token in [&t.user_token, &successor] {
        let (status, _) = send(&moved, Method::GET, "/api/user/api-keys", token, None).await;
        assert_eq!(status, 200);
    }

    // Retiring the old prefix stops its tokens everywhere, and only them.
    let retired = with_prefixes(&before, "acme", &[]);
    let (status, body) = send(
        &retired,
        Method::GET,
        "/api/user/api-keys",
        &t.admin_token,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "Unauthenticated."}))
    );
    assert_eq!(authorizer_effect(&retired, &t.admin_token).await, None);
    let verified = retired.verify(&t.admin_token, now_ms()).await.unwrap();
    assert_eq!(verified.code, VerificationCode::NotFound);
    let (status, _) = send(&retired, Method::GET, "/api/user/api-keys", &new, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_permanent_token_keeps_its_prefix_until_it_is_rotated_into_the_new_one() {
    let (before, store) = service().await;
    let t = tenant(&store).await;
    let moved = with_prefixes(&before, "acme", &["tkn"]);
    let key = before.config.permanent_key().unwrap();
    let user = store_user(&store, &t).await;
    let first = issue_for(&before, key, &user, PermanentGeneration::Working).await;
    assert!(first.starts_with("tknu_"), "{first}");
    // Under the new prefix the same token is handed out while it works.
    let user = store_user(&store, &t).await;
    let again = issue_for(&moved, key, &user, PermanentGeneration::Working).await;
    assert_eq!(again, first);
    assert!(moved.authenticate(Some(&first), now_ms()).await.is_ok());
    // A rotation moves it to the new prefix, and the old one stops at once.
    let user = store_user(&store, &t).await;
    let rotated = issue_for(&moved, key, &user, PermanentGeneration::Next).await;
    assert!(rotated.starts_with("acmeu_"), "{rotated}");
    assert!(moved.authenticate(Some(&rotated), now_ms()).await.is_ok());
    assert!(matches!(
        moved.authenticate(Some(&first), now_ms()).await,
        Err(ApiError::Unauthenticated)
    ));
    // Retiring the old prefix while its permanent token is live moves the user on.
    let (before, store) = service().await;
    let t = tenant(&store).await;
    let key = before.config.permanent_key().unwrap();
    let user = store_user(&store, &t).await;
    let old = issue_for(&before, key, &user, PermanentGeneration::Working).await;
    let retired = with_prefixes(&before, "acme", &[]);
    let user = store_user(&store, &t).await;
    let new = issue_for(&retired, key, &user, PermanentGeneration::Working).await;
    assert!(new.starts_with("acmeu_"), "{new}");
    assert!(retired.authenticate(Some(&new), now_ms()).await.is_ok());
    assert!(before.authenticate(Some(&old), now_ms()).await.is_err());
}

async fn store_user(
    store: &shared::store::DynamoStore,
    t: &shared::test_support::Tenant,
) -> shared::store::User {
    use shared::store::traits::*;
    store.get_user(t.user.id).await.unwrap().unwrap()
}

async fn issue_for(
    service: &Service,
    key: &token::PermanentKey,
    user: &shared::store::User,
    wanted: PermanentGeneration,
) -> String {
    let change = shared::audit::Change::operator();
    service
        .permanent_token(key, user, wanted, &change, now_ms())
        .await
        .unwrap()
        .secret
        .expose()
        .to_string()
}

#[tokio::test]
async fn a_native_looking_string_with_a_bad_checksum_is_refused_without_a_database_call() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let moved = with_prefixes(&service, "acme", &["tkn"]);
    let counter = CallCounter::default();
    let (counted, _) = service_intercepted(&moved, &store, counter.clone());
    let acme = moved
        .config
        .token_format
        .generate(TokenKind::ApiKey, t.user.id, now_ms());
    let flip = |text: &str| {
        let last = text.chars().last().unwrap();
        let other = if last == 'a' { 'b' } else { 'a' };
        format!("{}{other}", &text[..text.len() - 1])
    };
    for bad in [flip(&t.user_token), flip(acme.secret.expose())] {
        assert!(moved.config.token_format.looks_native(&bad));
        let before = counter.counts();
        assert!(matches!(
            counted.authenticate(Some(&bad), now_ms()).await,
            Err(ApiError::Unauthenticated)
        ));
        let verified = counted.verify(&bad, now_ms()).await.unwrap();
        assert_eq!(verified.code, VerificationCode::NotFound);
        assert_eq!(counter.counts(), before, "{bad}: no DynamoDB call");
    }
    // The real token of the old prefix is read (one BatchGetItem) and works.
    let before = counter.counts().values().sum::<usize>();
    assert!(counted
        .authenticate(Some(&t.user_token), now_ms())
        .await
        .is_ok());
    assert!(counter.counts().values().sum::<usize>() > before);
}

#[tokio::test]
async fn the_leak_route_revokes_a_leaked_token_of_an_older_accepted_prefix() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let scanner = Scanner::new();
    let mut moved = with_prefixes(&service, "acme", &["tkn"]);
    moved.config.secret_scanning_keys = Some(scanner.document(Scanner::KEY_ID));
    let mut retired = with_prefixes(&service, "acme", &[]);
    retired.config.secret_scanning_keys = moved.config.secret_scanning_keys.clone();

    // Where the old prefix is retired, its token is not this deployment's: left alone.
    let report = |token: &str| {
        json!([{"token": token, "type": "t", "url": null, "source": "content"}]).to_string()
    };
    let router = |s: &Service| tokenctl::serve::router(s);
    let (status, _, body) =
        shared::test_support::exchange(router(&retired), scanner.report(&report(&t.user_token)))
            .await;
    assert_eq!(status, 200);
    let labels: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(labels[0]["label"], "false_positive", "{labels}");
    assert_eq!(code(&moved, &t.user_token).await, VerificationCode::Valid);

    // Where it is accepted, the report revokes it.
    let (status, _, body) =
        shared::test_support::exchange(router(&moved), scanner.report(&report(&t.user_token)))
            .await;
    assert_eq!(status, 200);
    let labels: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(labels[0]["label"], "true_positive", "{labels}");
    assert_eq!(code(&moved, &t.user_token).await, VerificationCode::Revoked);
}

/// What verification says of `text` now.
async fn code(service: &Service, text: &str) -> VerificationCode {
    service.verify(text, now_ms()).await.unwrap().code
}

// Import of another system's tokens.

const SANCTUM: &str = "7|Zt9xQ2kLmN4pR7sV1wY3aB6cD8eF0gH2iJ5kL7mN";

/// The hex SHA-256 of `text`, as a Sanctum export's `token` column holds it.
fn sha256_hex(text: &str) -> String {
    token::hex(&token::hash_token(text).0)
}

async fn import(service: &Service, caller: &str, entries: Value) -> (u16, Value) {
    send(
        service,
        Method::POST,
        "/api/v1/tokens/import",
        caller,
        Some(json!({ "tokens": entries })),
    )
    .await
}

fn statuses(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect()
}

/// The user's live imported tokens.
async fn imported_of(store: &shared::store::DynamoStore, user: shared::domain::UserId) -> usize {
    use shared::store::traits::*;
    let tokens = store.list_all_tokens(user, now_ms()).await.unwrap();
    tokens.iter().filter(|t| t.imported).count()
}

#[tokio::test]
async fn both_input_forms_and_both_owner_references_import_once() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let external = shared::domain::ExternalId::parse("crm-77").unwrap();
    let mut customer = shared::test_support::new_user(&t.platform, shared::domain::Role::User);
    customer.external_id = Some(external);
    let customer = shared::test_support::add_user(&store, customer).await;
    let entries = json!([
        {"user_id": t.user.id, "name": "Sanctum plaintext", "token": SANCTUM,
         "abilities": ["calls:read"], "created_at": "2024-03-01 12:00:00",
         "expires_at": "2099-01-01T00:00:00Z", "meta": {"legacy_id": 7}},
        {"external_id": "crm-77", "name": "From the export", "sha256": sha256_hex("export-secret-0001")},
        {"user_id": t.user.id, "name": "A plain key", "token": "sk_live_51HvQ2xLegacyKey"},
    ]);
    let (status, first) = import(&service, &t.admin_token, entries.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(statuses(&first), ["imported", "imported", "imported"]);
    for (i, entry) in first["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(entry["index"], i);
        assert_eq!(
            entry.as_object().unwrap().len(),
            3,
            "{entry}: index, status, id"
        );
    }
    let owner_of = |i: usize| {
        first["data"][i]["id"]
            .as_str()
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(owner_of(0), t.user.id.to_string());
    assert_eq!(owner_of(1), customer.id.to_string());

    // Again: every entry `existing`, the same ids, nothing written.
    let (status, again) = import(&service, &t.admin_token, entries).await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&again), ["existing", "existing", "existing"]);
    for i in 0..3 {
        assert_eq!(again["data"][i]["id"], first["data"][i]["id"]);
    }
    assert_eq!(imported_of(&store, t.user.id).await, 2);
    assert_eq!(imported_of(&store, customer.id).await, 1);

    // What was stored: the entry's fields, the flag in both listings, the audit event.
    use shared::store::traits::*;
    let tokens = store.list_all_tokens(t.user.id, now_ms()).await.unwrap();
    let sanctum = tokens
        .iter()
        .find(|r| r.name == "Sanctum plaintext")
        .unwrap();
    assert!(sanctum.imported);
    assert_eq!(sanctum.abilities.as_slice(), ["calls:read"]);
    assert_eq!(sanctum.created_at_ms, 1_709_294_400_000);
    assert_eq!(sanctum.expires_at, Some(4_070_908_800));
    assert_eq!(
        sanctum.meta.as_ref().unwrap().to_json(),
        r#"{"legacy_id":7}"#
    );
    assert_eq!(sanctum.hash, token::hash_token(&SANCTUM[2..]));
    let (_, keys) = send(
        &service,
        Method::GET,
        "/api/user/api-keys",
        &t.user_token,
        None,
    )
    .await;
    let flagged: Vec<&Value> = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["imported"] == json!(true))
        .collect();
    assert_eq!(flagged.len(), 2, "{keys}");
    let native = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k.get("imported").is_none());
    assert!(
        native.is_some(),
        "a native key's shape is unchanged: {keys}"
    );
    let path = format!("/api/v1/users/{}/tokens", t.user.id);
    let (_, listed) = send(&service, Method::GET, &path, &t.admin_token, None).await;
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["imported"].is_boolean()));
    let page = store
        .list_events(shared::store::EventScope::User(t.user.id), 50, None)
        .await
        .unwrap();
    let imported_events = page
        .events
        .iter()
        .filter(|e| e["action"] == "token.imported")
        .count();
    assert_eq!(
        imported_events, 2,
        "one event per token stored, none for `existing`"
    );
}

#[tokio::test]
async fn bad_entries_are_answered_one_by_one_and_another_platforms_user_gets_nothing() {
    let (service, store) = service().await;
    let a = tenant(&store).await;
    let b = tenant(&store).await;
    let foreign = "legacy-key-of-platform-b-0001";
    let entries = json!([
        {"user_id": b.user.id, "name": "Not yours", "token": foreign},
        {"user_id": a.user.id, "name": "No secret"},
        {"user_id": a.user.id, "name": "Both", "token": "abcdefgh-1", "sha256": sha256_hex("x")},
        {"name": "No owner", "token": "abcdefgh-2"},
        {"user_id": a.user.id, "external_id": "x", "name": "Two owners", "token": "abcdefgh-3"},
        {"user_id": a.user.id, "name": "Short", "token": "short"},
        {"user_id": a.user.id, "name": "Ours", "token": a.user_token},
        {"user_id": a.user.id, "name": "Bad hash", "sha256": "xyz"},
        {"user_id": a.user.id, "name": "Expired", "token": "abcdefgh-4", "expires_at": "2001-01-01"},
        {"user_id": a.user.id, "token": "abcdefgh-5"},
        "not an object",
    ]);
    let (status, body) = import(&service, &a.admin_token, entries).await;
    assert_eq!(status, 200, "{body}");
    assert!(statuses(&body).iter().all(|s| *s == "error"), "{body}");
    let error = |i: usize| body["data"][i]["error"].as_str().unwrap().to_string();
    assert_eq!(error(0), "The user was not found.");
    assert!(error(6).contains("token of this service"), "{}", error(6));
    assert!(error(10).contains("JSON object"), "{}", error(10));
    assert_eq!(imported_of(&store, a.user.id).await, 0);
    assert_eq!(imported_of(&store, b.user.id).await, 0);
    // Nothing was written for B's user: its own admin imports the same key as new.
    let (_, own) = import(
        &service,
        &b.admin_token,
        json!([{"user_id": b.user.id, "name": "Mine", "token": foreign}]),
    )
    .await;
    assert_eq!(statuses(&own), ["imported"]);
    // The same secret for A's user: refused, without naming B's key.
    let same = json!([{"user_id": a.user.id, "name": "Same", "token": foreign}]);
    let (_, taken) = import(&service, &a.admin_token, same).await;
    assert_eq!(
        taken["data"][0],
        json!({"index": 0, "status": "error", "error": "The secret is already in use: not imported."})
    );
    // Whole-request refusals: 422, nothing imported.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"user_id": a.user.id, "name": "n", "token": format!("bulk-token-{i:05}")}))
        .collect();
    let (status, body) = import(&service, &a.admin_token, Value::Array(many)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["errors"]["tokens"][0],
        "The tokens field must not have more than 1000 items."
    );
    assert_eq!(imported_of(&store, a.user.id).await, 0);
    for empty in [json!([]), json!("x"), Value::Null] {
        let (status, _) = import(&service, &a.admin_token, empty).await;
        assert_eq!(status, 422);
    }
    // A plain user may not import, nor a service key without tokens:write.
    let (status, _) = import(&service, &a.user_token, json!([])).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn imports_racing_for_one_user_stay_within_the_cap() {
    let (service, store) = shared::test_support::service_with(4).await;
    let t = tenant(&store).await;
    // The user holds one key: three slots are left for the eight entries of two requests.
    let batch = |from: usize| {
        json!((from..from + 4)
            .map(|i| json!({"user_id": t.user.id, "name": format!("k{i}"), "token": format!("racing-legacy-{i:04}")}))
            .collect::<Vec<_>>())
    };
    let (one, two) = tokio::join!(
        import(&service, &t.admin_token, batch(0)),
        import(&service, &t.admin_token, batch(4))
    );
    let all: Vec<&str> = statuses(&one.1)
        .into_iter()
        .chain(statuses(&two.1))
        .collect();
    assert_eq!(
        all.iter().filter(|s| **s == "imported").count(),
        3,
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|s| **s == "error").count(), 5);
    let refused = [&one.1, &two.1]
        .iter()
        .flat_map(|b| b["data"].as_array().unwrap())
        .filter_map(|e| e["error"].as_str())
        .all(|e| e == "The user already holds the maximum of 4 tokens.");
    assert!(refused);
    use shared::store::traits::*;
    let live = store.list_all_tokens(t.user.id, now_ms()).await.unwrap();
    assert_eq!(live.len(), 4);
    let profile = store
        .direct()
        .item(&shared::store::Key::user(t.user.id))
        .await
        .unwrap()
        .unwrap();
    let counted: usize = profile["live_tokens"].as_n().unwrap().parse().unwrap();
    assert_eq!(counted, 4, "the cap counter equals the keys holding a slot");
}

#[tokio::test]
async fn a_sanctum_token_works_everywhere_rolls_into_a_native_one_and_is_revoked() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (_, body) = import(
        &service,
        &t.admin_token,
        json!([{"user_id": t.user.id, "name": "Legacy", "token": SANCTUM}]),
    )
    .await;
    assert_eq!(statuses(&body), ["imported"], "{body}");
    let id = body["data"][0]["id"].as_str().unwrap().to_string();

    // A route, the authorizer and verify, in Sanctum's form and as the bare secret.
    for presented in [SANCTUM, &SANCTUM[2..]] {
        let (status, _) = send(&service, Method::GET, "/api/user/api-keys", presented, None).await;
        assert_eq!(status, 200, "{presented}");
        assert_eq!(
            authorizer_effect(&service, presented).await.as_deref(),
            Some("Allow")
        );
    }
    let (status, verified) = send(
        &service,
        Method::POST,
        "/api/v1/tokens/verify",
        &t.admin_token,
        Some(json!({"token": SANCTUM})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(verified["code"], "VALID", "{verified}");
    assert_eq!(verified["token"]["id"], id.as_str());
    assert_eq!(verified["token"]["kind"], "api_key");
    // Another id before the bar is another string, but the same secret: Sanctum checks the id
    // against its row, this service the secret's hash alone.
    assert_eq!(
        code(&service, "8|wrong-secret-entirely").await,
        VerificationCode::NotFound
    );

    // Limits: one credit, then the authorizer denies.
    let (status, _) = send(
        &service,
        Method::PUT,
        &format!("/api/v1/tokens/{id}/limits"),
        &t.admin_token,
        Some(json!({"credits": {"remaining": 1}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        authorizer_effect(&service, SANCTUM).await.as_deref(),
        Some("Allow")
    );
    assert_eq!(
        authorizer_effect(&service, SANCTUM).await.as_deref(),
        Some("Deny")
    );
    let (status, _) = send(
        &service,
        Method::PUT,
        &format!("/api/v1/tokens/{id}/limits"),
        &t.admin_token,
        Some(json!({"credits": null})),
    )
    .await;
    assert_eq!(status, 200);

    // A roll makes a native successor; the imported key works through it in its grace.
    let (status, rolled) = send(
        &service,
        Method::POST,
        &format!("/api/user/api-keys/{id}/roll"),
        SANCTUM,
        Some(json!({"grace_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    let successor = rolled["api_key"]["token"].as_str().unwrap().to_string();
    assert!(successor.starts_with("tkna_"), "{successor}");
    assert_eq!(code(&service, SANCTUM).await, VerificationCode::Valid);
    assert_eq!(code(&service, &successor).await, VerificationCode::Valid);
    // Revoking the lineage's live key ends both; the hash stays imported (a re-import is
    // `existing`, never a revived key).
    let successor_id = rolled["api_key"]["id"].as_str().unwrap();
    let (status, _) = send(
        &service,
        Method::DELETE,
        &format!("/api/user/api-keys/{successor_id}"),
        &successor,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(code(&service, SANCTUM).await, VerificationCode::Revoked);
    let (status, body) = send(&service, Method::GET, "/api/user/api-keys", SANCTUM, None).await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "Unauthenticated."}))
    );
    let (_, again) = import(
        &service,
        &t.admin_token,
        json!([{"user_id": t.user.id, "name": "Legacy", "sha256": sha256_hex(&SANCTUM[2..])}]),
    )
    .await;
    assert_eq!(statuses(&again), ["existing"]);
    assert_eq!(code(&service, SANCTUM).await, VerificationCode::Revoked);
}

#[tokio::test]
async fn a_foreign_token_costs_one_read_more_than_a_native_one() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (_, body) = import(
        &service,
        &t.admin_token,
        json!([{"user_id": t.user.id, "name": "Legacy", "token": SANCTUM}]),
    )
    .await;
    assert_eq!(statuses(&body), ["imported"]);
    let counter = CallCounter::default();
    let (counted, _) = service_intercepted(&service, &store, counter.clone());
    let calls = |counter: &CallCounter| counter.counts().values().sum::<usize>();
    // Warm the last-use writes, so both are measured as reads alone.
    counted
        .authenticate(Some(&t.user_token), now_ms())
        .await
        .unwrap();
    counted.authenticate(Some(SANCTUM), now_ms()).await.unwrap();
    let before = calls(&counter);
    counted
        .authenticate(Some(&t.user_token), now_ms())
        .await
        .unwrap();
    let native = calls(&counter) - before;
    let before = calls(&counter);
    counted.authenticate(Some(SANCTUM), now_ms()).await.unwrap();
    let foreign = calls(&counter) - before;
    assert_eq!((native, foreign), (1, 2), "{:?}", counter.counts());
    // An unknown foreign string costs its one read; an implausible one none.
    let before = calls(&counter);
    assert!(counted
        .authenticate(Some("never-imported-key-123"), now_ms())
        .await
        .is_err());
    assert_eq!(calls(&counter) - before, 1);
    let before = calls(&counter);
    assert!(counted.authenticate(Some("short"), now_ms()).await.is_err());
    assert_eq!(calls(&counter) - before, 0);
}

#[tokio::test]
async fn the_holder_of_an_imported_key_revokes_it_as_a_native_one() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let entries = json!([{"user_id": t.user.id, "name": "Legacy", "token": SANCTUM}]);
    let (_, body) = import(&service, &t.admin_token, entries).await;
    assert_eq!(statuses(&body), ["imported"]);
    for presented in ["8|not-the-secret-at-all", SANCTUM] {
        let request = request(
            Method::POST,
            "/api/v1/tokens/revoke",
            &[("content-type", "application/json")],
            &json!({ "token": presented }).to_string(),
        );
        let answer =
            shared::test_support::call(|s| tokenctl::serve::router(&s), &service, request).await;
        assert_eq!(answer, (202, json!({"message": "Accepted."})));
    }
    assert_eq!(code(&service, SANCTUM).await, VerificationCode::Revoked);
    assert_eq!(code(&service, &t.user_token).await, VerificationCode::Valid);
}

/// Users of `t`'s platform: `count` of them, the i-th with external id `<prefix>-<i>`.
async fn users_with_external_ids(
    store: &shared::store::DynamoStore,
    t: &shared::test_support::Tenant,
    prefix: &str,
    count: usize,
) -> Vec<shared::store::User> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let mut user = shared::test_support::new_user(&t.platform, shared::domain::Role::User);
        user.external_id = shared::domain::ExternalId::parse(&format!("{prefix}-{i}"));
        users.push(shared::test_support::add_user(store, user).await);
    }
    users
}

/// The public id of the token a principal authenticated with.
fn public_id(principal: &shared::auth::Principal) -> String {
    token::PublicTokenId {
        user_id: principal.user_id,
        token_id: principal.token_id,
    }
    .to_string()
}

/// The user's cap counter, its live API keys, and its `token.imported` events.
async fn holdings(
    store: &shared::store::DynamoStore,
    user: shared::domain::UserId,
) -> (i64, usize, usize) {
    use shared::store::traits::*;
    let counter = store
        .direct()
        .cap_count(user, token::CapCounter::Tokens)
        .await
        .unwrap();
    let keys = store
        .list_tokens(user, token::TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()
        .len();
    let events = store
        .list_events(shared::store::EventScope::User(user), 1000, None)
        .await
        .unwrap()
        .events
        .iter()
        .filter(|e| e["action"] == "token.imported")
        .count();
    (counter, keys, events)
}

#[tokio::test]
async fn a_batch_is_imported_a_transaction_at_a_time_and_a_refused_one_answers_each_entry() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let users = users_with_external_ids(&store, &t, "batch", 3).await;
    let (by_id, by_external, blocked) = (&users[0], &users[1], &users[2]);
    let counter = CallCounter::default();
    let (counted, _) = service_intercepted(&service, &store, counter.clone());
    // 20 entries by user id and 20 by external id: two transactions, after the owners' reads.
    let first: Vec<Value> = (0..40)
        .map(|i| match i % 2 {
            0 => json!({"user_id": by_id.id, "name": format!("k{i}"), "token": format!("batch-legacy-{i:04}")}),
            _ => json!({"external_id": "batch-1", "name": format!("k{i}"), "sha256": sha256_hex(&format!("batch-export-{i:04}"))}),
        })
        .collect();
    let (status, body) = import(&counted, &t.admin_token, json!(first)).await;
    assert_eq!(status, 200, "{body}");
    assert!(statuses(&body).iter().all(|s| *s == "imported"), "{body}");
    let counts = counter.counts();
    assert_eq!(counts.get("TransactWriteItems"), Some(&2), "{counts:?}");
    // The admin's own key and its owner, the owners by id, the external ids' pointers and
    // their owners: no read an entry.
    assert!(
        counts.get("BatchGetItem").is_some_and(|n| *n <= 4),
        "{counts:?}"
    );
    assert!(counts.values().sum::<usize>() <= 8, "{counts:?}");
    for user in [by_id, by_external] {
        assert_eq!(holdings(&store, user.id).await, (20, 20, 20));
    }
    let ids: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    // Each entry's own token: its plaintext authenticates as the id it was answered with.
    let found = service
        .authenticate(Some("batch-legacy-0000"), now_ms())
        .await
        .unwrap();
    assert_eq!(public_id(&found), ids[0]);

    // A transaction refused (a hash of before, a blocked owner): each entry answered alone.
    use shared::store::traits::*;
    store
        .set_user_status(
            blocked.id,
            shared::domain::UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let second = json!([
        {"user_id": by_id.id, "name": "new 1", "token": "batch-legacy-new-1"},
        {"user_id": by_id.id, "name": "again", "token": "batch-legacy-0000"},
        {"user_id": blocked.id, "name": "blocked", "token": "batch-legacy-blocked"},
        {"external_id": "batch-1", "name": "new 2", "token": "batch-legacy-new-2"},
    ]);
    let (_, body) = import(&service, &t.admin_token, second).await;
    assert_eq!(
        statuses(&body),
        ["imported", "existing", "error", "imported"]
    );
    assert_eq!(body["data"][1]["id"], ids[0]);
    assert_eq!(body["data"][2]["error"], "The user is blocked.");
    // The same new secret twice in one batch: imported once, then `existing` with its id.
    let third = json!([
        {"user_id": by_id.id, "name": "twice", "token": "batch-legacy-twice"},
        {"external_id": "batch-1", "name": "twice", "token": "batch-legacy-twice"},
    ]);
    let (_, body) = import(&service, &t.admin_token, third).await;
    assert_eq!(statuses(&body), ["imported", "existing"], "{body}");
    assert_eq!(body["data"][0]["id"], body["data"][1]["id"]);
    assert_eq!(holdings(&store, by_id.id).await, (22, 22, 22));
    assert_eq!(holdings(&store, by_external.id).await, (21, 21, 21));
    assert_eq!(holdings(&store, blocked.id).await, (0, 0, 0));
    // The whole first batch again: every entry `existing`, as the same token.
    let (_, again) = import(&service, &t.admin_token, json!(first)).await;
    assert!(statuses(&again).iter().all(|s| *s == "existing"), "{again}");
    let again_ids: Vec<&str> = again["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(again_ids, ids);
}

#[tokio::test]
async fn an_owner_with_more_entries_than_a_transaction_holds_goes_round_by_round() {
    let (service, store) = shared::test_support::service_with(60).await;
    let t = tenant(&store).await;
    let users = users_with_external_ids(&store, &t, "rounds", 2).await;
    // 55 for one owner (three rounds: 24, 24, 7), 5 for another: all imported, counted once.
    let entries: Vec<Value> = (0..60)
        .map(|i| {
            let owner = if i < 55 { &users[0] } else { &users[1] };
            json!({"user_id": owner.id, "name": format!("r{i}"), "token": format!("rounds-legacy-{i:04}")})
        })
        .collect();
    let (status, body) = import(&service, &t.admin_token, json!(entries)).await;
    assert_eq!(status, 200, "{body}");
    assert!(statuses(&body).iter().all(|s| *s == "imported"), "{body}");
    assert_eq!(holdings(&store, users[0].id).await, (55, 55, 55));
    assert_eq!(holdings(&store, users[1].id).await, (5, 5, 5));
    // At the cap: 5 more for the first owner, 5 slots left; the refused transaction answers
    // each entry, and the counter stays the keys' count.
    let more: Vec<Value> = (0..8)
        .map(|i| json!({"user_id": users[0].id, "name": format!("m{i}"), "token": format!("rounds-more-{i:04}")}))
        .collect();
    let (_, body) = import(&service, &t.admin_token, json!(more)).await;
    assert_eq!(
        statuses(&body),
        ["imported", "imported", "imported", "imported", "imported", "error", "error", "error"]
    );
    assert_eq!(
        body["data"][5]["error"],
        "The user already holds the maximum of 60 tokens."
    );
    assert_eq!(holdings(&store, users[0].id).await, (60, 60, 60));
}

#[tokio::test]
async fn an_import_racing_mints_of_the_same_owner_stays_within_the_cap() {
    let (service, store) = shared::test_support::service_with(30).await;
    let t = tenant(&store).await;
    // The user holds its one key; 24 imported and 12 minted race for 29 slots.
    let entries: Vec<Value> = (0..24)
        .map(|i| json!({"user_id": t.user.id, "name": format!("i{i}"), "token": format!("race-legacy-{i:04}")}))
        .collect();
    let mints: Vec<_> = (0..12)
        .map(|i| {
            let (service, token) = (service.clone(), t.user_token.clone());
            tokio::spawn(async move {
                send(
                    &service,
                    Method::POST,
                    "/api/user/api-keys",
                    &token,
                    Some(json!({"name": format!("m{i}")})),
                )
                .await
            })
        })
        .collect();
    let (status, body) = import(&service, &t.admin_token, json!(entries)).await;
    assert_eq!(status, 200, "{body}");
    let mut minted = 0;
    for mint in mints {
        let (status, answer) = mint.await.unwrap();
        assert!(status == 201 || status == 422, "{status} {answer}");
        minted += usize::from(status == 201);
    }
    let imported = statuses(&body).iter().filter(|s| **s == "imported").count();
    assert_eq!(
        imported + minted,
        29,
        "{imported} imported, {minted} minted"
    );
    let (counter, keys, events) = holdings(&store, t.user.id).await;
    assert_eq!((counter, keys, events), (30, 30, imported));
}

#[tokio::test]
async fn an_import_transaction_whose_outcome_is_unknown_is_settled_once() {
    use shared::test_support::faults::{Fault, FaultInjector, Operation};
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (faulty, _) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let entries = |from: usize| {
        json!((from..from + 5)
            .map(|i| json!({"user_id": t.user.id, "name": format!("u{i}"), "token": format!("unknown-legacy-{i:04}")}))
            .collect::<Vec<_>>())
    };
    let attempts = 10;
    // It commits and its answer is lost; every later attempt fails to connect: it landed.
    faults.plan(Operation::TransactWriteItems, Fault::CommittedAnswerLost);
    for _ in 1..attempts {
        faults.plan(Operation::TransactWriteItems, Fault::ConnectionFailed);
    }
    let (status, body) = import(&faulty, &t.admin_token, entries(0)).await;
    assert_eq!(faults.injected(), attempts);
    assert_eq!(status, 200, "{body}");
    assert!(statuses(&body).iter().all(|s| *s == "imported"), "{body}");
    assert_eq!(holdings(&store, t.user.id).await, (6, 6, 5));
    // No attempt lands: settled as never, its tokens are imported again one by one.
    faults.clear();
    for _ in 0..attempts {
        faults.plan(Operation::TransactWriteItems, Fault::ConnectionFailed);
    }
    let (status, body) = import(&faulty, &t.admin_token, entries(5)).await;
    assert_eq!(faults.injected(), 2 * attempts);
    assert_eq!(status, 200, "{body}");
    assert!(statuses(&body).iter().all(|s| *s == "imported"), "{body}");
    assert_eq!(holdings(&store, t.user.id).await, (11, 11, 10));
    for (i, entry) in body["data"].as_array().unwrap().iter().enumerate() {
        let secret = format!("unknown-legacy-{:04}", i + 5);
        let found = service.authenticate(Some(&secret), now_ms()).await.unwrap();
        assert_eq!(public_id(&found), entry["id"].as_str().unwrap());
    }
}

#[tokio::test]
async fn a_new_owner_given_more_entries_than_its_cap_gets_its_cap() {
    let (service, store) = shared::test_support::service_with(4).await;
    let t = tenant(&store).await;
    // A user without a key, so without a counter yet: 6 entries in one request, cap 4.
    let users = users_with_external_ids(&store, &t, "fresh", 1).await;
    let entries: Vec<Value> = (0..6)
        .map(|i| json!({"external_id": "fresh-0", "name": format!("f{i}"), "token": format!("fresh-legacy-{i:04}")}))
        .collect();
    let (_, body) = import(&service, &t.admin_token, json!(entries)).await;
    assert_eq!(
        statuses(&body),
        ["imported", "imported", "imported", "imported", "error", "error"]
    );
    assert_eq!(holdings(&store, users[0].id).await, (4, 4, 4));
}
