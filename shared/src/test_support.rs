//! Helpers for integration tests against DynamoDB Local (feature `test-support`).
//!
//! Every test gets a table of its own, so tests run in parallel against one DynamoDB Local.

use std::sync::Arc;

use lambda_http::http::Method;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use crate::config::{dynamodb_client, Config};
use crate::domain::{Abilities, Email, Role, TokenName, UserStatus, Workspace, WorkspaceStatus};
use crate::mint::mint_plaintext;
use crate::service::Service;
use crate::store::schema::create_table;
use crate::store::{now_ms, DynamoStore, NewUser, Owner, Platform, Store, User};
use crate::token::{fill_random, TokenKind};

/// A random lowercase hex string of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh table on the DynamoDB Local that `make test` started, wrapped in a [`Service`] whose
/// per-user caps (tokens and customer tokens) are both `max_tokens_per_user`.
pub async fn service_with(max_tokens_per_user: u32) -> (Service, DynamoStore) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run the tests with `make test`, which starts DynamoDB Local"
    );
    let table = format!("test-{}", random_hex(8));
    let client = dynamodb_client().await;
    create_table(&client, &table)
        .await
        .expect("create a table on DynamoDB Local");
    let key = random_hex(32);
    let config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(table.clone()),
        "MAX_TOKENS_PER_USER" | "MAX_CUSTOMER_TOKENS_PER_USER" => {
            Some(max_tokens_per_user.to_string())
        }
        "PERMANENT_TOKEN_KEY" => Some(key.clone()),
        _ => None,
    })
    .expect("test configuration");
    let store = DynamoStore::new(client, table);
    let service = Service {
        store: Arc::new(store.clone()),
        config,
    };
    (service, store)
}

/// [`service_with`] the default cap.
pub async fn service() -> (Service, DynamoStore) {
    service_with(crate::config::DEFAULT_MAX_TOKENS_PER_USER).await
}

/// A new user with a unique email, one active workspace and the given role.
pub fn new_user(platform: &Platform, role: Role) -> NewUser {
    NewUser {
        id: None,
        platform_id: platform.id,
        name: format!("User {}", random_hex(3)),
        email: Email::parse(&format!("user-{}@example.com", random_hex(6))).expect("email"),
        role,
        status: UserStatus::Active,
        customer_id: None,
        workspaces: vec![Workspace {
            name: "Main".into(),
            status: WorkspaceStatus::Active,
        }],
    }
}

/// Stores `user` and returns it.
pub async fn add_user(store: &dyn Store, user: NewUser) -> User {
    store
        .create_user(user, now_ms())
        .await
        .expect("create user")
}

/// A plaintext token of `kind` for `owner`.
pub async fn token_for(
    store: &dyn Store,
    owner: &User,
    kind: TokenKind,
    abilities: Abilities,
) -> String {
    mint_plaintext(
        store,
        Owner::from(owner),
        kind,
        TokenName::parse("test").expect("a valid name"),
        abilities,
        u32::MAX,
    )
    .await
    .expect("mint token")
}

/// A platform with an admin and a plain user, each holding a full-access API key.
pub struct Tenant {
    pub platform: Platform,
    pub admin: User,
    pub admin_token: String,
    pub user: User,
    pub user_token: String,
}

/// Creates a [`Tenant`] in `store`.
pub async fn tenant(store: &dyn Store) -> Tenant {
    let platform = store
        .create_platform(&format!("Platform {}", random_hex(3)), now_ms())
        .await
        .expect("create platform");
    let admin = add_user(store, new_user(&platform, Role::Admin)).await;
    let user = add_user(store, new_user(&platform, Role::User)).await;
    let admin_token = token_for(store, &admin, TokenKind::ApiKey, Abilities::full()).await;
    let user_token = token_for(store, &user, TokenKind::ApiKey, Abilities::full()).await;
    Tenant {
        platform,
        admin,
        admin_token,
        user,
        user_token,
    }
}

/// A request as the functions receive it.
pub fn request(method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let mut builder = lambda_http::http::Request::builder()
        .method(method)
        .uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::Text(body.to_string())).expect("request")
}

/// The `Authorization: Bearer` header for `token`.
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// A response's status and JSON body; fails the test when the body is not JSON.
pub fn status_and_json(response: &Response<Body>) -> (u16, Value) {
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "every response is JSON"
    );
    let body = serde_json::from_slice(response.body().as_ref()).expect("JSON body");
    (response.status().as_u16(), body)
}

/// A sample event from `events/` with its `{{PLACEHOLDER}}`s replaced, as the function receives
/// it from API Gateway.
pub fn event(json: &str, replacements: &[(&str, &str)]) -> Request {
    lambda_http::request::from_str(&fill_placeholders(json, replacements))
        .expect("a valid API Gateway event")
}

/// A sample event's text with its `{{PLACEHOLDER}}`s replaced.
pub fn fill_placeholders(json: &str, replacements: &[(&str, &str)]) -> String {
    replacements
        .iter()
        .fold(json.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{{{name}}}}}"), value)
        })
}

/// A service whose DynamoDB endpoint refuses connections (nothing listens on port 9): any
/// database call fails, as in an outage.
pub async fn unreachable_service() -> Service {
    let client = crate::config::dynamodb_client_at(Some("http://127.0.0.1:9")).await;
    Service {
        store: Arc::new(DynamoStore::new(client, "unreachable")),
        config: Config::from_lookup(|name| (name == "TABLE_NAME").then(|| "unreachable".into()))
            .expect("test configuration"),
    }
}

/// Any JSON value: what a hostile client may send, for property tests of body parsers. Strings
/// lean towards the field names and shapes the routes look at.
pub fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let text = prop_oneof![
        any::<String>(),
        "[0-9]{0,14}",
        "[a-z@. ]{0,20}",
        Just("*".to_string()),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text.prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A JSON object whose keys are mostly the fields the routes read.
pub fn arbitrary_body() -> impl proptest::strategy::Strategy<Value = serde_json::Map<String, Value>>
{
    use proptest::prelude::*;
    prop::collection::btree_map(field_name(), arbitrary_json(), 0..6)
        .prop_map(|fields| fields.into_iter().collect())
}

fn field_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        prop::sample::select(vec![
            "user_id",
            "email",
            "token_name",
            "name",
            "abilities",
            "customer_id",
            "customerid",
            "customer_salt",
            "expiration_days",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,12}",
    ]
}
