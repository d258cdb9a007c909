//! Events out against DynamoDB Local's stream: every audit event published once with its id
//! (again only as a duplicate after a refused PutEvents), nothing for reads, `credits.low`
//! once per crossing under parallel charges, `token.expiring` once per token and threshold, a
//! poison record set aside without blocking its shard. EventBridge has no emulator: the AWS
//! SDK's real PutEvents requests go to a local recorder that decodes them.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::http::Method;
use serde_json::{json, Value};

use events::local::{Pass, Poller, Start};
use events::recorder::{Received, Recorder, Refusal};
use events::Publisher;
use shared::audit::Change;
use shared::clock::EpochMs;
use shared::domain::{Abilities, UserStatus};
use shared::events::{notify_expiring, Thresholds};
use shared::limits::Limits;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Metered};
use shared::test_support::{
    request, service_streaming as service, tenant, token_expiring, token_for,
};
use shared::token::{self, hex, TokenKind};
use shared::trust::TrustRoots;

mod common;
use common::{call, key_lifecycle, keys, sample};

const BUS: &str = "tokens-test";
const DAY: u64 = 86_400;

/// The recorder, a publisher to it, and a poller of the table's stream from its first record.
struct Bus {
    recorder: Recorder,
    publisher: Publisher,
    poller: Poller,
    thresholds: Thresholds,
}

impl Bus {
    async fn of(store: &DynamoStore) -> Bus {
        let recorder = Recorder::start().await;
        let publisher = Publisher::new(recorder.client().await, BUS);
        let streams = events::local::streams_client(TrustRoots::default(), None, None).await;
        let direct = store.direct();
        let poller = Poller::new(direct.client, streams, direct.table, Start::Oldest)
            .await
            .unwrap();
        Bus {
            recorder,
            publisher,
            poller,
            thresholds: Thresholds::default(),
        }
    }

    /// Polls until the stream has been quiet for a while.
    async fn drain(&mut self) -> Pass {
        self.poller
            .drain(&self.publisher, &self.thresholds, 5, 600)
            .await
            .unwrap()
    }

    fn of_type(&self, detail_type: &str) -> Vec<Received> {
        self.recorder
            .entries()
            .into_iter()
            .filter(|e| e.detail_type == detail_type)
            .collect()
    }
}

/// Every audit event stored in the table, by id (a Scan: test code only).
async fn stored_events(store: &DynamoStore) -> BTreeMap<String, Value> {
    let direct = store.direct();
    let mut events = BTreeMap::new();
    let mut start = None;
    loop {
        let page = direct
            .client
            .scan()
            .table_name(direct.table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            if item
                .get("type")
                .and_then(|t| t.as_s().ok())
                .map(String::as_str)
                == Some("audit")
            {
                // A poison record's item is no event.
                if let Ok(event) = serde_json::from_str::<Value>(item["event"].as_s().unwrap()) {
                    events.insert(event["id"].as_str().unwrap().to_string(), event);
                }
            }
        }
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return events,
        }
    }
}

/// How many times each audit event id was published, checking each entry's envelope and that
/// a duplicate is the same event.
fn published_audit_events(bus: &Bus) -> BTreeMap<String, (Value, usize)> {
    let mut published: BTreeMap<String, (Value, usize)> = BTreeMap::new();
    for entry in bus.recorder.entries() {
        assert_eq!(entry.source, "token-service");
        assert_eq!(entry.bus, BUS);
        if entry.detail_type == "credits.low" || entry.detail_type == "token.expiring" {
            continue;
        }
        assert_eq!(entry.detail["action"], entry.detail_type.as_str());
        let id = entry.detail["id"].as_str().unwrap().to_string();
        let seen = published.entry(id).or_insert((entry.detail.clone(), 0));
        assert_eq!(seen.0, entry.detail, "a duplicate is the same event");
        seen.1 += 1;
    }
    published
}

/// No token, nor its hash (hex or base64), in anything published.
fn assert_no_secret(bus: &Bus, secrets: &[&str]) {
    use base64::Engine;
    let all = format!("{:?}", bus.recorder.entries());
    for secret in secrets {
        let hash = token::hash_token(secret).0;
        for form in [
            secret.to_string(),
            hex(&hash),
            base64::engine::general_purpose::STANDARD.encode(hash),
        ] {
            assert!(!all.contains(&form), "{form} was published");
        }
    }
}

#[tokio::test]
async fn every_audit_event_is_published_once_with_its_id_and_reads_publish_nothing() {
    let (service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    let values = keys(&t);
    let lifecycle = key_lifecycle(&service, &t).await;
    let change = Change::operator();
    for status in [UserStatus::Blocked, UserStatus::Active] {
        store
            .set_user_status(t.user.id, status, &change)
            .await
            .unwrap();
    }
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    let limits = Limits::parse(json!({"credits": {"remaining": 5}}).as_object().unwrap()).unwrap();
    assert!(store
        .set_limits(Metered::User(&user), &limits, &change, now_ms())
        .await
        .unwrap());
    let held = token_for(&store, &t.user, TokenKind::Personal, Abilities::full()).await;
    let body = json!({ "token": held }).to_string();
    let revoke = request(Method::POST, "/api/v1/tokens/revoke", &[], &body);
    assert_eq!(call(&service, revoke).await.0, 202);
    let admin = format!("Bearer {}", t.admin_token);
    for (method, route) in [
        (Method::GET, "/ext/get-user-token"),
        (Method::POST, "/ext/rotate-user-token"),
    ] {
        let path = format!("{route}?userId={}", t.user.id);
        let headers = [("authorization", admin.as_str()), ("authtype", "Key")];
        let (status, answer) = call(&service, request(method, &path, &headers, "")).await;
        assert_eq!(status, 200, "{answer}");
    }

    let pass = bus.drain().await;
    assert!(pass.dead_letters.is_empty());
    let stored = stored_events(&store).await;
    assert!(stored.len() >= 14, "{}", stored.len());
    let published = published_audit_events(&bus);
    // Every event, once, as the API shows it.
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        stored.keys().collect::<Vec<_>>()
    );
    for (id, (detail, times)) in &published {
        assert_eq!(*times, 1, "{id} published {times} times");
        assert_eq!(detail, &stored[id]);
    }
    let actions: BTreeSet<&str> = published
        .values()
        .map(|(d, _)| d["action"].as_str().unwrap())
        .collect();
    for action in [
        "user.created",
        "token.created",
        "token.updated",
        "token.rolled",
        "token.revoked",
        "user.blocked",
        "user.unblocked",
        "limits.updated",
        "permanent_token.issued",
        "permanent_token.rotated",
    ] {
        assert!(
            actions.contains(action),
            "{action} missing from {actions:?}"
        );
    }
    // The roll's event names the key and its successor, as the audit listing does.
    let rolled: Vec<&Value> = published
        .values()
        .map(|(d, _)| d)
        .filter(|d| d["action"] == "token.rolled")
        .collect();
    assert_eq!(rolled.len(), 1);
    assert_eq!(rolled[0]["target"]["token_id"], lifecycle.key_id);
    assert_eq!(rolled[0]["details"]["successor_id"], lifecycle.successor_id);
    // Setting limits crosses nothing: no credits.low.
    assert!(bus.of_type("credits.low").is_empty());
    let secrets = [
        t.user_token.as_str(),
        t.admin_token.as_str(),
        lifecycle.key_token.as_str(),
        lifecycle.successor_token.as_str(),
        held.as_str(),
    ];
    assert_no_secret(&bus, &secrets);

    // Reads publish nothing (an unmetered verify included).
    let before = bus.recorder.entries().len();
    assert_eq!(call(&service, sample("api-keys-get", &values)).await.0, 200);
    let listing = request(
        Method::GET,
        "/api/v1/audit-events",
        &[("authorization", admin.as_str())],
        "",
    );
    assert_eq!(call(&service, listing).await.0, 200);
    let verify = request(
        Method::POST,
        "/api/v1/tokens/verify",
        &[
            ("authorization", admin.as_str()),
            ("content-type", "application/json"),
        ],
        &json!({"token": t.admin_token}).to_string(),
    );
    assert_eq!(call(&service, verify).await.0, 200);
    bus.drain().await;
    assert_eq!(bus.recorder.entries().len(), before);
}

#[tokio::test]
async fn a_refused_entry_is_sent_again_and_repeats_only_as_a_duplicate_with_its_id() {
    let (_service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    for _ in 0..6 {
        token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    }
    // The first request refuses its second entry; the publisher sends it again alone and
    // EventBridge takes it: no duplicate.
    bus.recorder.refuse_next(Refusal::Entries(vec![1]));
    // Then a whole request fails once (the SDK retries it).
    bus.recorder.refuse_next(Refusal::Request);
    bus.drain().await;
    let stored = stored_events(&store).await;
    let published = published_audit_events(&bus);
    assert_eq!(published.len(), stored.len());
    assert!(published.values().all(|(_, times)| *times == 1));
    assert!(bus.recorder.requests() >= 3);

    // Now one entry is refused every time the publisher tries: its record and the later ones
    // come again, so the later ones are published twice, with their ids.
    // The four events are in the stream before the poller reads them, so they go out in one
    // request.
    for _ in 0..4 {
        token_for(&store, &t.admin, TokenKind::ApiKey, Abilities::full()).await;
    }
    // Its first request refuses the second entry; each one after it carries only that entry.
    bus.recorder.refuse_next(Refusal::Entries(vec![1]));
    for _ in 1..events::PUT_ATTEMPTS {
        bus.recorder.refuse_next(Refusal::Entries(vec![0]));
    }
    let pass = bus.drain().await;
    assert!(pass.dead_letters.is_empty());
    let stored = stored_events(&store).await;
    let published = published_audit_events(&bus);
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        stored.keys().collect::<Vec<_>>(),
        "every event arrived"
    );
    let twice = published.values().filter(|(_, times)| *times == 2).count();
    assert_eq!(twice, 2, "the two records after the refused one came again");
    assert!(published.values().all(|(_, times)| *times <= 2));
}

#[tokio::test]
async fn a_poison_record_is_set_aside_and_its_shard_goes_on() {
    let (_service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    // An audit item whose event is not JSON: no retry can publish it.
    let direct = store.direct();
    direct
        .client
        .put_item()
        .table_name(direct.table)
        .item("pk", AttributeValue::S(format!("USER#{}", t.user.id)))
        .item("sk", AttributeValue::S("AUDIT#0000poison".into()))
        .item("type", AttributeValue::S("audit".into()))
        .item("event", AttributeValue::S("{not json".into()))
        .send()
        .await
        .unwrap();
    let after = token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let pass = bus.drain().await;
    assert_eq!(pass.dead_letters.len(), 1, "{pass:?}");
    let published = published_audit_events(&bus);
    let stored = stored_events(&store).await;
    // Every readable event, the one written after the poison included.
    assert_eq!(published.len(), stored.len());
    let parsed = token::parse_any_prefix(&after).unwrap();
    let after_id = format!("{}-{}", parsed.user_id, parsed.token_id);
    assert!(published
        .values()
        .any(|(d, _)| d["target"]["token_id"] == after_id.as_str()));
}

#[tokio::test]
async fn parallel_charges_cross_each_threshold_once() {
    let (service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    let parsed = token::parse_any_prefix(&t.user_token).unwrap();
    let record = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .unwrap()
        .unwrap();
    let limits = Limits::parse(json!({"credits": {"remaining": 20}}).as_object().unwrap()).unwrap();
    let now = now_ms();
    assert!(store
        .set_limits(Metered::Token(&record), &limits, &Change::operator(), now)
        .await
        .unwrap());
    // 30 parallel units against 20 credits: 20 pass; 20% is 4 left, 10% is 2, 0% is none.
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let (service, secret) = (service.clone(), t.user_token.clone());
            tokio::spawn(async move { service.admit(Some(&secret), now).await.is_ok() })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 20);
    bus.drain().await;
    let low = bus.of_type("credits.low");
    let mut crossed: Vec<(u64, u64)> = low
        .iter()
        .map(|e| {
            assert_eq!(e.detail["user_id"], t.user.id.0);
            assert_eq!(e.detail["platform_id"], t.platform.id.0);
            assert_eq!(
                e.detail["token_id"],
                format!("{}-{}", parsed.user_id, parsed.token_id)
            );
            (
                e.detail["threshold_percent"].as_u64().unwrap(),
                e.detail["remaining"].as_u64().unwrap(),
            )
        })
        .collect();
    crossed.sort();
    assert_eq!(crossed, vec![(0, 0), (10, 2), (20, 4)]);
    let ids: BTreeSet<&str> = low
        .iter()
        .map(|e| e.detail["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_no_secret(&bus, &[t.user_token.as_str()]);
}

#[tokio::test]
async fn expiring_tokens_are_notified_once_per_token_and_threshold() {
    let (_service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    let now = now_ms();
    let now_s = now.seconds().0;
    let soon = token_expiring(&store, &t.user, TokenKind::ApiKey, now_s + 10 * DAY).await;
    let later = token_expiring(&store, &t.user, TokenKind::ApiKey, now_s + 20 * DAY).await;
    // Made with less than a day to live: no notice is due to it.
    token_expiring(&store, &t.user, TokenKind::ApiKey, now_s + DAY / 2).await;
    // Revoked: none either.
    let revoked = token_expiring(&store, &t.user, TokenKind::ApiKey, now_s + 9 * DAY).await;
    assert!(store
        .revoke_token(
            t.user.id,
            TokenKind::ApiKey.family(),
            revoked.record.id,
            &Change::operator(),
            now
        )
        .await
        .unwrap());
    let at = |days_and_halves: u64| EpochMs(now.0 + days_and_halves * DAY * 1000 / 2);
    let publisher = &bus.publisher;
    let notices = |bus: &Bus| -> Vec<(String, u64)> {
        bus.of_type("token.expiring")
            .iter()
            .map(|e| {
                (
                    e.detail["token_id"].as_str().unwrap().to_string(),
                    e.detail["days_before"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let id = |minted: &shared::mint::Minted| minted.record.public_id().to_string();
    // Nothing is due today.
    notify_expiring(&store, publisher, now).await.unwrap();
    assert!(notices(&bus).is_empty());
    // Twice the same day, 6.5 days before its expiry: one 7-day notice.
    for _ in 0..2 {
        notify_expiring(&store, publisher, at(7)).await.unwrap();
    }
    assert_eq!(notices(&bus), vec![(id(&soon), 7)]);
    // Half a day before: its 1-day notice, once; the other is not yet within a week.
    for _ in 0..2 {
        notify_expiring(&store, publisher, at(19)).await.unwrap();
    }
    assert_eq!(notices(&bus), vec![(id(&soon), 7), (id(&soon), 1)]);
    // A notice EventBridge refuses is given back and published by the next run.
    let fourteen_days = at(28);
    for _ in 0..events::PUT_ATTEMPTS {
        bus.recorder.refuse_next(Refusal::Entries(vec![0]));
    }
    let run = notify_expiring(&store, &bus.publisher, fourteen_days)
        .await
        .unwrap();
    assert_eq!((run.notified, run.unpublished), (0, 1));
    let run = notify_expiring(&store, &bus.publisher, fourteen_days)
        .await
        .unwrap();
    assert_eq!((run.notified, run.unpublished), (1, 0));
    notify_expiring(&store, &bus.publisher, fourteen_days)
        .await
        .unwrap();
    assert_eq!(
        notices(&bus),
        vec![(id(&soon), 7), (id(&soon), 1), (id(&later), 7)]
    );
    let entry = &bus.of_type("token.expiring")[2];
    assert_eq!(entry.detail["platform_id"], t.platform.id.0);
    assert_eq!(entry.detail["kind"], "api_key");
    assert!(entry.detail["valid_until"].as_str().unwrap().ends_with('Z'));
    // The marks on the tokens are no audit events: nothing else was published for them.
    bus.drain().await;
    assert!(bus.of_type("credits.low").is_empty());
    assert_no_secret(&bus, &[soon.secret.expose(), later.secret.expose()]);
}

/// An API key of `user` that expires in 10 days, with `credits` of its own.
async fn expiring_key_with_credits(
    store: &DynamoStore,
    user: &shared::store::User,
    credits: u64,
    now: EpochMs,
) -> shared::mint::Minted {
    let minted = token_expiring(store, user, TokenKind::ApiKey, now.seconds().0 + 10 * DAY).await;
    let limits = json!({"credits": {"remaining": credits}});
    let limits = Limits::parse(limits.as_object().unwrap()).unwrap();
    assert!(store
        .set_limits(
            Metered::Token(&minted.record),
            &limits,
            &Change::operator(),
            now
        )
        .await
        .unwrap());
    minted
}

/// A roll hands the meter and the expiry notices to the successor: the rolled key leaves the
/// index of expiry days, its meter's crossings are the successor's, each once.
#[tokio::test]
async fn a_roll_hands_the_meter_and_the_expiry_notices_to_the_successor() {
    let (service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    let now = now_ms();
    let minted = expiring_key_with_credits(&store, &t.user, 10, now).await;
    // 7 units on the key: 3 left, 20% (2) not yet crossed.
    for _ in 0..7 {
        assert!(service
            .admit(Some(minted.secret.expose()), now)
            .await
            .is_ok());
    }
    let path = format!("/api/user/api-keys/{}/roll", minted.record.public_id());
    let bearer = format!("Bearer {}", t.user_token);
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, rolled) = call(
        &service,
        request(Method::POST, &path, &headers, r#"{"grace_seconds": 600}"#),
    )
    .await;
    assert_eq!(status, 201, "{rolled}");
    let successor = rolled["api_key"]["id"].as_str().unwrap().to_string();
    let successor_secret = rolled["api_key"]["token"].as_str().unwrap().to_string();
    // Units through the old key in its grace period and through the successor: one meter.
    for secret in [
        minted.secret.expose(),
        successor_secret.as_str(),
        successor_secret.as_str(),
    ] {
        assert!(service.admit(Some(secret), now).await.is_ok());
    }
    assert!(service.admit(Some(&successor_secret), now).await.is_err());
    bus.drain().await;
    let mut crossed: Vec<(String, u64, u64)> = bus
        .of_type("credits.low")
        .iter()
        .map(|e| {
            (
                e.detail["token_id"].as_str().unwrap().to_string(),
                e.detail["threshold_percent"].as_u64().unwrap(),
                e.detail["remaining"].as_u64().unwrap(),
            )
        })
        .collect();
    crossed.sort();
    assert_eq!(
        crossed,
        vec![
            (successor.clone(), 0, 0),
            (successor.clone(), 10, 1),
            (successor.clone(), 20, 2),
        ]
    );
    // The expiry notice goes to the successor alone (the predecessor's grace is no expiry).
    let at = EpochMs(now.0 + 7 * DAY * 1000 / 2);
    notify_expiring(&store, &bus.publisher, at).await.unwrap();
    let notices: Vec<String> = bus
        .of_type("token.expiring")
        .iter()
        .map(|e| e.detail["token_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(notices, vec![successor]);
    assert_no_secret(&bus, &[minted.secret.expose(), successor_secret.as_str()]);
}

/// Removes `attribute` from a token's item, as an item written before events out lacks it.
async fn written_before_events_out(store: &DynamoStore, key: shared::store::Key, attribute: &str) {
    let direct = store.direct();
    direct
        .client
        .update_item()
        .table_name(direct.table)
        .set_key(Some(key.to_item()))
        .update_expression(format!("REMOVE {attribute}"))
        .send()
        .await
        .unwrap();
}

/// `tokenctl backfill`'s store call: a token and a meter written before events out get their
/// expiry notices and low-credit notices after it, and a second run writes nothing.
#[tokio::test]
async fn the_backfill_gives_records_of_before_their_notices() {
    let (service, store) = service().await;
    let mut bus = Bus::of(&store).await;
    let t = tenant(&store).await;
    let now = now_ms();
    let old = expiring_key_with_credits(&store, &t.user, 10, now).await;
    let revoked = token_expiring(
        &store,
        &t.user,
        TokenKind::ApiKey,
        now.seconds().0 + 10 * DAY,
    )
    .await;
    let key = |minted: &shared::mint::Minted| {
        shared::store::Key::token(t.user.id, TokenKind::ApiKey.family(), minted.record.id)
    };
    for attribute in ["expiry_day", "credits_full"] {
        written_before_events_out(&store, key(&old), attribute).await;
    }
    written_before_events_out(&store, key(&revoked), "expiry_day").await;
    assert!(store
        .revoke_token(
            t.user.id,
            TokenKind::ApiKey.family(),
            revoked.record.id,
            &Change::operator(),
            now
        )
        .await
        .unwrap());
    let week_before = EpochMs(now.0 + 7 * DAY * 1000 / 2);
    // Before: not in the index, so no notice.
    notify_expiring(&store, &bus.publisher, week_before)
        .await
        .unwrap();
    assert!(bus.of_type("token.expiring").is_empty());

    let done = store.backfill(now).await.unwrap();
    assert_eq!(
        (done.found, done.expiry_days, done.credits_full),
        (1, 1, 1),
        "{done:?}"
    );
    assert_eq!(store.backfill(now).await.unwrap(), Default::default());
    let stored = store.direct().item(&key(&old)).await.unwrap().unwrap();
    assert_eq!(stored["credits_full"].as_n().unwrap(), "10");
    assert_eq!(
        stored["expiry_day"].as_s().unwrap(),
        &shared::store::expiry_day(old.record.expires_at.unwrap())
    );

    // After: the expiry notice of the live key alone, and its meter's crossing of 20 %.
    notify_expiring(&store, &bus.publisher, week_before)
        .await
        .unwrap();
    let expiring: Vec<String> = bus
        .of_type("token.expiring")
        .iter()
        .map(|e| e.detail["token_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expiring, vec![old.record.public_id().to_string()]);
    for _ in 0..8 {
        assert!(service.admit(Some(old.secret.expose()), now).await.is_ok());
    }
    bus.drain().await;
    let low: Vec<(u64, u64)> = bus
        .of_type("credits.low")
        .iter()
        .map(|e| {
            (
                e.detail["threshold_percent"].as_u64().unwrap(),
                e.detail["remaining"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(low, vec![(20, 2)]);
}
