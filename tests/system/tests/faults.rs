//! Exact under faults, against DynamoDB Local with faults it cannot produce injected by an SDK
//! interceptor: a charge is never counted twice, a change that landed is never answered 503,
//! a creation whose outcome stays unknown leaves no token behind, and usage is reported as
//! written.

use std::collections::BTreeSet;

use lambda_http::http::Method;
use serde_json::{json, Value};

use shared::audit::Change;
use shared::domain::{Abilities, TokenName};
use shared::error::ApiError;
use shared::mint::MintRequest;
use shared::service::Service;
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Key, Metered, NewToken, Owner, Refusal, StoreError};
use shared::test_support::faults::{Fault, FaultInjector, Operation};
use shared::test_support::{
    exchange, request, service, service_intercepted, status_and_json, tenant, Tenant,
};
use shared::token::{self, CapCounter, TokenFamily, TokenKind};

async fn send(
    service: &Service,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let request = request(method, path, &headers, &body.to_string());
    let (status, headers, body) = exchange(tokenctl::serve::router(service), request).await;
    status_and_json(status, &headers, &body)
}

/// The stored credits of the token a secret names.
async fn stored_credits(store: &DynamoStore, secret: &str) -> u64 {
    let parsed = token::parse_any_prefix(secret).unwrap();
    let key = Key::token(parsed.user_id, parsed.kind.family(), parsed.token_id);
    let item = store.direct().item(&key).await.unwrap().unwrap();
    item["credits"].as_n().unwrap().parse().unwrap()
}

/// Gives the user's key `credits` of its own.
async fn meter(store: &DynamoStore, secret: &str, credits: u64) {
    let parsed = token::parse_any_prefix(secret).unwrap();
    let record = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await
        .unwrap()
        .unwrap();
    let limits = shared::limits::Limits::parse(
        json!({"credits": {"remaining": credits}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    assert!(store
        .set_limits(
            Metered::Token(&record),
            &limits,
            &Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
}

/// A service whose client injects `faults`, and a tenant whose user key has `credits`.
async fn metered_tenant(credits: u64) -> (Service, Service, DynamoStore, Tenant, FaultInjector) {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (faulty, _) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    meter(&store, &t.user_token, credits).await;
    // Its last use recorded first, so that a unit's UpdateItem is the only one.
    service
        .authenticate(Some(&t.user_token), now_ms())
        .await
        .unwrap();
    (service, faulty, store, t, faults)
}

#[tokio::test]
async fn a_charge_whose_answer_is_lost_is_never_sent_again() {
    let (_, faulty, store, t, faults) = metered_tenant(10).await;
    // The write lands and its answer is lost, as when DynamoDB stalls past the attempt's time.
    faults.plan(Operation::UpdateItem, Fault::CommittedAnswerLost);
    let answer = faulty.admit(Some(&t.user_token), now_ms()).await;
    assert!(
        matches!(answer, Err(ApiError::Unavailable(_))),
        "{answer:?}"
    );
    assert_eq!(faults.injected(), 1);
    // One credit: the unit was counted once, answered as not known (never as refused).
    assert_eq!(stored_credits(&store, &t.user_token).await, 9);
    // Refused in a way that proves nothing was written, it is sent again and counted once.
    faults.plan(Operation::UpdateItem, Fault::Conflict);
    let (_, usage) = faulty.admit(Some(&t.user_token), now_ms()).await.unwrap();
    assert_eq!(usage.credits.unwrap().remaining, 8);
    assert_eq!(stored_credits(&store, &t.user_token).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_charges_each_report_what_their_write_left() {
    let (service, _, store, t, _) = metered_tenant(1000).await;
    let mut units = Vec::new();
    for _ in 0..16 {
        let (service, admin, user) = (service.clone(), t.admin_token.clone(), t.user_token.clone());
        units.push(tokio::spawn(async move {
            let body = json!({"token": user, "consume": true});
            let (status, answer) = send(
                &service,
                Method::POST,
                "/api/v1/tokens/verify",
                &admin,
                body,
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["code"], "VALID", "{answer}");
            answer["credits"]["remaining"].as_u64().unwrap()
        }));
    }
    let mut reported = BTreeSet::new();
    for unit in units {
        assert!(reported.insert(unit.await.unwrap()), "{reported:?}");
    }
    assert_eq!(reported, (984..1000).collect::<BTreeSet<u64>>());
    assert_eq!(stored_credits(&store, &t.user_token).await, 984);
}

#[tokio::test]
async fn a_creation_that_landed_is_never_answered_503() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (faulty, _) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    // The first attempt commits and its answer is lost; every later one fails to connect.
    faults.plan(Operation::TransactWriteItems, Fault::CommittedAnswerLost);
    for _ in 0..40 {
        faults.plan(Operation::TransactWriteItems, Fault::ConnectionFailed);
    }
    let (status, created) = send(
        &faulty,
        Method::POST,
        "/api/user/api-keys",
        &t.user_token,
        json!({"name": "landed"}),
    )
    .await;
    faults.clear();
    assert_eq!(status, 201, "{created}");
    let secret = created["api_key"]["token"].as_str().unwrap();
    assert!(service.authenticate(Some(secret), now_ms()).await.is_ok());
    let keys = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert_eq!(keys.iter().filter(|k| k.name == "landed").count(), 1);
    let events = store
        .list_events(shared::store::EventScope::User(t.user.id), 100, None)
        .await
        .unwrap();
    let created_events = events
        .events
        .iter()
        .filter(|e| e["action"] == "token.created" && e["target"]["name"] == "landed")
        .count();
    assert_eq!(created_events, 1);
}

#[tokio::test]
async fn a_creation_whose_outcome_stays_unknown_is_made_void() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let owner = Owner::from(&t.user);
    let request = MintRequest {
        kind: TokenKind::ApiKey,
        name: TokenName::parse("unknown").unwrap(),
        abilities: Abilities::full(),
        expires_at: None,
        parent_id: None,
        change: Change::operator(),
        meta: None,
    };
    let issued = shared::token::TokenFormat::default().generate(request.kind, owner.id, now_ms());
    let new = NewToken {
        parsed: issued.parsed,
        name: "unknown".into(),
        abilities: Abilities::full(),
        created_at_ms: now_ms().0,
        expires_at: None,
        parent_id: None,
        meta: None,
        imported: false,
    };
    let before = slots(&store, &t).await;
    for _ in 0..40 {
        faults.plan(Operation::TransactWriteItems, Fault::ConnectionFailed);
    }
    let created = faulty
        .create_token(owner, new.clone(), 100, &request.change, now_ms())
        .await;
    faults.clear();
    assert!(
        matches!(
            created,
            Err(StoreError::Fault(shared::store::Fault::Unavailable(_)))
        ),
        "{created:?}"
    );
    // No token, no slot taken; and the same transaction, should it arrive late, can never
    // commit: its key is void.
    assert!(service
        .authenticate(Some(issued.secret.expose()), now_ms())
        .await
        .is_err());
    assert_eq!(slots(&store, &t).await, before);
    let late = store
        .create_token(owner, new, 100, &request.change, now_ms())
        .await;
    assert!(
        matches!(late, Err(StoreError::Refused(Refusal::TokenIdTaken))),
        "{late:?}"
    );
    assert_eq!(slots(&store, &t).await, before);
    let keys = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert!(keys.iter().all(|k| k.name != "unknown"));
}

/// The user's cap counter and its listed API keys.
async fn slots(store: &DynamoStore, t: &Tenant) -> (i64, usize) {
    let counter = store
        .direct()
        .cap_count(t.user.id, CapCounter::Tokens)
        .await
        .unwrap();
    let listed = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()
        .len();
    (counter, listed)
}
