//! The platform integration API (issue 28): service keys, the directory routes and a user's
//! tokens, through every function's router as `tokenctl serve` merges them, on DynamoDB Local.

use std::collections::BTreeSet;

use axum::Router;
use lambda_http::http::Method;
use serde_json::{json, Value};

use shared::domain::{Permission, Role, UserId};
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{Key, Platform};
use shared::test_support::{add_user, new_user, request, service, service_with, tenant, Tenant};

fn all_routes(service: Service) -> Router {
    tokenctl::serve::router(&service)
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
    shared::test_support::call(all_routes, service, request(method, path, &headers, &body)).await
}

/// A service key of the tenant's platform with `permissions`, made by its admin.
async fn service_key(service: &Service, t: &Tenant, permissions: &[&str]) -> (String, String) {
    let (status, body) = send(
        service,
        Method::POST,
        "/api/v1/service-keys",
        &t.admin_token,
        Some(json!({"name": "backend", "permissions": permissions})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let data = &body["data"];
    (
        data["token"].as_str().unwrap().to_string(),
        data["id"].as_str().unwrap().to_string(),
    )
}

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn a_service_key_is_shown_once_listed_without_secret_and_revoked_at_once() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        "/api/v1/service-keys",
        &t.admin_token,
        Some(json!({"name": "crm sync", "permissions": ["users:read", "users:read", "verify"], "expires_at": "2030-01-01"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let data = &created["data"];
    assert_eq!(
        keys(data),
        BTreeSet::from([
            "id",
            "name",
            "permissions",
            "token",
            "created_at",
            "expires_at"
        ])
    );
    assert_eq!(data["permissions"], json!(["users:read", "verify"]));
    let token = data["token"].as_str().unwrap();
    assert!(token.starts_with("tkns_"), "{token}");
    // Its record is a service key of the platform's service account, never a user.
    let account = UserId::service_account(t.platform.id);
    assert_eq!(store.get_user(account).await.unwrap(), None);
    let (status, listed) = send(
        &service,
        Method::GET,
        "/api/v1/service-keys",
        &t.admin_token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed = listed["data"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        keys(&listed[0]),
        BTreeSet::from([
            "id",
            "name",
            "permissions",
            "created_at",
            "expires_at",
            "last_used_at"
        ])
    );
    assert!(!listed[0].to_string().contains(token));
    // It works on its routes ...
    let (status, _) = send(
        &service,
        Method::GET,
        &format!("/api/v1/users/{}", t.user.id),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    // ... and is not a user: a user's route refuses it, the authorizer does not admit it.
    let (status, body) = send(&service, Method::GET, "/api/user/api-keys", token, None).await;
    assert_eq!(
        (
            status,
            body["message"].as_str().unwrap().contains("service key")
        ),
        (403, true),
        "{body}"
    );
    let (status, _) = send(&service, Method::GET, "/api/user/me", token, None).await;
    assert_eq!(status, 401);
    // A user of the platform cannot create or list service keys; a key without `*` neither.
    for caller in [t.user_token.as_str(), token] {
        let (status, _) = send(&service, Method::GET, "/api/v1/service-keys", caller, None).await;
        assert_eq!(status, 403);
        let (status, _) = send(
            &service,
            Method::POST,
            "/api/v1/service-keys",
            caller,
            Some(json!({"name": "x", "permissions": ["*"]})),
        )
        .await;
        assert_eq!(status, 403);
    }
    // Revoked: at once, and a second time is 404; another platform's admin sees 404 too.
    let id = data["id"].as_str().unwrap();
    let other = tenant(&store).await;
    let path = format!("/api/v1/service-keys/{id}");
    let (status, body) = send(&service, Method::DELETE, &path, &other.admin_token, None).await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "Service key not found."}))
    );
    let (status, body) = send(&service, Method::DELETE, &path, &t.admin_token, None).await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Service key revoked successfully."}))
    );
    let (status, _) = send(
        &service,
        Method::GET,
        &format!("/api/v1/users/{}", t.user.id),
        token,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(&service, Method::DELETE, &path, &t.admin_token, None).await;
    assert_eq!(status, 404);
    let (_, listed) = send(
        &service,
        Method::GET,
        "/api/v1/service-keys",
        &t.admin_token,
        None,
    )
    .await;
    assert_eq!(listed["data"], json!([]));
    // Bad input: 422, nothing minted.
    for body in [
        json!({"name": "x"}),
        json!({"name": "x", "permissions": []}),
        json!({"name": "x", "permissions": ["tokens:manage"]}),
        json!({"name": "x", "permissions": "verify"}),
        json!({"name": "x", "permissions": ["verify"], "expires_at": "2001-01-01"}),
    ] {
        let (status, answer) = send(
            &service,
            Method::POST,
            "/api/v1/service-keys",
            &t.admin_token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert!(answer["errors"].is_object(), "{answer}");
    }
    let (_, listed) = send(
        &service,
        Method::GET,
        "/api/v1/service-keys",
        &t.admin_token,
        None,
    )
    .await;
    assert_eq!(listed["data"], json!([]));
}

/// Each route a permission opens, with a request the permission's holder may make.
fn platform_routes(t: &Tenant, token_id: &str) -> Vec<(Permission, Method, String, Option<Value>)> {
    let user = t.user.id;
    vec![
        (
            Permission::UsersRead,
            Method::GET,
            format!("/api/v1/users/{user}"),
            None,
        ),
        (
            Permission::UsersRead,
            Method::GET,
            "/api/v1/users?limit=2".into(),
            None,
        ),
        (
            Permission::UsersRead,
            Method::GET,
            format!("/api/v1/users?email={}", t.user.email),
            None,
        ),
        (
            Permission::UsersWrite,
            Method::PATCH,
            format!("/api/v1/users/{user}"),
            Some(json!({"meta": {"tier": 1}})),
        ),
        (
            Permission::UsersWrite,
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"email": "new@example.com", "name": "New"})),
        ),
        (
            Permission::TokensRead,
            Method::GET,
            format!("/api/v1/users/{user}/tokens"),
            None,
        ),
        (
            Permission::TokensWrite,
            Method::POST,
            format!("/api/v1/users/{user}/tokens"),
            Some(json!({"name": "from the backend"})),
        ),
        (
            Permission::TokensWrite,
            Method::DELETE,
            format!("/api/v1/users/{user}/tokens/{token_id}"),
            None,
        ),
        (
            Permission::LimitsWrite,
            Method::PUT,
            format!("/api/v1/users/{user}/limits"),
            Some(json!({"credits": {"remaining": 5}})),
        ),
        (
            Permission::AuditRead,
            Method::GET,
            "/api/v1/audit-events?limit=1".into(),
            None,
        ),
        (
            Permission::Verify,
            Method::POST,
            "/api/v1/tokens/verify".into(),
            Some(json!({"token": t.admin_token})),
        ),
        (
            Permission::All,
            Method::GET,
            "/api/v1/service-keys".into(),
            None,
        ),
    ]
}

#[tokio::test]
async fn each_permission_opens_exactly_its_routes() {
    let (service, store) = service().await;
    for permission in Permission::ALL {
        let t = tenant(&store).await;
        let (key, _) = service_key(&service, &t, &[permission.as_str()]).await;
        // A token of the user to revoke, per tenant.
        let (_, minted) = send(
            &service,
            Method::POST,
            &format!("/api/v1/users/{}/tokens", t.user.id),
            &t.admin_token,
            Some(json!({"name": "to revoke"})),
        )
        .await;
        let token_id = minted["data"]["id"].as_str().unwrap().to_string();
        for (needs, method, path, body) in platform_routes(&t, &token_id) {
            let (status, answer) = send(&service, method.clone(), &path, &key, body).await;
            let allowed = permission == Permission::All || permission == needs;
            if allowed {
                assert!(
                    (200..300).contains(&status),
                    "{permission:?} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{permission:?} {method} {path}: {answer}");
                assert_eq!(answer, json!({"message": "You are not an administrator."}));
            }
        }
    }
}

#[tokio::test]
async fn another_platforms_key_is_answered_as_for_the_unknown() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let (key, _) = service_key(&service, &other, &["*"]).await;
    let unknown = 9_000_000_000_000_000u64;
    for (mine, theirs) in [
        (
            format!("/api/v1/users/{}", t.user.id),
            format!("/api/v1/users/{unknown}"),
        ),
        (
            format!("/api/v1/users/{}/tokens", t.user.id),
            format!("/api/v1/users/{unknown}/tokens"),
        ),
        (
            format!("/api/v1/users?email={}", t.user.email),
            "/api/v1/users?email=nobody@example.com".into(),
        ),
    ] {
        let across = send(&service, Method::GET, &mine, &key, None).await;
        let absent = send(&service, Method::GET, &theirs, &key, None).await;
        assert_eq!(across, absent, "{mine}");
        assert_eq!(across, (404, json!({"message": "User not found."})));
    }
    let across = send(
        &service,
        Method::PATCH,
        &format!("/api/v1/users/{}", t.user.id),
        &key,
        Some(json!({"status": "blocked"})),
    )
    .await;
    assert_eq!(across.0, 404);
    // The user was not blocked: its token still works.
    let (status, _) = send(&service, Method::GET, "/api/user/me", &t.user_token, None).await;
    assert_eq!(status, 200);
    // Verify of another platform's token: NOT_FOUND, as an unknown one.
    let (_, verified) = send(
        &service,
        Method::POST,
        "/api/v1/tokens/verify",
        &key,
        Some(json!({"token": t.user_token})),
    )
    .await;
    assert_eq!(verified["code"], "NOT_FOUND");
    // The service account of a platform is no user anywhere.
    let account = UserId::service_account(other.platform.id);
    let (status, _) = send(
        &service,
        Method::GET,
        &format!("/api/v1/users/{account}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn users_are_created_once_and_bad_input_writes_nothing() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (key, _) = service_key(&service, &t, &["users:write", "users:read"]).await;
    let body = json!({
        "email": "Ada@Example.com", "name": "Ada", "external_id": "crm-7",
        "customer_id": format!("{:012}", t.platform.id.0 % 1_000_000_000_000 + 7_000_000),
        "workspace": "Main", "role": "agency_admin", "meta": {"plan": "pro"}
    });
    let (status, created) = send(
        &service,
        Method::POST,
        "/api/v1/users",
        &key,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let user = &created["data"];
    assert_eq!(
        keys(user),
        BTreeSet::from([
            "id",
            "email",
            "name",
            "role",
            "status",
            "external_id",
            "customer_id",
            "meta",
            "workspaces",
            "created_at"
        ])
    );
    assert_eq!(
        (user["role"].as_str(), user["status"].as_str()),
        (Some("admin"), Some("active"))
    );
    assert_eq!(user["meta"], json!({"plan": "pro"}));
    let id = user["id"].as_u64().unwrap();
    // Found by each lookup.
    for query in ["external_id=crm-7", "email=ada%40example.com"] {
        let (status, found) = send(
            &service,
            Method::GET,
            &format!("/api/v1/users?{query}"),
            &key,
            None,
        )
        .await;
        assert_eq!(
            (status, found["data"]["id"].as_u64()),
            (200, Some(id)),
            "{query}"
        );
    }
    // Each duplicate is 409 and writes nothing (the other values stay free).
    for (field, value) in [
        ("email", json!("ADA@example.com")),
        ("external_id", json!("crm-7")),
        ("customer_id", body["customer_id"].clone()),
    ] {
        let mut again = json!({"email": format!("{field}@example.com"), "name": "Dup", "external_id": format!("x-{field}")});
        again[field] = value;
        let (status, answer) = send(
            &service,
            Method::POST,
            "/api/v1/users",
            &key,
            Some(again.clone()),
        )
        .await;
        assert_eq!(status, 409, "{field}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
        let lookup = format!("/api/v1/users?external_id=x-{field}");
        assert_eq!(
            send(&service, Method::GET, &lookup, &key, None).await.0,
            404,
            "{field}"
        );
    }
    // Bad input is 422 with the field named, and writes nothing.
    let big = "x".repeat(1100);
    for (field, bad) in [
        (
            "meta",
            json!({"email": "m@example.com", "name": "M", "meta": {"blob": big}}),
        ),
        (
            "meta",
            json!({"email": "m@example.com", "name": "M", "meta": ["not", "an", "object"]}),
        ),
        (
            "external_id",
            json!({"email": "m@example.com", "name": "M", "external_id": "a\u{0007}b"}),
        ),
        (
            "external_id",
            json!({"email": "m@example.com", "name": "M", "external_id": "x".repeat(129)}),
        ),
        ("email", json!({"email": "not-an-email", "name": "M"})),
        ("name", json!({"email": "m@example.com"})),
        (
            "role",
            json!({"email": "m@example.com", "name": "M", "role": "root"}),
        ),
        (
            "customer_id",
            json!({"email": "m@example.com", "name": "M", "customer_id": "12"}),
        ),
    ] {
        let (status, answer) = send(
            &service,
            Method::POST,
            "/api/v1/users",
            &key,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {answer}");
        assert!(answer["errors"][field].is_array(), "{field}: {answer}");
    }
    let (status, _) = send(
        &service,
        Method::GET,
        "/api/v1/users?email=m%40example.com",
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The audit trail has the creation, by the service key.
    let (_, events) = send(
        &service,
        Method::GET,
        &format!("/api/v1/audit-events?user_id={id}"),
        &t.admin_token,
        None,
    )
    .await;
    let event = &events["data"][0];
    assert_eq!(event["action"], "user.created");
    assert_eq!(event["actor"]["type"], "service_key");
}

/// A platform of its own with `n` users (by the store), for listings.
async fn platform_with_users(
    store: &dyn shared::store::Store,
    n: usize,
) -> (Platform, BTreeSet<u64>) {
    let platform = store
        .create_platform("listed", shared::clock::now_ms())
        .await
        .unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        ids.insert(add_user(store, new_user(&platform, Role::User)).await.id.0);
    }
    (platform, ids)
}

#[tokio::test]
async fn listing_pages_cover_every_user_exactly_once() {
    let (service, store) = service().await;
    let (platform, ids) = platform_with_users(&store, 7).await;
    let admin = add_user(&store, new_user(&platform, Role::Admin)).await;
    let admin_token = shared::test_support::token_for(
        &store,
        &admin,
        shared::token::TokenKind::ApiKey,
        shared::domain::Abilities::full(),
    )
    .await;
    let mut expected = ids.clone();
    expected.insert(admin.id.0);
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=3".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = send(&service, Method::GET, &path, &admin_token, None).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|u| u["id"].as_u64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/users?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected);
    assert!(pages >= 3);
    // Ids ascend across pages; a bad cursor or limit is 422.
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    for bad in ["cursor=abc", "limit=0", "limit=101"] {
        let (status, _) = send(
            &service,
            Method::GET,
            &format!("/api/v1/users?{bad}"),
            &admin_token,
            None,
        )
        .await;
        assert_eq!(status, 422, "{bad}");
    }
}

#[tokio::test]
async fn blocking_by_patch_stops_every_token_at_once_and_unblocking_restores_them() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (key, _) = service_key(&service, &t, &["users:write", "tokens:write"]).await;
    let user_path = format!("/api/v1/users/{}", t.user.id);
    let (_, minted) = send(
        &service,
        Method::POST,
        &format!("{user_path}/tokens"),
        &key,
        Some(json!({"name": "backend key", "meta": {"env": "prod"}})),
    )
    .await;
    let second = minted["data"]["token"].as_str().unwrap().to_string();
    assert_eq!(minted["data"]["meta"], json!({"env": "prod"}));
    assert_eq!(minted["data"]["abilities"], json!(["*"]));
    for token in [t.user_token.as_str(), second.as_str()] {
        assert_eq!(
            send(&service, Method::GET, "/api/user/me", token, None)
                .await
                .0,
            200
        );
    }
    let (status, body) = send(
        &service,
        Method::PATCH,
        &user_path,
        &key,
        Some(json!({"status": "blocked", "name": "Renamed"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["data"]["status"].as_str(),
            body["data"]["name"].as_str()
        ),
        (Some("blocked"), Some("Renamed"))
    );
    for token in [t.user_token.as_str(), second.as_str()] {
        assert_eq!(
            send(&service, Method::GET, "/api/user/me", token, None)
                .await
                .0,
            401
        );
    }
    // No key is minted for a blocked user.
    let (status, _) = send(
        &service,
        Method::POST,
        &format!("{user_path}/tokens"),
        &key,
        Some(json!({"name": "no"})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        &service,
        Method::PATCH,
        &user_path,
        &key,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, 200);
    for token in [t.user_token.as_str(), second.as_str()] {
        assert_eq!(
            send(&service, Method::GET, "/api/user/me", token, None)
                .await
                .0,
            200
        );
    }
    // Meta: replaced, then removed with null; an empty or bad PATCH is 422 and changes nothing.
    let (_, body) = send(
        &service,
        Method::PATCH,
        &user_path,
        &key,
        Some(json!({"meta": {"plan": "team"}})),
    )
    .await;
    assert_eq!(body["data"]["meta"], json!({"plan": "team"}));
    for bad in [
        json!({}),
        json!({"status": "gone"}),
        json!({"meta": 5}),
        json!({"name": ""}),
    ] {
        let (status, _) = send(&service, Method::PATCH, &user_path, &key, Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}");
    }
    assert_eq!(
        store
            .get_user(t.user.id)
            .await
            .unwrap()
            .unwrap()
            .meta
            .unwrap()
            .as_object()["plan"],
        "team"
    );
    let (_, body) = send(
        &service,
        Method::PATCH,
        &user_path,
        &key,
        Some(json!({"meta": null})),
    )
    .await;
    assert_eq!(body["data"]["meta"], Value::Null);
    assert_eq!(store.get_user(t.user.id).await.unwrap().unwrap().meta, None);
    // Every change is in the audit trail, by the service key.
    let (_, events) = send(
        &service,
        Method::GET,
        &format!("/api/v1/audit-events?user_id={}", t.user.id),
        &t.admin_token,
        None,
    )
    .await;
    let actions: Vec<(&str, &str)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["type"].as_str().unwrap(),
            )
        })
        .collect();
    for action in [
        "user.blocked",
        "user.unblocked",
        "user.updated",
        "token.created",
    ] {
        assert!(
            actions.contains(&(action, "service_key")),
            "{action}: {actions:?}"
        );
    }
}

#[tokio::test]
async fn a_users_token_listing_never_carries_a_secret_or_hash_and_revocation_is_admin_revoked() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (key, _) = service_key(&service, &t, &["tokens:read", "tokens:write", "verify"]).await;
    let path = format!("/api/v1/users/{}/tokens", t.user.id);
    let (_, minted) = send(
        &service,
        Method::POST,
        &path,
        &key,
        Some(json!({"name": "k", "abilities": ["calls:read"]})),
    )
    .await;
    let secret = minted["data"]["token"].as_str().unwrap().to_string();
    let id = minted["data"]["id"].as_str().unwrap().to_string();
    let (status, listed) = send(&service, Method::GET, &path, &key, None).await;
    assert_eq!(status, 200);
    let tokens = listed["data"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{listed}");
    for token in tokens {
        assert_eq!(
            keys(token),
            BTreeSet::from([
                "id",
                "kind",
                "name",
                "abilities",
                "created_at",
                "expires_at",
                "last_used_at",
                "enabled",
                "meta",
                "limits",
                "imported"
            ])
        );
    }
    let text = listed.to_string();
    assert!(!text.contains(&secret) && !text.contains(&t.user_token) && !text.contains("hash"));
    // Revoked by the platform: at once, with its reason; a second time (or another user's
    // path) is 404.
    let other = add_user(&store, new_user(&t.platform, Role::User)).await;
    let (status, _) = send(
        &service,
        Method::DELETE,
        &format!("/api/v1/users/{}/tokens/{id}", other.id),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = send(
        &service,
        Method::DELETE,
        &format!("{path}/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"message": "Token revoked successfully."}))
    );
    let (_, verified) = send(
        &service,
        Method::POST,
        "/api/v1/tokens/verify",
        &key,
        Some(json!({"token": secret})),
    )
    .await;
    assert_eq!(
        (
            verified["code"].as_str(),
            verified["token"]["revoked_reason"].as_str()
        ),
        (Some("REVOKED"), Some("admin_revoked"))
    );
    assert_eq!(
        send(
            &service,
            Method::DELETE,
            &format!("{path}/{id}"),
            &key,
            None
        )
        .await
        .0,
        404
    );
    let (_, listed) = send(&service, Method::GET, &path, &key, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn backend_mints_hold_the_cap_under_parallel_requests_and_race_revocation_and_rolls() {
    let (service, store) = service_with(4).await;
    let t = tenant(&store).await;
    let (key, _) = service_key(&service, &t, &["tokens:write", "tokens:read"]).await;
    let path = format!("/api/v1/users/{}/tokens", t.user.id);
    // The user holds one token already: 8 parallel mints, exactly 3 land.
    let mints = (0..8).map(|i| {
        let (service, key, path) = (service.clone(), key.clone(), path.clone());
        async move {
            send(
                &service,
                Method::POST,
                &path,
                &key,
                Some(json!({"name": format!("k{i}")})),
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(mints).await;
    let landed: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(landed.len(), 3, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 422),
        "{answers:?}"
    );
    let (_, listed) = send(&service, Method::GET, &path, &key, None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
    // The platform's revocation racing the owner's roll of the same key: whichever lands, the
    // cap counter stays equal to the live tokens, so a freed slot is usable exactly once.
    let victim = landed[0]["data"]["token"].as_str().unwrap().to_string();
    let victim_id = landed[0]["data"]["id"].as_str().unwrap().to_string();
    let revoke_path = format!("{path}/{victim_id}");
    let roll_path = format!("/api/user/api-keys/{victim_id}/roll");
    let revoke = send(&service, Method::DELETE, &revoke_path, &key, None);
    let roll = send(&service, Method::POST, &roll_path, &victim, Some(json!({})));
    let (revoked, rolled) = tokio::join!(revoke, roll);
    assert!(revoked.0 == 200 || revoked.0 == 404, "{revoked:?}");
    assert!(
        rolled.0 == 201 || rolled.0 == 404 || rolled.0 == 401,
        "{rolled:?}"
    );
    let (_, listed) = send(&service, Method::GET, &path, &key, None).await;
    let live = listed["data"].as_array().unwrap().len() as u64;
    let profile = store
        .direct()
        .item(&Key::user(t.user.id))
        .await
        .unwrap()
        .unwrap();
    let counted: u64 = profile["live_tokens"].as_n().unwrap().parse().unwrap();
    assert_eq!(counted, live, "{listed}");
    let free = 4 - live;
    let mints = (0..4).map(|i| {
        let (service, key, path) = (service.clone(), key.clone(), path.clone());
        async move {
            send(
                &service,
                Method::POST,
                &path,
                &key,
                Some(json!({"name": format!("again{i}")})),
            )
            .await
            .0
        }
    });
    let statuses = futures_util::future::join_all(mints).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count() as u64,
        free,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_leaked_service_key_takes_the_keys_it_minted_with_it() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (key, key_id) = service_key(&service, &t, &["tokens:write"]).await;
    let (_, minted) = send(
        &service,
        Method::POST,
        &format!("/api/v1/users/{}/tokens", t.user.id),
        &key,
        Some(json!({"name": "child"})),
    )
    .await;
    let child = minted["data"]["token"].as_str().unwrap().to_string();
    let record = shared::store::live_token(
        &store,
        shared::token::PublicTokenId::parse(&key_id).unwrap(),
        shared::clock::now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    let found = shared::store::descendants(&store, &[record]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].0.public_id().to_string(),
        minted["data"]["id"].as_str().unwrap()
    );
    assert_eq!(
        send(&service, Method::GET, "/api/user/me", &child, None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn token_meta_changed_by_patch_survives_a_roll_that_read_it_before() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (key, _) = service_key(&service, &t, &["tokens:write", "tokens:read"]).await;
    let path = format!("/api/v1/users/{}/tokens", t.user.id);
    let (_, minted) = send(
        &service,
        Method::POST,
        &path,
        &key,
        Some(json!({"name": "k", "meta": {"v": 1}})),
    )
    .await;
    let secret = minted["data"]["token"].as_str().unwrap().to_string();
    let id = shared::token::PublicTokenId::parse(minted["data"]["id"].as_str().unwrap()).unwrap();
    let now = shared::clock::now_ms();
    let stale = shared::store::live_token(&store, id, now)
        .await
        .unwrap()
        .unwrap();
    // The owner changes the key's meta after the roll below read it ...
    let (status, body) = send(
        &service,
        Method::PATCH,
        &format!("/api/user/api-keys/{id}"),
        &secret,
        Some(json!({"meta": {"v": 2}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // ... so the roll's condition fails, it reads again, and the successor carries the new meta.
    let request = shared::mint::MintRequest {
        kind: shared::token::TokenKind::ApiKey,
        name: shared::domain::TokenName::parse("k").unwrap(),
        abilities: shared::domain::Abilities::full(),
        expires_at: None,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    let rolled = shared::mint::roll(
        &store,
        &shared::token::TokenFormat::default(),
        shared::store::Owner::from(&t.user),
        &stale,
        request,
        now.seconds().plus(60),
        now,
    )
    .await
    .unwrap();
    let shared::mint::Roll::Rolled { minted, .. } = rolled else {
        panic!("not rolled: {rolled:?}");
    };
    let successor = shared::store::live_token(&store, minted.record.public_id(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(successor.meta.unwrap().as_object()["v"], 2);
    // The platform sees it in the user's listing, and PATCH with null removes it.
    let (status, _) = send(
        &service,
        Method::PATCH,
        &format!("/api/user/api-keys/{}", minted.record.public_id()),
        &secret,
        Some(json!({"meta": null})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed) = send(&service, Method::GET, &path, &key, None).await;
    let metas: Vec<&Value> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["meta"])
        .collect();
    assert!(
        metas.iter().all(|m| m.is_null() || **m == json!({"v": 2})),
        "{listed}"
    );
    assert!(metas.iter().any(|m| m.is_null()), "{listed}");
}

#[tokio::test]
async fn a_platforms_service_keys_stop_at_the_cap_with_a_422_and_a_revocation_frees_a_slot() {
    let (service, store) = service_with(3).await;
    let t = tenant(&store).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(service_key(&service, &t, &["verify"]).await.1);
    }
    let body = json!({"name": "one more", "permissions": ["verify"]});
    let (status, refused) = send(
        &service,
        Method::POST,
        "/api/v1/service-keys",
        &t.admin_token,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused["errors"].is_object(), "{refused}");
    let path = format!("/api/v1/service-keys/{}", ids[0]);
    let (status, _) = send(&service, Method::DELETE, &path, &t.admin_token, None).await;
    assert_eq!(status, 200);
    let (status, created) = send(
        &service,
        Method::POST,
        "/api/v1/service-keys",
        &t.admin_token,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
}
