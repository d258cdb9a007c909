//! `GET /ext/get-user-token` against DynamoDB Local.

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::auth::authenticate;
use shared::domain::UserStatus;
use shared::error::ApiError;
use shared::service::Service;
use shared::store::{now_ms, Store};
use shared::test_support::{request, sample_event, service, tenant};
use shared::token::TokenKind;

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(get_user_token::router, service, request).await
}

async fn get(service: &Service, token: &str, query: &str) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let path = format!("/ext/get-user-token{query}");
    call(
        service,
        request(
            Method::GET,
            &path,
            &[("authtype", "Key"), ("authorization", &bearer)],
            "",
        ),
    )
    .await
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
    let principal = authenticate(&store, Some(&key), now_ms()).await.unwrap();
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
        .set_user_status(t.user.id, UserStatus::Blocked)
        .await
        .unwrap();
    let (status, body) = get(&service, &t.admin_token, &query).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["permanentToken"],
        json!({"key": key, "active": false})
    );
    assert!(matches!(
        authenticate(&store, key.as_str(), now_ms()).await,
        Err(ApiError::Unauthenticated)
    ));
    store
        .set_user_status(t.user.id, UserStatus::Active)
        .await
        .unwrap();
    assert!(authenticate(&store, key.as_str(), now_ms()).await.is_ok());
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
