//! `GET /ext/get-user-token` and `POST /ext/rotate-user-token` against DynamoDB Local.

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::auth::authenticate;
use shared::domain::UserStatus;
use shared::error::ApiError;
use shared::service::Service;
use shared::store::now_ms;
use shared::store::traits::*;
use shared::test_support::{request, sample_event, service, tenant};
use shared::token::TokenKind;

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(get_user_token::router, service, request).await
}

/// `method route query` as the agency admin's client sends it (`authtype: Key`).
async fn send(
    service: &Service,
    method: Method,
    route: &str,
    token: &str,
    query: &str,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let path = format!("{route}{query}");
    let headers = [("authtype", "Key"), ("authorization", bearer.as_str())];
    call(service, request(method, &path, &headers, "")).await
}

async fn get(service: &Service, token: &str, query: &str) -> (u16, Value) {
    send(service, Method::GET, "/ext/get-user-token", token, query).await
}

fn failure(code: u16, message: &str) -> (u16, Value) {
    (
        code,
        json!({"success": false, "message": message, "data": null, "code": code}),
    )
}

#[tokio::test]
async fn the_same_permanent_key_on_every_call() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let (status, body) = get(&service, &t.admin_token, &query).await;
    assert_eq!(status, 200, "{body}");
    let key = body["data"]["permanentToken"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        body,
        json!({"success": true, "message": "", "data": {"permanentToken": {"key": key, "active": true}}, "code": 200})
    );
    assert_eq!(get(&service, &t.admin_token, &query).await.1, body);
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(
        (principal.user_id, principal.kind),
        (t.user.id, TokenKind::Permanent)
    );
    assert!(
        store
            .get_user(t.user.id)
            .await
            .unwrap()
            .unwrap()
            .permanent_issued
    );
}

#[tokio::test]
async fn a_blocked_user_is_inactive_and_its_key_fails() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let key =
        get(&service, &t.admin_token, &query).await.1["data"]["permanentToken"]["key"].clone();
    store
        .set_user_status(
            t.user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    let (status, body) = get(&service, &t.admin_token, &query).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["permanentToken"],
        json!({"key": key, "active": false})
    );
    assert!(matches!(
        authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            key.as_str(),
            now_ms()
        )
        .await,
        Err(ApiError::Unauthenticated)
    ));
    store
        .set_user_status(
            t.user.id,
            UserStatus::Active,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        key.as_str(),
        now_ms()
    )
    .await
    .is_ok());
}

#[tokio::test]
async fn every_error_uses_the_envelope() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let path = format!("/ext/get-user-token{query}");
    let bearer = format!("Bearer {}", t.admin_token);
    let authtype = "The authtype header is required and must be set to 'Key'.";
    assert_eq!(
        call(
            &service,
            request(Method::GET, &path, &[("authorization", &bearer)], "")
        )
        .await,
        failure(400, authtype)
    );
    assert_eq!(
        call(
            &service,
            request(
                Method::GET,
                &path,
                &[("authtype", "Basic"), ("authorization", &bearer)],
                ""
            )
        )
        .await,
        failure(400, authtype)
    );
    assert_eq!(
        get(&service, &t.admin_token, "").await,
        failure(400, "The userId query parameter is required.")
    );
    assert_eq!(
        get(&service, &t.admin_token, "?userId=").await,
        failure(400, "The userId query parameter is required.")
    );
    assert_eq!(get(&service, &t.admin_token, "?userId=abc").await.0, 400);
    assert_eq!(
        get(&service, "nope", &query).await,
        failure(401, "Unauthenticated.")
    );
    assert_eq!(
        call(
            &service,
            request(Method::GET, &path, &[("authtype", "Key")], "")
        )
        .await,
        failure(401, "Unauthenticated.")
    );
    assert_eq!(
        get(&service, &t.user_token, &query).await,
        failure(403, "You are not an administrator.")
    );
    let missing = get(&service, &t.admin_token, "?userId=987654321").await;
    assert_eq!(missing, failure(404, "User not found."));
    assert_eq!(
        get(
            &service,
            &t.admin_token,
            &format!("?userId={}", other.user.id)
        )
        .await,
        missing
    );
    let (status, body) = call(
        &service,
        request(
            Method::POST,
            &path,
            &[("authtype", "Key"), ("authorization", &bearer)],
            "",
        ),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone(), body["success"].clone()),
        (405, json!(405), json!(false))
    );
}

#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let (status, body) = sample_event(
        get_user_token::router,
        include_str!("../../../events/get-user-token-get.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["permanentToken"]["active"], true);
}

async fn rotate(service: &Service, token: &str, query: &str) -> (u16, Value) {
    send(
        service,
        Method::POST,
        "/ext/rotate-user-token",
        token,
        query,
    )
    .await
}

fn key_of(body: &Value) -> String {
    body["data"]["permanentToken"]["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {body}"))
        .to_string()
}

/// Rotation: a new key at once, the previous one refused at once, and the get route answering
/// the new one from then on; a first rotation works before any key was ever read too.
#[tokio::test]
async fn rotation_replaces_the_key_and_refuses_the_previous_one_at_once() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let first = key_of(&get(&service, &t.admin_token, &query).await.1);
    let (status, body) = rotate(&service, &t.admin_token, &query).await;
    assert_eq!(status, 200, "{body}");
    let second = key_of(&body);
    assert_ne!(first, second);
    assert_eq!(
        body,
        json!({"success": true, "message": "", "data": {"permanentToken": {"key": second, "active": true}}, "code": 200})
    );
    assert!(matches!(
        authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(&first),
            now_ms()
        )
        .await,
        Err(ApiError::Unauthenticated)
    ));
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&second),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(
        (principal.user_id, principal.kind),
        (t.user.id, TokenKind::Permanent)
    );
    assert_eq!(
        key_of(&get(&service, &t.admin_token, &query).await.1),
        second
    );
    // Again: a third key, the second refused.
    let third = key_of(&rotate(&service, &t.admin_token, &query).await.1);
    assert!(![first.as_str(), second.as_str()].contains(&third.as_str()));
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&second),
        now_ms()
    )
    .await
    .is_err());
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&third),
        now_ms()
    )
    .await
    .is_ok());
    // A user whose key was never read: the rotation issues one that works.
    let other = shared::test_support::add_user(
        &store,
        shared::test_support::new_user(&t.platform, shared::domain::Role::User),
    )
    .await;
    let fresh = format!("?userId={}", other.id);
    let (status, body) = rotate(&service, &t.admin_token, &fresh).await;
    assert_eq!(status, 200, "{body}");
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key_of(&body)),
        now_ms()
    )
    .await
    .is_ok());
    assert_eq!(
        key_of(&get(&service, &t.admin_token, &fresh).await.1),
        key_of(&body)
    );
}

/// Rotations sent together: whatever their interleaving, the key the get route answers is the
/// only one that works.
#[tokio::test]
async fn racing_rotations_leave_exactly_one_working_key() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let first = key_of(&get(&service, &t.admin_token, &query).await.1);
    let rotations: Vec<_> = (0..5)
        .map(|_| {
            let (service, token, query) = (service.clone(), t.admin_token.clone(), query.clone());
            tokio::spawn(async move { rotate(&service, &token, &query).await })
        })
        .collect();
    let mut answers = Vec::new();
    for rotation in rotations {
        answers.push(rotation.await.unwrap());
    }
    let current = key_of(&get(&service, &t.admin_token, &query).await.1);
    let mut keys: Vec<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            key_of(body)
        })
        .collect();
    keys.push(first);
    for key in keys.iter().filter(|key| **key != current) {
        assert!(authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(key),
            now_ms()
        )
        .await
        .is_err());
    }
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&current),
        now_ms()
    )
    .await
    .is_ok());
    assert!(keys.contains(&current));
}

/// The rotation route answers as the get route does for the wrong caller, a missing header, a
/// bad user id and another platform's user; nothing rotates.
#[tokio::test]
async fn rotation_refusals_use_the_envelope_and_change_nothing() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let query = format!("?userId={}", t.user.id);
    let key = key_of(&get(&service, &t.admin_token, &query).await.1);
    assert_eq!(
        rotate(&service, &t.user_token, &query).await,
        failure(403, "You are not an administrator.")
    );
    assert_eq!(
        rotate(&service, &other.admin_token, &query).await,
        failure(404, "User not found.")
    );
    assert_eq!(
        rotate(&service, &t.admin_token, "?userId=x").await,
        failure(
            400,
            "The userId query parameter must be a user id (a whole number)."
        )
    );
    assert_eq!(
        rotate(&service, "garbage", &query).await,
        failure(401, "Unauthenticated.")
    );
    let bearer = format!("Bearer {}", t.admin_token);
    let path = format!("/ext/rotate-user-token{query}");
    assert_eq!(
        call(
            &service,
            request(Method::POST, &path, &[("authorization", &bearer)], "")
        )
        .await,
        failure(
            400,
            "The authtype header is required and must be set to 'Key'."
        )
    );
    assert_eq!(
        call(
            &service,
            request(
                Method::GET,
                &path,
                &[("authtype", "Key"), ("authorization", &bearer)],
                ""
            )
        )
        .await
        .0,
        405
    );
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        now_ms()
    )
    .await
    .is_ok());
    assert_eq!(key_of(&get(&service, &t.admin_token, &query).await.1), key);
}
