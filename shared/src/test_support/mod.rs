//! Helpers for integration tests against DynamoDB Local (feature `test-support`).
//!
//! Every test gets a table of its own, so tests run in parallel against one DynamoDB Local.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use lambda_http::http::Method;
use lambda_http::{Body, Request};
use serde_json::Value;

use crate::clock::{now_ms, EpochMs};
use crate::config::{dynamodb_client, Config};
use crate::domain::{Abilities, Email, Role, TokenName, UserStatus, Workspace, WorkspaceStatus};
use crate::mint::mint_plaintext;
use crate::service::Service;
use crate::store::schema::{create_table_with, Features};
use crate::store::{DynamoStore, NewUser, Owner, Platform, Store, User};
use crate::token::{TokenFormat, TokenKind};
use crate::trust::TrustRoots;

pub use crate::token::random_hex;

/// A `MakeWriter` into a shared buffer, to capture what tracing writes (logs, metric lines).
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the buffer")).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A fresh table (without a stream or time to live) on the DynamoDB Local that `make test` started, wrapped in a [`Service`] whose
/// per-user caps (tokens and customer tokens) are both `max_tokens_per_user`.
pub async fn service_with(max_tokens_per_user: u32) -> (Service, DynamoStore) {
    service_on(max_tokens_per_user, false).await
}

/// [`service`] on a table with its stream (for the suites that read it: events out).
pub async fn service_streaming() -> (Service, DynamoStore) {
    service_on(crate::config::DEFAULT_MAX_TOKENS_PER_USER, true).await
}

async fn service_on(max_tokens_per_user: u32, streaming: bool) -> (Service, DynamoStore) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run the tests with `make test`, which starts DynamoDB Local"
    );
    let table = format!("test-{}", random_hex(8));
    let client = dynamodb_client(TrustRoots::default()).await;
    // No time to live: see `create_table_with`.
    let features = Features {
        stream: streaming,
        ttl: false,
    };
    create_table_with(&client, &table, features)
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
        external_id: None,
        meta: None,
    }
}

/// Stores `user` and returns it.
pub async fn add_user(store: &dyn Store, user: NewUser) -> User {
    store
        .create_user(user, &crate::audit::Change::operator(), now_ms())
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
        &TokenFormat::default(),
        Owner::from(owner),
        kind,
        TokenName::parse("test").expect("a valid name"),
        abilities,
        u32::MAX,
    )
    .await
    .expect("mint token")
}

/// A full-access API key of `owner`, disabled (refused everywhere, still holding its slot).
pub async fn disabled_token(store: &dyn Store, owner: &User) -> String {
    let token = token_for(store, owner, TokenKind::ApiKey, Abilities::full()).await;
    let parsed = crate::token::parse_any_prefix(&token).expect("a minted token");
    let record = store
        .get_token(owner.id, parsed.kind.family(), parsed.token_id)
        .await
        .expect("the store")
        .expect("the minted record");
    let off = crate::store::TokenChange {
        enabled: Some(false),
        ..Default::default()
    };
    let updated = store
        .update_token(&record, &off, &crate::audit::Change::operator(), now_ms())
        .await
        .expect("the store");
    assert!(updated.is_some_and(|record| !record.enabled), "disabled");
    token
}

/// A full-access token of `kind` for `owner` that expires at `expires_at` (epoch seconds; in
/// the past for one that has expired), minted by the operator.
pub async fn token_expiring(
    store: &dyn Store,
    owner: &User,
    kind: TokenKind,
    expires_at: u64,
) -> crate::mint::Minted {
    let request = crate::mint::MintRequest {
        kind,
        name: TokenName::parse("expiring").expect("a valid name"),
        abilities: Abilities::full(),
        expires_at: Some(expires_at),
        parent_id: None,
        change: crate::audit::Change::operator(),
        meta: None,
    };
    let format = TokenFormat::default();
    crate::mint::mint(
        store,
        &format,
        Owner::from(owner),
        request,
        u32::MAX,
        now_ms(),
    )
    .await
    .expect("mint an expiring token")
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

/// A function's router over `service` (`api_keys::router`, ...).
pub type RouterOf = fn(Service) -> Router;

/// A request through `router` as Lambda runs it ([`crate::web::respond`]: API Gateway's route,
/// the invocation's deadline): the status, the headers and the body.
pub async fn exchange(router: Router, request: Request) -> (StatusCode, HeaderMap, Vec<u8>) {
    let (parts, body) = crate::web::respond(router, request).await.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("a response body");
    (parts.status, parts.headers, bytes.to_vec())
}

/// [`exchange`] through `router` over `service`: the status and the JSON body; fails the test
/// when the answer is not JSON.
pub async fn call(router: RouterOf, service: &Service, request: Request) -> (u16, Value) {
    let (status, headers, body) = exchange(router(service.clone()), request).await;
    status_and_json(status, &headers, &body)
}

/// The status and JSON body of an answer; fails the test when it is not JSON.
pub fn status_and_json(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> (u16, Value) {
    assert_eq!(
        headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..]),
        "every response is JSON"
    );
    let body = serde_json::from_slice(body).expect("JSON body");
    (status.as_u16(), body)
}

/// `binary` (a test's `CARGO_BIN_EXE_…`) on `table` of the DynamoDB Local that `make test`
/// started, with `key` as its `PERMANENT_TOKEN_KEY`.
pub fn command_on(binary: &str, table: &str, key: &str) -> std::process::Command {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run the tests with `make test`"
    );
    let mut command = std::process::Command::new(binary);
    command
        .env("TABLE_NAME", table)
        .env("PERMANENT_TOKEN_KEY", key);
    command
}

/// A running `tokenctl serve` on a free port of 127.0.0.1, stopped when dropped.
pub struct LocalServer {
    child: std::process::Child,
    pub port: u16,
}

impl LocalServer {
    /// Runs `command` (a [`command_on`] the tokenctl binary) with `serve --port PORT`, and waits
    /// until it accepts connections.
    pub fn start(mut command: std::process::Command) -> LocalServer {
        use std::time::{Duration, Instant};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = command
            .args(["serve", "--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start tokenctl serve");
        let server = LocalServer { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tokenctl serve did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to a server on 127.0.0.1:`port` (`tokenctl serve`, `sam local
/// start-api`): the status, the headers (lowercased names) and the body.
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    // SAM's emulated API Gateway has been seen (once in many runs) to swallow a response after
    // the function answered; a request then waits for nothing. One more attempt, said out loud,
    // instead of a suite that never ends.
    let mut response = Vec::new();
    for attempt in 1..=2 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .expect("a read timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("send");
        stream.write_all(body).expect("send");
        response.clear();
        match stream.read_to_end(&mut response) {
            Ok(_) => break,
            Err(error) if attempt == 1 => {
                eprintln!("{method} {path}: no answer within 60 s ({error}); sending it again");
            }
            Err(error) => panic!("{method} {path}: no answer within 60 s, twice ({error})"),
        }
    }
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

/// [`http_exchange`] with a text body, answering the status and the JSON body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let (status, _, body) = http_exchange(port, method, path, headers, body.as_bytes());
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// A sample event from `events/` with its `{{PLACEHOLDER}}`s replaced, as the function receives
/// it from API Gateway.
pub fn event(json: &str, replacements: &[(&str, &str)]) -> Request {
    lambda_http::request::from_str(&fill_placeholders(json, replacements))
        .expect("a valid API Gateway event")
}

/// A sample event from `events/` through `router` on a fresh table with the demo directory
/// (its `ADMIN_KEY` and `USER_KEY` filled in): the status and the JSON body.
pub async fn sample_event(router: RouterOf, json: &str) -> (u16, Value) {
    let (service, store) = service().await;
    let demo = crate::demo::seed(&store, &TokenFormat::default(), 100, now_ms())
        .await
        .expect("the demo directory");
    let keys = [
        ("ADMIN_KEY", demo.admin_key.as_str()),
        ("USER_KEY", &demo.user_key),
    ];
    call(router, &service, event(json, &keys)).await
}

/// A sample event's text with its `{{PLACEHOLDER}}`s replaced.
pub fn fill_placeholders(json: &str, replacements: &[(&str, &str)]) -> String {
    replacements
        .iter()
        .fold(json.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{{{name}}}}}"), value)
        })
}

/// A service on the same table as `store` whose client runs `interceptor` on every call.
pub fn service_intercepted(
    service: &Service,
    store: &DynamoStore,
    interceptor: impl aws_sdk_dynamodb::config::Intercept + 'static,
) -> (Service, DynamoStore) {
    let client = aws_sdk_dynamodb::Client::from_conf(
        store
            .direct()
            .client
            .config()
            .to_builder()
            .interceptor(interceptor)
            .build(),
    );
    let intercepted = DynamoStore::new(client, store.direct().table);
    let service = Service {
        store: Arc::new(intercepted.clone()),
        config: service.config.clone(),
    };
    (service, intercepted)
}

/// Deletes every item whose TTL attribute (`expires_at`) has passed, as DynamoDB's TTL does
/// eventually and DynamoDB Local never does. (A Scan: test code only.) Returns how many.
pub async fn ttl_sweep(store: &DynamoStore, now: EpochMs) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue;
    let mut deleted = 0;
    let mut start = None;
    loop {
        let page = store
            .direct()
            .client
            .scan()
            .table_name(store.direct().table)
            .filter_expression("expires_at <= :now")
            .expression_attribute_values(":now", AttributeValue::N((now.seconds().0).to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            store
                .direct()
                .client
                .delete_item()
                .table_name(store.direct().table)
                .key("pk", item["pk"].clone())
                .key("sk", item["sk"].clone())
                .send()
                .await
                .expect("delete");
            deleted += 1;
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return deleted,
        }
    }
}

/// A service whose DynamoDB endpoint refuses connections (nothing listens on port 9): any
/// database call fails, as in an outage.
pub async fn unreachable_service() -> Service {
    let client =
        crate::config::dynamodb_client_at(TrustRoots::default(), Some("http://127.0.0.1:9")).await;
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

mod scanner;
pub use scanner::Scanner;

pub mod faults;
