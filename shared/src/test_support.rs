//! Helpers for integration tests against DynamoDB Local (feature `test-support`).
//!
//! Every test gets a table of its own, so tests run in parallel against one DynamoDB Local.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use lambda_http::http::Method;
use lambda_http::{Body, Request};
use serde_json::Value;

use crate::config::{dynamodb_client, Config};
use crate::domain::{Abilities, Email, Role, TokenName, UserStatus, Workspace, WorkspaceStatus};
use crate::mint::mint_plaintext;
use crate::service::Service;
use crate::store::schema::create_table;
use crate::store::{now_ms, DynamoStore, NewUser, Owner, Platform, Store, User};
use crate::token::TokenKind;
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

/// A fresh table on the DynamoDB Local that `make test` started, wrapped in a [`Service`] whose
/// per-user caps (tokens and customer tokens) are both `max_tokens_per_user`.
pub async fn service_with(max_tokens_per_user: u32) -> (Service, DynamoStore) {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run the tests with `make test`, which starts DynamoDB Local"
    );
    let table = format!("test-{}", random_hex(8));
    let client = dynamodb_client(TrustRoots::default()).await;
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
    let parsed = crate::token::parse(&token).expect("a minted token");
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
    };
    crate::mint::mint(store, Owner::from(owner), request, u32::MAX, now_ms())
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
    let demo = crate::demo::seed(&store, 100, now_ms())
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
pub async fn ttl_sweep(store: &DynamoStore, now_ms: u64) -> usize {
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
            .expression_attribute_values(":now", AttributeValue::N((now_ms / 1000).to_string()))
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

/// A secret-scanning key pair of a test's own, its public half trusted by a service as GitHub's
/// would be (`SECRET_SCANNING_KEYS`).
pub struct Scanner {
    signing: p256::ecdsa::SigningKey,
}

impl Scanner {
    /// The identifier a scanner's reports are signed under.
    pub const KEY_ID: &'static str =
        "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";

    /// A fresh key pair from the OS CSPRNG.
    pub fn new() -> Scanner {
        let mut secret = [0u8; 32];
        crate::token::fill_random(&mut secret);
        Scanner {
            signing: p256::ecdsa::SigningKey::from_slice(&secret)
                .expect("a scalar below the order"),
        }
    }

    /// GitHub's public-keys document, trusting this key as `id`.
    pub fn document(&self, id: &str) -> String {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let pem = self
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("a PEM");
        serde_json::json!({"public_keys": [{"key_identifier": id, "key": pem, "is_current": true}]})
            .to_string()
    }

    /// The `Github-Public-Key-Signature` of `body`.
    pub fn sign(&self, body: &str) -> String {
        use base64::Engine;
        use p256::ecdsa::signature::Signer;
        let signature: p256::ecdsa::Signature = self.signing.sign(body.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// `body` as GitHub reports it: a POST to the partner endpoint signed under [`Self::KEY_ID`].
    pub fn report(&self, body: &str) -> Request {
        let signature = self.sign(body);
        request(
            Method::POST,
            "/api/v1/secret-scanning/verify",
            &[
                ("content-type", "application/json"),
                ("github-public-key-identifier", Scanner::KEY_ID),
                ("github-public-key-signature", signature.as_str()),
            ],
            body,
        )
    }
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner::new()
    }
}

/// Faults that DynamoDB produces and DynamoDB Local does not, injected into a client's next
/// calls by an SDK interceptor ([`faults::FaultInjector`]).
pub mod faults {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use aws_sdk_dynamodb::config::interceptors::{
        BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
        BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextMut,
    };
    use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
    use aws_sdk_dynamodb::error::BoxError;
    use aws_sdk_dynamodb::operation::put_item::PutItemInput;
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
    use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
    use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::config_bag::{Storable, StoreReplace};

    /// One injected fault, for one attempt of one operation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// The request commits, then its answer is lost: the client sees a timeout.
        CommittedAnswerLost,
        /// The transaction is cancelled with this reason on every item; nothing commits.
        Cancelled(&'static str),
        /// `TransactionInProgressException`; nothing commits.
        InProgress,
        /// A single-item write refused with `TransactionConflictException` (a transaction holds
        /// the item); nothing commits.
        Conflict,
        /// The connection fails (a dispatch failure, as when DynamoDB restarts): nothing of this
        /// attempt commits, and the client cannot tell whether it was sent.
        ConnectionFailed,
    }

    /// Which operation a fault is for.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Operation {
        TransactWriteItems,
        UpdateItem,
        PutItem,
    }

    /// Injects planned faults into the next matching attempts, in order; counts them.
    #[derive(Clone, Debug, Default)]
    pub struct FaultInjector {
        planned: Arc<Mutex<VecDeque<(Operation, Fault)>>>,
        injected: Arc<AtomicUsize>,
    }

    /// Counts the calls a client makes (not their retried attempts), by operation name.
    #[derive(Clone, Debug, Default)]
    pub struct CallCounter(Arc<Mutex<std::collections::BTreeMap<String, usize>>>);

    impl CallCounter {
        /// Calls per operation (`BatchGetItem`, `TransactWriteItems`, ...).
        pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Intercept for CallCounter {
        fn name(&self) -> &'static str {
            "CallCounter"
        }

        fn read_before_serialization(
            &self,
            _: &BeforeSerializationInterceptorContextRef<'_>,
            _: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let operation = cfg
                .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
                .map_or("unknown", |metadata| metadata.name())
                .to_string();
            *self.0.lock().unwrap().entry(operation).or_default() += 1;
            Ok(())
        }
    }

    impl FaultInjector {
        /// Plans `fault` for the next attempt of `operation`.
        pub fn plan(&self, operation: Operation, fault: Fault) {
            self.planned.lock().unwrap().push_back((operation, fault));
        }

        /// How many planned faults were injected so far.
        pub fn injected(&self) -> usize {
            self.injected.load(Ordering::SeqCst)
        }

        /// How many planned faults are still waiting for their operation.
        pub fn pending(&self) -> usize {
            self.planned.lock().unwrap().len()
        }

        /// Drops the planned faults not injected yet.
        pub fn clear(&self) {
            self.planned.lock().unwrap().clear();
        }
    }

    /// The operation of the running call and its item count.
    #[derive(Clone, Debug)]
    struct Call(Option<Operation>, usize);
    impl Storable for Call {
        type Storer = StoreReplace<Self>;
    }

    /// The fault the current attempt carries.
    #[derive(Clone, Debug)]
    struct Carried(Option<Fault>);
    impl Storable for Carried {
        type Storer = StoreReplace<Self>;
    }

    fn error_body(kind: &str, extra: &str) -> String {
        format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"injected by a test"{extra}}}"#
        )
    }

    impl Intercept for FaultInjector {
        fn name(&self) -> &'static str {
            "FaultInjector"
        }

        fn read_before_execution(
            &self,
            context: &BeforeSerializationInterceptorContextRef<'_>,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let input = context.input();
            let call = if let Some(t) = input.downcast_ref::<TransactWriteItemsInput>() {
                Call(
                    Some(Operation::TransactWriteItems),
                    t.transact_items().len(),
                )
            } else if input.downcast_ref::<UpdateItemInput>().is_some() {
                Call(Some(Operation::UpdateItem), 1)
            } else if input.downcast_ref::<PutItemInput>().is_some() {
                Call(Some(Operation::PutItem), 1)
            } else {
                Call(None, 0)
            };
            cfg.interceptor_state().store_put(call);
            Ok(())
        }

        fn modify_before_transmit(
            &self,
            context: &mut BeforeTransmitInterceptorContextMut<'_>,
            _components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let operation = cfg.load::<Call>().and_then(|c| c.0);
            let fault = {
                let mut planned = self.planned.lock().unwrap();
                match planned.front() {
                    Some((op, _)) if Some(*op) == operation => planned.pop_front().map(|p| p.1),
                    _ => None,
                }
            };
            if fault.is_some_and(|f| f != Fault::CommittedAnswerLost) {
                // Nothing may commit: send a harmless read instead, whose answer is replaced.
                let request = context.request_mut();
                request
                    .headers_mut()
                    .insert("x-amz-target", "DynamoDB_20120810.DescribeLimits");
                request.headers_mut().insert("content-length", "2");
                *request.body_mut() = SdkBody::from("{}");
            }
            if fault.is_some() {
                self.injected.fetch_add(1, Ordering::SeqCst);
            }
            cfg.interceptor_state().store_put(Carried(fault));
            Ok(())
        }

        fn modify_before_deserialization(
            &self,
            context: &mut BeforeDeserializationInterceptorContextMut<'_>,
            _components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let items = cfg.load::<Call>().map_or(0, |c| c.1);
            let body = match cfg.load::<Carried>().and_then(|c| c.0) {
                Some(Fault::Cancelled(reason)) => {
                    let reasons = vec![format!(r#"{{"Code":"{reason}"}}"#); items].join(",");
                    error_body(
                        "TransactionCanceledException",
                        &format!(r#","CancellationReasons":[{reasons}]"#),
                    )
                }
                Some(Fault::InProgress) => error_body("TransactionInProgressException", ""),
                Some(Fault::Conflict) => error_body("TransactionConflictException", ""),
                Some(Fault::CommittedAnswerLost | Fault::ConnectionFailed) | None => return Ok(()),
            };
            let response = context.response_mut();
            *response.status_mut() = 400u16.try_into().expect("a status");
            response
                .headers_mut()
                .insert("content-type", "application/x-amz-json-1.0");
            response.headers_mut().remove("content-length");
            response.headers_mut().remove("x-amz-crc32");
            *response.body_mut() = SdkBody::from(body);
            Ok(())
        }

        fn modify_before_attempt_completion(
            &self,
            context: &mut FinalizerInterceptorContextMut<'_>,
            _components: &RuntimeComponents,
            cfg: &mut ConfigBag,
        ) -> Result<(), BoxError> {
            let lost = match cfg.load::<Carried>().and_then(|c| c.0) {
                Some(Fault::CommittedAnswerLost) => Some(OrchestratorError::timeout(
                    "injected: the request committed and its answer was lost".into(),
                )),
                Some(Fault::ConnectionFailed) => Some(OrchestratorError::connector(
                    ConnectorError::io("injected: the connection failed".into()),
                )),
                _ => None,
            };
            if let (Some(error), Some(result)) = (lost, context.output_or_error_mut()) {
                *result = Err(error);
            }
            cfg.interceptor_state().store_put(Carried(None));
            Ok(())
        }
    }
}
