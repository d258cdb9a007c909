//! Items to records and back: every record round-trips, damaged items are errors.

use super::*;
use crate::token::{PermanentKey, Prefix, TokenFormat};

fn user() -> User {
    User {
        id: UserId(123),
        platform_id: PlatformId(4),
        name: "John Doe".into(),
        email: "John@Example.com".into(),
        role: Role::Admin,
        status: UserStatus::Blocked,
        customer_id: CustomerId::parse("048372910564"),
        workspaces: vec![
            Workspace {
                name: "Main".into(),
                status: WorkspaceStatus::Active,
            },
            Workspace {
                name: "Old".into(),
                status: WorkspaceStatus::Inactive,
            },
        ],
        permanent_generation: 3,
        permanent_issued: true,
        created_at_ms: 1_736_332_200_000,
        meter: Some(Meter {
            limits: Limits {
                credits: Some(Credits {
                    remaining: 9,
                    refill: Some(Refill {
                        amount: 100,
                        interval: Interval::Month,
                    }),
                }),
                rate_limit: Some(RateLimit {
                    limit: 5,
                    window_seconds: 60,
                }),
            },
            refilled_for: 1_735_689_600,
            window_start: 1_736_332_200,
            window_used: 3,
            credits_full: Some(100),
        }),
        external_id: None,
        meta: None,
    }
}

fn token(kind: TokenKind) -> TokenRecord {
    let issued = TokenFormat::default().generate(kind, UserId(123), EpochMs(1_736_332_200_123));
    TokenRecord {
        id: issued.parsed.token_id,
        user_id: UserId(123),
        platform_id: PlatformId(4),
        kind,
        name: "CI Pipeline ✓".into(),
        abilities: Abilities::parse(vec!["calls:read".into(), "leads:write".into()]).unwrap(),
        hash: issued.parsed.hash,
        created_at_ms: 1_736_332_200_123,
        expires_at: Some(1_743_033_600),
        last_used_at_ms: Some(1_736_332_300_000),
        revoked_at_ms: None,
        revocation: None,
        parent_id: Some(PublicTokenId {
            user_id: UserId(123),
            token_id: TokenId::permanent(7),
        }),
        enabled: false,
        rolled_to: Some(TokenId::permanent(8)),
        predecessor: Some(Predecessor {
            id: TokenId::permanent(6),
            until: 1_736_332_260,
        }),
        meter: Some(Meter {
            limits: Limits {
                credits: Some(Credits {
                    remaining: 0,
                    refill: None,
                }),
                rate_limit: None,
            },
            ..Meter::default()
        }),
        meta: None,
        imported: false,
    }
}

#[test]
fn users_round_trip() {
    let user = user();
    let item = user_item(&user);
    assert_eq!(item["pk"], s("USER#123"));
    assert_eq!(item["sk"], s("PROFILE"));
    assert_eq!(item["customer_id"], s("048372910564"));
    assert_eq!(user_from_item(&item).unwrap(), user);
    assert_eq!(item["credits"], n(9));
    assert_eq!(item["refill_interval"], s("month"));
    let mut plain = User {
        customer_id: None,
        workspaces: vec![],
        meter: None,
        ..user
    };
    plain.permanent_issued = false;
    let item = user_item(&plain);
    assert!(!item.contains_key("customer_id"));
    assert!(METER_ATTRIBUTES.iter().all(|a| !item.contains_key(*a)));
    assert_eq!(user_from_item(&item).unwrap(), plain);
}

#[test]
fn an_imported_token_keeps_its_mark() {
    let record = TokenRecord {
        imported: true,
        ..token(TokenKind::ApiKey)
    };
    let item = token_item(&record);
    assert_eq!(item["imported"], AttributeValue::Bool(true));
    assert_eq!(token_from_item(&item).unwrap(), record);
    assert!(!token_item(&token(TokenKind::ApiKey)).contains_key("imported"));
}

#[test]
fn tokens_round_trip_and_keep_no_plaintext() {
    for kind in TokenKind::ALL {
        let record = token(kind);
        let item = token_item(&record);
        assert_eq!(item["pk"], s("USER#123"));
        let sk = item["sk"].as_s().unwrap();
        assert!(sk.starts_with(&token_sort_prefix(kind.family())), "{sk}");
        assert!(sk.ends_with(&record.id.to_string()));
        assert_eq!(item["valid_until"], n(1_743_033_600u64));
        assert!(!item.contains_key("expires_at"), "TTL waits for the slot");
        assert_eq!(item["predecessor_until"], n(1_736_332_260u64));
        assert_eq!(token_from_item(&item).unwrap(), record);
        // A child item points back to it from its parent's partition.
        let child = child_item(&record).unwrap();
        assert_eq!(child["pk"], s("USER#123"));
        let prefix = child_prefix(TokenId::permanent(7));
        assert!(child["sk"].as_s().unwrap().starts_with(&prefix));
        assert_eq!(child["expires_at"], n(1_743_033_600u64));
        assert_eq!(address_from_item(&child).unwrap(), record.address());
    }
    let never = TokenRecord {
        expires_at: None,
        last_used_at_ms: None,
        revoked_at_ms: Some(5),
        revocation: Some(Revocation::Leaked(Leak {
            url: Some("https://github.com/o/r/blob/1/.env".into()),
            source: None,
            parent: Some(PublicTokenId {
                user_id: UserId(9),
                token_id: TokenId::permanent(2),
            }),
        })),
        parent_id: None,
        enabled: true,
        rolled_to: None,
        predecessor: None,
        ..token(TokenKind::ApiKey)
    };
    let item = token_item(&never);
    assert!(!item.contains_key("valid_until"));
    assert!(!item.contains_key("rolled_from"));
    assert_eq!(
        item["leak_parent"],
        s(format!("9-{}", TokenId::permanent(2)))
    );
    assert!(!item.contains_key("parent_id"));
    assert_eq!(item["revoked_reason"], s("leaked"));
    assert!(!item.contains_key("leak_source"));
    assert!(
        !item.contains_key("enabled"),
        "enabled is the default, not stored"
    );
    assert_eq!(token_from_item(&item).unwrap(), never);
}

#[test]
fn permanent_items_store_only_the_hash() {
    let key = PermanentKey::new(&[1; 32]).unwrap();
    let issued = key.derive(&Prefix::default(), UserId(123), 1);
    let record = TokenRecord {
        id: issued.parsed.token_id,
        hash: issued.parsed.hash,
        ..token(TokenKind::Permanent)
    };
    let item = format!("{:?}", token_item(&record));
    assert!(!item.contains(issued.secret.expose()));
}

#[test]
fn platforms_round_trip() {
    let platform = Platform {
        id: PlatformId(9),
        name: "Acme".into(),
        created_at_ms: 1,
    };
    assert_eq!(
        platform_from_item(&platform_item(&platform)).unwrap(),
        platform
    );
}

#[test]
fn revocations_before_reasons_were_kept_read_as_deleted() {
    let revoked = TokenRecord {
        revoked_at_ms: Some(5),
        revocation: Some(Revocation::SelfRevoked),
        ..token(TokenKind::Personal)
    };
    let mut item = token_item(&revoked);
    assert_eq!(item["revoked_reason"], s("self_revoked"));
    assert_eq!(token_from_item(&item).unwrap(), revoked);
    item.remove("revoked_reason");
    assert_eq!(
        token_from_item(&item).unwrap().revocation,
        Some(Revocation::Deleted)
    );
    item.insert("revoked_reason".into(), s("lost"));
    assert!(matches!(token_from_item(&item), Err(Fault::Corrupt(_))));
}

#[test]
fn damaged_items_are_reported_not_panicked_on() {
    let mut item = token_item(&token(TokenKind::ApiKey));
    item.insert("hash".into(), s("not binary"));
    assert!(matches!(token_from_item(&item), Err(Fault::Corrupt(_))));
    let mut item = user_item(&user());
    item.insert("role".into(), s("root"));
    assert!(matches!(user_from_item(&item), Err(Fault::Corrupt(_))));
    item.remove("id");
    assert!(matches!(user_from_item(&item), Err(Fault::Corrupt(_))));
}
