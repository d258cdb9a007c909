//! The records the service keeps and the changes and outcomes of its operations, apart from
//! how they are stored: what a handler reads and hands over, what [`crate::store`] persists.

use std::collections::HashMap;

use crate::audit::Event;
use crate::clock::EpochMs;
use crate::domain::{
    Abilities, CustomerId, Email, ExternalId, Meta, PlatformId, Role, UserId, UserStatus,
    Workspace, WorkspaceStatus,
};
use crate::limits::{Limits, Meter};
use crate::token::{ParsedToken, PublicTokenId, TokenFamily, TokenHash, TokenId, TokenKind};

/// A white-label or agency tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub id: PlatformId,
    pub name: String,
    pub created_at_ms: u64,
}

/// A user of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub platform_id: PlatformId,
    pub name: String,
    pub email: String,
    pub role: Role,
    pub status: UserStatus,
    pub customer_id: Option<CustomerId>,
    /// The platform's own id of the user (unique within the platform).
    pub external_id: Option<ExternalId>,
    /// The platform's own data on the user.
    pub meta: Option<Meta>,
    pub workspaces: Vec<Workspace>,
    /// Generation of the permanent token; bumping it would retire the old one.
    pub permanent_generation: u32,
    /// Whether the permanent token record of this generation has been written.
    pub permanent_issued: bool,
    pub created_at_ms: u64,
    /// Usage limits shared by all the user's tokens, and their use; `None`: unmetered.
    pub meter: Option<Meter>,
}

impl User {
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }

    pub fn has_active_workspace(&self) -> bool {
        self.workspaces
            .iter()
            .any(|w| w.status == WorkspaceStatus::Active)
    }
}

/// Who a user is in the platform's own system: what verify answers and the authorizer hands
/// the protected API, so it knows whose key it is without a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub external_id: Option<ExternalId>,
    pub meta: Option<Meta>,
}

impl From<&User> for Identity {
    fn from(user: &User) -> Identity {
        Identity {
            external_id: user.external_id.clone(),
            meta: user.meta.clone(),
        }
    }
}

/// The owner fields a token record copies, from a profile or from a verified caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub id: UserId,
    pub platform_id: PlatformId,
    pub role: Role,
}

impl From<&User> for Owner {
    fn from(user: &User) -> Owner {
        Owner {
            id: user.id,
            platform_id: user.platform_id,
            role: user.role,
        }
    }
}

/// A user to add to the directory.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// `Some` imports the id the platform already uses; `None` allocates one.
    pub id: Option<UserId>,
    pub platform_id: PlatformId,
    pub name: String,
    pub email: Email,
    pub role: Role,
    pub status: UserStatus,
    pub customer_id: Option<CustomerId>,
    pub external_id: Option<ExternalId>,
    pub meta: Option<Meta>,
    pub workspaces: Vec<Workspace>,
}

/// A stored token: everything but the plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub user_id: UserId,
    pub platform_id: PlatformId,
    pub kind: TokenKind,
    pub name: String,
    pub abilities: Abilities,
    pub hash: TokenHash,
    pub created_at_ms: u64,
    /// Epoch seconds from which the token no longer works; `None` never expires. Stored as
    /// `valid_until`: DynamoDB's TTL attribute (`expires_at`) is only set once the token no longer
    /// holds a cap slot, so TTL never deletes an item whose slot is still counted.
    pub expires_at: Option<u64>,
    pub last_used_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    /// Why it was revoked (set with `revoked_at_ms`).
    pub revocation: Option<Revocation>,
    /// The token whose caller minted this one (`None`: the operator, or a permanent token).
    pub parent_id: Option<PublicTokenId>,
    /// A disabled token refuses every use until it is enabled again; it still holds its slot.
    pub enabled: bool,
    /// The token that replaced this one in a roll: this one no longer holds a cap slot (its
    /// successor took it over) nor a meter (its units are charged to the successor's), and
    /// works until its `expires_at`, the end of the grace period, while its successor works.
    pub rolled_to: Option<TokenId>,
    /// The token this one replaced in a roll, while that one may still be in its grace period.
    pub predecessor: Option<Predecessor>,
    /// The token's own usage limits and their use (a rolled token's key lineage's, from the
    /// roll on); `None`: unmetered.
    pub meter: Option<Meter>,
    /// The platform's own data on the token (set at creation, changed by an update).
    pub meta: Option<Meta>,
    /// Brought over from another system (`POST /api/v1/tokens/import`): its hash is the SHA-256
    /// of the secret the holder presents, found through its import pointer.
    pub imported: bool,
}

/// The token a successor replaced, and when that one stops working (epoch seconds): until
/// then the successor cannot be rolled again, so at most two keys of a lineage ever work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Predecessor {
    pub id: TokenId,
    pub until: u64,
}

/// Why a token was revoked, kept on its record (`revoked_reason`, with a leak's `leak_url` and
/// `leak_source`) and reported by verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// Deleted by its owner or an admin (a route's DELETE, `tokenctl token revoke`).
    Deleted,
    /// Replaced: a permanent key whose user moved on to the next generation.
    Rolled,
    /// Reported leaked by secret scanning.
    Leaked(Leak),
    /// Revoked by whoever held it (`POST /api/v1/tokens/revoke`).
    SelfRevoked,
    /// Revoked by the platform (`DELETE /api/v1/users/{id}/tokens/{token_id}`).
    AdminRevoked,
}

impl Revocation {
    /// The name of its reason, as stored and as verify reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Revocation::Deleted => "deleted",
            Revocation::Rolled => "rolled",
            Revocation::Leaked(_) => "leaked",
            Revocation::SelfRevoked => "self_revoked",
            Revocation::AdminRevoked => "admin_revoked",
        }
    }
}

/// Where a leaked token was found, as the report said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leak {
    pub url: Option<String>,
    pub source: Option<String>,
    /// For a token revoked because it descends from a reported one (rolled from it or minted
    /// with it, transitively): the reported token.
    pub parent: Option<PublicTokenId>,
}

impl Leak {
    /// The most of `url` and `source` a record keeps (characters each), so that a report can
    /// never make an item too large to write.
    pub const MAX_CHARS: usize = 2048;

    /// `url` and `source` as kept: cut to [`Self::MAX_CHARS`].
    pub fn new(url: Option<&str>, source: Option<&str>) -> Leak {
        let kept = |text: &str| text.chars().take(Leak::MAX_CHARS).collect::<String>();
        Leak {
            url: url.map(kept),
            source: source.map(kept),
            parent: None,
        }
    }

    /// The same leak, for a descendant of the reported token `parent`.
    pub fn descending_from(&self, parent: PublicTokenId) -> Leak {
        Leak {
            parent: Some(parent),
            ..self.clone()
        }
    }
}

/// Where a token's record lives: its owner, family and record id (all a token names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenAddress {
    pub user_id: UserId,
    pub family: TokenFamily,
    pub id: TokenId,
}

impl From<&ParsedToken> for TokenAddress {
    fn from(token: &ParsedToken) -> TokenAddress {
        TokenAddress {
            user_id: token.user_id,
            family: token.kind.family(),
            id: token.token_id,
        }
    }
}

/// What [`crate::store::Tokens::find_tokens`] found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Each found token's record: the live one, or else its retired copy.
    pub tokens: HashMap<TokenAddress, TokenRecord>,
    pub users: HashMap<UserId, User>,
}

/// What a directory update changes in a user; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserChange {
    pub name: Option<String>,
    /// `Some(None)` removes the user's meta.
    pub meta: Option<Option<Meta>>,
}

impl UserChange {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.meta.is_none()
    }
}

/// One page of a platform's users, by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UserPage {
    pub users: Vec<User>,
    /// The last user id of this page, where the next starts; `None` on the last page.
    pub next: Option<UserId>,
}

/// Whose audit events a listing reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventScope {
    /// The events whose target is this user (one Query of its partition).
    User(UserId),
    /// Every event of the platform (one Query of the platform's index partition).
    Platform(PlatformId),
}

/// Where a page of events starts: after the event `event_id` of user `user_id` (the last of
/// the previous page). Shown as `<user id>.<event id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCursor {
    pub user_id: UserId,
    pub event_id: String,
}

impl EventCursor {
    /// Parses what [`fmt::Display`](std::fmt::Display) shows; `None` for anything else.
    pub fn parse(text: &str) -> Option<EventCursor> {
        let (user, event) = text.split_once('.')?;
        let valid_user =
            !user.is_empty() && user.len() <= 20 && user.bytes().all(|b| b.is_ascii_digit());
        let valid_event = event.len() == 24
            && event
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !(valid_user && valid_event) {
            return None;
        }
        Some(EventCursor {
            user_id: UserId(user.parse().ok()?),
            event_id: event.to_string(),
        })
    }
}

impl std::fmt::Display for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.user_id, self.event_id)
    }
}

/// One page of audit events, newest first, as the API shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventPage {
    pub events: Vec<serde_json::Value>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<EventCursor>,
}

/// What a roll did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RollOutcome {
    /// The successor is stored as `successor` (its name, abilities, expiry, meter and
    /// `enabled` the predecessor's as the roll found them); the predecessor works until this
    /// epoch second.
    Rolled {
        successor: Box<TokenRecord>,
        previous_expires_at: u64,
    },
    /// The predecessor was rolled before (by this call or another).
    AlreadyRolled,
    /// The predecessor replaced a token that still works (its grace period has not ended).
    PredecessorWorks,
    /// The predecessor is no longer live (revoked, expired, deleted).
    Gone,
}

/// What an update changes in a token; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenChange {
    pub name: Option<crate::domain::TokenName>,
    pub abilities: Option<Abilities>,
    pub enabled: Option<bool>,
    /// The platform's own data on the token; `Some(None)` removes it.
    pub meta: Option<Option<Meta>>,
}

/// Whether a stored token may be used now, before its owner's status is considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Live,
    Expired,
    Revoked,
}

impl TokenRecord {
    /// Whether this token can have minted others: one that may manage tokens (`*` or
    /// `tokens:manage`), or a service key (which mints for the platform's users).
    pub fn may_have_children(&self) -> bool {
        self.abilities.manage_tokens() || self.kind == TokenKind::ServiceKey
    }

    /// The id responses and `tokenctl` show.
    pub fn public_id(&self) -> PublicTokenId {
        PublicTokenId {
            user_id: self.user_id,
            token_id: self.id,
        }
    }

    /// Whether its predecessor still works at `now` (then it cannot be rolled).
    pub fn predecessor_works(&self, now: EpochMs) -> bool {
        self.predecessor
            .is_some_and(|p| p.until.saturating_mul(1000) > now.0)
    }

    /// Where the successor of a rolled token lives.
    pub fn successor(&self) -> Option<TokenAddress> {
        self.rolled_to.map(|id| TokenAddress {
            user_id: self.user_id,
            family: self.kind.family(),
            id,
        })
    }

    /// Where its record lives.
    pub fn address(&self) -> TokenAddress {
        TokenAddress {
            user_id: self.user_id,
            family: self.kind.family(),
            id: self.id,
        }
    }

    /// A token is live until revoked and until its `expires_at` second has begun. DynamoDB
    /// deletes items only eventually, so every read asks this.
    pub fn state(&self, now: EpochMs) -> TokenState {
        if self.revoked_at_ms.is_some() {
            TokenState::Revoked
        } else if self
            .expires_at
            .is_some_and(|at| at.saturating_mul(1000) <= now.0)
        {
            TokenState::Expired
        } else {
            TokenState::Live
        }
    }
}

/// A token to store, built from a freshly issued one; owner fields come from the owner's record.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub parsed: ParsedToken,
    pub name: String,
    pub abilities: Abilities,
    pub created_at_ms: u64,
    pub expires_at: Option<u64>,
    pub parent_id: Option<PublicTokenId>,
    pub meta: Option<Meta>,
    /// Another system's token, stored with its import pointer (see [`TokenRecord::imported`]).
    pub imported: bool,
}

impl NewToken {
    /// The record as it is first written for `owner`.
    pub fn record(&self, owner: Owner) -> TokenRecord {
        TokenRecord {
            id: self.parsed.token_id,
            user_id: owner.id,
            platform_id: owner.platform_id,
            kind: self.parsed.kind,
            name: self.name.clone(),
            abilities: self.abilities.clone(),
            hash: self.parsed.hash,
            created_at_ms: self.created_at_ms,
            expires_at: self.expires_at,
            last_used_at_ms: None,
            revoked_at_ms: None,
            revocation: None,
            parent_id: self.parent_id,
            enabled: true,
            rolled_to: None,
            predecessor: None,
            meter: None,
            meta: self.meta.clone(),
            imported: self.imported,
        }
    }
}

/// `last_used_at` is written at most this often per token (5 minutes).
pub const LAST_USED_RESOLUTION_MS: u64 = 5 * 60 * 1000;

/// Whose usage limits a change sets.
#[derive(Clone, Copy, Debug)]
pub enum Metered<'a> {
    User(&'a User),
    Token(&'a TokenRecord),
}

impl Metered<'_> {
    /// Its limits now.
    pub fn limits(&self) -> Limits {
        let meter = match self {
            Metered::User(user) => user.meter,
            Metered::Token(token) => token.meter,
        };
        meter.map(|m| m.limits).unwrap_or_default()
    }
}

/// Which permanent-token generation a call wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermanentGeneration {
    /// The one that works: a revoked record, or one made with an earlier server key, moves the
    /// user on to the next generation.
    Working,
    /// The next one (a rotation).
    Next,
}

/// The permanent token that works after [`crate::store::PermanentKeys::issue_permanent_token`]:
/// its generation, and which of the candidates `derive` made for it carries the stored hash (the
/// one of the prefix it was issued under; a new generation is always the first, the minting
/// prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkingPermanent {
    pub generation: u32,
    pub candidate: usize,
}

/// A record that belongs to one platform (tenant).
pub trait OfPlatform {
    fn platform(&self) -> PlatformId;
}

impl OfPlatform for User {
    fn platform(&self) -> PlatformId {
        self.platform_id
    }
}

impl OfPlatform for TokenRecord {
    fn platform(&self) -> PlatformId {
        self.platform_id
    }
}

/// What a change wrote, as the store tells it to the change's [`Audit`]: the records as they
/// were read and as they were stored.
#[derive(Clone, Copy, Debug)]
pub enum Written<'a> {
    UserCreated(&'a User),
    /// `before`: the user as it was; `status`: what it is now.
    UserStatusSet {
        before: &'a User,
        status: UserStatus,
    },
    TokenCreated(&'a TokenRecord),
    /// A token of another system, brought over with its secret's hash.
    TokenImported(&'a TokenRecord),
    /// The predecessor (as it was before the roll) works until `until` (epoch seconds).
    TokenRolled {
        predecessor: &'a TokenRecord,
        successor: &'a TokenRecord,
        until: u64,
    },
    /// `before`: the user as it was; `after`: as it is now.
    UserUpdated {
        before: &'a User,
        after: &'a User,
    },
    /// `record`: the token as it was; `fields`: what changed.
    TokenUpdated {
        record: &'a TokenRecord,
        fields: &'a TokenChange,
    },
    /// New limits on `target` (its limits before, as read).
    LimitsSet {
        target: Metered<'a>,
        limits: &'a Limits,
    },
    TokenRevoked {
        record: &'a TokenRecord,
        why: &'a Revocation,
    },
    /// A permanent token of `generation`; `rotated`: it replaced an issued one.
    PermanentIssued {
        record: &'a TokenRecord,
        generation: u32,
        rotated: bool,
    },
}

/// The audit event of each change, decided by whoever decides the change (a handler, the
/// service, `tokenctl`): the store tells it what it wrote and writes the event it answers in
/// the change's own transaction, adding nothing. [`crate::recording`] gives the standard
/// events of a [`crate::audit::Change`].
pub trait Audit: Sync {
    fn event(&self, written: &Written<'_>) -> Event;
}
