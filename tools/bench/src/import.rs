//! Import of another system's tokens: `BENCH_IMPORT` entries (default 100,000) for 1000 users,
//! in batches of 1000 as `tokenctl token import` sends a file, into DynamoDB Local; then what
//! an imported token's authorization costs beside a native one's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use shared::audit::Change;
use shared::domain::{Email, ExternalId, Role, UserStatus, Workspace, WorkspaceStatus};
use shared::import::{self, Entry, Status};
use shared::store::traits::*;
use shared::store::{now_ms, NewUser, User};

use crate::{authorizations, mint_key, ms, run, World};

const OWNERS: usize = 1000;
const CONCURRENCY: usize = 8;

/// 1000 users of the demo platform, with external ids `import-<i>`.
async fn owners(w: &World) -> Vec<User> {
    let mut owners = Vec::with_capacity(OWNERS);
    for i in 0..OWNERS {
        let user = w
            .store
            .create_user(
                NewUser {
                    id: None,
                    platform_id: w.demo.admin.platform_id,
                    name: format!("Imported {i}"),
                    email: Email::parse(&format!("import{i}@example.com")).expect("email"),
                    role: Role::User,
                    status: UserStatus::Active,
                    customer_id: None,
                    workspaces: vec![Workspace {
                        name: "Main".into(),
                        status: WorkspaceStatus::Active,
                    }],
                    external_id: ExternalId::parse(&format!("import-{i}")),
                    meta: None,
                },
                &Change::operator(),
                now_ms(),
            )
            .await
            .expect("user");
        owners.push(user);
    }
    owners
}

/// Entry `i`: a Sanctum plaintext by user id (even), an export's hash by external id (odd),
/// owners interleaved as a table exported in id order would have them.
fn entry(i: usize, owners: &[User]) -> serde_json::Value {
    let owner = &owners[i % owners.len()];
    match i % 2 {
        0 => json!({"user_id": owner.id, "name": format!("legacy {i}"),
                    "token": format!("{i}|bench-legacy-secret-{i:08}")}),
        _ => {
            json!({"external_id": format!("import-{}", i % owners.len()), "name": format!("legacy {i}"),
                    "sha256": shared::token::hex(&shared::token::hash_token(&format!("bench-export-{i:08}")).0)})
        }
    }
}

pub async fn report(w: &Arc<World>, requests: usize) {
    let total: usize = std::env::var("BENCH_IMPORT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let owners = owners(w).await;
    let platform = Some(w.demo.admin.platform_id);
    let change = Change::operator();
    let calls_before = w.counter.0.load(Ordering::Relaxed);
    let started = Instant::now();
    let (mut imported, mut other) = (0usize, 0usize);
    for batch in (0..total).step_by(import::MAX_ENTRIES) {
        let now = now_ms();
        let entries = (batch..total.min(batch + import::MAX_ENTRIES))
            .map(|i| Entry::parse(&entry(i, &owners), &w.service, now))
            .collect();
        let outcomes = import::import(&w.service, platform, entries, &change, now)
            .await
            .expect("import");
        for outcome in outcomes {
            match outcome.status {
                Status::Imported => imported += 1,
                _ => other += 1,
            }
        }
    }
    let wall = started.elapsed();
    let calls = w.counter.0.load(Ordering::Relaxed) - calls_before;
    println!(
        "Import of {total} tokens of another system ({OWNERS} owners, half Sanctum plaintexts by user id, half hashes by external id; batches of {} as tokenctl sends a file, {} tokens a transaction, {} transactions in flight)",
        import::MAX_ENTRIES,
        import::TOGETHER,
        import::IN_FLIGHT
    );
    println!(
        "  {imported} imported ({other} not) in {:.1} s: {:.0} tokens/s, {:.2} DynamoDB calls a token",
        wall.as_secs_f64(),
        imported as f64 / wall.as_secs_f64(),
        calls as f64 / total as f64
    );

    // An imported token's authorization beside a native one's, each token of its own owner.
    let foreign: Arc<Vec<String>> = Arc::new(
        (0..64)
            .map(|i| format!("{}|bench-legacy-secret-{:08}", i * 2, i * 2))
            .collect(),
    );
    let mut native = Vec::new();
    for owner in owners.iter().take(64) {
        native.push(mint_key(&w.store, owner).await);
    }
    let native = Arc::new(native);
    // Warm: the last-use writes of every token, once.
    run(64, 1, authorizations(w, &foreign)).await;
    run(64, 1, authorizations(w, &native)).await;
    println!(
        "Authorization (REQUEST event) of an imported token vs a native one, {requests} requests, concurrency {CONCURRENCY}"
    );
    for (name, keys) in [("native", &native), ("imported", &foreign)] {
        let before = w.counter.0.load(Ordering::Relaxed);
        let (figures, statuses) = run(requests, CONCURRENCY, authorizations(w, keys)).await;
        let calls = (w.counter.0.load(Ordering::Relaxed) - before) as f64 / requests as f64;
        let refused = statuses.iter().filter(|s| **s != 200).count();
        println!(
            "  {name:<9} p50 {} ms, p99 {} ms, {:.0} req/s, {calls:.2} calls a request ({refused} refused)",
            ms(figures.p50),
            ms(figures.p99),
            figures.per_second
        );
    }
}
