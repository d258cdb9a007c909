//! The narrow store interface the handlers use, and its records.
//!
//! One DynamoDB implementation ([`DynamoStore`]); handlers take `&dyn Store`, so a
//! fault-injecting store can stand in for outage tests.

mod dynamo;
mod item;
pub mod schema;

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::stream::{StreamExt, TryStreamExt};

pub use dynamo::{Direct, DynamoStore};
pub use item::{revocation_name, token_sort_prefix, Key};

use crate::audit::Change;
use crate::domain::{
    Abilities, CustomerId, Email, PlatformId, Role, UserId, UserStatus, Workspace, WorkspaceStatus,
};
use crate::limits::{Limits, Meter, Usage};
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

/// What [`Store::find_tokens`] found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// Each found token's record: the live one, or else its retired copy.
    pub tokens: HashMap<TokenAddress, TokenRecord>,
    pub users: HashMap<UserId, User>,
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
}

/// Whether a stored token may be used now, before its owner's status is considered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    Live,
    Expired,
    Revoked,
}

impl TokenRecord {
    /// The id responses and `tokenctl` show.
    pub fn public_id(&self) -> PublicTokenId {
        PublicTokenId {
            user_id: self.user_id,
            token_id: self.id,
        }
    }

    /// Whether its predecessor still works at `now_ms` (then it cannot be rolled).
    pub fn predecessor_works(&self, now_ms: u64) -> bool {
        self.predecessor
            .is_some_and(|p| p.until.saturating_mul(1000) > now_ms)
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
    pub fn state(&self, now_ms: u64) -> TokenState {
        if self.revoked_at_ms.is_some() {
            TokenState::Revoked
        } else if self
            .expires_at
            .is_some_and(|at| at.saturating_mul(1000) <= now_ms)
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
        }
    }
}

/// `last_used_at` is written at most this often per token (5 minutes).
pub const LAST_USED_RESOLUTION_MS: u64 = 5 * 60 * 1000;

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("platform not found")]
    PlatformNotFound,
    #[error("user not found")]
    UserNotFound,
    #[error("user is blocked")]
    UserBlocked,
    #[error("user id is already taken")]
    UserIdTaken,
    #[error("email is already used in this platform")]
    EmailTaken,
    #[error("customer id is already used")]
    CustomerIdTaken,
    #[error("a token with this record id already exists")]
    TokenIdTaken,
    #[error("the user already holds the maximum of {max} tokens")]
    TokenLimitReached { max: u32 },
    #[error("the table holds an item this version cannot read: {0}")]
    Corrupt(String),
    #[error("DynamoDB is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The store every handler and the CLI work through.
#[async_trait]
pub trait Store: Send + Sync {
    async fn create_platform(&self, name: &str, now_ms: u64) -> Result<Platform, StoreError>;

    async fn get_platform(&self, id: PlatformId) -> Result<Option<Platform>, StoreError>;

    /// Adds a user; email (per platform, case-insensitively), customer id and id stay unique.
    async fn create_user(
        &self,
        user: NewUser,
        change: &Change,
        now_ms: u64,
    ) -> Result<User, StoreError>;

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    async fn find_user_by_email(
        &self,
        platform: PlatformId,
        email: &Email,
    ) -> Result<Option<User>, StoreError>;

    async fn find_user_by_customer_id(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<User>, StoreError>;

    /// Blocks or unblocks a user: one write to the profile, which every authentication reads
    /// (so a block takes effect on all the user's tokens at once, or not at all).
    async fn set_user_status(
        &self,
        id: UserId,
        status: UserStatus,
        change: &Change,
    ) -> Result<(), StoreError>;

    /// One strongly consistent GetItem; the caller checks [`TokenRecord::state`].
    async fn get_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// A token and its owner's profile in one strongly consistent BatchGetItem (one round trip):
    /// what authentication reads, so the owner's current status and role decide.
    async fn get_token_and_owner(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<(Option<TokenRecord>, Option<User>), StoreError>;

    /// Stores a token of `owner` while the owner is active; capped families stay within `cap`
    /// (counted per [`crate::token::CapCounter`]), whatever the concurrency.
    async fn create_token(
        &self,
        owner: Owner,
        token: NewToken,
        cap: u32,
        change: &Change,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// The live tokens of one family, newest first (one strongly consistent Query).
    async fn list_tokens(
        &self,
        user: UserId,
        family: TokenFamily,
        now_ms: u64,
    ) -> Result<Vec<TokenRecord>, StoreError>;

    /// Revokes a live token at once ([`Revocation::Deleted`]). `false` when there is no such
    /// live token.
    async fn revoke_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        change: &Change,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let address = TokenAddress {
            user_id: user,
            family,
            id,
        };
        self.revoke_token_if(address, &Revocation::Deleted, change, now_ms, &|_| true)
            .await
    }

    /// Revokes the live token at `address` for `why`, only if its record is one `allowed`
    /// accepts (a caller's right to it, read in the same pass as the revocation); `false`
    /// otherwise, as for an unknown token. A predecessor still in its grace period is revoked
    /// with it, in the same transaction (it works only through its successor). A roll landing
    /// between the read and the revocation sends it back for a fresh read, so the slot given
    /// back is decided by what is stored.
    async fn revoke_token_if(
        &self,
        address: TokenAddress,
        why: &Revocation,
        change: &Change,
        now_ms: u64,
        allowed: &(dyn for<'r> Fn(&'r TokenRecord) -> bool + Sync),
    ) -> Result<bool, StoreError>;

    /// The tokens minted with `parent` (a successor it rolled to is found by `rolled_to`),
    /// live or not: one strongly consistent Query of its child items, every page.
    async fn children(&self, parent: PublicTokenId) -> Result<Vec<TokenAddress>, StoreError>;

    /// The records of many tokens (the live item, or else the retired copy) and many users'
    /// profiles, in strongly consistent BatchGetItems of up to 100 keys, several in flight at
    /// once. Absent ones are left out.
    async fn find_tokens(
        &self,
        tokens: &[TokenAddress],
        users: &[UserId],
    ) -> Result<Found, StoreError>;

    /// Revokes each of `records` (as read) for its reason, while it is live: one transaction
    /// per owner for up to 49 of its tokens, owners in parallel. Returns how many this call
    /// revoked (a token revoked meanwhile is left as it is).
    async fn revoke_tokens(
        &self,
        records: &[(TokenRecord, Revocation)],
        change: &Change,
        now_ms: u64,
    ) -> Result<usize, StoreError>;

    /// Replaces `owner`'s live token `predecessor` by `successor` in one transaction: the successor is
    /// stored (taking over the predecessor's cap slot, so a roll never fails on the cap), and the
    /// predecessor is marked rolled and works until `grace_end_s` (or its own earlier expiry).
    /// A token is rolled at most once, also when rolls race. `Err(TokenIdTaken)`: draw another
    /// successor id.
    async fn roll_token(
        &self,
        owner: Owner,
        predecessor: &TokenRecord,
        successor: NewToken,
        grace_end_s: u64,
        change: &Change,
        now_ms: u64,
    ) -> Result<RollOutcome, StoreError>;

    /// Applies `change` to `record`'s live token, only while it is live and its abilities are
    /// still those of `record` (so updates that race never widen them). The updated record, or
    /// `None` when the token is gone, no longer live, or was changed meanwhile.
    async fn update_token(
        &self,
        record: &TokenRecord,
        fields: &TokenChange,
        change: &Change,
        now_ms: u64,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Records that a token authenticated at `now_ms`, unless its `last_used_at` is already
    /// within [`LAST_USED_RESOLUTION_MS`] of it (a conditional update: concurrent requests write
    /// once). Returns whether it wrote.
    async fn touch_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Sets the usage limits of a user (shared by all its tokens) or of a live token, as a new
    /// meter (the credits given for the current refill period, a new rate window), with its
    /// `limits.updated` event in the same transaction. `false`: the user or token is gone (or
    /// no longer live).
    async fn set_limits(
        &self,
        target: Metered<'_>,
        limits: &Limits,
        change: &Change,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Charges one unit of use of the token whose meter `holder` holds (as read: the token
    /// itself, or the successor of a rolled one in its grace period) and of its owner's limits
    /// (`owner`, the owner's meter as read): one conditional write per metered record, both in
    /// one transaction where both apply, so concurrent units never spend the same credit or the
    /// same slot of a window. A write that lost a race (a refill, a new window, limits changed
    /// meanwhile, a roll that moved the meter) is tried again from a fresh read. Returns the
    /// usage after the unit: for one metered record what its write left (so concurrent units
    /// each report their own); for two, the values read less the unit. A refused unit
    /// (`refusal` set) charges nothing and writes nothing. `None`: the token is no longer live,
    /// or its owner is gone. A single-record charge is never sent twice: when its outcome is
    /// unknown the error says so and the unit may have been counted.
    async fn charge(
        &self,
        holder: &TokenRecord,
        owner: Option<&Meter>,
        now_ms: u64,
    ) -> Result<Option<Usage>, StoreError>;

    /// Up to `limit` audit events of `scope`, newest first, after `cursor`: one Query.
    async fn list_events(
        &self,
        scope: EventScope,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<EventPage, StoreError>;

    /// Makes sure the user's permanent token of the generation it returns works. `Working`: the
    /// record of the current generation is written on first use; when it is revoked, gone, or
    /// no longer matches what `derive` makes (the server key changed), the user moves on to the
    /// next generation in one transaction (the old record, if still live, is revoked with it).
    /// `Next` (a rotation): the user moves on whatever the state of the current one, so the
    /// previous key stops working at once; rotations that race end on one new generation.
    async fn issue_permanent_token(
        &self,
        owner: &User,
        derive: &(dyn Fn(u32) -> NewToken + Sync),
        wanted: PermanentGeneration,
        change: &Change,
        now_ms: u64,
    ) -> Result<u32, StoreError>;
}

/// The live token a public id names, whatever its family: one BatchGetItem of its four
/// possible keys (and their retired copies, which are not live).
pub async fn live_token(
    store: &dyn Store,
    id: PublicTokenId,
    now_ms: u64,
) -> Result<Option<TokenRecord>, StoreError> {
    let addresses = TokenFamily::ALL.map(|family| TokenAddress {
        user_id: id.user_id,
        family,
        id: id.token_id,
    });
    let found = store.find_tokens(&addresses, &[]).await?;
    Ok(found
        .tokens
        .into_values()
        .find(|record| record.state(now_ms) == TokenState::Live))
}

/// Every token that descends from `roots` (rolled from one, or minted with one, transitively),
/// live or not, each with the root it descends from; the roots left out. One BatchGetItem a
/// generation, and one Query of child items for each token that could mint (`*` or
/// `tokens:manage`: no other token can have children).
pub async fn descendants(
    store: &dyn Store,
    roots: &[TokenRecord],
) -> Result<Vec<(TokenRecord, PublicTokenId)>, StoreError> {
    let mut seen: std::collections::HashSet<TokenAddress> =
        roots.iter().map(TokenRecord::address).collect();
    let mut generation: Vec<(TokenRecord, PublicTokenId)> = roots
        .iter()
        .map(|root| (root.clone(), root.public_id()))
        .collect();
    let mut found = Vec::new();
    while !generation.is_empty() {
        let mut next: Vec<(TokenAddress, PublicTokenId)> = generation
            .iter()
            .filter_map(|(record, root)| Some((record.successor()?, *root)))
            .collect();
        let parents: Vec<(PublicTokenId, PublicTokenId)> = generation
            .iter()
            .filter(|(record, _)| record.abilities.manage_tokens())
            .map(|(record, root)| (record.public_id(), *root))
            .collect();
        let queries = parents
            .into_iter()
            .map(|(parent, root)| children_of(store, parent, root));
        let children: Vec<Vec<(TokenAddress, PublicTokenId)>> = futures_util::stream::iter(queries)
            .buffer_unordered(dynamo::IN_FLIGHT)
            .try_collect()
            .await?;
        next.extend(children.into_iter().flatten());
        next.retain(|(address, _)| seen.insert(*address));
        let addresses: Vec<TokenAddress> = next.iter().map(|(address, _)| *address).collect();
        let mut records = store.find_tokens(&addresses, &[]).await?.tokens;
        generation = next
            .into_iter()
            .filter_map(|(address, root)| Some((records.remove(&address)?, root)))
            .collect();
        found.extend(generation.iter().cloned());
    }
    Ok(found)
}

/// The children of `parent`, each with the root it descends from.
async fn children_of(
    store: &dyn Store,
    parent: PublicTokenId,
    root: PublicTokenId,
) -> Result<Vec<(TokenAddress, PublicTokenId)>, StoreError> {
    let children = store.children(parent).await?;
    Ok(children.into_iter().map(|child| (child, root)).collect())
}

/// Sets the usage limits of the live token `record` (as read) on its key lineage's meter: its
/// own, or its successor's while it is a rolled token in its grace period. A roll that lands
/// meanwhile is read again, so the limits never stay on a predecessor that no longer charges
/// its own meter. `false`: the token (or its successor) is no longer live.
pub async fn set_token_limits(
    store: &dyn Store,
    record: &TokenRecord,
    limits: &Limits,
    change: &Change,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let mut record = record.clone();
    for _ in 0..3 {
        let holder = match record.successor() {
            None => Some(record.clone()),
            Some(successor) => store
                .get_token(successor.user_id, successor.family, successor.id)
                .await?
                .filter(|s| s.state(now_ms) == TokenState::Live),
        };
        let Some(holder) = holder else {
            return Ok(false);
        };
        if store
            .set_limits(Metered::Token(&holder), limits, change, now_ms)
            .await?
        {
            return Ok(true);
        }
        match live_token(store, record.public_id(), now_ms).await? {
            Some(current) => record = current,
            None => return Ok(false),
        }
    }
    Ok(false)
}

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

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
