//! The store and authentication against DynamoDB Local.

use std::collections::HashSet;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use shared::auth::authenticate;
use shared::clock::EpochMs;
use shared::domain::{Abilities, CustomerId, Email, Role, TokenName, UserId, UserStatus};
use shared::error::ApiError;
use shared::mint::{mint, MintRequest};
use shared::store::traits::*;
use shared::store::{now_ms, DynamoStore, PermanentGeneration, Refusal, StoreError, TokenState};
use shared::test_support::{add_user, new_user, random_hex, service, tenant, token_for};
use shared::token::{self, TokenFamily, TokenKind};

fn owner(user: &shared::store::User) -> shared::store::Owner {
    shared::store::Owner::from(user)
}

fn request(kind: TokenKind, expires_at: Option<u64>) -> MintRequest {
    MintRequest {
        kind,
        name: TokenName::parse("key").unwrap(),
        abilities: Abilities::full(),
        expires_at,
        parent_id: None,
        change: shared::audit::Change::operator(),
        meta: None,
    }
}

#[tokio::test]
async fn fifty_parallel_user_creates_get_fifty_distinct_ids() {
    let (_, store) = service().await;
    let platform = store.create_platform("Acme", now_ms()).await.unwrap();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        let user = new_user(&platform, Role::User);
        tasks.push(tokio::spawn(async move {
            store
                .create_user(user, &shared::audit::Change::operator(), now_ms())
                .await
        }));
    }
    let mut ids = HashSet::new();
    for task in tasks {
        let user = task.await.unwrap().unwrap();
        assert!(ids.insert(user.id), "id {} handed out twice", user.id);
        assert_eq!(store.get_user(user.id).await.unwrap(), Some(user));
    }
    assert_eq!(ids.len(), 50);
}

#[tokio::test]
async fn emails_are_unique_per_platform_case_insensitively() {
    let (_, store) = service().await;
    let acme = store.create_platform("Acme", now_ms()).await.unwrap();
    let other = store.create_platform("Other", now_ms()).await.unwrap();
    let mut first = new_user(&acme, Role::User);
    first.email = Email::parse("Jane@Example.com").unwrap();
    let jane = add_user(&store, first).await;

    let mut again = new_user(&acme, Role::User);
    again.email = Email::parse("jane@EXAMPLE.com").unwrap();
    assert!(matches!(
        store
            .create_user(again.clone(), &shared::audit::Change::operator(), now_ms())
            .await,
        Err(StoreError::Refused(Refusal::EmailTaken))
    ));

    again.platform_id = other.id;
    let elsewhere = store
        .create_user(again, &shared::audit::Change::operator(), now_ms())
        .await
        .unwrap();
    assert_ne!(elsewhere.id, jane.id);

    let found = store
        .find_user_by_email(acme.id, &Email::parse("JANE@example.com").unwrap())
        .await
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(jane.id));
    let found = store
        .find_user_by_email(other.id, &Email::parse("jane@example.com").unwrap())
        .await
        .unwrap();
    assert_eq!(found.map(|u| u.id), Some(elsewhere.id));
}

#[tokio::test]
async fn customer_ids_and_imported_ids_are_unique() {
    let (_, store) = service().await;
    let acme = store.create_platform("Acme", now_ms()).await.unwrap();
    let customer = CustomerId::parse("048372910564").unwrap();
    let mut first = new_user(&acme, Role::User);
    first.customer_id = Some(customer.clone());
    first.id = Some(UserId(1));
    let first = add_user(&store, first).await;
    assert_eq!(first.id, UserId(1));

    let mut second = new_user(&acme, Role::User);
    second.customer_id = Some(customer.clone());
    assert!(matches!(
        store
            .create_user(second, &shared::audit::Change::operator(), now_ms())
            .await,
        Err(StoreError::Refused(Refusal::CustomerIdTaken))
    ));

    let mut imported = new_user(&acme, Role::User);
    imported.id = Some(UserId(1));
    assert!(matches!(
        store
            .create_user(imported, &shared::audit::Change::operator(), now_ms())
            .await,
        Err(StoreError::Refused(Refusal::UserIdTaken))
    ));

    // The counter starts at 1, which the import holds: allocation skips it.
    let allocated = add_user(&store, new_user(&acme, Role::User)).await;
    assert_eq!(allocated.id, UserId(2));

    let found = store.find_user_by_customer_id(&customer).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(first.id));

    let mut missing_platform = new_user(&acme, Role::User);
    missing_platform.platform_id = shared::domain::PlatformId(999_999);
    assert!(matches!(
        store
            .create_user(
                missing_platform,
                &shared::audit::Change::operator(),
                now_ms()
            )
            .await,
        Err(StoreError::Refused(Refusal::PlatformNotFound))
    ));
}

#[tokio::test]
async fn expired_tokens_are_rejected_and_unlisted_while_the_item_remains() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let now = now_ms();
    let expired = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::ApiKey, Some(now.0 / 1000 - 1)),
        100,
        now,
    )
    .await
    .unwrap();
    let live = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::ApiKey, Some(now.0 / 1000 + 3600)),
        100,
        now,
    )
    .await
    .unwrap();

    let result = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(expired.secret.expose()),
        now_ms(),
    )
    .await;
    assert!(matches!(result, Err(ApiError::Unauthenticated)));
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(live.secret.expose()),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(principal.user_id, t.user.id);

    let listed: Vec<_> = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(listed.contains(&live.record.id));
    assert!(!listed.contains(&expired.record.id));

    // DynamoDB's TTL has not removed it: the item is still there.
    let raw = store
        .get_token(t.user.id, TokenFamily::ApiKeys, expired.record.id)
        .await
        .unwrap()
        .expect("item still stored");
    assert_eq!(raw.state(now_ms()), TokenState::Expired);
}

#[tokio::test]
async fn a_revoked_token_fails_on_the_very_next_read() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let minted = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::Personal, None),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(minted.secret.expose()),
        now_ms()
    )
    .await
    .is_ok());
    let revoked = store
        .revoke_token(
            t.user.id,
            TokenFamily::Personal,
            minted.record.id,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    assert!(revoked);
    assert!(matches!(
        authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(minted.secret.expose()),
            now_ms()
        )
        .await,
        Err(ApiError::Unauthenticated)
    ));
    // Revoking twice finds nothing live.
    assert!(!store
        .revoke_token(
            t.user.id,
            TokenFamily::Personal,
            minted.record.id,
            &shared::audit::Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
    // Another user's partition never holds it.
    assert!(!store
        .revoke_token(
            t.admin.id,
            TokenFamily::Personal,
            minted.record.id,
            &shared::audit::Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
}

#[tokio::test]
async fn malformed_tokens_are_refused_without_a_database_call() {
    let (_, working) = service().await;
    let t = tenant(&working).await;
    // A store whose table does not exist: any read would fail with 503, not 401.
    let broken = DynamoStore::new(
        working.direct().client.clone(),
        format!("missing-{}", random_hex(4)),
    );
    let mut flipped = t.user_token.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'a' { 'b' } else { 'a' });
    for presented in [flipped.as_str(), "", "garbage", &t.user_token[..20]] {
        assert!(matches!(
            authenticate(
                &broken,
                &shared::token::TokenFormat::default(),
                Some(presented),
                now_ms()
            )
            .await,
            Err(ApiError::Unauthenticated)
        ));
    }
    // Control: a well-formed token does reach the (broken) database.
    assert!(matches!(
        authenticate(
            &broken,
            &shared::token::TokenFormat::default(),
            Some(&t.user_token),
            now_ms()
        )
        .await,
        Err(ApiError::Unavailable(_))
    ));
    // And the flipped token is refused by the working store too.
    assert!(matches!(
        authenticate(
            &working,
            &shared::token::TokenFormat::default(),
            Some(&flipped),
            now_ms()
        )
        .await,
        Err(ApiError::Unauthenticated)
    ));
}

#[tokio::test]
async fn a_forged_secret_for_a_real_record_is_refused() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let real = token::parse_any_prefix(&t.user_token).unwrap();
    // Same user and record id but another secret: only the hash comparison can refuse it.
    let other = token_for(&store, &t.user, TokenKind::ApiKey, Abilities::full()).await;
    let other = token::parse_any_prefix(&other).unwrap();
    assert_ne!(real.hash, other.hash);
    let record = store
        .get_token(t.user.id, TokenFamily::ApiKeys, real.token_id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.hash.matches(&real.hash));
    assert!(!record.hash.matches(&other.hash));
}

#[tokio::test]
async fn blocking_a_user_stops_its_tokens_and_new_ones() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    store
        .set_user_status(
            t.user.id,
            UserStatus::Blocked,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    assert!(matches!(
        authenticate(
            &store,
            &shared::token::TokenFormat::default(),
            Some(&t.user_token),
            now_ms()
        )
        .await,
        Err(ApiError::Unauthenticated)
    ));
    assert!(matches!(
        mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner(&t.user),
            request(TokenKind::ApiKey, None),
            100,
            now_ms()
        )
        .await,
        Err(StoreError::Refused(Refusal::UserBlocked))
    ));
    store
        .set_user_status(
            t.user.id,
            UserStatus::Active,
            &shared::audit::Change::operator(),
        )
        .await
        .unwrap();
    assert!(authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(&t.user_token),
        now_ms()
    )
    .await
    .is_ok());
    assert!(matches!(
        store
            .set_user_status(
                UserId(987_654),
                UserStatus::Blocked,
                &shared::audit::Change::operator()
            )
            .await,
        Err(StoreError::Refused(Refusal::UserNotFound))
    ));
}

#[tokio::test]
async fn the_cap_holds_under_concurrency_and_frees_expired_slots() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let store = Arc::new(store);
    let cap = 4;
    // The tenant's user already holds one API key.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = store.clone();
        let user = t.user.clone();
        let kind = if i % 2 == 0 {
            TokenKind::ApiKey
        } else {
            TokenKind::Personal
        };
        tasks.push(tokio::spawn(async move {
            mint(
                store.as_ref(),
                &shared::token::TokenFormat::default(),
                owner(&user),
                request(kind, None),
                cap,
                now_ms(),
            )
            .await
        }));
    }
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(StoreError::Refused(Refusal::TokenLimitReached { max })) => assert_eq!(max, cap),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(created, cap - 1);
    let live = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()
        .len()
        + store
            .list_tokens(t.user.id, TokenFamily::Personal, now_ms())
            .await
            .unwrap()
            .len();
    assert_eq!(live as u32, cap);

    // Customer tokens are not capped.
    mint(
        store.as_ref(),
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::Customer, None),
        cap,
        now_ms(),
    )
    .await
    .unwrap();

    // Revoking one frees a slot.
    let newest = store
        .list_tokens(t.user.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()[0]
        .clone();
    assert!(store
        .revoke_token(
            t.user.id,
            TokenFamily::ApiKeys,
            newest.id,
            &shared::audit::Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
    // Fill it with a token that expires at once; its slot comes back when the cap is hit.
    let soon = now_ms().seconds().0 + 1;
    mint(
        store.as_ref(),
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::ApiKey, Some(soon)),
        cap,
        now_ms(),
    )
    .await
    .unwrap();
    let later = (soon + 1) * 1000;
    mint(
        store.as_ref(),
        &shared::token::TokenFormat::default(),
        owner(&t.user),
        request(TokenKind::ApiKey, None),
        cap,
        EpochMs(later),
    )
    .await
    .unwrap();
    assert!(matches!(
        mint(
            store.as_ref(),
            &shared::token::TokenFormat::default(),
            owner(&t.user),
            request(TokenKind::ApiKey, None),
            cap,
            EpochMs(later)
        )
        .await,
        Err(StoreError::Refused(Refusal::TokenLimitReached { .. }))
    ));
}

#[tokio::test]
async fn listings_are_newest_first_and_per_family() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let mut ids = Vec::new();
    for offset in 1..=3 {
        let minted = mint(
            &store,
            &shared::token::TokenFormat::default(),
            owner(&t.admin),
            request(TokenKind::WhiteLabel, None),
            100,
            EpochMs(now_ms().0 + offset),
        )
        .await
        .unwrap();
        ids.push(minted.record.id);
    }
    let personal = mint(
        &store,
        &shared::token::TokenFormat::default(),
        owner(&t.admin),
        request(TokenKind::Personal, None),
        100,
        now_ms(),
    )
    .await
    .unwrap();
    let listed: Vec<_> = store
        .list_tokens(t.admin.id, TokenFamily::ApiKeys, now_ms())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    // Three white-label tokens (same family as API keys) and the tenant's API key, newest first.
    assert_eq!(listed.len(), 4);
    assert_eq!(&listed[..3], &[ids[2], ids[1], ids[0]]);
    let personal_list = store
        .list_tokens(t.admin.id, TokenFamily::Personal, now_ms())
        .await
        .unwrap();
    assert_eq!(personal_list.len(), 1);
    assert_eq!(personal_list[0].id, personal.record.id);
}

/// The permanent token of `generation` for `user`, as `GET /ext/get-user-token` derives it.
/// The record of `user`'s permanent token of `generation`, the one candidate of the default
/// prefix.
fn permanent(
    key: &token::PermanentKey,
    user: UserId,
    generation: u32,
) -> Vec<shared::store::NewToken> {
    vec![shared::store::NewToken {
        parsed: key
            .derive(&shared::token::Prefix::default(), user, generation)
            .parsed,
        name: "permanent".into(),
        abilities: Abilities::full(),
        created_at_ms: now_ms().0,
        expires_at: None,
        parent_id: None,
        meta: None,
        imported: false,
    }]
}

#[tokio::test]
async fn the_permanent_token_is_written_once_and_authenticates() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let key = service.config.permanent_key().unwrap();
    let issued = key.derive(
        &shared::token::Prefix::default(),
        t.user.id,
        t.user.permanent_generation,
    );
    let derive = |generation| permanent(key, t.user.id, generation);
    let generation = store
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
    assert_eq!(generation, t.user.permanent_generation);
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    assert!(user.permanent_issued);
    // A second call (even with a stale profile) changes nothing and fails nothing.
    for profile in [&t.user, &user] {
        let again = store
            .issue_permanent_token(
                profile,
                &derive,
                PermanentGeneration::Working,
                &shared::audit::Change::operator(),
                now_ms(),
            )
            .await
            .unwrap()
            .generation;
        assert_eq!(again, generation);
    }
    let principal = authenticate(
        &store,
        &shared::token::TokenFormat::default(),
        Some(issued.secret.expose()),
        now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(principal.kind, TokenKind::Permanent);

    // Only the hash is stored.
    let item = store
        .direct()
        .client
        .get_item()
        .table_name(store.direct().table)
        .key("pk", AttributeValue::S(format!("USER#{}", t.user.id)))
        .key(
            "sk",
            AttributeValue::S(format!("TOKEN#u#{}", issued.parsed.token_id)),
        )
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!format!("{item:?}").contains(issued.secret.expose()));
}

#[tokio::test]
async fn a_record_id_is_never_overwritten() {
    let (_, store) = service().await;
    let t = tenant(&store).await;
    let issued =
        shared::token::TokenFormat::default().generate(TokenKind::ApiKey, t.user.id, now_ms());
    let new = shared::store::NewToken {
        parsed: issued.parsed.clone(),
        name: "first".into(),
        abilities: Abilities::full(),
        created_at_ms: now_ms().0,
        expires_at: None,
        parent_id: None,
        meta: None,
        imported: false,
    };
    store
        .create_token(
            owner(&t.user),
            new.clone(),
            100,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    // Another token (another secret) that drew the same record id.
    let other =
        shared::token::TokenFormat::default().generate(TokenKind::ApiKey, t.user.id, now_ms());
    let again = shared::store::NewToken {
        name: "second".into(),
        parsed: token::ParsedToken {
            hash: other.parsed.hash,
            ..issued.parsed.clone()
        },
        ..new
    };
    assert!(matches!(
        store
            .create_token(
                owner(&t.user),
                again,
                100,
                &shared::audit::Change::operator(),
                now_ms()
            )
            .await,
        Err(StoreError::Refused(Refusal::TokenIdTaken))
    ));
    let stored = store
        .get_token(t.user.id, TokenFamily::ApiKeys, issued.parsed.token_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "first");
}

/// `fresh` authenticates and `old` no longer does.
async fn only_the_first_works(
    store: &DynamoStore,
    fresh: &token::IssuedToken,
    old: &token::IssuedToken,
) {
    let works = |t: &token::IssuedToken| {
        let secret = t.secret.expose().to_string();
        async move {
            authenticate(
                store,
                &shared::token::TokenFormat::default(),
                Some(&secret),
                now_ms(),
            )
            .await
            .is_ok()
        }
    };
    assert!(works(fresh).await, "the new permanent key works");
    assert!(
        !works(old).await,
        "the previous permanent key no longer does"
    );
}

#[tokio::test]
async fn a_revoked_permanent_record_moves_the_user_to_a_working_next_generation() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let key = service.config.permanent_key().unwrap();
    let derive = |generation| permanent(key, t.user.id, generation);
    let first = store
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
    let old = key.derive(&shared::token::Prefix::default(), t.user.id, first);
    assert!(store
        .revoke_token(
            t.user.id,
            TokenFamily::Permanent,
            old.parsed.token_id,
            &shared::audit::Change::operator(),
            now_ms()
        )
        .await
        .unwrap());
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    let next = store
        .issue_permanent_token(
            &user,
            &derive,
            PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap()
        .generation;
    assert_eq!(next, first + 1);
    only_the_first_works(
        &store,
        &key.derive(&shared::token::Prefix::default(), t.user.id, next),
        &old,
    )
    .await;
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    assert_eq!(
        (user.permanent_generation, user.permanent_issued),
        (next, true)
    );
}

#[tokio::test]
async fn a_new_server_key_moves_every_permanent_token_on_and_retires_the_old_one() {
    let (service, store) = service().await;
    let t = tenant(&store).await;
    let old_key = service.config.permanent_key().unwrap();
    let first = store
        .issue_permanent_token(
            &t.user,
            &|g| permanent(old_key, t.user.id, g),
            PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap()
        .generation;
    let old = old_key.derive(&shared::token::Prefix::default(), t.user.id, first);

    let new_key = token::PermanentKey::new(random_hex(32).as_bytes()).unwrap();
    let user = store.get_user(t.user.id).await.unwrap().unwrap();
    let next = store
        .issue_permanent_token(
            &user,
            &|g| permanent(&new_key, t.user.id, g),
            PermanentGeneration::Working,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap()
        .generation;
    assert_eq!(next, first + 1);
    // The key the old server key made stops working with the move.
    only_the_first_works(
        &store,
        &new_key.derive(&shared::token::Prefix::default(), t.user.id, next),
        &old,
    )
    .await;
}

#[tokio::test]
async fn batch_revocation_leaves_what_changed_meanwhile_and_counts_slots_once() {
    use shared::store::{Leak, Revocation, TokenAddress};

    let (_, store) = service().await;
    let t = tenant(&store).await;
    let mut minted = Vec::new();
    for kind in [
        TokenKind::ApiKey,
        TokenKind::Personal,
        TokenKind::Customer,
        TokenKind::ApiKey,
    ] {
        minted.push(
            mint(
                &store,
                &shared::token::TokenFormat::default(),
                owner(&t.user),
                request(kind, None),
                100,
                now_ms(),
            )
            .await
            .unwrap(),
        );
    }
    let addresses: Vec<TokenAddress> = minted
        .iter()
        .map(|m| m.record.address())
        .chain([minted[0].record.address()])
        .collect();
    // The same address twice (BatchGetItem refuses duplicate keys) and a user read with them.
    let found = store
        .find_tokens(&addresses, &[t.user.id, t.user.id])
        .await
        .unwrap();
    assert_eq!(found.tokens.len(), 4);
    assert_eq!(found.users[&t.user.id].id, t.user.id);
    // One is deleted after it was read: the batch's transaction fails on it, and the others are
    // revoked one at a time.
    store
        .revoke_token(
            t.user.id,
            TokenFamily::ApiKeys,
            minted[3].record.id,
            &shared::audit::Change::operator(),
            now_ms(),
        )
        .await
        .unwrap();
    let leak = Revocation::Leaked(Leak::new(
        Some("https://example.com/x"),
        Some("x".repeat(3000).as_str()),
    ));
    let revoking: Vec<_> = addresses[..4]
        .iter()
        .map(|a| (found.tokens[a].clone(), leak.clone()))
        .collect();
    assert_eq!(
        store
            .revoke_tokens(&revoking, &shared::audit::Change::operator(), now_ms())
            .await
            .unwrap(),
        3
    );
    let after = store.find_tokens(&addresses, &[t.user.id]).await.unwrap();
    for (i, address) in addresses[..4].iter().enumerate() {
        let record = &after.tokens[address];
        assert_eq!(record.state(now_ms()), TokenState::Revoked);
        let expected = if i == 3 {
            Revocation::Deleted
        } else {
            leak.clone()
        };
        assert_eq!(record.revocation, Some(expected));
    }
    let Some(Revocation::Leaked(kept)) = &after.tokens[&addresses[0]].revocation else {
        panic!("leaked")
    };
    assert_eq!(
        kept.source.as_ref().map(|s| s.chars().count()),
        Some(Leak::MAX_CHARS)
    );
    // Every slot given back once: both counters at zero (the tenant's own key aside).
    let profile = store
        .direct()
        .client
        .get_item()
        .table_name(store.direct().table)
        .key("pk", AttributeValue::S(format!("USER#{}", t.user.id)))
        .key("sk", AttributeValue::S("PROFILE".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(profile["live_tokens"], AttributeValue::N("1".into()));
    assert_eq!(
        profile["live_customer_tokens"],
        AttributeValue::N("0".into())
    );
    // Revoking them again revokes nothing.
    assert_eq!(
        store
            .revoke_tokens(&revoking, &shared::audit::Change::operator(), now_ms())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn init_adds_the_audit_index_to_a_table_made_before_it() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let (_, store) = service().await;
    let client = store.direct().client;
    let name = format!("old-{}", random_hex(6));
    let mut create = client
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attribute, kind) in [("pk", KeyType::Hash), ("sk", KeyType::Range)] {
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(kind)
                    .build()
                    .unwrap(),
            );
    }
    create.send().await.unwrap();
    let outcome = shared::store::schema::create_table(client, &name)
        .await
        .unwrap();
    assert_eq!(outcome, shared::store::schema::TableOutcome::AlreadyExisted);
    let described = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    let indexes: Vec<&str> = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name())
        .collect();
    assert_eq!(indexes, ["platform-audit", "expiry-day"]);
    let stream = described.table().unwrap().stream_specification().unwrap();
    assert!(stream.stream_enabled(), "an old table gets the stream");
    // Events of the old table's users are listed through it at once.
    let old = DynamoStore::new(client.clone(), name);
    let t = tenant(&old).await;
    let page = old
        .list_events(shared::store::EventScope::Platform(t.platform.id), 10, None)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 4);
}
