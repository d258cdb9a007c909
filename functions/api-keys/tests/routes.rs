//! `/api/user/api-keys` and `/api/v1/user/api-tokens` against DynamoDB Local.

use std::collections::BTreeSet;

use lambda_http::http::Method;
use lambda_http::Request;
use serde_json::{json, Value};

use shared::clock::EpochMs;
use shared::demo;
use shared::domain::{Abilities, UserStatus};
use shared::service::Service;
use shared::store::now_ms;
use shared::store::traits::*;
use shared::test_support::{
    bearer, event, request, service, service_with, tenant, token_expiring, token_for,
};
use shared::token::TokenKind;

const KEYS: &str = "/api/user/api-keys";
const TOKENS: &str = "/api/v1/user/api-tokens";

async fn call(service: &Service, request: Request) -> (u16, Value) {
    shared::test_support::call(api_keys::router, service, request).await
}

async fn send(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let (name, value) = bearer(token);
    call(service, request(method, path, &[(name, &value)], body)).await
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn is_micros_timestamp(text: &str) -> bool {
    // 2025-01-08T10:30:00.000000Z
    text.len() == 27
        && text.ends_with('Z')
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn api_keys_are_created_listed_newest_first_and_deleted_at_once() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"Production API Key"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["message"], "API key created successfully.");
    let key = &created["api_key"];
    assert_eq!(
        keys(key),
        BTreeSet::from(["id", "name", "token", "created_at", "expires_at"])
    );
    assert_eq!(key["name"], "Production API Key");
    assert!(
        is_micros_timestamp(key["created_at"].as_str().unwrap()),
        "{key}"
    );
    let token = key["token"].as_str().unwrap().to_string();
    let id = key["id"].as_str().unwrap().to_string();

    // The listing shows it first, never used, without any secret.
    let (status, listed) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
    assert_eq!(status, 200);
    let listed = listed["api_keys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["last_used_at"], Value::Null);
    for entry in &listed {
        assert_eq!(
            keys(entry),
            BTreeSet::from([
                "id",
                "name",
                "created_at",
                "last_used_at",
                "expires_at",
                "enabled"
            ])
        );
        assert!(!entry.to_string().contains("tkn"));
    }
    // The new key authenticates, and its use shows in the listing (recorded in the background).
    assert_eq!(send(&service, Method::GET, KEYS, &token, "").await.0, 200);
    let mut last_used = Value::Null;
    for _ in 0..100 {
        let (_, listed) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
        last_used = listed["api_keys"][0]["last_used_at"].clone();
        if !last_used.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        is_micros_timestamp(last_used.as_str().unwrap_or_default()),
        "{last_used}"
    );

    // Another user cannot delete it, and it keeps working.
    let path = format!("{KEYS}/{id}");
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.admin_token, "").await,
        (404, json!({"message": "API key not found."}))
    );
    assert_eq!(send(&service, Method::GET, KEYS, &token, "").await.0, 200);

    // Its owner can, and it stops working on the very next request.
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.user_token, "").await,
        (200, json!({"message": "API key deleted successfully."}))
    );
    assert_eq!(
        send(&service, Method::GET, KEYS, &token, "").await,
        (401, json!({"message": "Unauthenticated."}))
    );
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.user_token, "")
            .await
            .0,
        404
    );
    let (_, listed) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
    assert_eq!(listed["api_keys"].as_array().unwrap().len(), 1);
    for bad in ["nope", "1-zz", "0-00000000000000000000"] {
        assert_eq!(
            send(
                &service,
                Method::DELETE,
                &format!("{KEYS}/{bad}"),
                &t.user_token,
                ""
            )
            .await
            .0,
            404
        );
    }
}

#[tokio::test]
async fn api_key_validation_matches_the_seed() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let required = (
        422,
        json!({"message": "The name field is required.", "errors": {"name": ["The name field is required."]}}),
    );
    for body in ["", "{}", r#"{"name":null}"#, r#"{"name":"  "}"#] {
        assert_eq!(
            send(&service, Method::POST, KEYS, &t.user_token, body).await,
            required,
            "{body}"
        );
    }
    let (status, body) = send(&service, Method::POST, KEYS, &t.user_token, r#"{"name":5}"#).await;
    assert_eq!(
        (status, &body["errors"]["name"][0]),
        (422, &json!("The name field must be a string."))
    );
    let long = json!({"name": "n".repeat(256)}).to_string();
    let (status, body) = send(&service, Method::POST, KEYS, &t.user_token, &long).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["errors"]["name"][0],
        "The name field must not be greater than 255 characters."
    );
    let exact = json!({"name": "é".repeat(255)}).to_string();
    assert_eq!(
        send(&service, Method::POST, KEYS, &t.user_token, &exact)
            .await
            .0,
        201
    );
}

#[tokio::test]
async fn personal_tokens_carry_abilities_that_never_widen() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        TOKENS,
        &t.user_token,
        r#"{"name":"CI Pipeline","abilities":["calls:read","leads:write","tokens:manage"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let data = &created["data"];
    assert_eq!(
        keys(data),
        BTreeSet::from([
            "id",
            "name",
            "abilities",
            "token",
            "created_at",
            "expires_at"
        ])
    );
    assert_eq!(
        data["abilities"],
        json!(["calls:read", "leads:write", "tokens:manage"])
    );
    let created_at = data["created_at"].as_str().unwrap();
    assert!(
        created_at.len() == 20 && created_at.ends_with('Z'),
        "{created_at}"
    );
    let limited = data["token"].as_str().unwrap().to_string();

    // Full access by default for a full-access caller.
    let (status, full) = send(
        &service,
        Method::POST,
        TOKENS,
        &t.user_token,
        r#"{"name":"Local Dev"}"#,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(full["data"]["abilities"], json!(["*"]));

    // The limited token may mint a subset, never more; by default it passes on its own.
    let subset = send(
        &service,
        Method::POST,
        TOKENS,
        &limited,
        r#"{"name":"sub","abilities":["calls:read"]}"#,
    )
    .await;
    assert_eq!(subset.0, 201);
    let inherited = send(
        &service,
        Method::POST,
        TOKENS,
        &limited,
        r#"{"name":"inherit"}"#,
    )
    .await;
    assert_eq!(
        inherited.1["data"]["abilities"],
        json!(["calls:read", "leads:write", "tokens:manage"])
    );
    let forbidden = (
        403,
        json!({"message": "This token cannot grant abilities it does not have itself."}),
    );
    for body in [
        r#"{"name":"x","abilities":["*"]}"#,
        r#"{"name":"x","abilities":["calls:delete"]}"#,
    ] {
        assert_eq!(
            send(&service, Method::POST, TOKENS, &limited, body).await,
            forbidden
        );
    }
    // API keys made with it inherit its abilities too.
    let key = send(&service, Method::POST, KEYS, &limited, r#"{"name":"k"}"#).await;
    assert_eq!(key.0, 201);
    let key_token = key.1["api_key"]["token"].as_str().unwrap().to_string();
    assert_eq!(
        send(
            &service,
            Method::POST,
            TOKENS,
            &key_token,
            r#"{"name":"x","abilities":["*"]}"#
        )
        .await,
        forbidden
    );

    // Listing: newest first, abilities shown, no secrets.
    let (status, listed) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    assert_eq!(status, 200);
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[3]["id"], data["id"]);
    assert_eq!(listed[0]["name"], "inherit");
    for entry in listed {
        assert_eq!(
            keys(entry),
            BTreeSet::from([
                "id",
                "name",
                "abilities",
                "created_at",
                "last_used_at",
                "expires_at",
                "enabled"
            ])
        );
        assert!(!entry.to_string().contains("tkn"));
    }

    // Delete revokes at once; API-key ids are not personal-token ids.
    let path = format!("{TOKENS}/{}", data["id"].as_str().unwrap());
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.user_token, "").await,
        (200, json!({"message": "API token deleted successfully."}))
    );
    assert_eq!(
        send(&service, Method::GET, TOKENS, &limited, "").await.0,
        401
    );
    let key_path = format!("{TOKENS}/{}", key.1["api_key"]["id"].as_str().unwrap());
    assert_eq!(
        send(&service, Method::DELETE, &key_path, &t.user_token, "").await,
        (404, json!({"message": "API token not found."}))
    );
}

#[tokio::test]
async fn abilities_are_validated() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    for (body, field, message) in [
        (
            r#"{"name":"x","abilities":"*"}"#,
            "abilities",
            "The abilities field must be an array.",
        ),
        (
            r#"{"name":"x","abilities":[1]}"#,
            "abilities.0",
            "The abilities.0 field must be a string.",
        ),
        (
            r#"{"name":"x","abilities":["has space"]}"#,
            "abilities",
            "Each of the abilities must be 1 to 64 characters from A-Z a-z 0-9 : . _ - *.",
        ),
        (
            r#"{"name":"x","abilities":["calls:read,*"]}"#,
            "abilities",
            "Each of the abilities must be 1 to 64 characters from A-Z a-z 0-9 : . _ - *.",
        ),
    ] {
        let (status, response) = send(&service, Method::POST, TOKENS, &t.user_token, body).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(response["errors"][field][0], message, "{body}");
    }
}

#[tokio::test]
async fn the_cap_answers_422_and_a_delete_frees_a_slot() {
    let (service, store) = service_with(3).await;
    let t = tenant(&store).await;
    assert_eq!(
        send(
            &service,
            Method::POST,
            KEYS,
            &t.user_token,
            r#"{"name":"a"}"#
        )
        .await
        .0,
        201
    );
    let (status, token) = send(
        &service,
        Method::POST,
        TOKENS,
        &t.user_token,
        r#"{"name":"b"}"#,
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"c"}"#,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["message"].as_str().unwrap().contains("already hold 3"),
        "{body}"
    );
    assert_eq!(
        send(
            &service,
            Method::POST,
            TOKENS,
            &t.user_token,
            r#"{"name":"c"}"#
        )
        .await
        .0,
        422
    );
    let path = format!("{TOKENS}/{}", token["data"]["id"].as_str().unwrap());
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.user_token, "")
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            &service,
            Method::POST,
            KEYS,
            &t.user_token,
            r#"{"name":"c"}"#
        )
        .await
        .0,
        201
    );
}

#[tokio::test]
async fn authentication_and_routing_errors_keep_the_json_shape() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let unauthenticated = (401, json!({"message": "Unauthenticated."}));
    assert_eq!(
        call(&service, request(Method::GET, KEYS, &[], "")).await,
        unauthenticated
    );
    assert_eq!(
        send(&service, Method::GET, TOKENS, "tkna_garbage", "").await,
        unauthenticated
    );
    let expired = token_for(&store, &t.user, TokenKind::Personal, Abilities::full()).await;
    store
        .set_user_status(
            t.user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    assert_eq!(
        send(&service, Method::GET, KEYS, &expired, "").await,
        unauthenticated
    );
    let (status, body) = send(&service, Method::PUT, KEYS, &t.admin_token, "").await;
    assert_eq!(status, 405);
    assert_eq!(body["message"], "The PUT method is not supported for route api/user/api-keys. Supported methods: POST, GET.");
    let (status, body) = send(
        &service,
        Method::GET,
        "/api/user/nothing",
        &t.admin_token,
        "",
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"message": "The route api/user/nothing could not be found."})
        )
    );
    assert_eq!(
        send(&service, Method::POST, KEYS, &t.admin_token, "[]")
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn every_sample_event_runs_through_the_handler() {
    let (service, store) = service().await;
    let demo = demo::seed(
        &store,
        &shared::token::TokenFormat::default(),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    // (event, placeholder filled from the previous step's response id, status, listing length)
    let steps: [(&str, Option<&str>, u16, Option<usize>); 10] = [
        (
            include_str!("../../../events/api-keys-post.json"),
            None,
            201,
            None,
        ),
        (
            include_str!("../../../events/api-keys-get.json"),
            None,
            200,
            Some(2),
        ),
        (
            include_str!("../../../events/api-keys-patch.json"),
            Some("KEY_ID"),
            200,
            None,
        ),
        (
            include_str!("../../../events/api-keys-roll.json"),
            Some("KEY_ID"),
            201,
            None,
        ),
        (
            include_str!("../../../events/api-keys-delete.json"),
            Some("KEY_ID"),
            200,
            None,
        ),
        (
            include_str!("../../../events/api-tokens-post.json"),
            None,
            201,
            None,
        ),
        (
            include_str!("../../../events/api-tokens-get.json"),
            None,
            200,
            Some(1),
        ),
        (
            include_str!("../../../events/api-tokens-patch.json"),
            Some("TOKEN_ID"),
            200,
            None,
        ),
        (
            include_str!("../../../events/api-tokens-roll.json"),
            Some("TOKEN_ID"),
            201,
            None,
        ),
        (
            include_str!("../../../events/api-tokens-delete.json"),
            Some("TOKEN_ID"),
            200,
            None,
        ),
    ];
    let mut created_id = String::new();
    for (json, placeholder, expected, listed) in steps {
        let mut replacements = vec![("USER_KEY", demo.user_key.as_str())];
        if let Some(name) = placeholder {
            replacements.push((name, created_id.as_str()));
        }
        let (status, body) = call(&service, event(json, &replacements)).await;
        assert_eq!(status, expected, "{body}");
        if let Some(created) = body
            .get("api_key")
            .or_else(|| body.get("data"))
            .and_then(|d| d.get("id"))
        {
            created_id = created.as_str().unwrap().to_string();
        }
        if let Some(length) = listed {
            let list = body.get("api_keys").or_else(|| body.get("data")).unwrap();
            assert_eq!(list.as_array().unwrap().len(), length, "{body}");
        }
    }
}

/// Issue: a `calls:read` token listed, deleted and copied its owner's stronger tokens.
#[tokio::test]
async fn only_tokens_that_may_manage_tokens_manage_them_and_only_weaker_ones() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let mint = |abilities: &'static str| {
        let service = &service;
        let token = t.user_token.clone();
        async move {
            let body = format!(r#"{{"name":"n","abilities":{abilities}}}"#);
            let (status, created) = send(service, Method::POST, TOKENS, &token, &body).await;
            assert_eq!(status, 201, "{created}");
            let data = &created["data"];
            (
                data["id"].as_str().unwrap().to_string(),
                data["token"].as_str().unwrap().to_string(),
            )
        }
    };
    let (_, narrow) = mint(r#"["calls:read"]"#).await;
    let (manager_id, manager) = mint(r#"["calls:read","tokens:manage"]"#).await;
    let (strong_id, _) = mint(r#"["calls:read","calls:write","tokens:manage"]"#).await;
    let (weak_id, _) = mint(r#"["calls:read"]"#).await;

    // Without tokens:manage: 403 on every management route, nothing changes.
    let refused = (
        403,
        json!({"message": "This token cannot manage tokens: that takes the ability tokens:manage or *."}),
    );
    for (method, path, body) in [
        (Method::POST, TOKENS.to_string(), r#"{"name":"copy"}"#),
        (Method::POST, KEYS.to_string(), r#"{"name":"copy"}"#),
        (Method::GET, TOKENS.to_string(), ""),
        (Method::GET, KEYS.to_string(), ""),
        (Method::DELETE, format!("{TOKENS}/{strong_id}"), ""),
        (Method::DELETE, format!("{TOKENS}/{weak_id}"), ""),
    ] {
        assert_eq!(
            send(&service, method.clone(), &path, &narrow, body).await,
            refused,
            "{method} {path}"
        );
    }

    // With tokens:manage: sees and deletes only tokens within its own abilities.
    let (status, listed) = send(&service, Method::GET, TOKENS, &manager, "").await;
    assert_eq!(status, 200);
    let ids: BTreeSet<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(weak_id.as_str()) && ids.contains(manager_id.as_str()));
    assert!(!ids.contains(strong_id.as_str()), "{listed}");
    let (status, keys_listed) = send(&service, Method::GET, KEYS, &manager, "").await;
    assert_eq!(
        (status, keys_listed),
        (200, json!({"api_keys": []})),
        "the user's * key is hidden"
    );
    let stronger = send(
        &service,
        Method::DELETE,
        &format!("{TOKENS}/{strong_id}"),
        &manager,
        "",
    )
    .await;
    assert_eq!(stronger, (404, json!({"message": "API token not found."})));
    let (_, full_keys) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
    let full_key_id = full_keys["api_keys"][0]["id"].as_str().unwrap().to_string();
    let owner_key = send(
        &service,
        Method::DELETE,
        &format!("{KEYS}/{full_key_id}"),
        &manager,
        "",
    )
    .await;
    assert_eq!(owner_key, (404, json!({"message": "API key not found."})));
    let weaker = send(
        &service,
        Method::DELETE,
        &format!("{TOKENS}/{weak_id}"),
        &manager,
        "",
    )
    .await;
    assert_eq!(weaker.0, 200, "{weaker:?}");
    // The stronger ones still work.
    assert_eq!(
        send(&service, Method::GET, TOKENS, &t.user_token, "")
            .await
            .0,
        200
    );
    let (_, all) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    assert!(all.to_string().contains(&strong_id));
}

/// Issue: a key made by an expiring token never expired.
#[tokio::test]
async fn a_token_never_outlives_the_token_that_minted_it() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let parent_expiry = now_ms().seconds().0 + 86_400;
    let parent = token_expiring(&store, &t.user, TokenKind::ApiKey, parent_expiry).await;
    let parent_token = parent.secret.expose().to_string();
    for (path, field) in [(KEYS, "api_key"), (TOKENS, "data")] {
        let (status, created) = send(
            &service,
            Method::POST,
            path,
            &parent_token,
            r#"{"name":"child"}"#,
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id =
            shared::token::PublicTokenId::parse(created[field]["id"].as_str().unwrap()).unwrap();
        let family = shared::token::parse_any_prefix(created[field]["token"].as_str().unwrap())
            .unwrap()
            .kind
            .family();
        let stored = store
            .get_token(id.user_id, family, id.token_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.expires_at, Some(parent_expiry), "{path}");
        assert_eq!(stored.parent_id, Some(parent.record.public_id()), "{path}");
    }
    // The personal-token listing shows the inherited expiry.
    let (_, listed) = send(&service, Method::GET, TOKENS, &parent_token, "").await;
    assert_eq!(
        listed["data"][0]["expires_at"],
        shared::clock::timestamp_seconds(parent_expiry * 1000)
    );
}

/// Behind API Gateway the route and its parameters come from the event's resource template and
/// path parameters: an id ending in a control character, which URL parsing drops from the
/// event's decoded `path`, is still that route's unknown id (404), not another route (405).
#[tokio::test]
async fn the_gateway_route_and_path_parameters_decide_behind_api_gateway() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let deleted = call(
        &service,
        event(
            include_str!("../../../events/api-keys-delete.json"),
            &[("KEY_ID", "\\u0000"), ("USER_KEY", &t.user_token)],
        ),
    )
    .await;
    assert_eq!(deleted, (404, json!({"message": "API key not found."})));
}

/// Laravel reads form bodies as it reads JSON ones: `name`, and `abilities[]` for a list.
#[tokio::test]
async fn form_bodies_create_keys_and_tokens_as_json_ones_do() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (name, value) = bearer(&t.user_token);
    let form = ("content-type", "application/x-www-form-urlencoded");
    let headers = [(name, value.as_str()), form];
    let (status, created) = call(
        &service,
        request(Method::POST, KEYS, &headers, "name=Deploy+key%21"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["api_key"]["name"], "Deploy key!");
    let (status, created) = call(
        &service,
        request(
            Method::POST,
            TOKENS,
            &headers,
            "name=CI&abilities%5B%5D=calls%3Aread&abilities[]=calls:write",
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["data"]["abilities"],
        json!(["calls:read", "calls:write"])
    );
    // What a second request sees: both, stored as the JSON route stores them.
    let (_, listed) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    assert_eq!(listed["data"][0]["name"], "CI");
    assert_eq!(
        listed["data"][0]["abilities"],
        json!(["calls:read", "calls:write"])
    );
    // Form validation answers as JSON validation does.
    let (status, body) = call(
        &service,
        request(Method::POST, TOKENS, &headers, "abilities=calls:read"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({
            "message": "The name field is required. (and 1 more error)",
            "errors": {
                "name": ["The name field is required."],
                "abilities": ["The abilities field must be an array."],
            },
        })
    );
    // Without the form content type the same bytes are not JSON: 400, as before.
    let (status, _) = send(&service, Method::POST, KEYS, &t.user_token, "name=x").await;
    assert_eq!(status, 400);
}

fn abilities(list: &[&str]) -> Abilities {
    Abilities::parse(list.iter().map(|a| a.to_string()).collect()).unwrap()
}

/// A key renamed and disabled is refused everywhere (routes, authentication as the authorizer
/// makes it, verify says DISABLED) and keeps its slot; enabled again, it works again.
#[tokio::test]
async fn a_disabled_key_is_refused_everywhere_until_enabled_and_keeps_its_slot() {
    // The user's own key and the one created here fill a cap of 2.
    let (service, store) = service_with(2).await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"K"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (id, key) = (
        created["api_key"]["id"].as_str().unwrap().to_string(),
        created["api_key"]["token"].as_str().unwrap().to_string(),
    );
    let path = format!("{KEYS}/{id}");
    let (status, updated) = send(
        &service,
        Method::PATCH,
        &path,
        &t.user_token,
        r#"{"name":"K (paused)","enabled":false}"#,
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["message"], "API key updated successfully.");
    assert_eq!(
        keys(&updated["api_key"]),
        BTreeSet::from([
            "id",
            "name",
            "created_at",
            "last_used_at",
            "expires_at",
            "enabled"
        ])
    );
    assert_eq!(
        (
            &updated["api_key"]["id"],
            &updated["api_key"]["name"],
            &updated["api_key"]["enabled"]
        ),
        (&json!(id), &json!("K (paused)"), &json!(false))
    );
    assert_eq!(send(&service, Method::GET, KEYS, &key, "").await.0, 401);
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        now_ms()
    )
    .await
    .is_err());
    let verified = shared::auth::verify(
        &store,
        &shared::token::TokenFormat::default(),
        &key,
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(verified.code.as_str(), "DISABLED");
    // Listed as disabled, under its new name.
    let (_, listed) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
    let entry = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == json!(id))
        .unwrap()
        .clone();
    assert_eq!(
        (&entry["name"], &entry["enabled"]),
        (&json!("K (paused)"), &json!(false))
    );
    // Still holding its slot: the cap of 2 is reached.
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"third"}"#,
    )
    .await;
    assert_eq!(status, 422);
    // Enabled again (a form body this time): it works.
    let (name, value) = bearer(&t.user_token);
    let form = [
        (name, value.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (status, updated) = call(&service, request(Method::PATCH, &path, &form, "enabled=1")).await;
    assert_eq!(
        (status, &updated["api_key"]["enabled"]),
        (200, &json!(true)),
        "{updated}"
    );
    assert_eq!(send(&service, Method::GET, KEYS, &key, "").await.0, 200);
    assert_eq!(
        shared::auth::verify(
            &store,
            &shared::token::TokenFormat::default(),
            &key,
            now_ms()
        )
        .await
        .unwrap()
        .code
        .as_str(),
        "VALID"
    );
}

/// A personal token's abilities only narrow, also for a limited caller.
#[tokio::test]
async fn abilities_only_narrow_whoever_asks() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        TOKENS,
        &t.user_token,
        r#"{"name":"CI","abilities":["calls:read","calls:write"]}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("{TOKENS}/{}", created["data"]["id"].as_str().unwrap());
    let (status, updated) = send(
        &service,
        Method::PATCH,
        &path,
        &t.user_token,
        r#"{"abilities":["calls:read"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["data"]["abilities"], json!(["calls:read"]));
    assert_eq!(updated["data"]["enabled"], true);
    let widened = (
        403,
        json!({"message": "A token's abilities may only be narrowed: send a subset of its current abilities."}),
    );
    for wider in [
        r#"{"abilities":["calls:read","calls:write"]}"#,
        r#"{"abilities":["*"]}"#,
    ] {
        assert_eq!(
            send(&service, Method::PATCH, &path, &t.user_token, wider).await,
            widened
        );
    }
    // What a second request sees: the narrowed abilities, stored.
    let (_, listed) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    assert_eq!(listed["data"][0]["abilities"], json!(["calls:read"]));
    // A limited manager may update the tokens within its abilities, never widen them, and does
    // not see the others.
    let manager = token_for(
        &store,
        &t.user,
        TokenKind::Personal,
        abilities(&["tokens:manage", "calls:read"]),
    )
    .await;
    let (status, renamed) = send(
        &service,
        Method::PATCH,
        &path,
        &manager,
        r#"{"name":"CI (read)"}"#,
    )
    .await;
    assert_eq!(
        (status, &renamed["data"]["name"]),
        (200, &json!("CI (read)")),
        "{renamed}"
    );
    assert_eq!(
        send(
            &service,
            Method::PATCH,
            &path,
            &manager,
            r#"{"abilities":["calls:write"]}"#
        )
        .await,
        widened
    );
    let full = token_for(&store, &t.user, TokenKind::Personal, Abilities::full()).await;
    let full_id = shared::token::parse_any_prefix(&full).unwrap();
    let full_path = format!("{TOKENS}/{}-{}", full_id.user_id, full_id.token_id);
    assert_eq!(
        send(
            &service,
            Method::PATCH,
            &full_path,
            &manager,
            r#"{"enabled":false}"#
        )
        .await,
        (404, json!({"message": "API token not found."}))
    );
    assert_eq!(send(&service, Method::GET, TOKENS, &full, "").await.0, 200);
}

/// Updates answer 404 for what is not the caller's to change, 422 for empty or invalid bodies,
/// and never a 5xx, always in Laravel's shape.
#[tokio::test]
async fn updates_validate_and_hide_what_is_not_the_callers() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let (_, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"K"}"#,
    )
    .await;
    let id = created["api_key"]["id"].as_str().unwrap().to_string();
    let path = format!("{KEYS}/{id}");
    assert_eq!(
        send(&service, Method::PATCH, &path, &t.user_token, "{}").await,
        (
            422,
            json!({"message": "The name field is required when enabled is not present.", "errors": {"name": ["The name field is required when enabled is not present."]}})
        )
    );
    let (status, body) = send(
        &service,
        Method::PATCH,
        &format!("{TOKENS}/{id}"),
        &t.user_token,
        "{}",
    )
    .await;
    assert_eq!(status, 404, "another family's id: {body}");
    assert_eq!(
        send(
            &service,
            Method::PATCH,
            &path,
            &t.user_token,
            r#"{"enabled":"maybe"}"#
        )
        .await,
        (
            422,
            json!({"message": "The enabled field must be true or false.", "errors": {"enabled": ["The enabled field must be true or false."]}})
        )
    );
    let not_found = (404, json!({"message": "API key not found."}));
    for (token, target) in [
        (&other.user_token, path.clone()),
        (&t.admin_token, path.clone()),
        (&t.user_token, format!("{KEYS}/nope")),
        (
            &t.user_token,
            format!("{KEYS}/{}-0000000000000000ffff", t.user.id),
        ),
    ] {
        assert_eq!(
            send(&service, Method::PATCH, &target, token, r#"{"name":"x"}"#).await,
            not_found
        );
    }
    for body in [
        "[1]",
        "{",
        r#"{"name":5}"#,
        r#"{"name":null,"enabled":null}"#,
        r#"{"name":"n\u0000"}"#,
        r#"{"enabled":2}"#,
        r#"{"abilities":["x"]}"#,
        &format!(r#"{{"name":"{}"}}"#, "n".repeat(256)),
        &format!(r#"{{"name":"{}"}}"#, "n".repeat(20_000)),
    ] {
        let (status, answer) = send(&service, Method::PATCH, &path, &t.user_token, body).await;
        assert!(
            [400, 413, 422].contains(&status),
            "{body}: {status} {answer}"
        );
        assert!(answer["message"].is_string(), "{answer}");
        assert_eq!(status == 422, answer["errors"].is_object(), "{answer}");
    }
    assert_eq!(
        send(
            &service,
            Method::PATCH,
            &path,
            &t.user_token,
            r#"{"abilities":["x"]}"#
        )
        .await
        .0,
        422,
        "an API key takes no abilities: an empty update"
    );
    // Deleted: gone for updates too.
    assert_eq!(
        send(&service, Method::DELETE, &path, &t.user_token, "")
            .await
            .0,
        200
    );
    assert_eq!(
        send(
            &service,
            Method::PATCH,
            &path,
            &t.user_token,
            r#"{"name":"x"}"#
        )
        .await,
        not_found
    );
}

/// Expiry at creation: `expires_in_days` for keys, `expires_at` (ISO 8601) for personal tokens;
/// refused past their expiry, bounded by the caller's own.
#[tokio::test]
async fn keys_and_tokens_may_expire_from_creation() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (status, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"contractor","expires_in_days":30}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["api_key"]["token"].as_str().unwrap().to_string();
    let id =
        shared::token::PublicTokenId::parse(created["api_key"]["id"].as_str().unwrap()).unwrap();
    let stored = store
        .get_token(id.user_id, shared::token::TokenFamily::ApiKeys, id.token_id)
        .await
        .unwrap()
        .unwrap();
    let expiry = stored.expires_at.unwrap();
    assert_eq!(expiry, stored.created_at_ms / 1000 + 30 * 86_400);
    assert_eq!(
        created["api_key"]["expires_at"],
        shared::clock::timestamp_micros(expiry * 1000)
    );
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        EpochMs((expiry - 1) * 1000)
    )
    .await
    .is_ok());
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&key),
        EpochMs(expiry * 1000)
    )
    .await
    .is_err());
    for (days, message) in [
        ("0", "The expires in days field must be between 1 and 3650."),
        (
            "3651",
            "The expires in days field must be between 1 and 3650.",
        ),
        ("1.5", "The expires in days field must be an integer."),
        (r#""soon""#, "The expires in days field must be an integer."),
    ] {
        let body = format!(r#"{{"name":"k","expires_in_days":{days}}}"#);
        let (status, answer) = send(&service, Method::POST, KEYS, &t.user_token, &body).await;
        assert_eq!(
            (status, answer["errors"]["expires_in_days"][0].as_str()),
            (422, Some(message)),
            "{days}"
        );
    }
    let at = now_ms().seconds().0 + 7 * 86_400;
    let iso = shared::clock::timestamp_seconds(at * 1000);
    let body =
        json!({"name": "release", "abilities": ["calls:read"], "expires_at": iso}).to_string();
    let (status, created) = send(&service, Method::POST, TOKENS, &t.user_token, &body).await;
    assert_eq!(
        (status, &created["data"]["expires_at"]),
        (201, &json!(iso)),
        "{created}"
    );
    let (_, listed) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    assert_eq!(listed["data"][0]["expires_at"], json!(iso));
    for (value, message) in [
        (
            "2001-01-01T00:00:00Z",
            "The expires at field must be a date after now.",
        ),
        (
            "2999-01-01",
            "The expires at field must be a date at most 3650 days from now.",
        ),
        (
            "next week",
            "The expires at field must be a valid date (ISO 8601).",
        ),
    ] {
        let body = json!({"name": "t", "expires_at": value}).to_string();
        let (status, answer) = send(&service, Method::POST, TOKENS, &t.user_token, &body).await;
        assert_eq!(
            (status, answer["errors"]["expires_at"][0].as_str()),
            (422, Some(message)),
            "{value}"
        );
    }
    // Never past the caller's own expiry.
    let parent = token_expiring(
        &store,
        &t.user,
        TokenKind::ApiKey,
        now_ms().seconds().0 + 86_400 + 60,
    )
    .await;
    let parent = parent.secret.expose().to_string();
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &parent,
        r#"{"name":"k","expires_in_days":2}"#,
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &parent,
        r#"{"name":"k","expires_in_days":1}"#,
    )
    .await;
    assert_eq!(status, 201);
}

fn rolled_id(body: &Value, field: &str) -> (String, String) {
    (
        body[field]["id"].as_str().unwrap().to_string(),
        body[field]["token"].as_str().unwrap().to_string(),
    )
}

/// A roll: the successor has the name, abilities and expiry of the old token and a new secret;
/// both work during the grace period (to the second), the old one is refused from its end; a
/// token rolls once.
#[tokio::test]
async fn a_roll_keeps_the_old_token_for_its_grace_period_only() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let body = json!({"name": "CI", "abilities": ["calls:read"], "expires_at": shared::clock::timestamp_seconds((now_ms().seconds().0 + 30 * 86_400) * 1000)});
    let (status, created) = send(
        &service,
        Method::POST,
        TOKENS,
        &t.user_token,
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (old_id, old_token) = rolled_id(&created, "data");
    let path = format!("{TOKENS}/{old_id}/roll");
    let before = now_ms().seconds().0;
    let (status, rolled) = send(
        &service,
        Method::POST,
        &path,
        &t.user_token,
        r#"{"grace_seconds":120}"#,
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    let (new_id, new_token) = rolled_id(&rolled, "data");
    assert_ne!((&new_id, &new_token), (&old_id, &old_token));
    assert_eq!(
        keys(&rolled["data"]),
        BTreeSet::from([
            "id",
            "name",
            "abilities",
            "token",
            "created_at",
            "expires_at"
        ])
    );
    for field in ["name", "abilities", "expires_at"] {
        assert_eq!(rolled["data"][field], created["data"][field], "{field}");
    }
    assert_eq!(rolled["previous"]["id"], json!(old_id));
    let old = shared::token::PublicTokenId::parse(&old_id).unwrap();
    let stored = store
        .get_token(
            old.user_id,
            shared::token::TokenFamily::Personal,
            old.token_id,
        )
        .await
        .unwrap()
        .unwrap();
    let grace_end = stored.expires_at.unwrap();
    assert!(
        (before + 120..=now_ms().seconds().0 + 120).contains(&grace_end),
        "{grace_end}"
    );
    assert_eq!(
        rolled["previous"]["expires_at"],
        json!(shared::clock::timestamp_seconds(grace_end * 1000))
    );
    // Both work during the grace period, and both are listed; the old one stops at its end.
    for token in [&old_token, &new_token] {
        assert_eq!(
            send(&service, Method::GET, TOKENS, token, "").await.0,
            403,
            "calls:read manages no tokens"
        );
        assert!(shared::auth::authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(token),
            EpochMs((grace_end - 1) * 1000)
        )
        .await
        .is_ok());
    }
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&old_token),
        EpochMs(grace_end * 1000)
    )
    .await
    .is_err());
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&new_token),
        EpochMs(grace_end * 1000)
    )
    .await
    .is_ok());
    let (_, listed) = send(&service, Method::GET, TOKENS, &t.user_token, "").await;
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&old_id.as_str()) && ids.contains(&new_id.as_str()),
        "{listed}"
    );
    // Once only.
    assert_eq!(
        send(&service, Method::POST, &path, &t.user_token, "").await,
        (
            409,
            json!({"message": "This API token has already been rolled."})
        )
    );
    // The successor cannot roll while its predecessor works: never two predecessors.
    let successor_roll = format!("{TOKENS}/{new_id}/roll");
    assert_eq!(
        send(&service, Method::POST, &successor_roll, &t.user_token, "").await,
        (
            409,
            json!({"message": "This API token replaced one that still works: it can be rolled once that token's grace period has ended."})
        )
    );
    // Once the predecessor is deleted, the successor rolls in turn; grace 0 (the default)
    // stops its predecessor at once.
    let deleted = send(
        &service,
        Method::DELETE,
        &format!("{TOKENS}/{old_id}"),
        &t.user_token,
        "",
    )
    .await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    let (status, again) = send(
        &service,
        Method::POST,
        &format!("{TOKENS}/{new_id}/roll"),
        &t.user_token,
        "",
    )
    .await;
    assert_eq!(status, 201, "{again}");
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&new_token),
        now_ms()
    )
    .await
    .is_err());
    assert!(shared::auth::authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&rolled_id(&again, "data").1),
        now_ms()
    )
    .await
    .is_ok());
}

/// Parallel rolls of one key: exactly one wins, the others are 409.
#[tokio::test]
async fn racing_rolls_let_exactly_one_win() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let (_, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"K"}"#,
    )
    .await;
    let path = format!("{KEYS}/{}/roll", created["api_key"]["id"].as_str().unwrap());
    let rolls: Vec<_> = (0..6)
        .map(|_| {
            let (service, token, path) = (service.clone(), t.user_token.clone(), path.clone());
            tokio::spawn(async move {
                send(
                    &service,
                    Method::POST,
                    &path,
                    &token,
                    r#"{"grace_seconds":60}"#,
                )
                .await
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for roll in rolls {
        let (status, body) = roll.await.unwrap();
        assert!([201, 409].contains(&status), "{status} {body}");
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    let (_, listed) = send(&service, Method::GET, KEYS, &t.user_token, "").await;
    let named_k = listed["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "K")
        .count();
    assert_eq!(
        named_k, 2,
        "the old key in its grace period and one successor: {listed}"
    );
}

/// At the cap a roll still works: the successor takes over its predecessor's slot, which the
/// predecessor does not give back again when it expires.
#[tokio::test]
async fn a_roll_at_the_cap_takes_over_the_slot() {
    let (service, store) = service_with(2).await;
    let t = tenant(&store).await;
    let (_, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"K"}"#,
    )
    .await;
    let (old_id, _) = rolled_id(&created, "api_key");
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"full"}"#,
    )
    .await;
    assert_eq!(status, 422, "the cap of 2 is reached");
    let (status, rolled) = send(
        &service,
        Method::POST,
        &format!("{KEYS}/{old_id}/roll"),
        &t.user_token,
        "",
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    // The predecessor expired at once: creating still finds the cap reached (the user's key
    // and the successor), after releasing what expired.
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"full"}"#,
    )
    .await;
    assert_eq!(status, 422);
    let (new_id, _) = rolled_id(&rolled, "api_key");
    assert_eq!(
        send(
            &service,
            Method::DELETE,
            &format!("{KEYS}/{new_id}"),
            &t.user_token,
            ""
        )
        .await
        .0,
        200
    );
    let (status, _) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"room"}"#,
    )
    .await;
    assert_eq!(status, 201, "deleting the successor freed its slot");
}

/// Rolls answer 404 for what is not the caller's, 422 for a bad grace period, in Laravel's
/// shape.
#[tokio::test]
async fn roll_refusals_keep_the_shape() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let other = tenant(&store).await;
    let (_, created) = send(
        &service,
        Method::POST,
        KEYS,
        &t.user_token,
        r#"{"name":"K"}"#,
    )
    .await;
    let path = format!("{KEYS}/{}/roll", created["api_key"]["id"].as_str().unwrap());
    let not_found = (404, json!({"message": "API key not found."}));
    assert_eq!(
        send(&service, Method::POST, &path, &other.user_token, "").await,
        not_found
    );
    assert_eq!(
        send(
            &service,
            Method::POST,
            &format!("{KEYS}/nope/roll"),
            &t.user_token,
            ""
        )
        .await,
        not_found
    );
    for (grace, message) in [
        (
            "-1",
            "The grace seconds field must be between 0 and 604800.",
        ),
        (
            "604801",
            "The grace seconds field must be between 0 and 604800.",
        ),
        (r#""soon""#, "The grace seconds field must be an integer."),
    ] {
        let body = format!(r#"{{"grace_seconds":{grace}}}"#);
        let (status, answer) = send(&service, Method::POST, &path, &t.user_token, &body).await;
        assert_eq!(
            (status, answer["errors"]["grace_seconds"][0].as_str()),
            (422, Some(message)),
            "{grace}"
        );
    }
    for body in ["[1]", "{"] {
        assert_eq!(
            send(&service, Method::POST, &path, &t.user_token, body)
                .await
                .0,
            400
        );
    }
    assert_eq!(
        send(&service, Method::GET, &path, &t.user_token, "")
            .await
            .0,
        405
    );
    // Revoked: gone for rolls too.
    let delete = format!("{KEYS}/{}", created["api_key"]["id"].as_str().unwrap());
    assert_eq!(
        send(&service, Method::DELETE, &delete, &t.user_token, "")
            .await
            .0,
        200
    );
    assert_eq!(
        send(&service, Method::POST, &path, &t.user_token, "").await,
        not_found
    );
}
