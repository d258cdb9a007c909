//! The authorizer, the verify route and the example protected route against DynamoDB Local.

use std::time::Duration;

use lambda_http::http::Method;
use serde_json::{json, Value};

use authorizer::{authorize, handle_event, router, AuthorizerError};
use shared::clock::{EpochMs, EpochSeconds};
use shared::demo;
use shared::domain::{Abilities, TokenName, UserId, UserStatus};
use shared::mint::{mint, MintRequest};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Leak, Owner, Revocation, LAST_USED_RESOLUTION_MS};
use shared::test_support::{
    event, fill_placeholders, request, service, tenant, token_for, unreachable_service, Tenant,
};
use shared::token::{self, TokenFamily, TokenKind};

const METHOD_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/api/user/me";

fn authorizer_event(headers: Value) -> Value {
    json!({"type": "REQUEST", "methodArn": METHOD_ARN, "headers": headers})
}

fn effect(policy: &Value) -> &str {
    policy["policyDocument"]["Statement"][0]["Effect"]
        .as_str()
        .unwrap()
}

/// Tokens in every state the authorizer must tell apart.
struct States {
    expired: String,
    revoked: String,
    leaked: String,
    blocked: String,
    disabled: String,
    unknown: String,
    bad_checksum: String,
}

async fn states(store: &DynamoStore, t: &Tenant) -> States {
    let now = now_ms();
    let request = |expires_at| MintRequest {
        kind: TokenKind::ApiKey,
        name: TokenName::parse("state").unwrap(),
        abilities: Abilities::full(),
        expires_at,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    let owner = Owner::from(&t.admin);
    let expired = mint(
        store,
        &shared::token::TokenFormat::default(),
        owner,
        request(Some(now.0 / 1000 - 1)),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    let revoked = mint(
        store,
        &shared::token::TokenFormat::default(),
        owner,
        request(None),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    assert!(store
        .revoke_token(
            t.admin.id,
            TokenFamily::ApiKeys,
            revoked.record.id,
            &shared::audit::Change::operator(),
            now
        )
        .await
        .unwrap());
    let blocked_user = shared::test_support::add_user(
        store,
        shared::test_support::new_user(&t.platform, shared::domain::Role::User),
    )
    .await;
    let blocked = token_for(store, &blocked_user, TokenKind::ApiKey, Abilities::full()).await;
    store
        .set_user_status(
            blocked_user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let disabled = shared::test_support::disabled_token(store, &t.admin).await;
    // Revoked as a secret-scanning report revokes a leaked key.
    let leaked = mint(
        store,
        &shared::token::TokenFormat::default(),
        owner,
        request(None),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    let why = Revocation::Leaked(Leak::new(Some("https://example.com/a"), Some("content")));
    assert_eq!(
        store
            .revoke_tokens(
                &[(leaked.record.clone(), why)],
                &shared::audit::Change::operator(),
                now
            )
            .await
            .unwrap(),
        1
    );
    let mut bad_checksum = t.user_token.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    States {
        expired: expired.secret.expose().to_string(),
        revoked: revoked.secret.expose().to_string(),
        leaked: leaked.secret.expose().to_string(),
        blocked,
        disabled,
        unknown: shared::token::TokenFormat::default()
            .generate(TokenKind::ApiKey, UserId(77_777_777), now)
            .secret
            .expose()
            .to_string(),
        bad_checksum,
    }
}

#[tokio::test]
async fn allow_for_the_calling_method_with_the_caller_in_the_context() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let limited = Abilities::parse(vec!["calls:read".into(), "leads:write".into()]).unwrap();
    let token = token_for(&store, &t.user, TokenKind::Personal, limited).await;
    let parsed = token::parse_any_prefix(&token).unwrap();
    for headers in [
        json!({"Authorization": format!("Bearer {token}")}),
        json!({"authorization": format!("bearer {token}")}),
        json!({"Authorization": token.clone()}),
        json!({"token": token.clone()}),
    ] {
        let policy = authorize(&service, &authorizer_event(headers.clone()))
            .await
            .unwrap();
        assert_eq!(
            policy,
            json!({
                "principalId": t.user.id.to_string(),
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": METHOD_ARN}],
                },
                "context": {
                    "user_id": t.user.id.0,
                    "platform_id": t.platform.id.0,
                    "token_id": format!("{}-{}", t.user.id, parsed.token_id),
                    "kind": "personal",
                    "role": "user",
                    "abilities": "calls:read,leads:write",
                },
            }),
            "{headers}"
        );
    }
}

#[tokio::test]
async fn unauthorized_for_every_token_that_does_not_authenticate() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let s = states(&store, &t).await;
    let cases = [
        ("no header", json!({})),
        ("empty", json!({"Authorization": "Bearer "})),
        ("garbage", json!({"Authorization": "Bearer garbage"})),
        (
            "unknown",
            json!({"Authorization": format!("Bearer {}", s.unknown)}),
        ),
        (
            "bad checksum",
            json!({"Authorization": format!("Bearer {}", s.bad_checksum)}),
        ),
        (
            "expired",
            json!({"Authorization": format!("Bearer {}", s.expired)}),
        ),
        (
            "revoked",
            json!({"Authorization": format!("Bearer {}", s.revoked)}),
        ),
        (
            "leaked",
            json!({"Authorization": format!("Bearer {}", s.leaked)}),
        ),
        (
            "blocked owner",
            json!({"Authorization": format!("Bearer {}", s.blocked)}),
        ),
        (
            "disabled",
            json!({"Authorization": format!("Bearer {}", s.disabled)}),
        ),
    ];
    for (name, headers) in cases {
        // The error API Gateway turns into its UNAUTHORIZED response (401), by its message.
        let refused = authorize(&service, &authorizer_event(headers)).await;
        assert!(
            matches!(refused, Err(AuthorizerError::Unauthorized)),
            "{name}: {refused:?}"
        );
        let diagnostic: lambda_http::lambda_runtime::Diagnostic = refused.unwrap_err().into();
        assert_eq!(diagnostic.error_message, "Unauthorized", "{name}");
    }
    // A malformed event is an error (API Gateway's AUTHORIZER_FAILURE), never a panic.
    assert!(matches!(
        authorize(&service, &json!({"type": "REQUEST"})).await,
        Err(AuthorizerError::NoMethodArn)
    ));
}

#[tokio::test]
async fn a_database_fault_is_an_authorizer_failure_not_a_deny() {
    let service = unreachable_service().await;
    let token =
        shared::token::TokenFormat::default().generate(TokenKind::ApiKey, UserId(1), now_ms());
    let event =
        authorizer_event(json!({"Authorization": format!("Bearer {}", token.secret.expose())}));
    assert!(matches!(
        handle_event(&service, &router(service.clone()), event).await,
        Err(AuthorizerError::Unavailable)
    ));
}

async fn last_used(store: &DynamoStore, token: &str) -> Option<u64> {
    let parsed = token::parse_any_prefix(token).unwrap();
    store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .unwrap()
        .unwrap()
        .last_used_at_ms
}

#[tokio::test]
async fn last_use_is_recorded_at_most_once_per_five_minutes() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let parsed = token::parse_any_prefix(&t.user_token).unwrap();
    let (user, family, id) = (parsed.user_id, parsed.kind.family(), parsed.token_id);
    let now = now_ms();
    // Two concurrent writers at the same moment: one write.
    let (first, second) = tokio::join!(
        store.touch_token(user, family, id, now),
        store.touch_token(user, family, id, now)
    );
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|w| **w)
            .count(),
        1
    );
    assert!(!store
        .touch_token(user, family, id, EpochMs(now.0 + 60_000))
        .await
        .unwrap());
    assert_eq!(
        last_used(&store, &t.user_token).await,
        Some(now).map(|at| at.0)
    );
    let later = now.0 + LAST_USED_RESOLUTION_MS;
    assert!(store
        .touch_token(user, family, id, EpochMs(later))
        .await
        .unwrap());
    assert_eq!(last_used(&store, &t.user_token).await, Some(later));
    // Tokens that no longer exist are not recreated by a touch.
    assert!(!store
        .touch_token(user, family, token::TokenId::generate(EpochMs(1)), now)
        .await
        .unwrap());
}

#[tokio::test]
async fn authentications_record_the_last_use_in_the_background_once() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let event = authorizer_event(json!({"Authorization": format!("Bearer {}", t.user_token)}));
    assert_eq!(effect(&authorize(&service, &event).await.unwrap()), "Allow");
    let mut recorded = None;
    for _ in 0..100 {
        recorded = last_used(&store, &t.user_token).await;
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded = recorded.expect("the last use was recorded");
    // A second authentication within five minutes writes nothing.
    assert_eq!(effect(&authorize(&service, &event).await.unwrap()), "Allow");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(last_used(&store, &t.user_token).await, Some(recorded));
}

async fn verify_as(service: &Service, caller: &str, token: &str) -> (u16, Value) {
    let bearer = format!("Bearer {caller}");
    let body = json!({ "token": token }).to_string();
    shared::test_support::call(
        authorizer::router,
        service,
        request(
            Method::POST,
            "/api/v1/tokens/verify",
            &[("authorization", &bearer)],
            &body,
        ),
    )
    .await
}

#[tokio::test]
async fn verify_answers_every_code() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let s = states(&store, &t).await;
    let (status, body) = verify_as(&service, &t.admin_token, &t.user_token).await;
    assert_eq!(status, 200);
    let parsed = token::parse_any_prefix(&t.user_token).unwrap();
    assert_eq!(
        body,
        json!({
            "valid": true,
            "code": "VALID",
            "token": {
                "id": format!("{}-{}", t.user.id, parsed.token_id),
                "user_id": t.user.id.0,
                "kind": "api_key",
                "name": "test",
                "abilities": ["*"],
                "expires_at": null,
                "last_used_at": null,
                "revoked_reason": null,
                "meta": null,
            },
            "user": {"id": t.user.id.0, "external_id": null, "meta": null},
            "credits": null,
            "ratelimit": null,
        })
    );
    for (token, code, reason) in [
        (&s.expired, "EXPIRED", json!(null)),
        (&s.revoked, "REVOKED", json!("deleted")),
        (&s.leaked, "REVOKED", json!("leaked")),
        (&s.blocked, "DISABLED", json!("blocked")),
        (&s.disabled, "DISABLED", json!(null)),
    ] {
        let (status, body) = verify_as(&service, &t.admin_token, token).await;
        assert_eq!((status, body["code"].as_str().unwrap()), (200, code));
        assert_eq!(body["valid"], false);
        assert!(body["token"]["id"].is_string());
        assert_eq!(body["token"]["revoked_reason"], reason, "{code}");
    }
    let not_found = (
        200,
        json!({"valid": false, "code": "NOT_FOUND", "token": null, "user": null, "credits": null, "ratelimit": null}),
    );
    for token in [&s.unknown, &s.bad_checksum, &"garbage".to_string()] {
        assert_eq!(verify_as(&service, &t.admin_token, token).await, not_found);
    }
    // Another platform's token: exactly like an unknown one.
    assert_eq!(
        verify_as(&service, &t.admin_token, &other.user_token).await,
        not_found
    );
    // A token may verify itself; a plain user may not verify others.
    let (status, body) = verify_as(&service, &t.user_token, &t.user_token).await;
    assert_eq!((status, body["code"].as_str().unwrap()), (200, "VALID"));
    assert_eq!(
        verify_as(&service, &t.user_token, &t.admin_token).await,
        (403, json!({"message": "You are not an administrator."}))
    );
    // Bad requests keep the Laravel shape.
    let (status, body) = shared::test_support::call(
        authorizer::router,
        &service,
        request(
            Method::POST,
            "/api/v1/tokens/verify",
            &[("authorization", &format!("Bearer {}", t.admin_token))],
            "{}",
        ),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            422,
            json!({"message": "The token field is required.", "errors": {"token": ["The token field is required."]}})
        )
    );
    let (status, _) = shared::test_support::call(
        authorizer::router,
        &service,
        request(Method::POST, "/api/v1/tokens/verify", &[], "{}"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn me_answers_from_the_authorizer_context_without_a_database_read() {
    // Behind API Gateway the context is all it needs: a store that cannot answer proves it.
    let offline = unreachable_service().await;
    let request = event(
        include_str!("../../../events/user-me-get.json"),
        &[("USER_KEY", "tkna_not-used-behind-the-authorizer")],
    );
    let (status, body) = shared::test_support::call(authorizer::router, &offline, request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "user": {"id": 1002, "platform_id": 1, "role": "user"},
            "token": {"id": "1002-01a208f441a9828c69ff", "kind": "api_key", "abilities": ["*"]},
        })
    );
}

#[tokio::test]
async fn me_without_an_authorizer_authenticates_the_token_itself() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let bearer = format!("Bearer {}", t.user_token);
    let (status, body) = shared::test_support::call(
        authorizer::router,
        &service,
        request(
            Method::GET,
            "/api/user/me",
            &[("authorization", &bearer)],
            "",
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], t.user.id.0);
    let (status, _) = shared::test_support::call(
        authorizer::router,
        &service,
        request(Method::GET, "/api/user/me", &[], ""),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_sample_events_run_through_the_function() {
    let (service, store) = service().await;
    let demo = demo::seed(
        &store,
        &shared::token::TokenFormat::default(),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    let keys = [
        ("ADMIN_KEY", demo.admin_key.as_str()),
        ("USER_KEY", demo.user_key.as_str()),
    ];
    let fill = |json: &str| fill_placeholders(json, &keys);
    let authorizer_event: Value = serde_json::from_str(&fill(include_str!(
        "../../../events/authorizer-request.json"
    )))
    .unwrap();
    let policy = handle_event(&service, &router(service.clone()), authorizer_event)
        .await
        .unwrap();
    assert_eq!(effect(&policy), "Allow");
    assert_eq!(policy["context"]["user_id"], demo::USER_ID.0);

    let verify_event: Value = serde_json::from_str(&fill(include_str!(
        "../../../events/tokens-verify-post.json"
    )))
    .unwrap();
    let response = handle_event(&service, &router(service.clone()), verify_event)
        .await
        .unwrap();
    assert_eq!(response["statusCode"], 200);
    assert_eq!(response["headers"]["content-type"], "application/json");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "VALID");

    // Anything else is answered as a bad request, not a Lambda error.
    let response = handle_event(
        &service,
        &router(service.clone()),
        json!({"hello": "world"}),
    )
    .await
    .unwrap();
    assert_eq!(response["statusCode"], 400);
}

/// Issue: the Allow named `/calls/1` only, while API Gateway reused it (cached by resource
/// template) for `/calls/2`, so valid callers got 401.
#[tokio::test]
async fn a_policy_covers_the_route_template_for_the_calling_method_only() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let api = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod";
    let bearer = json!({"Authorization": format!("Bearer {}", t.user_token)});
    for (method, path, resource, covered) in [
        ("GET", "/calls/1", "/calls/{id}", "GET/calls/*"),
        (
            "DELETE",
            "/calls/7/notes/9",
            "/calls/{id}/notes/{note}",
            "DELETE/calls/*/notes/*",
        ),
        ("POST", "/anything/at/all", "/{proxy+}", "POST/*"),
        ("GET", "/api/user/me", "/api/user/me", "GET/api/user/me"),
    ] {
        let event = json!({
            "type": "REQUEST",
            "methodArn": format!("{api}/{method}{path}"),
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": bearer,
            "pathParameters": {},
        });
        let mut refused = event.clone();
        refused["headers"] = json!({"Authorization": "Bearer nonsense"});
        assert!(matches!(
            authorize(&service, &refused).await,
            Err(AuthorizerError::Unauthorized)
        ));
        let policy = authorize(&service, &event).await.unwrap();
        assert_eq!(effect(&policy), "Allow", "{path}");
        assert_eq!(
            policy["policyDocument"]["Statement"][0]["Resource"],
            format!("{api}/{covered}"),
            "{path}"
        );
    }
}

/// Issue: a block that stopped after the profile write left the user's tokens working, since
/// authentication read only each token's copy of the owner's status.
#[tokio::test]
async fn a_block_holds_for_every_token_as_soon_as_the_profile_says_so() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let personal = token_for(
        &store,
        &t.user,
        TokenKind::Personal,
        Abilities::parse(vec!["calls:read".into()]).unwrap(),
    )
    .await;
    // Only the profile item changes, as a block that stopped right after its first write would
    // leave the table; no token item is touched.
    store
        .direct()
        .client
        .update_item()
        .table_name(store.direct().table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{}", t.user.id)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
        )
        .update_expression("SET #status = :blocked")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(
            ":blocked",
            aws_sdk_dynamodb::types::AttributeValue::S("blocked".into()),
        )
        .send()
        .await
        .unwrap();
    for token in [&t.user_token, &personal] {
        let refused = authorize(
            &service,
            &authorizer_event(json!({"Authorization": format!("Bearer {token}")})),
        )
        .await;
        assert!(matches!(refused, Err(AuthorizerError::Unauthorized)));
        let (status, verified) = verify_as(&service, &t.admin_token, token).await;
        assert_eq!((status, &verified["code"]), (200, &json!("DISABLED")));
    }
    // Unblocking is one write too, and every token works again.
    store
        .set_user_status(
            t.user.id,
            UserStatus::Active,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let policy = authorize(
        &service,
        &authorizer_event(json!({"Authorization": format!("Bearer {}", personal)})),
    )
    .await
    .unwrap();
    assert_eq!(effect(&policy), "Allow");
}

/// A rolled token through the authorizer: Allow for both during the grace period, Deny for the
/// old one once it ends, Allow for the successor still.
#[tokio::test]
async fn a_rolled_token_is_allowed_for_its_grace_period_only() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let owner = Owner::from(&t.user);
    let request = || MintRequest {
        kind: TokenKind::ApiKey,
        name: TokenName::parse("rolled").unwrap(),
        abilities: Abilities::full(),
        expires_at: None,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    let now = now_ms();
    let old = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        request(),
        u32::MAX,
        now,
    )
    .await
    .unwrap();
    let grace_end = now.0 / 1000 + 2;
    let rolled = shared::mint::roll(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        &old.record,
        request(),
        EpochSeconds(grace_end),
        now,
    )
    .await
    .unwrap();
    let shared::mint::Roll::Rolled { minted, .. } = rolled else {
        panic!("{rolled:?}");
    };
    let bearer = |token: &str| json!({"Authorization": format!("Bearer {token}")});
    let old_token = old.secret.expose().to_string();
    let new_token = minted.secret.expose().to_string();
    for token in [&old_token, &new_token] {
        let policy = authorize(&service, &authorizer_event(bearer(token)))
            .await
            .unwrap();
        assert_eq!(effect(&policy), "Allow");
    }
    // Verify says the old one was rolled (it still works), the new one nothing.
    let admin = token_for(&store, &t.admin, TokenKind::ApiKey, Abilities::full()).await;
    let (_, verified) = verify_as(&service, &admin, &old_token).await;
    assert_eq!(
        (&verified["code"], &verified["token"]["revoked_reason"]),
        (&json!("VALID"), &json!("rolled"))
    );
    let (_, verified) = verify_as(&service, &admin, &new_token).await;
    assert_eq!(verified["token"]["revoked_reason"], json!(null));
    // Past the end of the grace period (to the second).
    let wait = (grace_end * 1000).saturating_sub(now_ms().0) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let refused = authorize(&service, &authorizer_event(bearer(&old_token))).await;
    assert!(matches!(refused, Err(AuthorizerError::Unauthorized)));
    let (_, verified) = verify_as(&service, &admin, &old_token).await;
    assert_eq!(
        (&verified["code"], &verified["token"]["revoked_reason"]),
        (&json!("EXPIRED"), &json!("rolled"))
    );
    let policy = authorize(&service, &authorizer_event(bearer(&new_token)))
        .await
        .unwrap();
    assert_eq!(effect(&policy), "Allow");
}
