//! A secret-scanning report of 1000 tokens through `POST /api/v1/secret-scanning/verify`
//! (150 live keys of two owners, 850 strings of our shape that no record holds), beside the raw
//! DynamoDB operations such a report cannot avoid (the same batched reads and one revocation
//! transaction per owner and 33 tokens, each with its audit event), and beside what batching avoids: one GetItem per key
//! read in sequence.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, KeysAndAttributes, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{json, Value};
use tower::ServiceExt;

use shared::clock::EpochMs;
use shared::store::{now_ms, Key};
use shared::token::{self, TokenFormat, TokenKind};

use crate::{mint_key, ms, World};

const RUNS: usize = 5;
/// Live keys per owner: 33 + 33 + 33 + 21 (four transactions), and 30 (one).
const LIVE: [usize; 2] = [120, 30];
const NOT_OURS: usize = 850;
const IN_FLIGHT: usize = 8;

/// The keys a report reads for `tokens`: each token's live and retired items.
fn report_keys(tokens: &[String]) -> Vec<Key> {
    tokens
        .iter()
        .flat_map(|t| {
            let parsed = token::parse_any_prefix(t).expect("a token of our shape");
            let family = parsed.kind.family();
            [
                Key::token(parsed.user_id, family, parsed.token_id),
                Key::retired(parsed.user_id, family, parsed.token_id),
            ]
        })
        .collect()
}

/// Fresh live keys of the first two bench users, and strings of our shape for a third.
async fn fresh_tokens(w: &World) -> (Vec<String>, Vec<String>) {
    let mut live = Vec::new();
    for (owner, count) in LIVE.iter().enumerate() {
        for _ in 0..*count {
            live.push(mint_key(&w.store, &w.users[owner].0).await);
        }
    }
    let stranger = w.users[2].0.id;
    let not_ours = (0..NOT_OURS)
        .map(|i| {
            TokenFormat::default()
                .generate(TokenKind::ApiKey, stranger, EpochMs(now_ms().0 + i as u64))
                .secret
                .expose()
                .to_string()
        })
        .collect();
    (live, not_ours)
}

/// Strongly consistent BatchGetItems of 100 keys, `IN_FLIGHT` at a time.
async fn batched_reads(client: &Client, table: &str, keys: Vec<Key>) {
    let chunks: Vec<Vec<Key>> = keys.chunks(100).map(<[Key]>::to_vec).collect();
    let mut lanes: Vec<Vec<Vec<Key>>> = (0..IN_FLIGHT).map(|_| Vec::new()).collect();
    for (i, chunk) in chunks.into_iter().enumerate() {
        lanes[i % IN_FLIGHT].push(chunk);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for lane in lanes {
        let (client, table) = (client.clone(), table.to_string());
        tasks.spawn(async move {
            for chunk in lane {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(chunk.iter().map(Key::to_item).collect()))
                    .consistent_read(true)
                    .build()
                    .unwrap();
                client
                    .batch_get_item()
                    .request_items(&table, request)
                    .send()
                    .await
                    .expect("BatchGetItem");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Each owner's live keys retired, 33 a transaction: the live item deleted, its copy put, its
/// audit event put, the owner's counter given the slots back.
async fn raw_revocations(client: &Client, table: &str, live: &[String]) {
    let mut start = 0;
    for count in LIVE {
        let owner = &live[start..start + count];
        start += count;
        for chunk in owner.chunks(33) {
            let mut transaction = client.transact_write_items();
            let mut user = None;
            for (i, t) in chunk.iter().enumerate() {
                let parsed = token::parse_any_prefix(t).unwrap();
                let family = parsed.kind.family();
                user = Some(parsed.user_id);
                let delete = Delete::builder()
                    .table_name(table)
                    .set_key(Some(
                        Key::token(parsed.user_id, family, parsed.token_id).to_item(),
                    ))
                    .condition_expression("attribute_exists(pk)")
                    .build()
                    .unwrap();
                let mut copy = Key::retired(parsed.user_id, family, parsed.token_id).to_item();
                copy.insert("raw".into(), AttributeValue::N(i.to_string()));
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(copy))
                    .build()
                    .unwrap();
                let user_pk = Key::user(parsed.user_id).pk;
                transaction = transaction
                    .transact_items(TransactWriteItem::builder().delete(delete).build())
                    .transact_items(TransactWriteItem::builder().put(put).build())
                    .transact_items(crate::raw::event_put(table, &user_pk, i));
            }
            let count = Update::builder()
                .table_name(table)
                .set_key(Some(Key::user(user.unwrap()).to_item()))
                .update_expression("ADD live_tokens :minus")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(
                    ":minus",
                    AttributeValue::N(format!("-{}", chunk.len())),
                )
                .build()
                .unwrap();
            transaction
                .transact_items(TransactWriteItem::builder().update(count).build())
                .send()
                .await
                .expect("TransactWriteItems");
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Prints the figures.
pub async fn report(w: &Arc<World>) {
    let signing = SigningKey::from_slice(&[11u8; 32]).unwrap();
    let public = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let mut service = w.service.clone();
    service.config.secret_scanning_keys =
        Some(json!({"public_keys": [{"key_identifier": "bench", "key": public}]}).to_string());
    let router = leak_response::router(service);
    let (client, table) = (w.store.direct().client, w.store.direct().table);
    let (mut handled, mut raw, mut sequential) = (Vec::new(), Vec::new(), Vec::new());
    let mut calls = Vec::new();
    let mut failures = 0;
    for _ in 0..RUNS {
        let (live, not_ours) = fresh_tokens(w).await;
        let entries: Vec<Value> = live
            .iter()
            .chain(&not_ours)
            .map(|t| json!({"token": t, "type": "api_key", "url": "https://github.com/o/r/blob/1/.env", "source": "content"}))
            .collect();
        let body = Value::Array(entries).to_string();
        let signature: Signature = signing.sign(body.as_bytes());
        let signature =
            base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
        let request = axum::http::Request::builder()
            .method("POST")
            .uri("/api/v1/secret-scanning/verify")
            .header("github-public-key-identifier", "bench")
            .header("github-public-key-signature", signature)
            .body(axum::body::Body::from(body))
            .unwrap();
        let before = w.counter.0.load(Ordering::Relaxed);
        let started = Instant::now();
        let status = match router.clone().oneshot(request).await {
            Ok(response) => response.status().as_u16(),
            Err(never) => match never {},
        };
        handled.push(started.elapsed());
        calls.push(w.counter.0.load(Ordering::Relaxed) - before);
        failures += usize::from(status != 200);

        let (live, not_ours) = fresh_tokens(w).await;
        let all: Vec<String> = live.iter().chain(&not_ours).cloned().collect();
        let started = Instant::now();
        batched_reads(client, table, report_keys(&all)).await;
        raw_revocations(client, table, &live).await;
        raw.push(started.elapsed());

        let started = Instant::now();
        for key in report_keys(&all) {
            crate::raw::get(client, table, key).await;
        }
        sequential.push(started.elapsed());
    }
    let (handled, raw, sequential) = (median(handled), median(raw), median(sequential));
    calls.sort();
    println!(
        "Secret-scanning report of 1000 tokens ({} live keys of 2 owners, {NOT_OURS} not ours), median of {RUNS} runs:",
        LIVE.iter().sum::<usize>()
    );
    println!(
        "  route: {} ms, {} DynamoDB calls{}",
        ms(handled),
        calls[calls.len() / 2],
        if failures > 0 {
            format!("  ({failures} answers not 200)")
        } else {
            String::new()
        }
    );
    println!(
        "  raw: the same reads (2000 keys, 20 BatchGetItems, {IN_FLIGHT} in flight) and 5 revocation transactions: {} ms; ratio {:.2}",
        ms(raw),
        handled.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "  what batching avoids: one GetItem per key in sequence (2000): {} ms ({:.1}x the route)",
        ms(sequential),
        sequential.as_secs_f64() / handled.as_secs_f64()
    );
}
