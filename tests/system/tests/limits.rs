//! Usage limits against DynamoDB Local: set by the platform only, charged exactly by the
//! authorizer and by verify with `consume`, refused with the codes, shared by a user's keys.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::audit::Change;
use shared::clock::EpochMs;
use shared::domain::{Abilities, Role};
use shared::error::ApiError;
use shared::limits::{Limits, Refusal};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Key, Metered, TokenRecord, User};
use shared::test_support::faults::CallCounter;
use shared::test_support::{
    add_user, new_user, request, service, service_intercepted, tenant, token_for, Tenant,
};
use shared::token::{self, TokenKind};

const DAY_MS: u64 = 86_400_000;
const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/api/user/me";

async fn call(service: &Service, request: Request) -> (u16, Value) {
    let (status, headers, body) =
        shared::test_support::exchange(tokenctl::serve::router(service), request).await;
    shared::test_support::status_and_json(status, &headers, &body)
}

/// `PUT path` with `body`, as the holder of `token`.
async fn put(service: &Service, token: &str, path: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    call(
        service,
        request(Method::PUT, path, &headers, &body.to_string()),
    )
    .await
}

/// `POST /api/v1/tokens/verify` of `token` by `caller`.
async fn verify(service: &Service, caller: &str, token: &str, consume: bool) -> Value {
    let bearer = format!("Bearer {caller}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let body = json!({"token": token, "consume": consume}).to_string();
    let (status, body) = call(
        service,
        request(Method::POST, "/api/v1/tokens/verify", &headers, &body),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The record a token names.
async fn record_of(store: &DynamoStore, secret: &str) -> TokenRecord {
    let parsed = token::parse_any_prefix(secret).unwrap();
    store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .unwrap()
        .unwrap()
}

fn public_id(secret: &str) -> String {
    let parsed = token::parse_any_prefix(secret).unwrap();
    format!("{}-{}", parsed.user_id, parsed.token_id)
}

fn limits(body: Value) -> Limits {
    Limits::parse(body.as_object().unwrap()).unwrap()
}

async fn set_token_limits(store: &DynamoStore, secret: &str, body: Value, now: u64) {
    let record = record_of(store, secret).await;
    let target = Metered::Token(&record);
    assert!(store
        .set_limits(target, &limits(body), &Change::operator(), EpochMs(now))
        .await
        .unwrap());
}

async fn set_user_limits(store: &DynamoStore, user: &User, body: Value, now: u64) {
    let user = store.get_user(user.id).await.unwrap().unwrap();
    assert!(store
        .set_limits(
            Metered::User(&user),
            &limits(body),
            &Change::operator(),
            EpochMs(now)
        )
        .await
        .unwrap());
}

/// One stored item's attributes.
async fn item(store: &DynamoStore, key: Key) -> HashMap<String, AttributeValue> {
    store.direct().item(&key).await.unwrap().unwrap()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u64 {
    item[name].as_n().unwrap().parse().unwrap()
}

fn token_key(secret: &str) -> Key {
    let parsed = token::parse_any_prefix(secret).unwrap();
    Key::token(parsed.user_id, parsed.kind.family(), parsed.token_id)
}

/// One authorizer event for `secret`.
async fn authorize(service: &Service, secret: &str) -> Result<Value, authorizer::AuthorizerError> {
    let event = json!({
        "type": "REQUEST",
        "methodArn": ARN,
        "headers": {"Authorization": format!("Bearer {secret}")},
    });
    authorizer::authorize(service, &event).await
}

/// The DynamoDB calls `work` makes, by operation (none left out).
async fn calls_of<T>(
    counter: &CallCounter,
    work: impl std::future::Future<Output = T>,
) -> std::collections::BTreeMap<String, usize> {
    let before = counter.counts();
    work.await;
    counter
        .counts()
        .into_iter()
        .map(|(name, count)| (name.clone(), count - before.get(&name).unwrap_or(&0)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

fn effect(policy: &Value) -> &str {
    policy["policyDocument"]["Statement"][0]["Effect"]
        .as_str()
        .unwrap()
}

/// How many of `units` parallel admissions of `secret` at `now` pass.
async fn parallel_admissions(service: &Service, secret: &str, units: usize, now: u64) -> usize {
    let tasks: Vec<_> = (0..units)
        .map(|_| {
            let (service, secret) = (service.clone(), secret.to_string());
            tokio::spawn(async move { service.admit(Some(&secret), EpochMs(now)).await })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => admitted += 1,
            Err(ApiError::TooManyRequests { .. }) => {}
            Err(other) => panic!("a unit failed: {other:?}"),
        }
    }
    admitted
}

#[tokio::test]
async fn credits_count_down_to_usage_exceeded_through_the_authorizer() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let id = public_id(&t.user_token);
    let (status, body) = put(
        &service,
        &t.admin_token,
        &format!("/api/v1/tokens/{id}/limits"),
        json!({"credits": {"remaining": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"data": {"credits": {"remaining": 3, "refill": null}, "rate_limit": null}})
    );
    for left in [2, 1, 0] {
        let policy = authorize(&service, &t.user_token).await.unwrap();
        assert_eq!(effect(&policy), "Allow", "{policy}");
        assert_eq!(policy["context"]["credits_remaining"], json!(left));
        assert_eq!(policy["context"]["user_id"], json!(t.user.id.0));
    }
    let policy = authorize(&service, &t.user_token).await.unwrap();
    assert_eq!(effect(&policy), "Deny");
    // Credits without a refill: waiting does not help, so no retry_after.
    assert_eq!(policy["context"], json!({"code": "USAGE_EXCEEDED"}));
    assert_eq!(
        number(&item(&store, token_key(&t.user_token)).await, "credits"),
        0
    );

    // Verify reports without charging, also to the token itself.
    let report = verify(&service, &t.admin_token, &t.user_token, false).await;
    assert_eq!(report["valid"], json!(false));
    assert_eq!(report["code"], json!("USAGE_EXCEEDED"));
    assert_eq!(report["credits"], json!({"remaining": 0}));
    assert_eq!(report["ratelimit"], Value::Null);
    assert_eq!(report["token"]["id"], json!(id));

    // The service's own routes never refuse a token for its limits.
    let bearer = format!("Bearer {}", t.user_token);
    let (status, listing) = call(
        &service,
        request(
            Method::GET,
            "/api/user/api-keys",
            &[("authorization", bearer.as_str())],
            "",
        ),
    )
    .await;
    assert_eq!(status, 200, "{listing}");

    // The self-authenticating example route answers as API Gateway does, with the code.
    let (status, headers, bytes) = shared::test_support::exchange(
        tokenctl::serve::router(&service),
        request(
            Method::GET,
            "/api/user/me",
            &[("authorization", bearer.as_str())],
            "",
        ),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        json!({"message": "Too Many Requests.", "code": "USAGE_EXCEEDED"})
    );
    assert!(headers.get("retry-after").is_none());

    // An invalid token is "Unauthorized" (API Gateway's 401), not a Deny.
    let mut forged = t.user_token.clone();
    forged.replace_range(10..11, if &forged[10..11] == "A" { "B" } else { "A" });
    let refused = authorize(&service, &forged).await.unwrap_err();
    assert!(matches!(refused, authorizer::AuthorizerError::Unauthorized));
    let diagnostic: lambda_http::lambda_runtime::Diagnostic = refused.into();
    assert_eq!(diagnostic.error_message, "Unauthorized");
}

#[tokio::test]
async fn forty_parallel_units_against_twenty_credits_pass_exactly_twenty() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let now = now_ms();
    // The token alone: one conditional UpdateItem a unit.
    set_token_limits(
        &store,
        &t.user_token,
        json!({"credits": {"remaining": 20}}),
        now.0,
    )
    .await;
    assert_eq!(
        parallel_admissions(&service, &t.user_token, 40, now.0).await,
        20
    );
    assert_eq!(
        number(&item(&store, token_key(&t.user_token)).await, "credits"),
        0
    );

    // The user and the token: a two-item transaction a unit, the user's credits the tighter.
    let second = token_for(&store, &t.admin, TokenKind::ApiKey, Abilities::full()).await;
    set_token_limits(
        &store,
        &second,
        json!({"credits": {"remaining": 100}}),
        now.0,
    )
    .await;
    set_user_limits(
        &store,
        &t.admin,
        json!({"credits": {"remaining": 20}}),
        now.0,
    )
    .await;
    assert_eq!(parallel_admissions(&service, &second, 40, now.0).await, 20);
    assert_eq!(
        number(&item(&store, token_key(&second)).await, "credits"),
        80
    );
    assert_eq!(
        number(&item(&store, Key::user(t.admin.id)).await, "credits"),
        0
    );
}

#[tokio::test]
async fn a_rate_window_refuses_past_its_limit_and_opens_at_the_next_window() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let window_start = now_ms().0 / 60_000 * 60_000;
    set_token_limits(
        &store,
        &t.user_token,
        json!({"rate_limit": {"limit": 5, "window_seconds": 60}}),
        window_start,
    )
    .await;
    // 12 parallel units 10 s into a window: exactly 5 pass.
    let at = window_start + 10_000;
    assert_eq!(
        parallel_admissions(&service, &t.user_token, 12, at).await,
        5
    );
    match service
        .admit(Some(&t.user_token), EpochMs(at + 1_000))
        .await
    {
        Err(ApiError::TooManyRequests {
            refusal: Refusal::RateLimited,
            retry_after: Some(49),
        }) => {}
        other => panic!("{other:?}"),
    }
    // The next window opens again, exactly as wide, also under parallel load.
    let next = window_start + 60_000;
    assert_eq!(
        parallel_admissions(&service, &t.user_token, 12, next).await,
        5
    );
    let stored = item(&store, token_key(&t.user_token)).await;
    assert_eq!(number(&stored, "window_start"), next / 1000);
    assert_eq!(number(&stored, "window_used"), 5);

    // The authorizer's Deny names the code and when to retry.
    let hour = now_ms();
    set_token_limits(
        &store,
        &t.user_token,
        json!({"rate_limit": {"limit": 1, "window_seconds": 86400}}),
        hour.0,
    )
    .await;
    let first = authorize(&service, &t.user_token).await.unwrap();
    assert_eq!(effect(&first), "Allow");
    assert_eq!(first["context"]["ratelimit_remaining"], json!(0));
    let denied = authorize(&service, &t.user_token).await.unwrap();
    assert_eq!(effect(&denied), "Deny");
    assert_eq!(denied["context"]["code"], json!("RATE_LIMITED"));
    let retry = denied["context"]["retry_after"].as_u64().unwrap();
    assert!((1..=86_400).contains(&retry), "{retry}");
    let report = verify(&service, &t.admin_token, &t.user_token, false).await;
    assert_eq!(report["code"], json!("RATE_LIMITED"));
    assert_eq!(report["ratelimit"]["limit"], json!(1));
    assert_eq!(report["ratelimit"]["remaining"], json!(0));
    let reset = report["ratelimit"]["reset"].as_str().unwrap();
    assert!(reset.ends_with("T00:00:00Z"), "{reset}");
}

#[tokio::test]
async fn user_limits_are_shared_by_every_key_including_one_minted_later() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let now = now_ms();
    let (status, body) = put(
        &service,
        &t.admin_token,
        &format!("/api/v1/users/{}/limits", t.user.id),
        json!({"credits": {"remaining": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let first = t.user_token.clone();
    let second = token_for(&store, &t.user, TokenKind::Personal, Abilities::full()).await;
    assert!(service.admit(Some(&first), now).await.is_ok());
    assert!(service.admit(Some(&second), now).await.is_ok());
    let later = token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    for key in [&first, &second, &later] {
        assert!(matches!(
            service.admit(Some(key), now).await,
            Err(ApiError::TooManyRequests {
                refusal: Refusal::UsageExceeded,
                ..
            })
        ));
    }
    let report = verify(&service, &t.admin_token, &later, false).await;
    assert_eq!(report["code"], json!("USAGE_EXCEEDED"));
    // Another user of the platform is not touched.
    assert!(service.admit(Some(&t.admin_token), now).await.is_ok());
}

#[tokio::test]
async fn the_tighter_of_user_and_token_is_reported_and_a_refused_unit_charges_nothing() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let now = now_ms().0 / 3_600_000 * 3_600_000 + 1_000;
    set_user_limits(
        &store,
        &t.user,
        json!({"credits": {"remaining": 10}, "rate_limit": {"limit": 5, "window_seconds": 3600}}),
        now,
    )
    .await;
    set_token_limits(
        &store,
        &t.user_token,
        json!({"credits": {"remaining": 3}, "rate_limit": {"limit": 2, "window_seconds": 3600}}),
        now,
    )
    .await;
    let (_, usage) = service
        .admit(Some(&t.user_token), EpochMs(now))
        .await
        .unwrap();
    assert_eq!(usage.credits.unwrap().remaining, 2);
    assert_eq!(usage.ratelimit.unwrap().limit, 2);
    assert_eq!(usage.ratelimit.unwrap().remaining, 1);
    service
        .admit(Some(&t.user_token), EpochMs(now))
        .await
        .unwrap();
    // The token's window is full: refused, and neither record charged.
    assert!(matches!(
        service.admit(Some(&t.user_token), EpochMs(now)).await,
        Err(ApiError::TooManyRequests {
            refusal: Refusal::RateLimited,
            retry_after: Some(3599),
        })
    ));
    let token_item = item(&store, token_key(&t.user_token)).await;
    let user_item = item(&store, Key::user(t.user.id)).await;
    assert_eq!(number(&token_item, "credits"), 1);
    assert_eq!(number(&token_item, "window_used"), 2);
    assert_eq!(number(&user_item, "credits"), 8);
    assert_eq!(number(&user_item, "window_used"), 2);
}

#[tokio::test]
async fn credits_refill_lazily_at_each_utc_day_or_calendar_month() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let day_start = now_ms().0 / DAY_MS * DAY_MS;
    set_token_limits(
        &store,
        &t.user_token,
        json!({"credits": {"remaining": 1, "refill": {"amount": 3, "interval": "day"}}}),
        day_start + 1_000,
    )
    .await;
    let today = day_start + 60_000;
    assert_eq!(
        parallel_admissions(&service, &t.user_token, 4, today).await,
        1
    );
    match service.admit(Some(&t.user_token), EpochMs(today)).await {
        Err(ApiError::TooManyRequests {
            refusal: Refusal::UsageExceeded,
            retry_after: Some(wait),
        }) => assert_eq!(wait, (DAY_MS - 60_000) / 1000),
        other => panic!("{other:?}"),
    }
    // Nothing is written until the first use after the boundary; then exactly `amount`.
    let tomorrow = day_start + DAY_MS + 5_000;
    let stored = item(&store, token_key(&t.user_token)).await;
    assert_eq!(number(&stored, "refilled_for"), day_start / 1000);
    assert_eq!(
        parallel_admissions(&service, &t.user_token, 6, tomorrow).await,
        3
    );
    let stored = item(&store, token_key(&t.user_token)).await;
    assert_eq!(number(&stored, "credits"), 0);
    assert_eq!(number(&stored, "refilled_for"), (day_start + DAY_MS) / 1000);

    // Monthly: 2026-11-30T23:59:59Z has none left, 2026-12-01T00:00:00Z has the refill.
    let november_end = 1_796_083_199_000;
    set_user_limits(
        &store,
        &t.admin,
        json!({"credits": {"remaining": 0, "refill": {"amount": 2, "interval": "month"}}}),
        november_end - 1_000,
    )
    .await;
    assert!(service
        .admit(Some(&t.admin_token), EpochMs(november_end))
        .await
        .is_err());
    let (_, usage) = service
        .admit(Some(&t.admin_token), EpochMs(november_end + 1_000))
        .await
        .unwrap();
    assert_eq!(usage.credits.unwrap().remaining, 1);
}

#[tokio::test]
async fn verify_consumes_only_when_asked() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    set_token_limits(
        &store,
        &t.user_token,
        json!({"credits": {"remaining": 2}}),
        now_ms().0,
    )
    .await;
    let report = verify(&service, &t.admin_token, &t.user_token, false).await;
    assert_eq!(report["credits"], json!({"remaining": 2}));
    assert_eq!(report["code"], json!("VALID"));
    // Another platform's admin learns nothing of the limits, and consumes nothing.
    let other = tenant(&store).await;
    assert_eq!(
        verify(&service, &other.admin_token, &t.user_token, true).await,
        json!({"valid": false, "code": "NOT_FOUND", "token": null, "user": null, "credits": null, "ratelimit": null})
    );
    assert_eq!(
        number(&item(&store, token_key(&t.user_token)).await, "credits"),
        2
    );
    // The token verifies itself, consuming: one unit each, then refused.
    let first = verify(&service, &t.user_token, &t.user_token, true).await;
    assert_eq!(
        (first["valid"].clone(), first["credits"].clone()),
        (json!(true), json!({"remaining": 1}))
    );
    let second = verify(&service, &t.user_token, &t.user_token, true).await;
    assert_eq!(second["credits"], json!({"remaining": 0}));
    assert_eq!(second["code"], json!("VALID"));
    let third = verify(&service, &t.user_token, &t.user_token, true).await;
    assert_eq!(third["code"], json!("USAGE_EXCEEDED"));
    assert_eq!(third["valid"], json!(false));
    assert_eq!(
        number(&item(&store, token_key(&t.user_token)).await, "credits"),
        0
    );
    // A bad consume is the verify route's 422.
    let bearer = format!("Bearer {}", t.admin_token);
    let body = json!({"token": t.user_token, "consume": "lots"}).to_string();
    let (status, answer) = call(
        &service,
        request(
            Method::POST,
            "/api/v1/tokens/verify",
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            &body,
        ),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["errors"]["consume"].is_array());
}

#[tokio::test]
async fn unmetered_tokens_keep_one_read_and_report_no_limits() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let counter = CallCounter::default();
    let (counted, _) = service_intercepted(&service, &store, counter.clone());
    // The first use also records the last use (once per 5 minutes); the second is one read.
    authorize(&counted, &t.user_token).await.unwrap();
    let calls = calls_of(&counter, authorize(&counted, &t.user_token)).await;
    assert_eq!(calls, [("BatchGetItem".to_string(), 1)].into());
    let policy = authorize(&counted, &t.user_token).await.unwrap();
    assert_eq!(effect(&policy), "Allow");
    assert!(policy["context"].get("credits_remaining").is_none());
    let report = verify(&service, &t.admin_token, &t.user_token, true).await;
    assert_eq!(report["credits"], Value::Null);
    assert_eq!(report["ratelimit"], Value::Null);
    assert_eq!(report["code"], json!("VALID"));

    // Metered: the read and one conditional UpdateItem; both metered: one transaction.
    let credits = json!({"credits": {"remaining": 5}});
    set_token_limits(&store, &t.user_token, credits.clone(), now_ms().0).await;
    let calls = calls_of(&counter, authorize(&counted, &t.user_token)).await;
    assert_eq!(
        calls,
        [
            ("BatchGetItem".to_string(), 1),
            ("UpdateItem".to_string(), 1)
        ]
        .into()
    );
    set_user_limits(&store, &t.user, credits, now_ms().0).await;
    let calls = calls_of(&counter, authorize(&counted, &t.user_token)).await;
    assert_eq!(
        calls,
        [
            ("BatchGetItem".to_string(), 1),
            ("TransactWriteItems".to_string(), 1)
        ]
        .into()
    );
}

#[tokio::test]
async fn only_a_platform_admin_sets_limits_and_only_inside_its_platform() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other: Tenant = tenant(&store).await;
    let user_path = format!("/api/v1/users/{}/limits", t.user.id);
    let token_path = format!("/api/v1/tokens/{}/limits", public_id(&t.user_token));
    let body = json!({"credits": {"remaining": 5}});
    for path in [&user_path, &token_path] {
        // A user, even of the same platform, with its own full-access token.
        let (status, answer) = put(&service, &t.user_token, path, body.clone()).await;
        assert_eq!(
            (status, answer),
            (403, json!({"message": "You are not an administrator."}))
        );
        // An admin whose token is not full-access.
        let narrow = token_for(
            &store,
            &t.admin,
            TokenKind::Personal,
            Abilities::parse(vec!["tokens:manage".into()]).unwrap(),
        )
        .await;
        assert_eq!(put(&service, &narrow, path, body.clone()).await.0, 403);
        let (status, _) = call(&service, request(Method::PUT, path, &[], &body.to_string())).await;
        assert_eq!(status, 401);
    }
    // Another platform's admin: the same 404 as an unknown id.
    let (status, answer) = put(&service, &other.admin_token, &user_path, body.clone()).await;
    assert_eq!(
        (status, answer),
        (404, json!({"message": "User not found."}))
    );
    let (status, answer) = put(&service, &other.admin_token, &token_path, body.clone()).await;
    assert_eq!(
        (status, answer),
        (404, json!({"message": "Token not found."}))
    );
    for path in [
        "/api/v1/users/99999999999/limits",
        "/api/v1/users/abc/limits",
        "/api/v1/users/-1/limits",
    ] {
        let (status, answer) = put(&service, &t.admin_token, path, body.clone()).await;
        assert_eq!(
            (status, answer),
            (404, json!({"message": "User not found."}))
        );
    }
    let unknown =
        shared::token::TokenFormat::default().generate(TokenKind::ApiKey, t.user.id, now_ms());
    for id in [
        format!("{}-{}", t.user.id, unknown.parsed.token_id),
        "nonsense".to_string(),
    ] {
        let path = format!("/api/v1/tokens/{id}/limits");
        let (status, answer) = put(&service, &t.admin_token, &path, body.clone()).await;
        assert_eq!(
            (status, answer),
            (404, json!({"message": "Token not found."}))
        );
    }
    // Nothing was set by any of them.
    assert!(store
        .get_user(t.user.id)
        .await
        .unwrap()
        .unwrap()
        .meter
        .is_none());
    assert!(record_of(&store, &t.user_token).await.meter.is_none());

    // An owner can never change its limits through an update either.
    let bearer = format!("Bearer {}", t.user_token);
    let own = format!("/api/user/api-keys/{}", public_id(&t.user_token));
    for field in ["credits", "rate_limit", "limits"] {
        let body = json!({"name": "x", field: {"remaining": 1_000_000}}).to_string();
        let (status, answer) = call(
            &service,
            request(
                Method::PATCH,
                &own,
                &[
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ],
                &body,
            ),
        )
        .await;
        assert_eq!(
            (status, answer),
            (
                403,
                json!({"message": "Only a platform admin can change usage limits."})
            )
        );
    }
    assert_eq!(record_of(&store, &t.user_token).await.name, "test");
}

#[tokio::test]
async fn bad_limit_shapes_are_422_with_every_problem_named() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let path = format!("/api/v1/users/{}/limits", t.user.id);
    let cases = [
        (json!({"credits": {"remaining": -1}}), "credits.remaining"),
        (
            json!({"credits": {"remaining": 1_000_000_001u64}}),
            "credits.remaining",
        ),
        (json!({"credits": {}}), "credits.remaining"),
        (json!({"credits": 5}), "credits"),
        (
            json!({"credits": {"remaining": 1, "refill": {"amount": 0, "interval": "day"}}}),
            "credits.refill.amount",
        ),
        (
            json!({"credits": {"remaining": 1, "refill": {"amount": 1, "interval": "week"}}}),
            "credits.refill.interval",
        ),
        (
            json!({"credits": {"remaining": 1, "refill": {"amount": 1}}}),
            "credits.refill.interval",
        ),
        (
            json!({"rate_limit": {"limit": 0, "window_seconds": 1}}),
            "rate_limit.limit",
        ),
        (
            json!({"rate_limit": {"limit": 1, "window_seconds": 86401}}),
            "rate_limit.window_seconds",
        ),
        (
            json!({"rate_limit": {"limit": 1}}),
            "rate_limit.window_seconds",
        ),
        (
            json!({"rate_limit": {"limit": 1.5, "window_seconds": 60}}),
            "rate_limit.limit",
        ),
        (
            json!({"ratelimit": {"limit": 1, "window_seconds": 60}}),
            "ratelimit",
        ),
        (
            json!({"credits": {"remaining": 1, "extra": true}}),
            "credits.extra",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = put(&service, &t.admin_token, &path, body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["message"].is_string(), "{answer}");
        assert!(answer["errors"][field].is_array(), "{body}: {answer}");
    }
    let (status, answer) = put(&service, &t.admin_token, &path, json!([1])).await;
    assert_eq!(
        (status, answer),
        (
            400,
            json!({"message": "The request body must be a JSON object."})
        )
    );
    assert!(store
        .get_user(t.user.id)
        .await
        .unwrap()
        .unwrap()
        .meter
        .is_none());
    // An empty body removes every limit (and is valid).
    let (status, answer) = put(&service, &t.admin_token, &path, json!({})).await;
    assert_eq!(
        (status, answer),
        (200, json!({"data": {"credits": null, "rate_limit": null}}))
    );
}

#[tokio::test]
async fn a_limits_change_is_audited_and_a_roll_moves_the_credits() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let path = format!("/api/v1/users/{}/limits", t.user.id);
    let set = json!({"credits": {"remaining": 7, "refill": {"amount": 7, "interval": "month"}}, "rate_limit": null});
    assert_eq!(
        put(&service, &t.admin_token, &path, set.clone()).await.0,
        200
    );
    let cleared = json!({"rate_limit": {"limit": 9, "window_seconds": 1}});
    assert_eq!(put(&service, &t.admin_token, &path, cleared).await.0, 200);
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    let meter = user.meter.unwrap();
    assert!(meter.limits.credits.is_none());
    assert_eq!(meter.limits.rate_limit.unwrap().limit, 9);
    let page = store
        .list_events(shared::store::EventScope::User(t.user.id), 2, None)
        .await
        .unwrap();
    let newest = &page.events[0];
    assert_eq!(newest["action"], json!("limits.updated"));
    assert_eq!(newest["actor"]["user_id"], json!(t.admin.id.0));
    assert_eq!(
        newest["details"]["previous"],
        json!({"credits": {"remaining": 7, "refill": {"amount": 7, "interval": "month"}}, "rate_limit": null})
    );
    assert_eq!(
        newest["details"]["limits"],
        json!({"credits": null, "rate_limit": {"limit": 9, "window_seconds": 1}})
    );
    assert_eq!(page.events[1]["action"], json!("limits.updated"));

    // A roll hands the predecessor's credits to the successor: during the grace period both
    // draw on that one meter.
    let owner = add_user(&store, new_user(&t.platform, Role::User)).await;
    let key = token_for(&store, &owner, TokenKind::ApiKey, Abilities::full()).await;
    set_token_limits(
        &store,
        &key,
        json!({"credits": {"remaining": 4}}),
        now_ms().0,
    )
    .await;
    service.admit(Some(&key), now_ms()).await.unwrap();
    let bearer = format!("Bearer {key}");
    let (status, rolled) = call(
        &service,
        request(
            Method::POST,
            &format!("/api/user/api-keys/{}/roll", public_id(&key)),
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            r#"{"grace_seconds": 600}"#,
        ),
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    let successor = rolled["api_key"]["token"].as_str().unwrap().to_string();
    let report = verify(&service, &t.admin_token, &successor, false).await;
    assert_eq!(report["credits"], json!({"remaining": 3}));
    let (_, usage) = service.admit(Some(&key), now_ms()).await.unwrap();
    assert_eq!(
        usage.credits.unwrap().remaining,
        2,
        "the predecessor's unit"
    );
    let report = verify(&service, &t.admin_token, &successor, false).await;
    assert_eq!(report["credits"], json!({"remaining": 2}));
    let report = verify(&service, &t.admin_token, &key, false).await;
    assert_eq!(report["credits"], json!({"remaining": 2}), "one meter");
    for _ in 0..2 {
        service.admit(Some(&successor), now_ms()).await.unwrap();
    }
    for spent in [&key, &successor] {
        assert!(matches!(
            service.admit(Some(spent), now_ms()).await,
            Err(ApiError::TooManyRequests {
                refusal: Refusal::UsageExceeded,
                ..
            })
        ));
    }
}

/// DynamoDB cancels transactions that touch the same item at once (DynamoDB Local does not), and
/// an answer can be lost after a commit: a unit charged to a user and its token is tried again,
/// with the same client request token, and counted once.
#[tokio::test]
async fn a_charge_lost_to_a_conflict_or_a_lost_answer_counts_once() {
    use shared::test_support::faults::{Fault, FaultInjector, Operation};
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (faulty, _) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let now = now_ms();
    set_token_limits(
        &store,
        &t.user_token,
        json!({"credits": {"remaining": 10}}),
        now.0,
    )
    .await;
    set_user_limits(
        &store,
        &t.user,
        json!({"credits": {"remaining": 10}}),
        now.0,
    )
    .await;
    for fault in [
        Fault::Cancelled("TransactionConflict"),
        Fault::Cancelled("TransactionConflict"),
        Fault::CommittedAnswerLost,
    ] {
        faults.plan(Operation::TransactWriteItems, fault);
    }
    let (_, usage) = faulty.admit(Some(&t.user_token), now).await.unwrap();
    assert_eq!(faults.injected(), 3);
    assert_eq!(usage.credits.unwrap().remaining, 9);
    assert_eq!(
        number(&item(&store, token_key(&t.user_token)).await, "credits"),
        9
    );
    assert_eq!(
        number(&item(&store, Key::user(t.user.id)).await, "credits"),
        9
    );
}

/// A user's profile is held by transactions (token creations, charges of the user and a token
/// together, limit changes): a unit charged to the user alone (one UpdateItem of the profile)
/// refused by such a lock is tried again, and counted once.
#[tokio::test]
async fn a_charge_refused_by_a_transaction_holding_the_profile_is_tried_again() {
    use shared::test_support::faults::{Fault, FaultInjector, Operation};
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (faulty, _) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let now = now_ms();
    set_user_limits(
        &store,
        &t.user,
        json!({"credits": {"remaining": 10}}),
        now.0,
    )
    .await;
    // Its last use recorded first, so the unit's UpdateItem is the only one.
    service
        .authenticate(Some(&t.user_token), now)
        .await
        .unwrap();
    faults.plan(Operation::UpdateItem, Fault::Conflict);
    faults.plan(Operation::UpdateItem, Fault::Conflict);
    let (_, usage) = faulty.admit(Some(&t.user_token), now).await.unwrap();
    assert_eq!(faults.injected(), 2);
    assert_eq!(faults.pending(), 0);
    assert_eq!(usage.credits.unwrap().remaining, 9);
    assert_eq!(
        number(&item(&store, Key::user(t.user.id)).await, "credits"),
        9
    );
}
