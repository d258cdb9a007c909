//! `POST /api/white-label/token` against DynamoDB Local: every row of the seed.

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::auth::authenticate;
use shared::demo;
use shared::domain::{Abilities, Role, UserStatus};
use shared::service::Service;
use shared::store::now_ms;
use shared::store::traits::*;
use shared::test_support::{
    add_user, bearer, new_user, request, sample_event, service, service_with, tenant, token_for,
    Tenant,
};
use shared::token::{TokenFamily, TokenKind};

const PATH: &str = "/api/white-label/token";

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(admin_token::router, service, request).await
}

async fn post(service: &Service, token: &str, body: Value) -> (u16, Value) {
    let (name, value) = bearer(token);
    call(
        service,
        request(Method::POST, PATH, &[(name, &value)], &body.to_string()),
    )
    .await
}

#[tokio::test]
async fn mints_a_token_by_user_id_that_authenticates_as_the_user() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, body) = post(&service, &t.admin_token, json!({"user_id": t.user.id.0})).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(
        body,
        json!({
            "message": "Token created successfully.",
            "user": {"id": t.user.id.0, "name": t.user.name, "email": t.user.email},
            "token": token,
            "token_name": "api-token",
        })
    );
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&token),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(principal.user_id, t.user.id);
    assert_eq!(principal.kind, TokenKind::WhiteLabel);
    assert!(principal.abilities.is_full());
    // It never expires and shows in the user's API keys.
    let listed = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    let record = listed.iter().find(|r| r.id == principal.token_id).unwrap();
    assert_eq!(record.expires_at, None);
    assert_eq!(record.name, "api-token");
}

#[tokio::test]
async fn mints_by_email_case_insensitively_with_a_token_name() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let email = t.user.email.to_uppercase();
    let (status, body) = post(
        &service,
        &t.admin_token,
        json!({"email": email, "token_name": "kpi-dashboard"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], t.user.id.0);
    assert_eq!(body["token_name"], "kpi-dashboard");
    // A user id given as a string of digits works too.
    let (status, body) = post(
        &service,
        &t.admin_token,
        json!({"user_id": t.user.id.to_string()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Both given but naming different users: not found.
    let (status, _) = post(
        &service,
        &t.admin_token,
        json!({"user_id": t.user.id.0, "email": t.admin.email}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn validation_errors_match_the_seed() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    for body in [
        json!({}),
        json!({"user_id": null, "email": ""}),
        json!({"token_name": "x"}),
    ] {
        assert_eq!(
            post(&service, &t.admin_token, body).await,
            (
                422,
                json!({
                    "message": "The user id field is required when email is not present. (and 1 more error)",
                    "errors": {
                        "user_id": ["The user id field is required when email is not present."],
                        "email": ["The email field is required when user id is not present."]
                    }
                })
            )
        );
    }
    let (status, body) = post(
        &service,
        &t.admin_token,
        json!({"user_id": "abc", "email": "nope", "token_name": "x".repeat(256)}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({
            "message": "The user id field must be an integer. (and 2 more errors)",
            "errors": {
                "user_id": ["The user id field must be an integer."],
                "email": ["The email field must be a valid email address."],
                "token_name": ["The token name field must not be greater than 255 characters."]
            }
        })
    );
}

#[tokio::test]
async fn other_platforms_users_look_exactly_like_missing_users() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other: Tenant = tenant(&store).await;
    let missing = post(&service, &t.admin_token, json!({"user_id": 987_654_321})).await;
    assert_eq!(missing, (404, json!({"error": "User not found."})));
    let foreign = post(
        &service,
        &t.admin_token,
        json!({"user_id": other.user.id.0}),
    )
    .await;
    assert_eq!(foreign, missing);
    let foreign = post(&service, &t.admin_token, json!({"email": other.user.email})).await;
    assert_eq!(foreign, missing);
    assert_eq!(
        post(&service, &t.admin_token, json!({"user_id": -5})).await,
        missing
    );
}

#[tokio::test]
async fn only_full_access_admins_may_mint() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let forbidden = (403, json!({"error": "You are not an administrator."}));
    assert_eq!(
        post(&service, &t.user_token, json!({"user_id": t.user.id.0})).await,
        forbidden
    );
    let limited = Abilities::parse(vec!["calls:read".into()]).unwrap();
    let limited_admin = token_for(&store, &t.admin, TokenKind::Personal, limited).await;
    assert_eq!(
        post(&service, &limited_admin, json!({"user_id": t.user.id.0})).await,
        forbidden
    );
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let unauthenticated = (401, json!({"message": "Unauthenticated."}));
    let body = json!({"user_id": t.user.id.0}).to_string();
    assert_eq!(
        call(&service, request(Method::POST, PATH, &[], &body)).await,
        unauthenticated
    );
    assert_eq!(post(&service, "garbage", json!({})).await, unauthenticated);
    store
        .set_user_status(
            t.admin.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    assert_eq!(
        post(&service, &t.admin_token, json!({"user_id": t.user.id.0})).await,
        unauthenticated
    );
}

#[tokio::test]
async fn blocked_targets_and_full_caps_are_explained() {
    let (service, store) = service_with(2).await;
    let t = tenant(&store).await;
    let blocked = {
        let mut user = new_user(&t.platform, Role::User);
        user.status = UserStatus::Blocked;
        add_user(&store, user).await
    };
    let (status, body) = post(&service, &t.admin_token, json!({"user_id": blocked.id.0})).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["errors"]["user_id"][0],
        "The selected user is blocked."
    );
    // The tenant's user holds one key; the cap is two.
    assert_eq!(
        post(&service, &t.admin_token, json!({"user_id": t.user.id.0}))
            .await
            .0,
        200
    );
    let (status, body) = post(&service, &t.admin_token, json!({"user_id": t.user.id.0})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("2 API tokens"),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_methods_bodies_and_paths_keep_the_json_shape() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (name, value) = bearer(&t.admin_token);
    let auth = [(name, value.as_str())];
    let (status, body) = call(&service, request(Method::GET, PATH, &auth, "")).await;
    assert_eq!(status, 405);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("Supported methods: POST"));
    let (status, body) = call(&service, request(Method::POST, PATH, &auth, "{not json")).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
    let huge = json!({"user_id": 1, "pad": "x".repeat(17 * 1024)}).to_string();
    assert_eq!(
        call(&service, request(Method::POST, PATH, &auth, &huge))
            .await
            .0,
        413
    );
    let (status, _) = call(
        &service,
        request(Method::POST, "/api/white-label/other", &auth, "{}"),
    )
    .await;
    assert_eq!(status, 404);
}

/// The event's stage (`prod`) and its path make no difference: API Gateway's resource template
/// routes it.
#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let (status, body) = sample_event(
        admin_token::router,
        include_str!("../../../events/admin-token-post.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], demo::USER_ID.0);
    assert_eq!(body["token_name"], "kpi-dashboard");
}

/// The white-label route takes a form body too (Laravel reads both).
#[tokio::test]
async fn a_form_body_mints_by_email_or_id() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (name, value) = bearer(&t.admin_token);
    let headers = [
        (name, value.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let body = format!(
        "email={}&token_name=kpi-dashboard",
        t.user.email.replace('@', "%40")
    );
    let (status, minted) = call(&service, request(Method::POST, PATH, &headers, &body)).await;
    assert_eq!(status, 200, "{minted}");
    assert_eq!(minted["user"]["id"], t.user.id.0);
    assert_eq!(minted["token_name"], "kpi-dashboard");
    let body = format!("user_id={}", t.user.id.0);
    let (status, minted) = call(&service, request(Method::POST, PATH, &headers, &body)).await;
    assert_eq!(
        (status, minted["token_name"].as_str()),
        (200, Some("api-token"))
    );
    let (status, invalid) =
        call(&service, request(Method::POST, PATH, &headers, "user_id=x")).await;
    assert_eq!(
        (status, invalid),
        (
            422,
            json!({"message": "The user id field must be an integer.", "errors": {"user_id": ["The user id field must be an integer."]}})
        )
    );
}
