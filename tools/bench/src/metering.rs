//! Usage limits: the authorizer for an unmetered token, a token with its own limits (the read
//! and one conditional UpdateItem) and a token whose owner is metered too (the read and a
//! two-item transaction), each beside the raw operations it cannot avoid; then one hot metered
//! token taking every request, beside the same conditional write on one item.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use serde_json::json;

use shared::audit::Change;
use shared::clock::EpochMs;
use shared::limits::Limits;
use shared::store::traits::*;
use shared::store::{Key, Metered};
use shared::token;

use crate::{authorizations, metered_key, ms, raw, run, Job, Raw, World};

/// Limits no bench request reaches: credits and a one-second window, so the window rolls over
/// (one lost race and a fresh read per second at concurrency) as it would in production.
fn generous() -> Limits {
    let body = json!({"credits": {"remaining": 1_000_000_000u64},
                      "rate_limit": {"limit": 1_000_000, "window_seconds": 1}});
    Limits::parse(body.as_object().expect("an object")).expect("valid limits")
}

/// The conditional write a metered unit makes on `key`, as the raw side issues it.
fn charge(table: &str, key: &Key) -> Update {
    Update::builder()
        .table_name(table)
        .set_key(Some(key.to_item()))
        .update_expression("SET credits = credits - :one, window_used = window_used + :one")
        .condition_expression("attribute_exists(pk) AND credits >= :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .build()
        .expect("an update")
}

/// The raw side of a metered authorization of `keys[i]`: the authentication read, then the
/// charge of the token (and of its owner, `both`, in one transaction).
fn raw_metered(w: &Arc<World>, keys: &Arc<Vec<String>>, both: bool) -> Raw {
    let (w, keys) = (w.clone(), keys.clone());
    Arc::new(move |i: usize| -> Job {
        let (w, keys) = (w.clone(), keys.clone());
        Box::pin(async move {
            let key = &keys[i % keys.len()];
            let (client, table) = (w.store.direct().client, w.store.direct().table);
            raw::authenticate(client, table, key).await;
            let parsed = token::parse_any_prefix(key).expect("a bench token");
            let token_key = Key::token(parsed.user_id, parsed.kind.family(), parsed.token_id);
            if both {
                client
                    .transact_write_items()
                    .transact_items(
                        TransactWriteItem::builder()
                            .update(charge(table, &token_key))
                            .build(),
                    )
                    .transact_items(
                        TransactWriteItem::builder()
                            .update(charge(table, &Key::user(parsed.user_id)))
                            .build(),
                    )
                    .send()
                    .await
                    .expect("TransactWriteItems");
            } else {
                let update = charge(table, &token_key);
                client
                    .update_item()
                    .table_name(table)
                    .set_key(Some(update.key))
                    .update_expression(update.update_expression)
                    .set_condition_expression(update.condition_expression)
                    .set_expression_attribute_values(update.expression_attribute_values)
                    .send()
                    .await
                    .expect("UpdateItem");
            }
            200
        })
    })
}

/// Sets `limits` on `target` as the operator.
async fn limit(w: &World, target: Metered<'_>, now: EpochMs) {
    let set = w
        .store
        .set_limits(target, &generous(), &Change::operator(), now)
        .await
        .expect("limits set");
    assert!(set, "the bench's users and tokens exist");
}

pub async fn report(w: &Arc<World>, requests: usize) {
    let now = shared::store::now_ms();
    let plain: Arc<Vec<String>> = Arc::new(w.users.iter().map(|(_, key)| key.clone()).collect());
    let mut metered = Vec::new();
    for (user, _) in &w.users {
        metered.push(metered_key(&w.store, user, &generous()).await);
    }
    let metered = Arc::new(metered);
    // Warm every key (and record its last use, so no row pays that write).
    for key in plain.iter().chain(metered.iter()) {
        w.service.admit(Some(key), now).await.expect("admitted");
    }
    println!("Usage limits: the authorizer (REQUEST event) for an unmetered token, a metered one (its own limits), and one whose owner is metered too, each beside its raw operations ({requests} requests per cell)");
    println!(
        "{:<22} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>11}",
        "token",
        "conc",
        "p50 ms",
        "p99 ms",
        "req/s",
        "raw p50",
        "raw p99",
        "ratio",
        "calls",
        "vs unmet."
    );
    let mut rows: Vec<(&str, Raw, Raw)> = vec![
        (
            "unmetered",
            authorizations(w, &plain),
            raw::verify(w.clone()),
        ),
        (
            "metered (token)",
            authorizations(w, &metered),
            raw_metered(w, &metered, false),
        ),
    ];
    let mut unmetered_p50 = [0.0f64; 3];
    for phase in 0..2 {
        if phase == 1 {
            for (user, _) in &w.users {
                let user = w
                    .store
                    .get_user(user.id)
                    .await
                    .expect("read")
                    .expect("user");
                limit(w, Metered::User(&user), now).await;
            }
            rows = vec![(
                "metered (user+token)",
                authorizations(w, &metered),
                raw_metered(w, &metered, true),
            )];
        }
        for (c, concurrency) in [1, 8, 64].into_iter().enumerate() {
            for (name, handler, raw_side) in &rows {
                let before = w.counter.0.load(Ordering::Relaxed);
                let (handled, statuses) = run(requests, concurrency, handler.clone()).await;
                let calls = (w.counter.0.load(Ordering::Relaxed) - before) as f64 / requests as f64;
                let (raw_figures, _) = run(requests, concurrency, raw_side.clone()).await;
                if *name == "unmetered" {
                    unmetered_p50[c] = handled.p50.as_secs_f64();
                }
                let refused = statuses.iter().filter(|s| **s != 200).count();
                println!(
                    "{:<22} {:>4} {:>9} {:>9} {:>9.0} {:>9} {:>9} {:>7.2} {:>7.2} {:>11.2}{}",
                    name,
                    concurrency,
                    ms(handled.p50),
                    ms(handled.p99),
                    handled.per_second,
                    ms(raw_figures.p50),
                    ms(raw_figures.p99),
                    handled.p50.as_secs_f64() / raw_figures.p50.as_secs_f64(),
                    calls,
                    handled.p50.as_secs_f64() / unmetered_p50[c],
                    if refused > 0 {
                        format!("  ({refused} not allowed)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    // One hot token: every request charges the same item (and its owner's).
    let hot = Arc::new(vec![metered[0].clone()]);
    for concurrency in [8, 64] {
        let before = w.counter.0.load(Ordering::Relaxed);
        let (handled, statuses) = run(requests, concurrency, authorizations(w, &hot)).await;
        let calls = (w.counter.0.load(Ordering::Relaxed) - before) as f64 / requests as f64;
        let (raw_figures, _) = run(requests, concurrency, raw_metered(w, &hot, true)).await;
        println!(
            "one hot token (user+token), conc {concurrency}: p50 {} ms, p99 {} ms, {:.0} req/s, {:.2} calls a request ({} not allowed); raw: p50 {} ms, {:.0} req/s",
            ms(handled.p50),
            ms(handled.p99),
            handled.per_second,
            calls,
            statuses.iter().filter(|s| **s != 200).count(),
            ms(raw_figures.p50),
            raw_figures.per_second,
        );
    }
}
