//! What DynamoDB does and DynamoDB Local does not: TTL deleting expired items, transactions
//! cancelled by conflicts and throttling, transactions still in progress, answers lost after a
//! write committed, and a slow table against the Lambda's deadline. Faults are injected with an
//! SDK interceptor ([`FaultInjector`]); TTL is simulated by deleting expired items.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use shared::auth::{verify, VerificationCode};
use shared::clock::EpochMs;
use shared::deadline;
use shared::domain::{Abilities, Role, TokenName, UserStatus};
use shared::mint::{mint, MintRequest};
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, Owner, PermanentGeneration, Refusal, StoreError, User};
use shared::test_support::faults::{Fault, FaultInjector, Operation};
use shared::test_support::{
    add_user, new_user, service, service_intercepted, service_with, tenant, token_for, ttl_sweep,
};
use shared::token::{CapCounter, TokenFamily, TokenKind};
use shared::trust::TrustRoots;

/// The client's attempts per call (`config::dynamodb_client`): losing every answer makes the
/// SDK give up with a timeout although the write landed.
const SDK_ATTEMPTS: usize = 3;

/// Plans `fault` for every attempt the SDK makes of the next `operation` call.
fn plan_for_every_attempt(faults: &FaultInjector, operation: Operation, fault: Fault) {
    for _ in 0..SDK_ATTEMPTS {
        faults.plan(operation, fault);
    }
}

fn key_request(expires_at: Option<u64>) -> MintRequest {
    MintRequest {
        kind: TokenKind::ApiKey,
        name: TokenName::parse("key").unwrap(),
        abilities: Abilities::full(),
        expires_at,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    }
}

/// The profile's count of live API keys and personal tokens.
async fn live_tokens(store: &DynamoStore, user: &User) -> i64 {
    store
        .direct()
        .cap_count(user.id, CapCounter::Tokens)
        .await
        .unwrap()
}

/// How many items a Query of one family's range reads (what a listing reads).
async fn family_items(store: &DynamoStore, user: &User, family: TokenFamily) -> usize {
    store
        .direct()
        .client
        .query()
        .table_name(store.direct().table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", AttributeValue::S(format!("USER#{}", user.id)))
        .expression_attribute_values(
            ":prefix",
            AttributeValue::S(shared::store::token_sort_prefix(family)),
        )
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .count as usize
}

/// Issue 1: TTL deleted expired tokens whose slots were still counted; the user was locked out.
#[tokio::test]
async fn ttl_deleting_expired_tokens_never_strands_their_slots() {
    let (_, store) = service_with(5).await;
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    let owner = Owner::from(&user);
    let now = now_ms();
    mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        key_request(None),
        5,
        now,
    )
    .await
    .unwrap();
    for _ in 0..4 {
        let expired = key_request(Some(now.0 / 1000 - 60));
        mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner,
            expired,
            5,
            now,
        )
        .await
        .unwrap();
    }
    assert_eq!(live_tokens(&store, &user).await, 5);
    // DynamoDB's TTL deletes what has expired (by the TTL attribute), whenever it gets to it.
    ttl_sweep(&store, now_ms()).await;
    for i in 0..4 {
        let created = mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner,
            key_request(None),
            5,
            now_ms(),
        )
        .await;
        assert!(created.is_ok(), "creation {i} after the sweep: {created:?}");
    }
    let listed = store
        .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(live_tokens(&store, &user).await, 5);
    // The released ones now carry the TTL attribute, and a sweep takes them without harm.
    assert!(ttl_sweep(&store, now_ms()).await >= 4);
    assert!(matches!(
        mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner,
            key_request(None),
            5,
            now_ms()
        )
        .await,
        Err(StoreError::Refused(Refusal::TokenLimitReached { max: 5 }))
    ));
}

/// Issue 2: revoked (and released) tokens stayed in the family's range, so every listing and
/// capped create read them until TTL removed them.
#[tokio::test]
async fn revoked_and_released_tokens_leave_the_range_listings_read() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    let owner = Owner::from(&user);
    let mut revoked = Vec::new();
    for _ in 0..30 {
        let minted = mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner,
            key_request(None),
            100,
            now_ms(),
        )
        .await
        .unwrap();
        assert!(store
            .revoke_token(
                user.id,
                TokenFamily::ApiKeys,
                minted.record.id,
                &shared::audit::Change::operator(),
                now_ms()
            )
            .await
            .unwrap());
        revoked.push(minted);
    }
    let kept = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner,
        key_request(None),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(family_items(&store, &user, TokenFamily::ApiKeys).await, 1);
    let listed = store
        .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, kept.record.id);
    // Verification still says why a revoked token fails.
    let verified = verify(
        &store,
        &shared::token::TokenFormat::default(),
        revoked[0].secret.expose(),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(verified.code, VerificationCode::Revoked);
    // Expired tokens leave the range when their slots are released at the cap.
    let (_, capped) = service_with(2).await;
    let t = tenant(&capped).await;
    let user = add_user(&capped, new_user(&t.platform, Role::User)).await;
    let owner = Owner::from(&user);
    let now = now_ms();
    for _ in 0..2 {
        let expired = key_request(Some(now.0 / 1000 - 60));
        mint(
            &capped,
            &shared::token::TokenFormat::default(),
            owner,
            expired.clone(),
            2,
            now,
        )
        .await
        .unwrap();
    }
    mint(
        &capped,
        &shared::token::TokenFormat::default(),
        owner,
        key_request(None),
        2,
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(family_items(&capped, &user, TokenFamily::ApiKeys).await, 1);
}

/// Issue 4: a transaction that committed but whose answer was lost is retried; the retry must
/// not be reported as a failure, nor store a second token whose twin holds a slot.
#[tokio::test]
async fn a_create_whose_answer_was_lost_stores_one_token_and_succeeds() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    plan_for_every_attempt(
        &faults,
        Operation::TransactWriteItems,
        Fault::CommittedAnswerLost,
    );
    let minted = mint(
        &faulty,
        &shared::token::TokenFormat::default(),
        Owner::from(&user),
        key_request(None),
        100,
        now_ms(),
    )
    .await;
    assert_eq!(faults.injected(), SDK_ATTEMPTS);
    let minted = minted.expect("the create landed, so it succeeds");
    let listed = store
        .list_tokens(user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, minted.record.id);
    assert_eq!(live_tokens(&store, &user).await, 1);
}

#[tokio::test]
async fn a_revocation_whose_answer_was_lost_is_reported_done() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    let minted = mint(
        &store,
        &shared::token::TokenFormat::default(),
        Owner::from(&user),
        key_request(None),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    plan_for_every_attempt(
        &faults,
        Operation::TransactWriteItems,
        Fault::CommittedAnswerLost,
    );
    let revoked = faulty
        .revoke_token(
            user.id,
            TokenFamily::ApiKeys,
            minted.record.id,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(faults.injected(), SDK_ATTEMPTS);
    assert!(revoked, "the revocation landed: not a 404");
    assert_eq!(live_tokens(&store, &user).await, 0);
    let verified = verify(
        &store,
        &shared::token::TokenFormat::default(),
        minted.secret.expose(),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(verified.code, VerificationCode::Revoked);
}

/// Issues 4 and 5: conflicts, throttling and transactions in progress are tried again, and a
/// transaction in progress with the same client request token.
#[tokio::test]
async fn cancelled_and_in_progress_transactions_are_tried_again() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    let owner = Owner::from(&user);
    for fault in [
        Fault::Cancelled("TransactionConflict"),
        Fault::Cancelled("ThrottlingError"),
        Fault::InProgress,
    ] {
        faults.plan(Operation::TransactWriteItems, fault);
        faults.plan(Operation::TransactWriteItems, fault);
        let minted = mint(
            &faulty,
            &shared::token::TokenFormat::default(),
            owner,
            key_request(None),
            100,
            now_ms(),
        )
        .await;
        assert!(minted.is_ok(), "{fault:?}: {minted:?}");
        assert_eq!(faults.pending(), 0, "{fault:?}");
        let revoked = {
            faults.plan(Operation::TransactWriteItems, fault);
            faulty
                .revoke_token(
                    user.id,
                    TokenFamily::ApiKeys,
                    minted.unwrap().record.id,
                    &shared::audit::Change::operator(),
                    now_ms(),
                )
                .await
        };
        assert!(revoked.unwrap(), "{fault:?}");
    }
    assert_eq!(faults.injected(), 9);
    assert_eq!(live_tokens(&store, &user).await, 0);
}

/// Issue 5: a block cancelled by another transaction's lock is tried again (a block is a
/// transaction: the profile and its audit event).
#[tokio::test]
async fn a_block_refused_by_a_conflict_is_tried_again() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    for _ in 0..2 {
        faults.plan(
            Operation::TransactWriteItems,
            Fault::Cancelled("TransactionConflict"),
        );
    }
    faulty
        .set_user_status(
            t.user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .expect("tried again past the conflicts");
    assert_eq!(faults.injected(), 2);
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    assert_eq!(user.status, UserStatus::Blocked);
}

/// Issue 7: a platform (and a user) created by a write the SDK sent again after it landed is
/// created once, and reported created.
#[tokio::test]
async fn directory_writes_whose_answers_were_lost_create_once() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    faults.plan(Operation::PutItem, Fault::CommittedAnswerLost);
    let platform = faulty.create_platform("Once", now_ms()).await.unwrap();
    assert_eq!(faults.injected(), 1);
    // The first platform of a new table, and no second one.
    assert_eq!(platform.id, shared::domain::PlatformId(1));
    let next = shared::domain::PlatformId(2);
    assert!(store.get_platform(next).await.unwrap().is_none());
    assert_eq!(
        store.get_platform(platform.id).await.unwrap().unwrap().name,
        "Once"
    );

    plan_for_every_attempt(
        &faults,
        Operation::TransactWriteItems,
        Fault::CommittedAnswerLost,
    );
    let user = faulty
        .create_user(
            new_user(&platform, Role::User),
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .expect("the user landed: not 'email taken'");
    assert_eq!(faults.injected(), 1 + SDK_ATTEMPTS);
    assert_eq!(store.get_user(user.id).await.unwrap().unwrap(), user);
}

/// Issue 4: the permanent token's first issue whose answer was lost still hands out a key that
/// works, of the same generation.
#[tokio::test]
async fn a_permanent_token_issue_whose_answer_was_lost_hands_out_a_working_key() {
    let (service, store) = service().await;
    let faults = FaultInjector::default();
    let (_, faulty) = service_intercepted(&service, &store, faults.clone());
    let t = tenant(&store).await;
    let key = service.config.permanent_key().unwrap();
    let derive = |generation| {
        let issued = key.derive(&shared::token::Prefix::default(), t.user.id, generation);
        vec![shared::store::NewToken {
            parsed: issued.parsed,
            name: "permanent".into(),
            abilities: Abilities::full(),
            created_at_ms: now_ms().0,
            expires_at: None,
            parent_id: None,
            meta: None,
            imported: false,
        }]
    };
    plan_for_every_attempt(
        &faults,
        Operation::TransactWriteItems,
        Fault::CommittedAnswerLost,
    );
    let generation = faulty
        .issue_permanent_token(
            &t.user,
            &derive,
            PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap()
        .generation;
    assert_eq!(faults.injected(), SDK_ATTEMPTS);
    assert_eq!(generation, t.user.permanent_generation);
    let issued = key.derive(&shared::token::Prefix::default(), t.user.id, generation);
    let verified = verify(
        &store,
        &shared::token::TokenFormat::default(),
        issued.secret.expose(),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(verified.code, VerificationCode::Valid);
}

/// Issue 3: a slow DynamoDB answered after the Lambda timeout (API Gateway's 502). Within a
/// deadline every store call gives up in time for the function to answer 503 itself.
#[tokio::test]
async fn a_table_that_never_answers_fails_before_the_deadline() {
    // Accepts connections and never answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let client = shared::config::dynamodb_client_at(TrustRoots::default(), Some(&endpoint)).await;
    let slow = DynamoStore::new(client, "slow");
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let token = token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    for budget in [Duration::from_millis(900), Duration::from_millis(1800)] {
        let started = Instant::now();
        let deadline = started + budget;
        let verified = deadline::within(
            Some(deadline),
            verify(
                &slow,
                &shared::token::TokenFormat::default(),
                &token,
                now_ms(),
            ),
        )
        .await;
        assert!(matches!(
            verified,
            Err(shared::store::Fault::Unavailable(_))
        ));
        let minted = deadline::within(
            Some(deadline),
            mint(
                &slow,
                &shared::token::TokenFormat::default(),
                Owner::from(&t.user),
                key_request(None),
                100,
                now_ms(),
            ),
        )
        .await;
        assert!(matches!(
            minted,
            Err(StoreError::Fault(shared::store::Fault::Unavailable(_)))
        ));
        // Both gave up with time left to answer (the SDK alone would wait 4 s per call).
        assert!(Instant::now() < deadline, "{budget:?}");
    }
}

/// Issue 4: the same logical write sent again (a new request token, or past DynamoDB's
/// 10-minute idempotency window) is recognised: the token stored is this one (same hash), and
/// the revocation is this call's (same time).
#[tokio::test]
async fn the_same_create_or_revocation_sent_again_is_recognised() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let user = add_user(&store, new_user(&t.platform, Role::User)).await;
    let issued =
        shared::token::TokenFormat::default().generate(TokenKind::ApiKey, user.id, now_ms());
    let new = shared::store::NewToken {
        parsed: issued.parsed.clone(),
        name: "once".into(),
        abilities: Abilities::full(),
        created_at_ms: now_ms().0,
        expires_at: None,
        parent_id: None,
        meta: None,
        imported: false,
    };
    for _ in 0..2 {
        store
            .create_token(
                Owner::from(&user),
                new.clone(),
                100,
                &shared::audit::Change::operator(),
                now_ms(),
            )
            .await
            .expect("the same token again is the same success");
    }
    assert_eq!(live_tokens(&store, &user).await, 1);
    let at = now_ms();
    for _ in 0..2 {
        assert!(store
            .revoke_token(
                user.id,
                TokenFamily::ApiKeys,
                issued.parsed.token_id,
                &shared::audit::Change::operator(),
                at
            )
            .await
            .unwrap());
    }
    assert_eq!(live_tokens(&store, &user).await, 0);
    assert!(!store
        .revoke_token(
            user.id,
            TokenFamily::ApiKeys,
            issued.parsed.token_id,
            &shared::audit::Change::operator(),
            EpochMs(at.0 + 1)
        )
        .await
        .unwrap());
}
