//! The secret-scanning partner endpoint and self-revocation against DynamoDB Local, with
//! reports signed by key pairs the tests make.

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use shared::auth::{authenticate, verify, VerificationCode};
use shared::clock::EpochMs;
use shared::config::Config;
use shared::domain::{Abilities, UserStatus};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Leak, PermanentGeneration, Revocation, User};
use shared::test_support::faults::CallCounter;
use shared::test_support::{
    request, service, service_intercepted, tenant, token_expiring, token_for, unreachable_service,
    Scanner, Tenant,
};
use shared::token::{self, PermanentKey, TokenFamily, TokenFormat, TokenKind};

const KEY_ID: &str = Scanner::KEY_ID;

/// A service on a fresh table that trusts `scanner`'s key as `KEY_ID`.
async fn scanned_service(scanner: &Scanner) -> (Service, DynamoStore) {
    let (mut service, store) = service().await;
    service.config.secret_scanning_keys = Some(scanner.document(KEY_ID));
    (service, store)
}

/// A scanner, a service on a fresh table trusting it, and a tenant there.
async fn scanned_tenant() -> (Scanner, Service, DynamoStore, Tenant) {
    let scanner = Scanner::new();
    let (service, store) = scanned_service(&scanner).await;
    let t = tenant(&store).await;
    (scanner, service, store, t)
}

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(leak_response::router, service, request).await
}

async fn send_report(service: &Service, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let request = request(Method::POST, "/api/v1/secret-scanning/verify", &all, body);
    call(service, request).await
}

/// `body` reported as GitHub does: signed by `scanner` under `KEY_ID`.
async fn report(service: &Service, scanner: &Scanner, body: &str) -> (u16, Value) {
    call(service, scanner.report(body)).await
}

fn entry(token: &str) -> Value {
    json!({"token": token, "type": "tokenservice_api_token", "url": format!("https://github.com/acme/app/blob/0a1b/{}", "config.env"), "source": "content"})
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn labels(body: &Value) -> Vec<&str> {
    body.as_array()
        .expect("an array")
        .iter()
        .map(|e| e["label"].as_str().unwrap())
        .collect()
}

async fn self_revoke(service: &Service, body: &str) -> (u16, Value) {
    let headers = [("content-type", "application/json")];
    let request = request(Method::POST, "/api/v1/tokens/revoke", &headers, body);
    call(service, request).await
}

/// The permanent key of `user` the service hands out now.
async fn permanent_key(service: &Service, user: &User) -> String {
    let key = service.config.permanent_key().unwrap();
    let issued = service
        .permanent_token(
            key,
            user,
            PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    issued.secret.expose().to_string()
}

/// `token` with one character of its secret part changed (its checksum then fails).
fn corrupted(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test]
async fn a_report_labels_every_entry_in_order_and_revokes_the_live_ones() {
    let (scanner, service, store, t) = scanned_tenant().await;
    let now = now_ms();
    let personal = token_for(&store, &t.user, TokenKind::Personal, Abilities::full()).await;
    let customer = token_for(&store, &t.user, TokenKind::Customer, Abilities::full()).await;
    let deleted = token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let parsed_deleted = token::parse_any_prefix(&deleted).unwrap();
    store
        .revoke_token(
            t.user.id,
            TokenFamily::ApiKeys,
            parsed_deleted.token_id,
            &shared::audit::Change::operator(),
            now,
        )
        .await
        .unwrap();
    let expired = token_expiring(&store, &t.user, TokenKind::ApiKey, now.0 / 1000 - 60).await;
    let expired = expired.secret.expose().to_string();
    let disabled = shared::test_support::disabled_token(&store, &t.user).await;
    // A token of this service's shape for a user that exists, never issued.
    let never_issued = TokenFormat::default().generate(TokenKind::ApiKey, t.user.id, now);
    let never_issued = never_issued.secret.expose().to_string();
    let entries = [
        entry(&t.user_token),
        entry("ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        entry(&personal),
        entry(&corrupted(&customer)),
        entry(&customer),
        entry(&deleted),
        entry(&expired),
        entry(&never_issued),
        entry(&disabled),
        entry("tkna_"),
    ];
    let body = Value::Array(entries.to_vec()).to_string();
    let (status, answer) = report(&service, &scanner, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        labels(&answer),
        [
            "true_positive",
            "false_positive",
            "true_positive",
            "false_positive",
            "true_positive",
            "true_positive",
            "true_positive",
            "false_positive",
            "true_positive",
            "false_positive",
        ]
    );
    for (sent, answered) in entries.iter().zip(answer.as_array().unwrap()) {
        let token = sent["token"].as_str().unwrap();
        assert_eq!(
            answered,
            &json!({"token_hash": sha256_hex(token), "token_type": "tokenservice_api_token", "label": answered["label"]})
        );
    }
    let where_found = Revocation::Leaked(Leak {
        url: Some("https://github.com/acme/app/blob/0a1b/config.env".into()),
        source: Some("content".into()),
        parent: None,
    });
    // The live ones (the disabled one too) are revoked as leaked, with where they were found.
    for token in [&t.user_token, &personal, &customer, &disabled] {
        let verified = verify(&store, &TokenFormat::default(), token, now_ms())
            .await
            .unwrap();
        assert_eq!(verified.code, VerificationCode::Revoked, "{token}");
        assert_eq!(verified.revoked_reason, Some("leaked"));
        assert_eq!(
            verified.record.unwrap().revocation,
            Some(where_found.clone())
        );
        assert!(authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(token),
            now_ms()
        )
        .await
        .is_err());
    }
    // Each revocation has its event: secret scanning as the actor, where the leak was found.
    let page = store
        .list_events(shared::store::EventScope::User(t.user.id), 100, None)
        .await
        .unwrap();
    let leaked: Vec<&Value> = page
        .events
        .iter()
        .filter(|e| e["details"]["reason"] == "leaked")
        .collect();
    assert_eq!(leaked.len(), 4);
    for event in leaked {
        assert_eq!(event["action"], "token.revoked");
        assert_eq!(event["actor"], json!({"type": "secret_scanning"}));
        assert_eq!(
            event["details"]["url"],
            "https://github.com/acme/app/blob/0a1b/config.env"
        );
        assert_eq!(event["details"]["source"], "content");
    }
    // What was no longer live keeps its state and reason.
    let verified = verify(&store, &TokenFormat::default(), &deleted, now_ms())
        .await
        .unwrap();
    assert_eq!(verified.revoked_reason, Some("deleted"));
    let verified = verify(&store, &TokenFormat::default(), &expired, now_ms())
        .await
        .unwrap();
    assert_eq!(verified.code, VerificationCode::Expired);
    assert_eq!(verified.revoked_reason, None);
    // The slots of the revoked keys are given back: the user mints up to the cap again.
    let live = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert!(live.is_empty(), "{live:?}");
    // The admin's key, not reported, still works.
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&t.admin_token),
        now_ms()
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn a_repeated_report_answers_the_same_and_changes_nothing_more() {
    let (scanner, service, store, t) = scanned_tenant().await;
    // The same token twice in one report: revoked once, labelled twice.
    let body = json!([
        entry(&t.user_token),
        {"token": t.user_token, "type": "other", "url": null},
        entry("nope")
    ])
    .to_string();
    let first = report(&service, &scanner, &body).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(
        labels(&first.1),
        ["true_positive", "true_positive", "false_positive"]
    );
    assert_eq!(first.1[1]["token_type"], "other");
    let revoked = verify(&store, &TokenFormat::default(), &t.user_token, now_ms())
        .await
        .unwrap();
    let second = report(&service, &scanner, &body).await;
    assert_eq!(second, first);
    let again = verify(&store, &TokenFormat::default(), &t.user_token, now_ms())
        .await
        .unwrap();
    assert_eq!(
        again.record, revoked.record,
        "the revocation is as the first report left it"
    );
}

#[tokio::test]
async fn leaked_permanent_keys_rotate_the_current_generation_only() {
    let (scanner, service, store, t) = scanned_tenant().await;
    let first = permanent_key(&service, &t.user).await;
    let key = service.config.permanent_key().unwrap();
    let issued = store.get_user(t.user.id).await.unwrap().unwrap();
    service
        .permanent_token(
            key,
            &issued,
            PermanentGeneration::Next,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    let rotated = store.get_user(t.user.id).await.unwrap().unwrap();
    let current = permanent_key(&service, &rotated).await;
    assert_ne!(first, current);
    // The same record id as the current key, under another server key: not ours.
    let other_server_key = PermanentKey::new(&[7u8; 32]).unwrap();
    let generation = token::parse_any_prefix(&current)
        .unwrap()
        .token_id
        .permanent_generation()
        .unwrap();
    let forged = other_server_key.derive(&shared::token::Prefix::default(), t.user.id, generation);
    let forged = forged.secret.expose().to_string();
    // A generation the user has not reached yet.
    let ahead = key
        .derive(&shared::token::Prefix::default(), t.user.id, generation + 1)
        .secret
        .expose()
        .to_string();
    let body = json!([
        entry(&first),
        entry(&forged),
        entry(&ahead),
        entry(&current)
    ])
    .to_string();
    let (status, answer) = report(&service, &scanner, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        labels(&answer),
        [
            "true_positive",
            "false_positive",
            "false_positive",
            "true_positive"
        ]
    );
    let leaked = verify(&store, &TokenFormat::default(), &current, now_ms())
        .await
        .unwrap();
    assert_eq!(leaked.code, VerificationCode::Revoked);
    assert_eq!(leaked.revoked_reason, Some("leaked"));
    // The user moved on at once: the next generation is issued, and handed out from now on.
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    assert_eq!(user.permanent_generation, generation + 1);
    assert!(user.permanent_issued);
    let next = permanent_key(&service, &user).await;
    assert_eq!(next, ahead, "the next generation's key");
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&next),
        now_ms()
    )
    .await
    .is_ok());
    // An older generation's key reported again: true, and no further rotation.
    let body = json!([entry(&first), entry(&current)]).to_string();
    let (_, again) = report(&service, &scanner, &body).await;
    assert_eq!(labels(&again), ["true_positive", "true_positive"]);
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    assert_eq!(user.permanent_generation, generation + 1);
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&next),
        now_ms()
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn a_blocked_owners_leaked_permanent_key_is_revoked_and_moves_on_when_unblocked() {
    let (scanner, service, store, t) = scanned_tenant().await;
    let permanent = permanent_key(&service, &t.user).await;
    store
        .set_user_status(
            t.user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let (status, answer) =
        report(&service, &scanner, &json!([entry(&permanent)]).to_string()).await;
    assert_eq!((status, labels(&answer)), (200, vec!["true_positive"]));
    let verified = verify(&store, &TokenFormat::default(), &permanent, now_ms())
        .await
        .unwrap();
    assert_eq!(verified.revoked_reason, Some("leaked"));
    store
        .set_user_status(
            t.user.id,
            UserStatus::Active,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    let next = permanent_key(&service, &user).await;
    assert_ne!(next, permanent);
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&next),
        now_ms()
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn refused_signatures_revoke_nothing() {
    let (scanner, service, store, t) = scanned_tenant().await;
    let body = json!([entry(&t.user_token)]).to_string();
    let good = scanner.sign(&body);
    let other = Scanner::new().sign(&body);
    let tampered = body.replace("content", "commit");
    let refused: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            tampered.clone(),
            vec![
                ("github-public-key-identifier", KEY_ID),
                ("github-public-key-signature", &good),
            ],
        ),
        (
            body.clone(),
            vec![
                ("github-public-key-identifier", KEY_ID),
                ("github-public-key-signature", &other),
            ],
        ),
        (
            body.clone(),
            vec![
                ("github-public-key-identifier", "unknown"),
                ("github-public-key-signature", &good),
            ],
        ),
        (
            body.clone(),
            vec![
                ("github-public-key-identifier", KEY_ID),
                ("github-public-key-signature", "garbage!"),
            ],
        ),
        (body.clone(), vec![("github-public-key-identifier", KEY_ID)]),
        (body.clone(), vec![("github-public-key-signature", &good)]),
        (body.clone(), vec![]),
    ];
    for (sent, headers) in &refused {
        let answer = send_report(&service, sent, headers).await;
        assert_eq!(
            answer,
            (401, json!({"message": "Invalid signature."})),
            "{headers:?}"
        );
    }
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&t.user_token),
        now_ms()
    )
    .await
    .is_ok());
    // A service that trusts no key refuses every report.
    let mut untrusting = service.clone();
    untrusting.config.secret_scanning_keys = None;
    let headers = [
        ("github-public-key-identifier", KEY_ID),
        ("github-public-key-signature", good.as_str()),
    ];
    assert_eq!(send_report(&untrusting, &body, &headers).await.0, 401);
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&t.user_token),
        now_ms()
    )
    .await
    .is_ok());
    // The trusted signature over the same body does revoke.
    assert_eq!(report(&service, &scanner, &body).await.0, 200);
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&t.user_token),
        now_ms()
    )
    .await
    .is_err());
}

#[tokio::test]
async fn signed_bodies_that_are_not_reports_are_422_and_oversized_ones_413() {
    let scanner = Scanner::new();
    let (service, _) = scanned_service(&scanner).await;
    let too_many = Value::Array(vec![entry("x"); 1001]).to_string();
    for body in [
        "",
        "not json",
        "{}",
        "[]",
        "[1]",
        r#"[{"type": "t"}]"#,
        r#"[{"token": 5, "type": "t"}]"#,
        r#"[{"token": "t"}]"#,
        r#"[{"token": "t", "type": "t", "url": 3}]"#,
        r#"[{"token": "t", "type": "t", "source": ["x"]}]"#,
        too_many.as_str(),
    ] {
        let (status, answer) = report(&service, &scanner, body).await;
        assert_eq!(status, 422, "{body:.60}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(!message.is_empty());
        assert_eq!(
            answer.as_object().unwrap().len(),
            1,
            "only a message: {answer}"
        );
    }
    let huge = format!(
        "[{}]",
        vec![entry("x").to_string(); 1].join(",") + &" ".repeat(leak_response::MAX_REPORT_BYTES)
    );
    let (status, answer) = report(&service, &scanner, &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(
        answer,
        json!({"message": "The request body is larger than 1024 KiB."})
    );
}

#[tokio::test]
async fn a_thousand_token_report_is_read_in_batches_and_revoked_per_owner() {
    let (scanner, service, store, t) = scanned_tenant().await;
    let mut live = Vec::new();
    for _ in 0..120 {
        live.push(token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await);
    }
    for _ in 0..30 {
        live.push(token_for(&store, &t.admin, TokenKind::Personal, Abilities::full()).await);
    }
    let forged: Vec<String> = (0..850)
        .map(|i| {
            TokenFormat::default()
                .generate(TokenKind::ApiKey, t.user.id, EpochMs(now_ms().0 + i))
                .secret
                .expose()
                .to_string()
        })
        .collect();
    let mut entries: Vec<Value> = live.iter().chain(&forged).map(|t| entry(t)).collect();
    // Interleaved, so order is checked across owners and labels.
    entries.sort_by_key(|e| sha256_hex(e["token"].as_str().unwrap()));
    assert_eq!(entries.len(), 1000);
    let body = Value::Array(entries.clone()).to_string();
    let counter = CallCounter::default();
    let (counted, _) = service_intercepted(&service, &store, counter.clone());
    let (status, answer) = report(&counted, &scanner, &body).await;
    assert_eq!(status, 200);
    let answer = answer.as_array().unwrap();
    assert_eq!(answer.len(), 1000);
    for (sent, answered) in entries.iter().zip(answer) {
        let token = sent["token"].as_str().unwrap();
        let expected = if live.iter().any(|l| l == token) {
            "true_positive"
        } else {
            "false_positive"
        };
        assert_eq!(answered["token_hash"], sha256_hex(token));
        assert_eq!(answered["label"], expected);
    }
    // 1000 tokens: 2000 keys (live and retired items), 100 a BatchGetItem; the descendants of
    // the 150 true positives, each of which could mint (`*`): one Query of its child items
    // (none here); 150 revocations: one transaction per 33 of an owner's tokens, each with its
    // audit event (120 = 33 + 33 + 33 + 21, and 30).
    let counts = counter.counts();
    assert_eq!(counts.get("BatchGetItem"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("Query"), Some(&150), "{counts:?}");
    assert_eq!(counts.get("TransactWriteItems"), Some(&5), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 175, "{counts:?}");
    for token in &live {
        assert!(authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(token),
            now_ms()
        )
        .await
        .is_err());
    }
    // Left: each one's own key from the tenant, not reported.
    for (owner, kept) in [(&t.user, &t.user_token), (&t.admin, &t.admin_token)] {
        let keys = store
            .list_tokens(owner.id, TokenFamily::ApiKeys, now_ms())
            .await
            .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, token::parse_any_prefix(kept).unwrap().token_id);
        let personal = store
            .list_tokens(owner.id, TokenFamily::Personal, now_ms())
            .await
            .unwrap();
        assert!(personal.is_empty());
    }
}

#[tokio::test]
async fn self_revocation_answers_the_same_whatever_the_token() {
    let (_, service, store, t) = scanned_tenant().await;
    let permanent = permanent_key(&service, &t.user).await;
    // The same record as the user's permanent key, another secret.
    let generation = token::parse_any_prefix(&permanent)
        .unwrap()
        .token_id
        .permanent_generation()
        .unwrap();
    let forged = PermanentKey::new(&[3u8; 32]).unwrap().derive(
        &shared::token::Prefix::default(),
        t.user.id,
        generation,
    );
    let forged = forged.secret.expose().to_string();
    let accepted = (202, json!({"message": "Accepted."}));
    for token in [
        forged.as_str(),
        "tkna_unknown",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        TokenFormat::default()
            .generate(TokenKind::Personal, t.user.id, now_ms())
            .secret
            .expose(),
    ] {
        let answer = self_revoke(&service, &json!({"token": token}).to_string()).await;
        assert_eq!(answer, accepted, "{token}");
    }
    assert!(
        authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(&permanent),
            now_ms()
        )
        .await
        .is_ok(),
        "not the forged one's"
    );
    for token in [&t.user_token, &permanent] {
        let body = json!({"token": format!(" {token} ")}).to_string();
        assert_eq!(self_revoke(&service, &body).await, accepted);
        assert!(authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(token),
            now_ms()
        )
        .await
        .is_err());
        let verified = verify(&store, &TokenFormat::default(), token, now_ms())
            .await
            .unwrap();
        assert_eq!(verified.revoked_reason, Some("self_revoked"));
        // Again: the same answer, the revocation as it was.
        assert_eq!(self_revoke(&service, &body).await, accepted);
        let again = verify(&store, &TokenFormat::default(), token, now_ms())
            .await
            .unwrap();
        assert_eq!(again.record, verified.record);
    }
    // The user's next permanent key is issued on the next call.
    let next = permanent_key(&service, &t.user).await;
    assert_ne!(next, permanent);
    for body in [
        "",
        "{}",
        r#"{"token": 12}"#,
        r#"{"token": ""}"#,
        r#"{"token": null}"#,
    ] {
        let (status, answer) = self_revoke(&service, body).await;
        assert_eq!(status, 422, "{body}");
        assert!(answer["errors"]["token"].is_array(), "{answer}");
    }
    let (status, _) = self_revoke(&service, "not json").await;
    assert_eq!(status, 400);
    let wrong_method = request(Method::GET, "/api/v1/tokens/revoke", &[], "");
    assert_eq!(call(&service, wrong_method).await.0, 405);
}

#[tokio::test]
async fn an_outage_answers_503_json_and_a_malformed_token_still_202() {
    let scanner = Scanner::new();
    let mut service = unreachable_service().await;
    let keys = scanner.document(KEY_ID);
    service.config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some("unreachable".into()),
        "PERMANENT_TOKEN_KEY" => Some("outage-key-0123456789abcdef0123456789".into()),
        "SECRET_SCANNING_KEYS" => Some(keys.clone()),
        _ => None,
    })
    .unwrap();
    let ours =
        TokenFormat::default().generate(TokenKind::ApiKey, shared::domain::UserId(7), now_ms());
    let ours = ours.secret.expose();
    let unavailable =
        json!({"message": "The service is temporarily unavailable. Please try again shortly."});
    let body = json!([entry(ours)]).to_string();
    assert_eq!(
        report(&service, &scanner, &body).await,
        (503, unavailable.clone())
    );
    let body = json!({ "token": ours }).to_string();
    assert_eq!(self_revoke(&service, &body).await, (503, unavailable));
    // Nothing to read for a string that is not a token: the same 202 as ever.
    let body = json!({"token": "not a token"}).to_string();
    assert_eq!(self_revoke(&service, &body).await.0, 202);
}
