//! Persistence: the store interface the handlers use, one trait a kind of record, and its
//! DynamoDB implementation ([`DynamoStore`]). The records themselves are [`crate::model`]'s;
//! handlers take `&dyn Store`, so a fault-injecting store can stand in for outage tests.

mod dynamo;
mod item;
pub mod schema;

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::stream::{StreamExt, TryStreamExt};

pub use crate::clock::now_ms;
pub use crate::model::{
    EventCursor, EventPage, EventScope, Found, Leak, Metered, NewToken, NewUser, Owner,
    PermanentGeneration, Platform, Predecessor, Revocation, RollOutcome, TokenAddress, TokenChange,
    TokenRecord, TokenState, User, UserChange, UserPage, WorkingPermanent, LAST_USED_RESOLUTION_MS,
};
pub use dynamo::{Backfilled, Direct, DynamoStore, Expiring};
pub use item::{expiry_day, stream, token_sort_prefix, Item, Key};

use crate::clock::{EpochMs, EpochSeconds};
use crate::domain::{CustomerId, Email, ExternalId, PlatformId, UserId, UserStatus};
use crate::limits::{Limits, Meter, Usage};
use crate::model::Audit;
use crate::token::{PublicTokenId, TokenFamily, TokenHash, TokenId};

/// What the store declined to do because of what is stored: nothing was written. A handler
/// answers each as its route does; none is a fault of the service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
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
    #[error("external id is already used in this platform")]
    ExternalIdTaken,
    #[error("a token with this record id already exists")]
    TokenIdTaken,
    #[error("the user already holds the maximum of {max} tokens")]
    TokenLimitReached { max: u32 },
    /// An imported token's hash is already this service's: the token that holds it.
    #[error("a token with this hash was imported before")]
    AlreadyImported(PublicTokenId),
}

/// What the store could not do because DynamoDB (or what it holds) failed: the service's fault,
/// answered 503 and logged where the response is made.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("the table holds an item this version cannot read: {0}")]
    Corrupt(String),
    #[error("DynamoDB is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A refusal its caller has no answer for (one the operation never gives there).
    #[error("the store refused where no refusal was expected: {0}")]
    Unexpected(Refusal),
}

/// The failure of an operation that may be refused: a [`Refusal`] or a [`Fault`]. It has no
/// conversion to a response: the handler decides what each refusal answers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Fault(Fault),
}

impl From<Refusal> for StoreError {
    fn from(refusal: Refusal) -> StoreError {
        StoreError::Refused(refusal)
    }
}

impl From<Fault> for StoreError {
    fn from(fault: Fault) -> StoreError {
        StoreError::Fault(fault)
    }
}

impl StoreError {
    /// The refusal, if it is one; `Err` hands the fault on.
    pub fn refusal(self) -> Result<Refusal, Fault> {
        match self {
            StoreError::Refused(refusal) => Ok(refusal),
            StoreError::Fault(fault) => Err(fault),
        }
    }
}

/// The store's traits, for code that calls them on a concrete store rather than a
/// `&dyn Store` (`use shared::store::traits::*`).
pub mod traits {
    pub use super::{
        AuditLog, Directory, Meters, PermanentKeys, Revocations, Rolls, Store, Tokens,
    };
}

/// The store every handler and the CLI work through: one trait a kind of record, all of them
/// together.
pub trait Store:
    Directory + Tokens + Rolls + Revocations + Meters + AuditLog + PermanentKeys
{
}

impl<T: Directory + Tokens + Rolls + Revocations + Meters + AuditLog + PermanentKeys> Store for T {}

/// The platforms and users: tenants, profiles, their unique emails and customer ids.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn create_platform(&self, name: &str, now: EpochMs) -> Result<Platform, Fault>;

    async fn get_platform(&self, id: PlatformId) -> Result<Option<Platform>, Fault>;

    /// Every platform, by id (one Query of the platforms' registry items, every page).
    async fn list_platforms(&self) -> Result<Vec<Platform>, Fault>;

    /// Adds a user; email (per platform, case-insensitively), customer id and id stay unique.
    async fn create_user(
        &self,
        user: NewUser,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<User, StoreError>;

    /// A user of the directory; a platform's service account is none (`None`).
    async fn get_user(&self, id: UserId) -> Result<Option<User>, Fault>;

    /// The users of the directory among `ids` (a service account is none of them), by id:
    /// BatchGetItems of up to 100 profiles.
    async fn get_users(&self, ids: &[UserId]) -> Result<HashMap<UserId, User>, Fault>;

    /// Up to `limit` of the platform's users by id, after the user `after`: one strongly
    /// consistent Query of the platform's member items, then one BatchGetItem of their profiles.
    async fn list_users(
        &self,
        platform: PlatformId,
        limit: u32,
        after: Option<UserId>,
    ) -> Result<UserPage, Fault>;

    /// Renames a user or changes its meta, with its `user.updated` event. `None`: no such user.
    async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        audit: &dyn Audit,
    ) -> Result<Option<User>, Fault>;

    /// The platform's service account, the owner of its service keys
    /// ([`crate::domain::UserId::service_account`]): written on first use, active, in no
    /// listing or lookup of users.
    async fn service_account(&self, platform: PlatformId, now: EpochMs)
        -> Result<User, StoreError>;

    async fn find_user_by_email(
        &self,
        platform: PlatformId,
        email: &Email,
    ) -> Result<Option<User>, Fault>;

    /// The user with the platform's own id `external` on `platform` (a pointer item, then the
    /// profile: two GetItems).
    async fn find_user_by_external_id(
        &self,
        platform: PlatformId,
        external: &ExternalId,
    ) -> Result<Option<User>, Fault>;

    /// The users of `platform` with the platform's own ids `externals`, by external id: the
    /// pointer items, then the profiles (BatchGetItems of up to 100 each).
    async fn find_users_by_external_ids(
        &self,
        platform: PlatformId,
        externals: &[ExternalId],
    ) -> Result<HashMap<ExternalId, User>, Fault>;

    async fn find_user_by_customer_id(&self, customer: &CustomerId) -> Result<Option<User>, Fault>;

    /// Blocks or unblocks a user: one write to the profile, which every authentication reads
    /// (so a block takes effect on all the user's tokens at once, or not at all).
    async fn set_user_status(
        &self,
        id: UserId,
        status: UserStatus,
        audit: &dyn Audit,
    ) -> Result<(), StoreError>;
}

/// The tokens: creation within the cap, reads and updates.
#[async_trait]
pub trait Tokens: Send + Sync {
    /// One strongly consistent GetItem; the caller checks [`TokenRecord::state`].
    async fn get_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, Fault>;

    /// A token and its owner's profile in one strongly consistent BatchGetItem (one round trip):
    /// what authentication reads, so the owner's current status and role decide.
    async fn get_token_and_owner(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<(Option<TokenRecord>, Option<User>), Fault>;

    /// The imported token whose secret hashes to `hash` (one strongly consistent GetItem of
    /// its import pointer); whether it works is its record's to say.
    async fn find_imported(&self, hash: &TokenHash) -> Result<Option<TokenAddress>, Fault>;

    /// Stores a token of `owner` while the owner is active; capped families stay within `cap`
    /// (counted per [`crate::token::CapCounter`]), whatever the concurrency. An imported token
    /// is stored with its import pointer, in the same transaction: a hash is imported once
    /// (`AlreadyImported` names the token that holds it).
    async fn create_token(
        &self,
        owner: Owner,
        token: NewToken,
        cap: u32,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<(), StoreError>;

    /// Stores new tokens, of one owner or of several, in one transaction: all of them, with
    /// what [`Tokens::create_token`] writes for each and one guard an owner counting them
    /// all under `cap`, or none. `Ok(false)`: none is stored, nor ever will be (a condition
    /// failed, the tokens do not fit in one transaction, or an unknown outcome was settled);
    /// create them one by one to learn each one's answer.
    async fn create_tokens(
        &self,
        tokens: Vec<(Owner, NewToken)>,
        cap: u32,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<bool, Fault>;

    /// Every live token of a user, all families, newest first within each family (one
    /// strongly consistent Query).
    async fn list_all_tokens(&self, user: UserId, now: EpochMs) -> Result<Vec<TokenRecord>, Fault>;

    /// The live tokens of one family, newest first (one strongly consistent Query).
    async fn list_tokens(
        &self,
        user: UserId,
        family: TokenFamily,
        now: EpochMs,
    ) -> Result<Vec<TokenRecord>, Fault>;

    /// The tokens minted with `parent` (a successor it rolled to is found by `rolled_to`),
    /// live or not: one strongly consistent Query of its child items, every page.
    async fn children(&self, parent: PublicTokenId) -> Result<Vec<TokenAddress>, Fault>;

    /// The records of many tokens (the live item, or else the retired copy) and many users'
    /// profiles, in strongly consistent BatchGetItems of up to 100 keys, several in flight at
    /// once. Absent ones are left out.
    async fn find_tokens(&self, tokens: &[TokenAddress], users: &[UserId]) -> Result<Found, Fault>;

    /// Applies `fields` to `record`'s live token, only while it is live and its abilities are
    /// still those of `record` (so updates that race never widen them). The updated record, or
    /// `None` when the token is gone, no longer live, or was changed meanwhile.
    async fn update_token(
        &self,
        record: &TokenRecord,
        fields: &TokenChange,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<Option<TokenRecord>, Fault>;

    /// Records that a token authenticated at `now`, unless its `last_used_at` is already
    /// within [`LAST_USED_RESOLUTION_MS`] of it (a conditional update: concurrent requests write
    /// once). Returns whether it wrote.
    async fn touch_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        now: EpochMs,
    ) -> Result<bool, Fault>;
}

/// Rolling a token over to a successor, which takes its cap slot and its meter.
#[async_trait]
pub trait Rolls: Send + Sync {
    /// Replaces `owner`'s live token `predecessor` by `successor` in one transaction: the successor is
    /// stored (taking over the predecessor's cap slot, so a roll never fails on the cap), and the
    /// predecessor is marked rolled and works until `grace_end` (or its own earlier expiry).
    /// A token is rolled at most once, also when rolls race. `Err(TokenIdTaken)`: draw another
    /// successor id.
    async fn roll_token(
        &self,
        owner: Owner,
        predecessor: &TokenRecord,
        successor: NewToken,
        grace_end: EpochSeconds,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<RollOutcome, StoreError>;
}

/// Revoking tokens: one with its predecessor in grace, or many at once.
#[async_trait]
pub trait Revocations: Send + Sync {
    /// Revokes a live token at once ([`Revocation::Deleted`]). `false` when there is no such
    /// live token.
    async fn revoke_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let address = TokenAddress {
            user_id: user,
            family,
            id,
        };
        self.revoke_token_if(address, &Revocation::Deleted, audit, now, &|_| true)
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
        audit: &dyn Audit,
        now: EpochMs,
        allowed: &(dyn for<'r> Fn(&'r TokenRecord) -> bool + Sync),
    ) -> Result<bool, Fault>;

    /// Revokes each of `records` (as read) for its reason, while it is live: one transaction
    /// per owner for up to 49 of its tokens, owners in parallel. Returns how many this call
    /// revoked (a token revoked meanwhile is left as it is).
    async fn revoke_tokens(
        &self,
        records: &[(TokenRecord, Revocation)],
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<usize, Fault>;
}

/// Usage limits and their meters: setting them, and charging units of use.
#[async_trait]
pub trait Meters: Send + Sync {
    /// Sets the usage limits of a user (shared by all its tokens) or of a live token, as a new
    /// meter (the credits given for the current refill period, a new rate window), with its
    /// `limits.updated` event in the same transaction. `false`: the user or token is gone (or
    /// no longer live).
    async fn set_limits(
        &self,
        target: Metered<'_>,
        limits: &Limits,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<bool, Fault>;

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
        now: EpochMs,
    ) -> Result<Option<Usage>, Fault>;
}

/// The audit trail (each change writes its event in its own transaction).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Up to `limit` audit events of `scope`, newest first, after `cursor`: one Query.
    async fn list_events(
        &self,
        scope: EventScope,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<EventPage, Fault>;
}

/// The generations of each user's permanent token.
#[async_trait]
pub trait PermanentKeys: Send + Sync {
    /// Makes sure the user's permanent token of the generation it returns works. `derive` makes
    /// a generation's record under each accepted prefix, the minting one first. `Working`: the
    /// record of the current generation is written on first use (the first candidate); when it
    /// is revoked, gone, or matches none of the candidates (the server key changed, or its
    /// prefix is no longer accepted), the user moves on to the next generation in one
    /// transaction (the old record, if still live, is revoked with it).
    /// `Next` (a rotation): the user moves on whatever the state of the current one, so the
    /// previous key stops working at once; rotations that race end on one new generation.
    async fn issue_permanent_token(
        &self,
        owner: &User,
        derive: &(dyn Fn(u32) -> Vec<NewToken> + Sync),
        wanted: PermanentGeneration,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<WorkingPermanent, StoreError>;
}

/// The live token a public id names, whatever its family: one BatchGetItem of its four
/// possible keys (and their retired copies, which are not live).
pub async fn live_token(
    store: &dyn Store,
    id: PublicTokenId,
    now: EpochMs,
) -> Result<Option<TokenRecord>, Fault> {
    let addresses = TokenFamily::ALL.map(|family| TokenAddress {
        user_id: id.user_id,
        family,
        id: id.token_id,
    });
    let found = store.find_tokens(&addresses, &[]).await?;
    Ok(found
        .tokens
        .into_values()
        .find(|record| record.state(now) == TokenState::Live))
}

/// Every token that descends from `roots` (rolled from one, or minted with one, transitively),
/// live or not, each with the root it descends from; the roots left out. One BatchGetItem a
/// generation, and one Query of child items for each token that could mint
/// ([`TokenRecord::may_have_children`]).
pub async fn descendants(
    store: &dyn Store,
    roots: &[TokenRecord],
) -> Result<Vec<(TokenRecord, PublicTokenId)>, Fault> {
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
            .filter(|(record, _)| record.may_have_children())
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
) -> Result<Vec<(TokenAddress, PublicTokenId)>, Fault> {
    let children = store.children(parent).await?;
    Ok(children.into_iter().map(|child| (child, root)).collect())
}

/// The record that holds `record`'s lineage meter: `record` itself, or the live successor of a
/// rolled one (one GetItem, only then). `None`: the lineage ended (the successor is gone).
pub async fn meter_holder<S: Tokens + ?Sized>(
    store: &S,
    record: &TokenRecord,
    now: EpochMs,
) -> Result<Option<TokenRecord>, Fault> {
    match record.successor() {
        None => Ok(Some(record.clone())),
        Some(successor) => Ok(store
            .get_token(successor.user_id, successor.family, successor.id)
            .await?
            .filter(|s| s.state(now) == TokenState::Live)),
    }
}

/// Sets the usage limits of the live token `record` (as read) on its key lineage's meter: its
/// own, or its successor's while it is a rolled token in its grace period. A roll that lands
/// meanwhile is read again, so the limits never stay on a predecessor that no longer charges
/// its own meter. `false`: the token (or its successor) is no longer live.
pub async fn set_token_limits(
    store: &dyn Store,
    record: &TokenRecord,
    limits: &Limits,
    audit: &dyn Audit,
    now: EpochMs,
) -> Result<bool, Fault> {
    let mut record = record.clone();
    for _ in 0..3 {
        let Some(holder) = meter_holder(store, &record, now).await? else {
            return Ok(false);
        };
        if store
            .set_limits(Metered::Token(&holder), limits, audit, now)
            .await?
        {
            return Ok(true);
        }
        match live_token(store, record.public_id(), now).await? {
            Some(current) => record = current,
            None => return Ok(false),
        }
    }
    Ok(false)
}
