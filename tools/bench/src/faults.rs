//! `bench faults`: a black-box fault run. Concurrent clients create, roll and delete keys and
//! spend metered ones through every layer a request crosses locally (`tokenctl serve`'s
//! answer: routing, the function's deadline, the handlers, the SDK, DynamoDB Local), while the
//! DynamoDB Local process the script started (`DYNAMODB_LOCAL_PID`) is paused with SIGSTOP and
//! resumed with SIGCONT several times. Then every invariant is checked from the data, and the
//! figures are printed: nothing here is a timed assertion.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use serde_json::{json, Value};

use shared::limits::Limits;
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, EventScope, TokenAddress};
use shared::token::{PublicTokenId, TokenFamily};

use crate::{metered_key, World};

/// Clients at once, and how long they run.
const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(60);
/// Credits of each metered key, and how many there are.
const CREDITS: u64 = 400;
const METERED_KEYS: usize = 6;

/// One request's outcome, as a client saw it.
#[derive(Clone, Debug)]
enum Outcome {
    Created {
        name: String,
        status: u16,
        id: Option<String>,
    },
    Consumed {
        status: u16,
        valid: bool,
    },
    Rolled {
        id: String,
        status: u16,
        successor: Option<String>,
    },
    Deleted {
        id: String,
        status: u16,
    },
}

impl Outcome {
    /// What the request was, and how it was answered.
    fn kind_and_status(&self) -> (&'static str, u16) {
        match self {
            Outcome::Created { status, .. } => ("creations", *status),
            Outcome::Consumed { status, .. } => ("consumes", *status),
            Outcome::Rolled { status, .. } => ("rolls", *status),
            Outcome::Deleted { status, .. } => ("deletions", *status),
        }
    }
}

/// A paused DynamoDB Local resumed whatever happens, also on a panic.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Paused {
        signal("-STOP", pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid}");
}

async fn send(
    router: &Router,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value, Duration) {
    let request = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("a request");
    let started = Instant::now();
    let response = tokenctl::serve::answer(router.clone(), request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// Runs the fault run against the world's table; prints what every invariant showed.
pub async fn report(w: &World, pid: u32) -> bool {
    let service: &Service = &w.service;
    let router = tokenctl::serve::router(service);
    let user = w.demo.user.clone();
    let user_key = w.demo.user_key.clone();
    let admin_key = w.demo.admin_key.clone();
    // Metered keys of the demo user, each with its own credits.
    let limits = Limits::parse(
        json!({"credits": {"remaining": CREDITS}})
            .as_object()
            .expect("an object"),
    )
    .expect("limits");
    let mut metered = Vec::new();
    for _ in 0..METERED_KEYS {
        metered.push(metered_key(&w.store, &user, &limits).await);
    }
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let other_statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let non_json_5xx = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (router, user_key, admin_key) = (router.clone(), user_key.clone(), admin_key.clone());
        let metered = metered.clone();
        let (outcomes, slowest) = (outcomes.clone(), slowest.clone());
        let (other_statuses, non_json_5xx) = (other_statuses.clone(), non_json_5xx.clone());
        clients.push(tokio::spawn(async move {
            let mut created: Vec<String> = Vec::new();
            let mut n = 0usize;
            while started.elapsed() < RUN {
                n += 1;
                let (outcome, status, body, took) = match (client + n) % 5 {
                    0 | 1 => {
                        let key = &metered[(client + n) % metered.len()];
                        let body = json!({"token": key, "consume": true});
                        let (status, answer, took) =
                            send(&router, "POST", "/api/v1/tokens/verify", &admin_key, body).await;
                        let valid = status == 200 && answer["valid"] == json!(true);
                        (Outcome::Consumed { status, valid }, status, answer, took)
                    }
                    2 | 3 => {
                        let name = format!("fault-{client}-{n}");
                        let body = json!({"name": name});
                        let (status, answer, took) =
                            send(&router, "POST", "/api/user/api-keys", &user_key, body).await;
                        let id = answer["api_key"]["id"].as_str().map(str::to_string);
                        if let Some(id) = &id {
                            created.push(id.clone());
                        }
                        (Outcome::Created { name, status, id }, status, answer, took)
                    }
                    _ => match created.pop() {
                        Some(id) if n.is_multiple_of(2) => {
                            let path = format!("/api/user/api-keys/{id}/roll");
                            let body = json!({"grace_seconds": 60});
                            let (status, answer, took) =
                                send(&router, "POST", &path, &user_key, body).await;
                            let successor = answer["api_key"]["id"].as_str().map(str::to_string);
                            if let Some(next) = &successor {
                                created.push(next.clone());
                            }
                            (
                                Outcome::Rolled {
                                    id,
                                    status,
                                    successor,
                                },
                                status,
                                answer,
                                took,
                            )
                        }
                        Some(id) => {
                            let path = format!("/api/user/api-keys/{id}");
                            let (status, answer, took) =
                                send(&router, "DELETE", &path, &user_key, json!({})).await;
                            (Outcome::Deleted { id, status }, status, answer, took)
                        }
                        None => continue,
                    },
                };
                {
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                if status >= 500 && body.get("message").is_none() {
                    *non_json_5xx.lock().unwrap() += 1;
                }
                if ![200, 201, 404, 409, 503].contains(&status) {
                    *other_statuses.lock().unwrap().entry(status).or_default() += 1;
                }
                outcomes.lock().unwrap().push(outcome);
            }
        }));
    }
    // The stalls: 10 pauses of 2 to 8 s, about 3 s apart.
    let stalls = [2u64, 5, 3, 8, 2, 4, 6, 3, 7, 4];
    let mut stalled = Duration::ZERO;
    for seconds in stalls {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let paused = Paused::new(pid);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        drop(paused);
        stalled += Duration::from_secs(seconds);
    }
    for client in clients {
        client.await.expect("a client");
    }
    // What a timed-out attempt may still land has landed by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcomes = outcomes.lock().unwrap().clone();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();

    // Charges: allowed units never exceed the credits taken, and what was taken is covered by
    // the units allowed and the ones left unanswered (503).
    let allowed = count(&|o| matches!(o, Outcome::Consumed { valid: true, .. }));
    let unanswered = count(&|o| matches!(o, Outcome::Consumed { status: 503, .. }));
    let mut taken = 0;
    for key in &metered {
        let body = json!({"token": key, "consume": false});
        let (_, answer, _) = send(&router, "POST", "/api/v1/tokens/verify", &admin_key, body).await;
        taken += CREDITS - answer["credits"]["remaining"].as_u64().expect("credits");
    }
    // Creations: every 201 is stored; a 503 is absent (made void) or, where even that could
    // not be settled, found by its name in the listing.
    let live = w
        .store
        .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .expect("listing");
    // A rolled key and its successor share a name: one name a slot, among this run's keys.
    let live_names: HashMap<&str, usize> = live
        .iter()
        .filter(|t| t.rolled_to.is_none() && t.name.starts_with("fault-"))
        .fold(HashMap::new(), |mut names, t| {
            *names.entry(t.name.as_str()).or_default() += 1;
            names
        });
    let created: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Created {
                status: 201,
                id: Some(id),
                ..
            } => Some(id),
            _ => None,
        })
        .collect();
    let addresses: Vec<TokenAddress> = created
        .iter()
        .map(|id| {
            let id = PublicTokenId::parse(id).expect("an id");
            TokenAddress {
                user_id: id.user_id,
                family: TokenFamily::ApiKeys,
                id: id.token_id,
            }
        })
        .collect();
    let stored = w
        .store
        .find_tokens(&addresses, &[])
        .await
        .expect("reads")
        .tokens;
    let created_missing = addresses.iter().filter(|a| !stored.contains_key(a)).count();
    let failed_names: Vec<&String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Created {
                status: 503, name, ..
            } => Some(name),
            _ => None,
        })
        .collect();
    let failed_found = failed_names
        .iter()
        .filter(|n| live_names.contains_key(n.as_str()))
        .count();
    let duplicated = live_names.values().filter(|n| **n > 1).count();
    // Rolls: one successor each, the one answered.
    let mut rolls_wrong = 0;
    for outcome in &outcomes {
        if let Outcome::Rolled {
            id,
            status: 201,
            successor: Some(next),
        } = outcome
        {
            let id = PublicTokenId::parse(id).expect("an id");
            let address = TokenAddress {
                user_id: id.user_id,
                family: TokenFamily::ApiKeys,
                id: id.token_id,
            };
            let found = w
                .store
                .find_tokens(&[address], &[])
                .await
                .expect("a read")
                .tokens;
            let rolled_to = found
                .get(&address)
                .and_then(|r| r.rolled_to)
                .map(|s| format!("{}-{s}", id.user_id));
            if rolled_to.as_ref() != Some(next) {
                rolls_wrong += 1;
            }
        }
    }
    // Events: one token.created per stored creation of this run, none for a void one.
    let mut events = Vec::new();
    let mut cursor = None;
    loop {
        let page = w
            .store
            .list_events(EventScope::User(user.id), 100, cursor.as_ref())
            .await
            .expect("events");
        events.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // Each fault-run key's events of one action, by the key they name.
    let of_action = |action: &str| {
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for event in &events {
            let ours = event["target"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("fault-"));
            if let (true, true, Some(key)) = (
                ours,
                event["action"] == action,
                event["target"]["token_id"].as_str(),
            ) {
                *by_key.entry(key).or_default() += 1;
            }
        }
        by_key
    };
    let (created_events, rolled_events, revoked_events) = (
        of_action("token.created"),
        of_action("token.rolled"),
        of_action("token.revoked"),
    );
    let acknowledged = |status: u16, kind: &str| -> Vec<&String> {
        outcomes
            .iter()
            .filter_map(|o| match (o, kind) {
                (Outcome::Rolled { id, status: s, .. }, "rolls") if *s == status => Some(id),
                (Outcome::Deleted { id, status: s }, "deletions") if *s == status => Some(id),
                _ => None,
            })
            .collect()
    };
    let once = |events: &HashMap<&str, usize>, ids: &[&String]| {
        ids.iter()
            .filter(|id| events.get(id.as_str()) != Some(&1))
            .count()
    };
    let created_without_one_event = once(&created_events, &created);
    let rolled_without_one_event = once(&rolled_events, &acknowledged(201, "rolls"));
    let deleted_without_one_event = once(&revoked_events, &acknowledged(200, "deletions"));
    let repeated = [&created_events, &rolled_events, &revoked_events]
        .iter()
        .flat_map(|events| events.values())
        .filter(|n| **n > 1)
        .count();
    // The cap counter against the keys holding a slot.
    let holders = live.iter().filter(|t| t.rolled_to.is_none()).count()
        + w.store
            .list_tokens(user.id, TokenFamily::Personal, now_ms())
            .await
            .expect("listing")
            .iter()
            .filter(|t| t.rolled_to.is_none())
            .count();
    let counter = w
        .store
        .direct()
        .cap_count(user.id, shared::token::CapCounter::Tokens)
        .await
        .expect("the profile");
    println!();
    println!(
        "Fault run: {CLIENTS} clients for {} s through tokenctl serve's answer, DynamoDB Local paused {} times ({} s in all, 2 to 8 s each)",
        RUN.as_secs(),
        stalls.len(),
        stalled.as_secs()
    );
    println!("  requests: {}", outcomes.len());
    let mut statuses: BTreeMap<&str, BTreeMap<u16, usize>> = BTreeMap::new();
    for outcome in &outcomes {
        let (kind, status) = outcome.kind_and_status();
        *statuses.entry(kind).or_default().entry(status).or_default() += 1;
    }
    for (kind, counts) in &statuses {
        println!("  {kind:<10} {counts:?}");
    }
    let slowest = *slowest.lock().unwrap();
    let checks = [
        (
            format!("credits: {allowed} units allowed <= {taken} credits taken"),
            allowed as u64 <= taken,
        ),
        (
            format!("credits: {taken} taken <= {allowed} allowed + {unanswered} unanswered (503)"),
            taken <= (allowed + unanswered) as u64,
        ),
        (
            format!(
                "creations answered 201: {} all stored ({created_missing} missing)",
                created.len()
            ),
            created_missing == 0,
        ),
        (
            format!(
                "creations answered 503: {} absent, or found later in the listing: {failed_found} found",
                failed_names.len()
            ),
            true,
        ),
        (
            format!("one name a slot ({duplicated} listed twice)"),
            duplicated == 0,
        ),
        (
            format!(
                "one event per acknowledged change: {created_without_one_event} creations, \
                 {rolled_without_one_event} rolls, {deleted_without_one_event} deletions without \
                 exactly one; {repeated} keys with an event repeated"
            ),
            created_without_one_event + rolled_without_one_event + deleted_without_one_event
                + repeated
                == 0,
        ),
        (
            format!("one successor per roll ({rolls_wrong} rolls answered 201 name another)"),
            rolls_wrong == 0,
        ),
        (
            format!("cap counter {counter} = keys holding a slot {holders}"),
            counter == holders as i64,
        ),
        (
            format!(
                "every 5xx a 503 JSON; other statuses {:?}",
                other_statuses.lock().unwrap()
            ),
            *non_json_5xx.lock().unwrap() == 0 && other_statuses.lock().unwrap().is_empty(),
        ),
        (
            format!("slowest answer {} ms, within the 10 s deadline", slowest.as_millis()),
            slowest < Duration::from_secs(10),
        ),
    ];
    for (check, held) in &checks {
        println!("  {} {check}", if *held { "holds: " } else { "BROKEN:" });
    }
    checks.iter().all(|(_, held)| *held)
}
