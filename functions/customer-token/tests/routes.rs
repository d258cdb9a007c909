//! `POST /api/v1/global/users/gettokenbycustomerid` against DynamoDB Local.

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::auth::authenticate;
use shared::demo;
use shared::domain::{CustomerId, Role, UserStatus, Workspace, WorkspaceStatus};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, Store, User};
use shared::test_support::{
    add_user, new_user, request, sample_event, service, service_with, tenant, token_expiring,
    Tenant,
};
use shared::token::{self, TokenKind};

const PATH: &str = "/api/v1/global/users/gettokenbycustomerid";

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(customer_token::router, service, request).await
}

async fn post(service: &Service, token: &str, body: Value) -> (u16, Value) {
    call(
        service,
        request(Method::POST, PATH, &[("token", token)], &body.to_string()),
    )
    .await
}

fn customer_id() -> String {
    let digits: u64 =
        u64::from_str_radix(&shared::test_support::random_hex(5), 16).unwrap() % 1_000_000_000_000;
    format!("{digits:012}")
}

async fn customer(
    store: &dyn Store,
    t: &Tenant,
    status: UserStatus,
    workspaces: Vec<Workspace>,
) -> User {
    let mut user = new_user(&t.platform, Role::User);
    user.customer_id = CustomerId::parse(&customer_id());
    user.status = status;
    user.workspaces = workspaces;
    add_user(store, user).await
}

fn active() -> Vec<Workspace> {
    vec![Workspace {
        name: "Main".into(),
        status: WorkspaceStatus::Active,
    }]
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"error": "CUSTOMER_ID_NOT_FOUND", "message": "No active user found with the given customer ID."}),
    )
}

#[tokio::test]
async fn mints_a_new_expiring_token_on_every_call() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    let cid = user.customer_id.clone().unwrap();
    let before = now_ms().seconds().0;
    let (status, body) = post(
        &service,
        &t.admin_token,
        json!({"customer_id": cid.as_str(), "name": "My API Token", "expiration_days": 30}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let key = body["customer_api_key"].as_str().unwrap().to_string();
    let expires = body["expires"].as_u64().unwrap();
    assert_eq!(
        body,
        json!({
            "message": "API token generated successfully",
            "customerid": cid.as_str(),
            "customer_api_key": key,
            "name": "My API Token",
            "expires": expires,
            "id": format!("{}-{}", user.id, token::parse_any_prefix(&key).unwrap().token_id),
        })
    );
    assert!((before + 30 * 86_400..=now_ms().seconds().0 + 30 * 86_400).contains(&expires));
    // `expires` is exactly the stored TTL attribute, and the token works as the customer.
    let parsed = token::parse_any_prefix(&key).unwrap();
    let record = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.expires_at, Some(expires));
    assert_eq!(record.kind, TokenKind::Customer);
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(principal.user_id, user.id);

    // Again: another token, the first one still valid; no name or expiry means nulls.
    let (status, second) = post(
        &service,
        &t.admin_token,
        json!({"customerid": cid.as_str()}),
    )
    .await;
    assert_eq!(status, 200);
    assert_ne!(second["customer_api_key"], key.as_str());
    assert_eq!(
        (second["name"].clone(), second["expires"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        now_ms()
    )
    .await
    .is_ok());
    let (status, third) = post(
        &service,
        &t.admin_token,
        json!({"customer_salt": cid.as_str()}),
    )
    .await;
    assert_eq!((status, &third["customerid"]), (200, &json!(cid.as_str())));
}

#[tokio::test]
async fn every_header_style_of_the_seed_authenticates() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    let body = json!({"customer_id": user.customer_id.unwrap().as_str()}).to_string();
    let bearer = format!("Bearer {}", t.admin_token);
    for headers in [
        [("token", t.admin_token.as_str())],
        [("authorization", t.admin_token.as_str())],
        [("authorization", bearer.as_str())],
    ] {
        let (status, response) = call(&service, request(Method::POST, PATH, &headers, &body)).await;
        assert_eq!(status, 200, "{headers:?}: {response}");
    }
    let unauthenticated = (
        401,
        json!({"error": "UNAUTHENTICATED", "message": "Unauthenticated."}),
    );
    assert_eq!(
        call(&service, request(Method::POST, PATH, &[], &body)).await,
        unauthenticated
    );
    assert_eq!(
        call(
            &service,
            request(Method::POST, PATH, &[("token", "x")], &body)
        )
        .await,
        unauthenticated
    );
    let forbidden = (
        403,
        json!({"error": "FORBIDDEN", "message": "You are not an administrator."}),
    );
    assert_eq!(
        call(
            &service,
            request(Method::POST, PATH, &[("token", &t.user_token)], &body)
        )
        .await,
        forbidden
    );
}

#[tokio::test]
async fn unknown_blocked_and_foreign_customers_are_one_answer() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let foreign = customer(&store, &other, UserStatus::Active, active()).await;
    let blocked = customer(&store, &t, UserStatus::Blocked, active()).await;
    for cid in [
        customer_id(),
        foreign.customer_id.unwrap().as_str().to_string(),
        blocked.customer_id.unwrap().as_str().to_string(),
    ] {
        assert_eq!(
            post(&service, &t.admin_token, json!({"customer_id": cid})).await,
            not_found()
        );
    }
    let idle = customer(
        &store,
        &t,
        UserStatus::Active,
        vec![Workspace {
            name: "Old".into(),
            status: WorkspaceStatus::Inactive,
        }],
    )
    .await;
    assert_eq!(
        post(
            &service,
            &t.admin_token,
            json!({"customer_id": idle.customer_id.unwrap().as_str()})
        )
        .await,
        (
            404,
            json!({"error": "WORKSPACE_NOT_FOUND", "message": "The user does not have an active workspace."})
        )
    );
}

#[tokio::test]
async fn bad_input_gets_the_route_codes() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    let cid = user.customer_id.unwrap().as_str().to_string();
    for days in [json!(0), json!(-1), json!(1.5), json!("30"), json!(1e12)] {
        let (status, body) = post(
            &service,
            &t.admin_token,
            json!({"customer_id": cid, "expiration_days": days}),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str().unwrap()),
            (400, "INVALID_EXPIRATION_DAYS"),
            "{days}"
        );
    }
    for (body, code) in [
        (json!({}), "CUSTOMER_ID_REQUIRED"),
        (json!({"customer_id": "12345678901"}), "INVALID_CUSTOMER_ID"),
        (
            json!({"customer_id": "1234567890123"}),
            "INVALID_CUSTOMER_ID",
        ),
        (
            json!({"customer_id": "abcdefghijkl"}),
            "INVALID_CUSTOMER_ID",
        ),
        (json!({"customer_id": cid, "name": 7}), "INVALID_NAME"),
        (
            json!({"customer_id": cid, "name": "n".repeat(256)}),
            "INVALID_NAME",
        ),
    ] {
        let (status, response) = post(&service, &t.admin_token, body.clone()).await;
        assert_eq!(
            (status, response["error"].as_str().unwrap()),
            (400, code),
            "{body}"
        );
        assert!(response["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, body) = call(
        &service,
        request(Method::POST, PATH, &[("token", &t.admin_token)], "{oops"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "INVALID_REQUEST")
    );
    let (status, body) = call(
        &service,
        request(Method::GET, PATH, &[("token", &t.admin_token)], ""),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (405, "METHOD_NOT_ALLOWED")
    );
}

#[tokio::test]
async fn the_sample_event_runs_through_the_handler() {
    let (status, body) = sample_event(
        customer_token::router,
        include_str!("../../../events/customer-token-post.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customerid"], demo::CUSTOMER_ID);
    assert_eq!(body["name"], "My API Token");
}

async fn revoke(service: &Service, token: &str, id: &str) -> (u16, Value) {
    call(
        service,
        request(
            Method::DELETE,
            &format!("/api/v1/global/users/tokens/{id}"),
            &[("token", token)],
            "",
        ),
    )
    .await
}

/// Issue: customer tokens were uncapped, and no one could revoke one.
#[tokio::test]
async fn customer_tokens_are_capped_and_an_admin_revokes_them_by_id() {
    let (service, store) = service_with(3).await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    let body = json!({"customer_id": user.customer_id.clone().unwrap().as_str()});
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let (status, minted) = post(&service, &t.admin_token, body.clone()).await;
        assert_eq!(status, 200, "{minted}");
        ids.push(minted["id"].as_str().unwrap().to_string());
        keys.push(minted["customer_api_key"].as_str().unwrap().to_string());
    }
    let (status, refused) = post(&service, &t.admin_token, body.clone()).await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"], "TOO_MANY_TOKENS");
    assert_eq!(refused.as_object().unwrap().len(), 2);

    // The cap is the customer tokens' own: the user's API keys are not counted with them.
    let own = shared::test_support::token_for(
        &store,
        &user,
        TokenKind::ApiKey,
        shared::domain::Abilities::full(),
    )
    .await;
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&own),
        now_ms()
    )
    .await
    .is_ok());

    // Another platform's admin, a user, a bad id: the same 404 / 403, nothing revoked.
    let other = tenant(&store).await;
    let unknown = (
        404,
        json!({"error": "TOKEN_NOT_FOUND", "message": "No live customer API token has this id."}),
    );
    assert_eq!(revoke(&service, &other.admin_token, &ids[0]).await, unknown);
    assert_eq!(revoke(&service, &t.admin_token, "nonsense").await, unknown);
    assert_eq!(revoke(&service, &t.user_token, &ids[0]).await.0, 403);
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&keys[0]),
        now_ms()
    )
    .await
    .is_ok());

    // The platform's admin revokes it: it stops working at once and frees its slot.
    let (status, revoked) = revoke(&service, &t.admin_token, &ids[0]).await;
    assert_eq!(
        (status, revoked),
        (
            200,
            json!({"message": "API token revoked successfully", "id": ids[0]})
        )
    );
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&keys[0]),
        now_ms()
    )
    .await
    .is_err());
    assert_eq!(revoke(&service, &t.admin_token, &ids[0]).await, unknown);
    assert_eq!(post(&service, &t.admin_token, body).await.0, 200);
}

/// Issue: a token minted by an expiring admin token outlived it.
#[tokio::test]
async fn customer_tokens_never_outlive_the_admin_token_that_minted_them() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    // A minute of slack: the route reads the clock again, maybe in the next second.
    let admin_expiry = now_ms().seconds().0 + 86_400 + 60;
    let admin = token_expiring(&store, &t.admin, TokenKind::ApiKey, admin_expiry).await;
    let admin_token = admin.secret.expose().to_string();
    let cid = user.customer_id.clone().unwrap();
    let (status, minted) = post(&service, &admin_token, json!({"customer_id": cid.as_str()})).await;
    assert_eq!(
        (status, &minted["expires"]),
        (200, &json!(admin_expiry)),
        "{minted}"
    );
    let (status, minted) = post(
        &service,
        &admin_token,
        json!({"customer_id": cid.as_str(), "expiration_days": 2}),
    )
    .await;
    assert_eq!(status, 422, "{minted}");
    assert_eq!(minted["error"], "EXPIRATION_EXCEEDS_TOKEN");
    let (status, minted) = post(
        &service,
        &admin_token,
        json!({"customer_id": cid.as_str(), "expiration_days": 1}),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    assert!(minted["expires"].as_u64().unwrap() <= admin_expiry);
}

/// The customer-token seed is JSON only: a form body is not JSON, whatever its content type.
#[tokio::test]
async fn form_bodies_are_not_read_here() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let user = customer(&store, &t, UserStatus::Active, active()).await;
    let body = format!("customer_id={}", user.customer_id.unwrap().as_str());
    let headers = [
        ("token", t.admin_token.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, answer) = call(
        &service,
        request(
            Method::POST,
            "/api/v1/global/users/gettokenbycustomerid",
            &headers,
            &body,
        ),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );
}
