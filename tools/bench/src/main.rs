//! `make bench`: in one run against DynamoDB Local,
//!
//! 1. every route called in-process through the functions' routers (p50, p99, requests/s at concurrency 1, 8, 64),
//!    next to the raw DynamoDB operations that route must make, with the same client, and the
//!    DynamoDB calls each request made (counted by an SDK interceptor);
//! 2. cold starts: each function's release binary against a minimal Lambda runtime API, from
//!    exec to the first `next` and to the first response, and peak RSS, next to the floor: a
//!    bare lambda_http binary that builds a DynamoDB client as a typical Rust Lambda does;
//! 3. the authorizer for unmetered and metered tokens (usage limits), beside their raw
//!    operations, and one hot metered token;
//! 4. a secret-scanning report of 1000 tokens, beside its raw operations and beside reading the
//!    tokens one GetItem at a time;
//! 5. `bench faults`: a black-box fault run, DynamoDB Local paused and resumed under concurrent
//!    load, every invariant checked from the data ([`faults`]).
//!
//! Prints figures and asserts nothing, but for the fault run, which exits 1 when an invariant
//! broke. `bench coldstart` prints only the cold starts (no database).

mod coldstart;
mod events;
mod faults;
mod import;
mod leak;
mod metering;
mod raw;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::error::BoxError;
use axum::Router;
use serde_json::json;
use tower::ServiceExt;

use shared::config::{dynamodb_client, Config};
use shared::demo;
use shared::domain::{
    Email, ExternalId, Permission, Role, TokenName, UserStatus, Workspace, WorkspaceStatus,
};
use shared::limits::Limits;
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::schema::create_table;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Metered, NewUser, User};
use shared::token::{random_hex, TokenKind};
use shared::trust::TrustRoots;

/// Counts every DynamoDB operation the client starts.
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<AtomicU64>);

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Latency figures of one run.
struct Figures {
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

fn figures(mut samples: Vec<Duration>, wall: Duration) -> Figures {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Figures {
        p50: at(0.50),
        p99: at(0.99),
        per_second: samples.len() as f64 / wall.as_secs_f64(),
    }
}

pub type Job = Pin<Box<dyn Future<Output = u16> + Send>>;

/// Runs `make(i)` for i in 0..n, `concurrency` at a time; latencies of each.
async fn run(
    n: usize,
    concurrency: usize,
    make: Arc<dyn Fn(usize) -> Job + Send + Sync>,
) -> (Figures, Vec<u16>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        let make = make.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (samples, statuses);
                }
                let t = Instant::now();
                let status = make(i).await;
                samples.push(t.elapsed());
                statuses.push(status);
            }
        }));
    }
    let mut samples = Vec::new();
    let mut statuses = Vec::new();
    for worker in workers {
        let (s, st) = worker.await.expect("worker");
        samples.extend(s);
        statuses.extend(st);
    }
    (figures(samples, started.elapsed()), statuses)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Everything the scenarios share.
pub struct World {
    pub service: Service,
    pub store: DynamoStore,
    pub counter: CallCounter,
    pub demo: demo::Demo,
    /// Users with an API key each, so creates at concurrency 64 do not all queue on one user.
    pub users: Vec<(User, String)>,
    /// A service key of the demo platform with `users:read`.
    pub service_key: String,
}

async fn world() -> World {
    assert!(
        std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some(),
        "AWS_ENDPOINT_URL_DYNAMODB is not set: run `make bench`"
    );
    let table = format!("bench-{}", random_hex(4));
    let plain = dynamodb_client(TrustRoots::default()).await;
    create_table(&plain, &table)
        .await
        .expect("create the bench table");
    let counter = CallCounter::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        plain
            .config()
            .to_builder()
            .interceptor(counter.clone())
            .build(),
    );
    let store = DynamoStore::new(client, table.clone());
    let config = Config::from_lookup(|name| match name {
        "TABLE_NAME" => Some(table.clone()),
        "MAX_TOKENS_PER_USER" | "MAX_CUSTOMER_TOKENS_PER_USER" => Some("100000".into()),
        "PERMANENT_TOKEN_KEY" => Some("bench-permanent-key-0123456789abcdef".into()),
        _ => None,
    })
    .expect("config");
    let service = Service {
        store: Arc::new(store.clone()),
        config,
    };
    let demo = demo::seed(
        &store,
        &shared::token::TokenFormat::default(),
        100_000,
        now_ms(),
    )
    .await
    .expect("seed");
    let mut users = Vec::new();
    for i in 0..64 {
        let user = store
            .create_user(
                NewUser {
                    id: None,
                    platform_id: demo.admin.platform_id,
                    name: format!("Bench {i}"),
                    email: Email::parse(&format!("bench{i}@example.com")).unwrap(),
                    role: Role::User,
                    status: UserStatus::Active,
                    customer_id: None,
                    workspaces: vec![Workspace {
                        name: "Main".into(),
                        status: WorkspaceStatus::Active,
                    }],
                    external_id: ExternalId::parse(&format!("bench-{i}")),
                    meta: None,
                },
                &shared::audit::Change::operator(),
                now_ms(),
            )
            .await
            .expect("user");
        let key = mint_key(&store, &user).await;
        users.push((user, key));
    }
    let request = MintRequest {
        kind: TokenKind::ServiceKey,
        name: TokenName::parse("bench").expect("name"),
        abilities: Permission::parse_list(vec!["users:read".into()]).expect("permission"),
        expires_at: None,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    };
    let service_key = service
        .mint_service_key(demo.admin.platform_id, request, now_ms())
        .await
        .expect("service key")
        .secret
        .expose()
        .to_string();
    World {
        service,
        store,
        counter,
        demo,
        users,
        service_key,
    }
}

/// A new API key of `user` with `limits` of its own, set as the operator.
pub async fn metered_key(store: &DynamoStore, user: &User, limits: &Limits) -> String {
    let key = mint_key(store, user).await;
    let parsed = shared::token::parse_any_prefix(&key).expect("a bench token");
    let record = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .expect("read")
        .expect("the key just minted");
    let change = shared::audit::Change::operator();
    let set = store
        .set_limits(Metered::Token(&record), limits, &change, now_ms())
        .await
        .expect("limits set");
    assert!(set, "the key just minted is live");
    key
}

pub async fn mint_key(store: &DynamoStore, user: &User) -> String {
    demo::api_key(
        store,
        &shared::token::TokenFormat::default(),
        user,
        u32::MAX,
    )
    .await
    .expect("mint")
}

/// Who calls a route, and how the token is sent.
#[derive(Clone, Copy)]
enum By {
    /// The API key of the i-th bench user (spread so writes do not queue on one user).
    User,
    /// The demo platform's admin.
    Admin,
    /// The demo platform's admin, in the `token` header (the customer-token seed).
    AdminTokenHeader,
    /// The demo user, whose keys the delete scenario revokes.
    DemoUser,
    /// The demo platform's service key (`users:read`).
    ServiceKey,
}

type Raw = Arc<dyn Fn(usize) -> Job + Send + Sync>;

/// One route as the bench calls it: method and path, caller, body, expected status, and the
/// raw DynamoDB operations it is compared with. `{id}` in the path is a live key of the demo
/// user, `{user}` in the path or body the i-th bench user's id, `{key}` in the body that user's
/// key. Every request carries `authtype: Key` (only get-user-token reads it).
type Scenario = (&'static str, By, &'static str, u16, fn(Arc<World>) -> Raw);

const TOKEN_BODY: &str = r#"{"name":"bench","abilities":["calls:read"]}"#;
const CUSTOMER_BODY: &str = r#"{"customer_id":"048372910564","expiration_days":30}"#;

#[rustfmt::skip]
const SCENARIOS: [Scenario; 12] = [
    ("GET /api/user/api-keys", By::User, "", 200, raw::list),
    ("POST /api/user/api-keys", By::User, r#"{"name":"bench"}"#, 201, raw::create),
    ("DELETE /api/user/api-keys/{id}", By::DemoUser, "", 200, raw::revoke),
    ("POST /api/user/api-keys/{id}/roll", By::DemoUser, r#"{"grace_seconds":60}"#, 201, raw::revoke),
    ("POST /api/v1/user/api-tokens", By::User, TOKEN_BODY, 201, raw::create),
    ("GET /api/v1/user/api-tokens", By::User, "", 200, raw::list),
    ("POST /api/white-label/token", By::Admin, r#"{"user_id":{user}}"#, 200, raw::white_label),
    ("POST /api/v1/global/users/gettokenbycustomerid", By::AdminTokenHeader, CUSTOMER_BODY, 200, raw::customer),
    ("GET /ext/get-user-token?userId={user}", By::Admin, "", 200, raw::permanent),
    ("POST /api/v1/tokens/verify", By::Admin, r#"{"token":"{key}"}"#, 200, raw::verify_route),
    ("GET /api/v1/users?external_id=bench-{index}", By::Admin, "", 200, raw::lookup),
    ("GET /api/v1/users/{user}", By::ServiceKey, "", 200, raw::get_user),
];

/// Request `i` of `scenario` through the functions' routers (as `tokenctl serve` merges them).
fn handler(
    scenario: &'static Scenario,
    w: &Arc<World>,
    router: &Router,
    ids: &Arc<Vec<String>>,
) -> Raw {
    let (w, router, ids) = (w.clone(), router.clone(), ids.clone());
    let (method, path) = scenario.0.split_once(' ').unwrap_or_default();
    let (by, body) = (scenario.1, scenario.2);
    Arc::new(move |i: usize| -> Job {
        let (user, key) = &w.users[i % w.users.len()];
        let fill = |text: &str| {
            text.replace("{id}", &ids[i % ids.len()])
                .replace("{user}", &user.id.to_string())
                .replace("{key}", key)
                .replace("{index}", &(i % w.users.len()).to_string())
        };
        let (header, token) = match by {
            By::User => ("authorization", format!("Bearer {key}")),
            By::Admin => ("authorization", format!("Bearer {}", w.demo.admin_key)),
            By::AdminTokenHeader => ("token", w.demo.admin_key.clone()),
            By::DemoUser => ("authorization", format!("Bearer {}", w.demo.user_key)),
            By::ServiceKey => ("authorization", format!("Bearer {}", w.service_key)),
        };
        let request = axum::http::Request::builder()
            .method(method)
            .uri(fill(path))
            .header(header, token)
            .header("authtype", "Key")
            .body(axum::body::Body::from(fill(body)))
            .expect("request");
        let router = router.clone();
        Box::pin(async move {
            match router.oneshot(request).await {
                Ok(response) => response.status().as_u16(),
                Err(never) => match never {},
            }
        })
    })
}

/// The authorizer's REQUEST event for `keys[i]` (the authorizer is not a route).
fn authorizations(w: &Arc<World>, keys: &Arc<Vec<String>>) -> Raw {
    let (w, keys) = (w.clone(), keys.clone());
    Arc::new(move |i: usize| -> Job {
        let (w, keys) = (w.clone(), keys.clone());
        Box::pin(async move {
            let key = &keys[i % keys.len()];
            let event = json!({"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:a/prod/GET/x",
                               "headers": {"Authorization": format!("Bearer {key}")}});
            match authorizer::authorize(&w.service, &event).await {
                Ok(policy) if policy["policyDocument"]["Statement"][0]["Effect"] == "Allow" => 200,
                Ok(_) => 429,
                Err(_) => 401,
            }
        })
    })
}

/// A scenario's method and path as the table shows it: no query, and a long path by its last
/// segment (`POST .../gettokenbycustomerid`).
fn label(method_path: &str) -> String {
    let shown = method_path.split('?').next().unwrap_or_default();
    match (shown.split_once(' '), shown.rsplit_once('/')) {
        (Some((method, _)), Some((_, last))) if shown.len() > 34 => format!("{method} .../{last}"),
        _ => shown.to_string(),
    }
}

/// A row of the table: its name, the handler side, the raw side, the expected status.
struct Row {
    name: String,
    handler: Raw,
    raw: Raw,
    success: u16,
    /// Each request consumes a key (deletes): every run takes fresh ids.
    consumes: bool,
}

fn rows(w: &Arc<World>, router: &Router, ids: &Arc<Vec<String>>) -> Vec<Row> {
    let keys = Arc::new(w.users.iter().map(|(_, key)| key.clone()).collect());
    let authorizer = Row {
        name: "authorizer (REQUEST event)".into(),
        handler: authorizations(w, &keys),
        raw: raw::verify(w.clone()),
        success: 200,
        consumes: false,
    };
    std::iter::once(authorizer)
        .chain(SCENARIOS.iter().map(|scenario| Row {
            name: match scenario.1 {
                By::ServiceKey => format!("{} (service key)", label(scenario.0)),
                _ => label(scenario.0),
            },
            handler: handler(scenario, w, router, ids),
            raw: (scenario.4)(w.clone()),
            success: scenario.3,
            consumes: scenario.0.contains("{id}"),
        }))
        .collect()
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some("coldstart") {
        coldstart::report().await;
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("events") {
        events::report(&world().await, 600).await;
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("import") {
        import::report(&Arc::new(world().await), 600).await;
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("faults") {
        let pid = std::env::var("DYNAMODB_LOCAL_PID")
            .ok()
            .and_then(|pid| pid.parse().ok())
            .expect("DYNAMODB_LOCAL_PID: the DynamoDB Local process to pause (make bench sets it)");
        if !faults::report(&world().await, pid).await {
            std::process::exit(1);
        }
        return;
    }
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(600);
    let world = Arc::new(world().await);
    // Ids for the scenarios that use a key up (delete, roll): enough live keys of the demo user
    // for every request of each, at the three concurrencies.
    let consuming = SCENARIOS.iter().filter(|s| s.0.contains("{id}")).count();
    let mut ids = Vec::new();
    for _ in 0..requests * 3 * consuming {
        let key = mint_key(&world.store, &world.demo.user).await;
        let parsed = shared::token::parse_any_prefix(&key).unwrap();
        ids.push(format!("{}-{}", parsed.user_id, parsed.token_id));
    }
    let ids = Arc::new(ids);
    let router = tokenctl::serve::router(&world.service);
    // Warm every path (and the permanent tokens) once.
    for row in rows(&world, &router, &ids) {
        for i in 0..world.users.len() {
            (row.raw)(i).await;
            if !row.consumes {
                (row.handler)(i).await;
            }
        }
    }

    println!("Handlers in-process vs the raw DynamoDB operations each route must make (DynamoDB Local, {requests} requests per cell)");
    println!(
        "{:<40} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "route",
        "conc",
        "p50 ms",
        "p99 ms",
        "req/s",
        "raw p50",
        "raw p99",
        "raw r/s",
        "ratio",
        "calls"
    );
    let mut delete_offset = 0;
    for concurrency in [1, 8, 64] {
        for scenario in rows(&world, &router, &ids) {
            let handler = if scenario.consumes {
                let offset = delete_offset;
                delete_offset += requests;
                let inner = scenario.handler.clone();
                Arc::new(move |i: usize| inner(i + offset))
                    as Arc<dyn Fn(usize) -> Job + Send + Sync>
            } else {
                scenario.handler.clone()
            };
            let before = world.counter.0.load(Ordering::Relaxed);
            let (handled, statuses) = run(requests, concurrency, handler).await;
            let calls = (world.counter.0.load(Ordering::Relaxed) - before) as f64 / requests as f64;
            let failures = statuses.iter().filter(|s| **s != scenario.success).count();
            let (raw, _) = run(requests, concurrency, scenario.raw.clone()).await;
            let ratio = handled.p50.as_secs_f64() / raw.p50.as_secs_f64();
            println!(
                "{:<40} {:>4} {:>9} {:>9} {:>9.0} {:>9} {:>9} {:>9.0} {:>7.2} {:>7.2}{}",
                scenario.name,
                concurrency,
                ms(handled.p50),
                ms(handled.p99),
                handled.per_second,
                ms(raw.p50),
                ms(raw.p99),
                raw.per_second,
                ratio,
                calls,
                if failures > 0 {
                    format!("  ({failures} answers not {})", scenario.success)
                } else {
                    String::new()
                }
            );
        }
    }
    println!();
    println!("Authentication's read: token + owner profile (BatchGetItem, what every route and the authorizer make) vs the token alone (GetItem, before blocks were read from the profile)");
    println!(
        "{:<6} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "conc", "batch p50", "batch p99", "get p50", "get p99", "ratio"
    );
    for concurrency in [1, 8, 64] {
        let (batch, _) = run(requests, concurrency, raw::verify(world.clone())).await;
        let (single, _) = run(requests, concurrency, raw::token_only(world.clone())).await;
        println!(
            "{:<6} {:>12} {:>12} {:>12} {:>12} {:>7.2}",
            concurrency,
            ms(batch.p50),
            ms(batch.p99),
            ms(single.p50),
            ms(single.p99),
            batch.p50.as_secs_f64() / single.p50.as_secs_f64()
        );
    }
    let (touch, _) = run(requests, 1, raw::touch(world.clone())).await;
    println!(
        "last-use write (conditional UpdateItem, awaited at most once per 5 minutes per token): p50 {} ms, p99 {} ms",
        ms(touch.p50),
        ms(touch.p99)
    );
    let (web, statuses) = web_layer(&router).await;
    println!(
        "web layer alone (routing, extractors, the 401 body; a request without a token, no database call): p50 {:.1} µs, p99 {:.1} µs{}",
        web.p50.as_secs_f64() * 1e6,
        web.p99.as_secs_f64() * 1e6,
        match statuses.iter().filter(|s| **s != 401).count() {
            0 => String::new(),
            other => format!("  ({other} answers not 401)"),
        }
    );
    println!();
    metering::report(&world, requests).await;
    println!();
    leak::report(&world).await;
    println!();
    import::report(&world, requests).await;
    println!();
    events::report(&world, requests).await;
    println!();
    coldstart::report().await;
}

/// What the routers cost without DynamoDB: `POST /api/user/api-keys` with a body and no token,
/// answered 401 by the caller extractor before anything is read.
async fn web_layer(router: &Router) -> (Figures, Vec<u16>) {
    let (mut samples, mut statuses) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..20_000 {
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/api/user/api-keys")
            .body(axum::body::Body::from(r#"{"name":"bench"}"#))
            .expect("request");
        let t = Instant::now();
        let status = match router.clone().oneshot(request).await {
            Ok(response) => response.status().as_u16(),
            Err(never) => match never {},
        };
        samples.push(t.elapsed());
        statuses.push(status);
    }
    (figures(samples, started.elapsed()), statuses)
}
