//! Item <-> record conversion and the key layout, in one place.
//!
//! | item       | pk                          | sk                      |
//! |------------|-----------------------------|-------------------------|
//! | platform   | `PLATFORM#<id>`             | `PLATFORM`              |
//! | id counter | `COUNTER#<name>`            | `COUNTER`               |
//! | user       | `USER#<id>`                 | `PROFILE`               |
//! | email      | `EMAIL#<platform>#<lower>`  | `EMAIL`                 |
//! | customer   | `CUSTOMER#<12 digits>`      | `CUSTOMER`              |
//! | external id| `EXTERNAL#<platform>#<id>`  | `EXTERNAL`              |
//! | member     | `MEMBERS#<platform>`        | `USER#<20-digit id>`    |
//! | registry   | `PLATFORMS`                 | `PLATFORM#<20-digit id>`|
//! | token      | `USER#<owner id>`           | `TOKEN#<family>#<id>`   |
//! | retired    | `USER#<owner id>`           | `GONE#<family>#<id>`    |
//! | child      | `USER#<parent's owner>`     | `CHILD#<parent id>#<child's public id>#<family>` |
//! | imported   | `IMPORTED#<SHA-256 hex>`    | `IMPORTED`              |
//!
//! A user's tokens share its partition, so a listing is one Query on `begins_with(sk, ...)` and
//! token ids sort by creation time. A revoked token, and an expired one whose slot was given
//! back, moves out of its family's range into a `GONE#` item (same attributes), so what a
//! listing or a capped create reads stays proportional to the tokens that hold a slot, however
//! many a client has revoked; verification still finds the retired item to say why.
//!
//! A child item points from a token to one minted with it (a successor of a roll included):
//! written in the child's creation transaction, it lets a leak's response find every
//! descendant with one strongly consistent Query per token, wherever their owners are.
//!
//! An import pointer leads from the SHA-256 of another system's secret to the record of the
//! token it was imported as (written in that token's creation transaction, kept for good): a
//! presented string that is not one of this service's tokens is found with one GetItem on it.
//!
//! A token's own expiry is `valid_until`. DynamoDB's TTL attribute `expires_at` is written on a
//! token only once its cap slot has been given back (revocation, or the release of an expired
//! token), so TTL can never delete an item whose slot is still counted on the profile.

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Fault, Leak, Platform, Predecessor, Revocation, TokenAddress, TokenRecord, User};
use crate::audit::Event;
use crate::clock::EpochMs;
use crate::domain::{
    Abilities, CustomerId, ExternalId, Meta, PlatformId, Role, UserId, UserStatus, Workspace,
    WorkspaceStatus,
};
use crate::limits::{Credits, Interval, Limits, Meter, RateLimit, Refill};
use crate::token::{hex, CapCounter, PublicTokenId, TokenFamily, TokenHash, TokenId, TokenKind};

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

pub(super) const PK: &str = "pk";
pub(super) const SK: &str = "sk";
/// A token's own expiry (epoch seconds); see the module documentation.
pub(super) const VALID_UNTIL: &str = "valid_until";

/// Present (and `false`) only on a disabled token.
pub(super) const ENABLED: &str = "enabled";

/// The successor's record id, on a rolled token.
pub(super) const ROLLED_TO: &str = "rolled_to";

/// The predecessor's record id and the end of its grace period, on a successor.
const ROLLED_FROM: &str = "rolled_from";
const PREDECESSOR_UNTIL: &str = "predecessor_until";

/// Sort-key prefix of the child items of a token (see the module documentation).
pub(super) const CHILD_PREFIX: &str = "CHILD#";

/// A metered record's usage limits and counters (see [`crate::limits::Meter`]), on a user's
/// profile or a token; all absent on an unmetered one.
pub(super) const CREDITS: &str = "credits";
pub(super) const REFILL_AMOUNT: &str = "refill_amount";
pub(super) const REFILL_INTERVAL: &str = "refill_interval";
pub(super) const REFILLED_FOR: &str = "refilled_for";
pub(super) const RATE_LIMIT: &str = "rate_limit";
pub(super) const RATE_WINDOW: &str = "rate_window";
pub(super) const WINDOW_START: &str = "window_start";
pub(super) const WINDOW_USED: &str = "window_used";
pub(super) const CREDITS_FULL: &str = "credits_full";

/// Every attribute of a meter, so that setting limits can remove the ones not set.
pub(super) const METER_ATTRIBUTES: [&str; 9] = [
    CREDITS,
    REFILL_AMOUNT,
    REFILL_INTERVAL,
    REFILLED_FOR,
    RATE_LIMIT,
    RATE_WINDOW,
    WINDOW_START,
    WINDOW_USED,
    CREDITS_FULL,
];

/// The attributes (name, value) a meter is stored as.
pub(super) fn meter_attributes(meter: &Meter) -> Vec<(&'static str, AttributeValue)> {
    let mut attributes = Vec::new();
    if let Some(credits) = meter.limits.credits {
        attributes.push((CREDITS, n(credits.remaining)));
        if let Some(refill) = credits.refill {
            attributes.push((REFILL_AMOUNT, n(refill.amount)));
            attributes.push((REFILL_INTERVAL, s(refill.interval.as_str())));
            attributes.push((REFILLED_FOR, n(meter.refilled_for)));
        }
        if let Some(full) = meter.credits_full {
            attributes.push((CREDITS_FULL, n(full)));
        }
    }
    if let Some(rate) = meter.limits.rate_limit {
        attributes.push((RATE_LIMIT, n(rate.limit)));
        attributes.push((RATE_WINDOW, n(rate.window_seconds)));
        attributes.push((WINDOW_START, n(meter.window_start)));
        attributes.push((WINDOW_USED, n(meter.window_used)));
    }
    attributes
}

/// The meter an item holds; `None` when it has no limits.
fn meter_from_item(item: &Item) -> Result<Option<Meter>, Fault> {
    let r = Reader(item);
    let refill = match r.optional_number(REFILL_AMOUNT)? {
        Some(amount) => Some(Refill {
            amount,
            interval: r.parsed(REFILL_INTERVAL, Interval::from_name)?,
        }),
        None => None,
    };
    let credits = r
        .optional_number(CREDITS)?
        .map(|remaining| Credits { remaining, refill });
    let rate_limit = match r.optional_number(RATE_LIMIT)? {
        Some(limit) => Some(RateLimit {
            limit,
            window_seconds: r.number(RATE_WINDOW)?,
        }),
        None => None,
    };
    let limits = Limits {
        credits,
        rate_limit,
    };
    if limits.is_unlimited() {
        return Ok(None);
    }
    Ok(Some(Meter {
        limits,
        refilled_for: r.optional_number(REFILLED_FOR)?.unwrap_or(0),
        window_start: r.optional_number(WINDOW_START)?.unwrap_or(0),
        window_used: r.optional_number(WINDOW_USED)?.unwrap_or(0),
        credits_full: r.optional_number(CREDITS_FULL)?,
    }))
}

/// Sort-key prefix of a user's audit events.
pub const AUDIT_PREFIX: &str = "AUDIT#";

/// The platform of an audit event: the partition key of the platform-wide index.
pub const AUDIT_PLATFORM: &str = "audit_platform";

/// The index of every platform's events, newest last by `sk`.
pub const AUDIT_INDEX: &str = "platform-audit";

/// An audit event's item, in its target user's partition, with the platform for the index and
/// the TTL attribute; the event itself as the API shows it.
pub(super) fn event_item(event: &Event, expires_at: u64) -> Item {
    let mut item = keyed(&Key::event(event.target.user_id, &event.id), "audit");
    item.insert(AUDIT_PLATFORM.into(), s(event.platform_id.to_string()));
    item.insert("event".into(), s(event.view().to_string()));
    item.insert(TTL_ATTRIBUTE.into(), n(expires_at));
    item
}

/// The event an item holds, as the API shows it.
pub(super) fn event_from_item(item: &Item) -> Result<serde_json::Value, Fault> {
    let text = Reader(item).string("event")?;
    serde_json::from_str(&text).map_err(|_| corrupt("event", "a JSON event"))
}

/// Attribute DynamoDB's TTL deletes expired items by (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Why a revoked token was revoked, and where a leaked one was found.
const REVOKED_REASON: &str = "revoked_reason";
const LEAK_URL: &str = "leak_url";
const LEAK_SOURCE: &str = "leak_source";
const LEAK_PARENT: &str = "leak_parent";

/// The primary key of one item (public so `make bench` can issue the raw operations a route
/// makes against the very same items).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub(super) fn fixed(pk: String, sk: &str) -> Key {
        Key { pk, sk: sk.into() }
    }

    pub fn platform(id: PlatformId) -> Key {
        Key::fixed(format!("PLATFORM#{id}"), "PLATFORM")
    }

    pub fn counter(name: &str) -> Key {
        Key::fixed(format!("COUNTER#{name}"), "COUNTER")
    }

    pub fn user(id: UserId) -> Key {
        Key::fixed(user_partition(id), "PROFILE")
    }

    pub fn email(platform: PlatformId, normalized: &str) -> Key {
        Key::fixed(format!("EMAIL#{platform}#{normalized}"), "EMAIL")
    }

    pub fn customer(customer: &CustomerId) -> Key {
        Key::fixed(format!("CUSTOMER#{}", customer.as_str()), "CUSTOMER")
    }

    /// A user's external id, unique within its platform (the id may hold any character but
    /// controls; the platform's number ends at the first `#`).
    pub fn external(platform: PlatformId, external: &ExternalId) -> Key {
        Key::fixed(
            format!("EXTERNAL#{platform}#{}", external.as_str()),
            "EXTERNAL",
        )
    }

    /// The import pointer of the token whose secret hashes to `hash`.
    pub fn imported(hash: &TokenHash) -> Key {
        Key::fixed(format!("IMPORTED#{}", hex(&hash.0)), "IMPORTED")
    }

    /// A platform's place in the registry of platforms (ids zero-padded, so they sort).
    pub fn registered(platform: PlatformId) -> Key {
        Key {
            pk: PLATFORMS.into(),
            sk: format!("PLATFORM#{:020}", platform.0),
        }
    }

    /// A user's place in its platform's directory listing (ids zero-padded, so they sort).
    pub fn member(platform: PlatformId, user: UserId) -> Key {
        Key {
            pk: members_partition(platform),
            sk: format!("USER#{:020}", user.0),
        }
    }

    pub fn token(user: UserId, family: TokenFamily, id: TokenId) -> Key {
        Key {
            pk: user_partition(user),
            sk: format!("{}{id}", token_sort_prefix(family)),
        }
    }

    /// An audit event of `user` (the change's target): ids begin with the time, so a user's
    /// events sort by time.
    pub fn event(user: UserId, id: &str) -> Key {
        Key {
            pk: user_partition(user),
            sk: format!("{AUDIT_PREFIX}{id}"),
        }
    }

    /// The child item of `child`, minted with the token `parent` (in the parent owner's
    /// partition).
    pub fn child(parent: PublicTokenId, child: TokenAddress) -> Key {
        Key {
            pk: user_partition(parent.user_id),
            sk: format!(
                "{}{}#{}#{}",
                child_prefix(parent.token_id),
                child.user_id,
                child.id,
                child.family.key_segment()
            ),
        }
    }

    /// Where a revoked or released token is kept until DynamoDB's TTL deletes it.
    pub fn retired(user: UserId, family: TokenFamily, id: TokenId) -> Key {
        Key {
            pk: user_partition(user),
            sk: format!("GONE#{}#{id}", family.key_segment()),
        }
    }

    /// The key as an item map, for GetItem, UpdateItem and DeleteItem.
    pub fn to_item(&self) -> Item {
        HashMap::from([(PK.to_string(), s(&self.pk)), (SK.to_string(), s(&self.sk))])
    }
}

/// The partition of the platforms' registry items.
pub(super) const PLATFORMS: &str = "PLATFORMS";

pub(super) fn members_partition(platform: PlatformId) -> String {
    format!("MEMBERS#{platform}")
}

pub(super) fn user_partition(id: UserId) -> String {
    format!("USER#{id}")
}

/// Sort-key prefix of the child items of the token `parent` inside its owner's partition.
pub(super) fn child_prefix(parent: TokenId) -> String {
    format!("{CHILD_PREFIX}{parent}#")
}

/// Sort-key prefix of every live token inside the owner's partition.
pub(super) const TOKEN_PREFIX: &str = "TOKEN#";

/// Sort-key prefix of one family's tokens inside the owner's partition.
pub fn token_sort_prefix(family: TokenFamily) -> String {
    format!("{TOKEN_PREFIX}{}#", family.key_segment())
}

pub(super) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(super) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Starts an item with its key and type.
fn keyed(key: &Key, kind: &str) -> Item {
    let mut item = key.to_item();
    item.insert("type".into(), s(kind));
    item
}

pub(super) fn platform_item(platform: &Platform) -> Item {
    platform_item_at(&Key::platform(platform.id), platform)
}

/// A platform's attributes under `key`: its own item, or its registry item.
pub(super) fn platform_item_at(key: &Key, platform: &Platform) -> Item {
    let mut item = keyed(key, "platform");
    item.insert("id".into(), n(platform.id.0));
    item.insert("name".into(), s(&platform.name));
    item.insert("created_at".into(), n(platform.created_at_ms));
    item
}

pub(super) fn platform_from_item(item: &Item) -> Result<Platform, Fault> {
    let r = Reader(item);
    Ok(Platform {
        id: PlatformId(r.number("id")?),
        name: r.string("name")?,
        created_at_ms: r.number("created_at")?,
    })
}

pub(super) fn user_item(user: &User) -> Item {
    let mut item = keyed(&Key::user(user.id), "user");
    item.insert("id".into(), n(user.id.0));
    item.insert("platform_id".into(), n(user.platform_id.0));
    item.insert("name".into(), s(&user.name));
    item.insert("email".into(), s(&user.email));
    item.insert("role".into(), s(user.role.as_str()));
    item.insert("status".into(), s(user.status.as_str()));
    if let Some(customer) = &user.customer_id {
        item.insert("customer_id".into(), s(customer.as_str()));
    }
    if let Some(external) = &user.external_id {
        item.insert(EXTERNAL_ID.into(), s(external.as_str()));
    }
    insert_meta(&mut item, user.meta.as_ref());
    let workspaces = user
        .workspaces
        .iter()
        .map(|w| {
            AttributeValue::M(HashMap::from([
                ("name".to_string(), s(&w.name)),
                ("status".to_string(), s(w.status.as_str())),
            ]))
        })
        .collect();
    item.insert("workspaces".into(), AttributeValue::L(workspaces));
    item.insert("permanent_generation".into(), n(user.permanent_generation));
    item.insert(
        "permanent_issued".into(),
        AttributeValue::Bool(user.permanent_issued),
    );
    for counter in [CapCounter::Tokens, CapCounter::CustomerTokens] {
        item.insert(counter.attribute().into(), n(0));
    }
    item.insert("created_at".into(), n(user.created_at_ms));
    if let Some(meter) = &user.meter {
        item.extend(
            meter_attributes(meter)
                .into_iter()
                .map(|(k, v)| (k.into(), v)),
        );
    }
    item
}

pub(super) fn user_from_item(item: &Item) -> Result<User, Fault> {
    let r = Reader(item);
    let workspaces = r
        .list("workspaces")?
        .iter()
        .map(|w| {
            let map = w
                .as_m()
                .map_err(|_| corrupt("workspaces", "a list of maps"))?;
            let w = Reader(map);
            Ok(Workspace {
                name: w.string("name")?,
                status: w.parsed("status", WorkspaceStatus::from_name)?,
            })
        })
        .collect::<Result<Vec<_>, Fault>>()?;
    Ok(User {
        id: UserId(r.number("id")?),
        platform_id: PlatformId(r.number("platform_id")?),
        name: r.string("name")?,
        email: r.string("email")?,
        role: r.parsed("role", Role::from_name)?,
        status: r.parsed("status", UserStatus::from_name)?,
        customer_id: r
            .optional_string("customer_id")?
            .map(|c| CustomerId::parse(&c).ok_or_else(|| corrupt("customer_id", "12 digits")))
            .transpose()?,
        external_id: r
            .optional_string(EXTERNAL_ID)?
            .map(|x| {
                ExternalId::parse(&x).ok_or_else(|| corrupt(EXTERNAL_ID, "1 to 128 characters"))
            })
            .transpose()?,
        meta: meta_from_item(item)?,
        workspaces,
        permanent_generation: r.number("permanent_generation")?,
        permanent_issued: matches!(
            item.get("permanent_issued"),
            Some(AttributeValue::Bool(true))
        ),
        created_at_ms: r.number("created_at")?,
        meter: meter_from_item(item)?,
    })
}

/// The platform's id of a user, and the data a platform keeps on a user or a token (an
/// object, as compact JSON).
const EXTERNAL_ID: &str = "external_id";
pub(super) const META: &str = "meta";

fn insert_meta(item: &mut Item, meta: Option<&Meta>) {
    if let Some(meta) = meta {
        item.insert(META.into(), s(meta.to_json()));
    }
}

fn meta_from_item(item: &Item) -> Result<Option<Meta>, Fault> {
    Reader(item)
        .optional_string(META)?
        .map(|text| {
            serde_json::from_str(&text)
                .ok()
                .and_then(|value| Meta::parse(&value).ok())
                .ok_or_else(|| corrupt(META, "a JSON object of at most 1 KiB"))
        })
        .transpose()
}

/// Abilities as stored: a list of strings.
pub(super) fn abilities_value(abilities: &Abilities) -> AttributeValue {
    AttributeValue::L(abilities.as_slice().iter().map(s).collect())
}

/// A live token's item: with its expiry day while it has one (see [`EXPIRY_DAY`]).
pub(super) fn token_item(token: &TokenRecord) -> Item {
    let mut item = token_item_at(
        &Key::token(token.user_id, token.kind.family(), token.id),
        token,
    );
    if let Some(at) = token.expires_at {
        item.insert(EXPIRY_DAY.into(), s(expiry_day(at)));
    }
    item
}

/// The day (`YYYY-MM-DD`, UTC) a live token expires on: the hash key of the sparse index the
/// daily run of `events` reads to give notice of expiries. Only a live token of its own expiry
/// has it: a retired token's item and a rolled token (whose grace period is set) have none.
pub const EXPIRY_DAY: &str = "expiry_day";

/// The index of live tokens by [`EXPIRY_DAY`], `sk` its range key.
pub const EXPIRY_INDEX: &str = "expiry-day";

/// What an item written before events out lacks of what events out reads, as it would be
/// written today: a live, unrolled token's expiry day, and a meter's full credits (unknown for
/// a meter set before: its refill amount, or else the credits it has now, whichever is more).
pub(super) fn missing_for_events(item: &Item) -> Result<(Option<String>, Option<u64>), Fault> {
    let r = Reader(item);
    let token = r.string(SK)?.starts_with(TOKEN_PREFIX)
        && !item.contains_key(EXPIRY_DAY)
        && !item.contains_key(ROLLED_TO)
        && !item.contains_key("revoked_at");
    let day = match token {
        true => r.optional_number::<u64>(VALID_UNTIL)?.map(expiry_day),
        false => None,
    };
    let full = match (
        r.optional_number::<u64>(CREDITS)?,
        item.contains_key(CREDITS_FULL),
    ) {
        (Some(credits), false) => {
            Some(credits.max(r.optional_number::<u64>(REFILL_AMOUNT)?.unwrap_or(0)))
        }
        _ => None,
    };
    Ok((day, full))
}

/// The `expiry_day` attribute (`YYYY-MM-DD`, UTC) of a token expiring at `at` (epoch seconds).
pub fn expiry_day(at: u64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(at as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// A token's item under `key` (its live key, or its retired one).
pub(super) fn token_item_at(key: &Key, token: &TokenRecord) -> Item {
    let mut item = keyed(key, "token");
    item.insert("id".into(), s(token.id.to_string()));
    item.insert("user_id".into(), n(token.user_id.0));
    item.insert("platform_id".into(), n(token.platform_id.0));
    item.insert("kind".into(), s(token.kind.as_str()));
    item.insert("name".into(), s(&token.name));
    item.insert("abilities".into(), abilities_value(&token.abilities));
    item.insert(
        "hash".into(),
        AttributeValue::B(Blob::new(token.hash.0.to_vec())),
    );
    item.insert("created_at".into(), n(token.created_at_ms));
    if let Some(at) = token.expires_at {
        item.insert(VALID_UNTIL.into(), n(at));
    }
    if let Some(at) = token.last_used_at_ms {
        item.insert("last_used_at".into(), n(at));
    }
    if let Some(at) = token.revoked_at_ms {
        item.insert("revoked_at".into(), n(at));
    }
    if let Some(revocation) = &token.revocation {
        item.insert(REVOKED_REASON.into(), s(revocation.name()));
        if let Revocation::Leaked(leak) = revocation {
            for (name, value) in [(LEAK_URL, &leak.url), (LEAK_SOURCE, &leak.source)] {
                if let Some(value) = value {
                    item.insert(name.into(), s(value));
                }
            }
            if let Some(parent) = leak.parent {
                item.insert(LEAK_PARENT.into(), s(parent.to_string()));
            }
        }
    }
    if let Some(parent) = token.parent_id {
        item.insert("parent_id".into(), s(parent.to_string()));
    }
    if !token.enabled {
        item.insert(ENABLED.into(), AttributeValue::Bool(false));
    }
    if let Some(successor) = token.rolled_to {
        item.insert(ROLLED_TO.into(), s(successor.to_string()));
    }
    if let Some(predecessor) = token.predecessor {
        item.insert(ROLLED_FROM.into(), s(predecessor.id.to_string()));
        item.insert(PREDECESSOR_UNTIL.into(), n(predecessor.until));
    }
    if let Some(meter) = &token.meter {
        item.extend(
            meter_attributes(meter)
                .into_iter()
                .map(|(k, v)| (k.into(), v)),
        );
    }
    insert_meta(&mut item, token.meta.as_ref());
    if token.imported {
        item.insert(IMPORTED.into(), AttributeValue::Bool(true));
    }
    item
}

/// Marks a token brought over from another system.
const IMPORTED: &str = "imported";

pub(super) fn token_from_item(item: &Item) -> Result<TokenRecord, Fault> {
    let r = Reader(item);
    let hash: [u8; 32] = match item.get("hash") {
        Some(AttributeValue::B(blob)) => blob
            .as_ref()
            .try_into()
            .map_err(|_| corrupt("hash", "32 bytes"))?,
        _ => return Err(corrupt("hash", "binary")),
    };
    let abilities = r
        .list("abilities")?
        .iter()
        .map(|a| {
            a.as_s()
                .cloned()
                .map_err(|_| corrupt("abilities", "a list of strings"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TokenRecord {
        id: r.parsed("id", TokenId::parse)?,
        user_id: UserId(r.number("user_id")?),
        platform_id: PlatformId(r.number("platform_id")?),
        kind: r.parsed("kind", TokenKind::from_name)?,
        name: r.string("name")?,
        abilities: Abilities::from_stored(abilities),
        hash: TokenHash(hash),
        created_at_ms: r.number("created_at")?,
        expires_at: r.optional_number(VALID_UNTIL)?,
        last_used_at_ms: r.optional_number("last_used_at")?,
        revoked_at_ms: r.optional_number("revoked_at")?,
        revocation: match r.optional_string(REVOKED_REASON)?.as_deref() {
            // Revoked before reasons were kept: by a DELETE.
            None if item.contains_key("revoked_at") => Some(Revocation::Deleted),
            None => None,
            Some("deleted") => Some(Revocation::Deleted),
            Some("rolled") => Some(Revocation::Rolled),
            Some("self_revoked") => Some(Revocation::SelfRevoked),
            Some("admin_revoked") => Some(Revocation::AdminRevoked),
            Some("leaked") => Some(Revocation::Leaked(Leak {
                url: r.optional_string(LEAK_URL)?,
                source: r.optional_string(LEAK_SOURCE)?,
                parent: r
                    .optional_string(LEAK_PARENT)?
                    .map(|id| public_id(&id, LEAK_PARENT))
                    .transpose()?,
            })),
            Some(_) => return Err(corrupt(REVOKED_REASON, "a known reason")),
        },
        parent_id: r
            .optional_string("parent_id")?
            .map(|id| public_id(&id, "parent_id"))
            .transpose()?,
        enabled: match item.get(ENABLED) {
            None => true,
            Some(AttributeValue::Bool(enabled)) => *enabled,
            Some(_) => return Err(corrupt(ENABLED, "a boolean")),
        },
        rolled_to: r
            .optional_string(ROLLED_TO)?
            .map(|id| record_id(&id, ROLLED_TO))
            .transpose()?,
        predecessor: match r.optional_string(ROLLED_FROM)? {
            Some(id) => Some(Predecessor {
                id: record_id(&id, ROLLED_FROM)?,
                until: r.number(PREDECESSOR_UNTIL)?,
            }),
            None => None,
        },
        meter: meter_from_item(item)?,
        meta: meta_from_item(item)?,
        imported: match item.get(IMPORTED) {
            None => false,
            Some(AttributeValue::Bool(imported)) => *imported,
            Some(_) => return Err(corrupt(IMPORTED, "a boolean")),
        },
    })
}

fn record_id(text: &str, attribute: &str) -> Result<TokenId, Fault> {
    TokenId::parse(text).ok_or_else(|| corrupt(attribute, "a token id"))
}

fn public_id(text: &str, attribute: &str) -> Result<PublicTokenId, Fault> {
    PublicTokenId::parse(text).ok_or_else(|| corrupt(attribute, "a token id"))
}

/// The child item that points from `child`'s parent to it (see the module documentation);
/// `None` for a token minted by no token. Its TTL is the child's own expiry, if it has one.
pub(super) fn child_item(child: &TokenRecord) -> Option<Item> {
    let parent = child.parent_id?;
    let mut item = address_item(&Key::child(parent, child.address()), "child", child);
    if let Some(at) = child.expires_at {
        item.insert(TTL_ATTRIBUTE.into(), n(at));
    }
    Some(item)
}

/// An imported token's pointer: from the hash of its secret to its record (kept for good, so a
/// hash is imported once even after its token is revoked).
pub(super) fn imported_item(token: &TokenRecord) -> Item {
    address_item(&Key::imported(&token.hash), "imported", token)
}

/// An item of `kind` under `key` that names `token`'s record ([`address_from_item`]).
fn address_item(key: &Key, kind: &str, token: &TokenRecord) -> Item {
    let mut item = keyed(key, kind);
    item.insert("user_id".into(), n(token.user_id.0));
    item.insert("family".into(), s(token.kind.family().key_segment()));
    item.insert("id".into(), s(token.id.to_string()));
    item
}

/// What takes the key of a token whose creation's outcome stayed unknown, so that the creation
/// can never commit later (see `settle_new_token`); DynamoDB's TTL removes it after a day.
pub(super) fn void_item(key: &Key, now: EpochMs) -> Item {
    let mut item = keyed(key, VOID);
    item.insert(TTL_ATTRIBUTE.into(), n(now.seconds().0 + 86_400));
    item
}

/// Whether an item under a token's key is a void one: no token, for every read.
pub(super) fn is_void(item: &Item) -> bool {
    item.get("type")
        .and_then(|t| t.as_s().ok())
        .is_some_and(|t| t == VOID)
}

const VOID: &str = "void";

/// The child a child item points to.
/// The record a child item or an import pointer names.
pub(super) fn address_from_item(item: &Item) -> Result<TokenAddress, Fault> {
    let r = Reader(item);
    let segment = r.string("family")?;
    let family = TokenFamily::ALL
        .into_iter()
        .find(|f| f.key_segment() == segment)
        .ok_or_else(|| corrupt("family", "a token family"))?;
    Ok(TokenAddress {
        user_id: UserId(r.number("user_id")?),
        family,
        id: r.parsed("id", TokenId::parse)?,
    })
}

fn corrupt(attribute: &str, expected: &str) -> Fault {
    Fault::Corrupt(format!("attribute {attribute:?} is not {expected}"))
}

/// Typed access to an item's attributes; a missing or mistyped one is [`Fault::Corrupt`].
struct Reader<'a>(&'a Item);

impl Reader<'_> {
    fn optional_string(&self, name: &str) -> Result<Option<String>, Fault> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text.clone())),
            Some(_) => Err(corrupt(name, "a string")),
        }
    }

    fn string(&self, name: &str) -> Result<String, Fault> {
        self.optional_string(name)?
            .ok_or_else(|| corrupt(name, "present"))
    }

    fn parsed<T>(&self, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, Fault> {
        parse(&self.string(name)?).ok_or_else(|| corrupt(name, "a known value"))
    }

    fn optional_number<T: FromStr>(&self, name: &str) -> Result<Option<T>, Fault> {
        match self.0.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => text
                .parse()
                .map(Some)
                .map_err(|_| corrupt(name, "a whole number")),
            Some(_) => Err(corrupt(name, "a number")),
        }
    }

    fn number<T: FromStr>(&self, name: &str) -> Result<T, Fault> {
        self.optional_number(name)?
            .ok_or_else(|| corrupt(name, "present"))
    }

    fn list(&self, name: &str) -> Result<&[AttributeValue], Fault> {
        match self.0.get(name) {
            Some(AttributeValue::L(items)) => Ok(items),
            _ => Err(corrupt(name, "a list")),
        }
    }
}

pub mod stream;

#[cfg(test)]
mod tests;
