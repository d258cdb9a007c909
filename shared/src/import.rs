//! Import of another system's tokens (`POST /api/v1/tokens/import`, `tokenctl token import`):
//! each entry becomes an API key of its owner that authenticates by the SHA-256 of its secret
//! (see [`crate::token::foreign_hash`]), stored with its import pointer in the owner's capped
//! creation transaction, so a hash is imported once and a re-import answers `existing`.

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit::Change;
use crate::clock::EpochMs;
use crate::domain::{Abilities, ExternalId, Meta, PlatformId, TokenName, UserId};
use crate::service::Service;
use crate::store::{Fault, NewToken, Owner, Refusal, StoreError, User};
use crate::token::{foreign_hash, ParsedToken, PublicTokenId, TokenHash, TokenId, TokenKind};
use crate::validate::{
    abilities_field, external_id_field, future_date_field, integer_field, meta_field, name_field,
    past_date_field, required, string_field, FieldErrors, Parsed,
};

/// The most entries one request imports (a file has any number: `tokenctl` sends it in
/// batches of this size).
pub const MAX_ENTRIES: usize = 1000;

/// How far ahead an imported token's expiry may be: 100 years.
const MAX_EXPIRY_AHEAD_S: u64 = 100 * 365 * 86_400;

/// Tokens created in one transaction, of one owner or several: each is 3 items (record,
/// audit event, import pointer) and each owner's guard one more, so at most 96 of DynamoDB's
/// 100.
pub const TOGETHER: usize = 24;

/// Transactions of one import sent at the same time. They never hold the same owner: an
/// owner's entries beyond [`TOGETHER`] go in the next round, after these.
pub const IN_FLIGHT: usize = 8;

/// Who an entry's token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum OwnerRef {
    Id(UserId),
    External(ExternalId),
}

/// One valid entry.
#[derive(Clone, Debug)]
pub struct Entry {
    owner: OwnerRef,
    name: TokenName,
    abilities: Abilities,
    expires_at: Option<u64>,
    created_at: Option<u64>,
    meta: Option<Meta>,
    hash: TokenHash,
}

/// What became of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub index: usize,
    pub status: Status,
    /// The token's id (`imported` and `existing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why it was not imported (`error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An entry's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored now.
    Imported,
    /// Its hash was imported before (by this request or an earlier one): nothing written.
    Existing,
    /// Refused: nothing written.
    Error,
}

impl Outcome {
    fn error(index: usize, error: impl Into<String>) -> Outcome {
        Outcome {
            index,
            status: Status::Error,
            id: None,
            error: Some(error.into()),
        }
    }

    fn stored(index: usize, status: Status, id: PublicTokenId) -> Outcome {
        Outcome {
            index,
            status,
            id: Some(id.to_string()),
            error: None,
        }
    }
}

impl Entry {
    /// The API key of `owner` the entry becomes, as `token_id`.
    fn new_token(&self, owner: &User, token_id: TokenId, now: EpochMs) -> NewToken {
        NewToken {
            parsed: ParsedToken {
                kind: TokenKind::ApiKey,
                user_id: owner.id,
                token_id,
                hash: self.hash,
            },
            name: self.name.as_str().to_string(),
            abilities: self.abilities.clone(),
            created_at_ms: self.created_at.map_or(now.0, |at| at * 1000),
            expires_at: self.expires_at,
            parent_id: None,
            meta: self.meta.clone(),
            imported: true,
        }
    }

    /// Reads one entry of an import: `user_id` or `external_id`, `name`, `abilities?`
    /// (default `["*"]`), `expires_at?`, `created_at?`, `meta?`, and exactly one of `token`
    /// (the old system's plaintext) or `sha256` (its hex SHA-256). A token of this deployment's
    /// own format is refused: it is this service's to mint.
    pub fn parse(value: &Value, service: &Service, now: EpochMs) -> Result<Entry, String> {
        let Value::Object(body) = value else {
            return Err("The entry must be a JSON object.".into());
        };
        parse_fields(body, service, now).map_err(|errors| errors.summary())
    }
}

fn parse_fields(body: &Map<String, Value>, service: &Service, now: EpochMs) -> Parsed<Entry> {
    let now_s = now.seconds().0;
    let user_id = integer_field(body, "user_id", 1, i64::MAX as u64);
    let external = external_id_field(body, "external_id");
    let owner = match (user_id?, external?) {
        (Some(id), None) => OwnerRef::Id(UserId(id)),
        (None, Some(external)) => OwnerRef::External(external),
        _ => {
            return Err(FieldErrors::single(
                "user_id",
                "Exactly one of the user id and external id fields is required.",
            ))
        }
    };
    let name = required("name", name_field(body, "name"))?;
    let abilities = abilities_field(body, "abilities")?.unwrap_or_else(Abilities::full);
    let expires_at = future_date_field(body, "expires_at", now_s, MAX_EXPIRY_AHEAD_S)?;
    let created_at = past_date_field(body, "created_at", now_s)?;
    let meta = meta_field(body, "meta")?.flatten();
    let hash = match (string_field(body, "token")?, string_field(body, "sha256")?) {
        (Some(token), None) => plaintext_hash(&token, service)?,
        (None, Some(hex)) => parse_sha256(&hex).ok_or_else(|| {
            FieldErrors::single(
                "sha256",
                "The sha256 field must be 64 hexadecimal characters.",
            )
        })?,
        _ => {
            return Err(FieldErrors::single(
                "token",
                "Exactly one of the token and sha256 fields is required.",
            ))
        }
    };
    Ok(Entry {
        owner,
        name,
        abilities,
        expires_at,
        created_at,
        meta,
        hash,
    })
}

/// The hash a plaintext token of another system is looked up by.
fn plaintext_hash(token: &str, service: &Service) -> Parsed<TokenHash> {
    let format = &service.config.token_format;
    if format.looks_native(token) {
        return Err(FieldErrors::single(
            "token",
            "The token field is a token of this service: it cannot be imported.",
        ));
    }
    foreign_hash(token).ok_or_else(|| {
        FieldErrors::single(
            "token",
            "The token field must be 8 to 1024 visible ASCII characters.",
        )
    })
}

/// 64 hexadecimal characters, either case.
fn parse_sha256(text: &str) -> Option<TokenHash> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(TokenHash(bytes))
}

/// Imports `entries` (each already read, or why not) for users of `platform` (`None`: of any
/// platform, the operator's import by user id). Every entry is answered, in order; a fault of
/// the store stops the import (what was stored stays, and a retry answers it `existing`).
///
/// The owners are read together (BatchGetItems), then the tokens are created [`TOGETHER`] a
/// transaction, all or none; a transaction refused (a hash imported before, an owner blocked
/// or at its cap) is done again one token at a time, so that each entry gets its own answer.
pub async fn import(
    service: &Service,
    platform: Option<PlatformId>,
    entries: Vec<Result<Entry, String>>,
    change: &Change,
    now: EpochMs,
) -> Result<Vec<Outcome>, Fault> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; entries.len()];
    let mut valid = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            Err(error) => outcomes[index] = Some(Outcome::error(index, error)),
            Ok(entry) => valid.push((index, entry)),
        }
    }
    let owners = find_owners(service, platform, &valid).await?;
    // Each owner's entries in order, in pieces of at most TOGETHER.
    let mut by_owner: Vec<(User, Vec<(usize, Entry)>)> = Vec::new();
    for (index, entry) in valid {
        let Some(user) = owners.get(&entry.owner) else {
            outcomes[index] = Some(Outcome::error(index, unknown_owner(&entry.owner, platform)));
            continue;
        };
        match by_owner.iter_mut().find(|(owner, _)| owner.id == user.id) {
            Some((_, group)) => group.push((index, entry)),
            None => by_owner.push((user.clone(), vec![(index, entry)])),
        }
    }
    let mut pieces: Vec<_> = by_owner
        .into_iter()
        .map(|(user, group)| (user, in_pieces(group).into_iter()))
        .collect();
    // Round by round, each owner's next piece; a round's pieces packed into transactions.
    loop {
        let mut transactions: Vec<Vec<(usize, Entry, User)>> = Vec::new();
        for (user, pieces) in &mut pieces {
            let Some(piece) = pieces.next() else {
                continue;
            };
            let size = piece.len();
            let piece = piece
                .into_iter()
                .map(|(index, entry)| (index, entry, user.clone()));
            match transactions.last_mut() {
                Some(last) if last.len() + size <= TOGETHER => last.extend(piece),
                _ => transactions.push(piece.collect()),
            }
        }
        if transactions.is_empty() {
            break;
        }
        let done: Vec<Vec<Outcome>> = stream::iter(transactions)
            .map(|together| import_together(service, together, change, now))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        for outcome in done.into_iter().flatten() {
            let index = outcome.index;
            outcomes[index] = Some(outcome);
        }
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// One owner's entries in pieces of at most [`TOGETHER`], in order.
fn in_pieces(group: Vec<(usize, Entry)>) -> Vec<Vec<(usize, Entry)>> {
    let mut group = group.into_iter().peekable();
    let mut pieces = Vec::new();
    while group.peek().is_some() {
        pieces.push(group.by_ref().take(TOGETHER).collect());
    }
    pieces
}

/// Why an entry's owner is not one: unknown, or of another platform.
fn unknown_owner(owner: &OwnerRef, platform: Option<PlatformId>) -> &'static str {
    match owner {
        OwnerRef::External(_) if platform.is_none() => {
            "An external id names a user of a platform: give the platform."
        }
        _ => "The user was not found.",
    }
}

/// The entries' owners that are users of `platform` (any platform's when `None`, by user id
/// alone: an external id names a user of a platform).
async fn find_owners(
    service: &Service,
    platform: Option<PlatformId>,
    entries: &[(usize, Entry)],
) -> Result<HashMap<OwnerRef, User>, Fault> {
    let (mut ids, mut externals) = (Vec::new(), Vec::new());
    for (_, entry) in entries {
        match &entry.owner {
            OwnerRef::Id(id) => ids.push(*id),
            OwnerRef::External(external) => externals.push(external.clone()),
        }
    }
    let mut owners: HashMap<OwnerRef, User> = service
        .store
        .get_users(&ids)
        .await?
        .into_iter()
        .map(|(id, user)| (OwnerRef::Id(id), user))
        .collect();
    if let (Some(platform), false) = (platform, externals.is_empty()) {
        let found = service
            .store
            .find_users_by_external_ids(platform, &externals)
            .await?;
        owners.extend(
            found
                .into_iter()
                .map(|(external, user)| (OwnerRef::External(external), user)),
        );
    }
    owners.retain(|_, user| platform.is_none_or(|platform| user.platform_id == platform));
    Ok(owners)
}

/// Entries of distinct owners' pieces, created in one transaction; refused, one by one.
async fn import_together(
    service: &Service,
    together: Vec<(usize, Entry, User)>,
    change: &Change,
    now: EpochMs,
) -> Result<Vec<Outcome>, Fault> {
    let kind = TokenKind::ApiKey;
    let new: Vec<(Owner, NewToken)> = together
        .iter()
        .map(|(_, entry, user)| {
            (
                Owner::from(user),
                entry.new_token(user, TokenId::generate(now), now),
            )
        })
        .collect();
    let ids: Vec<PublicTokenId> = new
        .iter()
        .map(|(_, token)| PublicTokenId {
            user_id: token.parsed.user_id,
            token_id: token.parsed.token_id,
        })
        .collect();
    let cap = service.config.cap(kind.family());
    if service.store.create_tokens(new, cap, change, now).await? {
        return Ok(together
            .iter()
            .zip(ids)
            .map(|((index, ..), id)| Outcome::stored(*index, Status::Imported, id))
            .collect());
    }
    let mut outcomes = Vec::with_capacity(together.len());
    for (index, entry, user) in together {
        outcomes.push(import_one(service, &user, index, entry, change, now).await?);
    }
    Ok(outcomes)
}

async fn import_one(
    service: &Service,
    user: &User,
    index: usize,
    entry: Entry,
    change: &Change,
    now: EpochMs,
) -> Result<Outcome, Fault> {
    let cap = service.config.cap(TokenKind::ApiKey.family());
    let mut result = Err(StoreError::Refused(Refusal::TokenIdTaken));
    for _ in 0..3 {
        let token_id = TokenId::generate(now);
        let new = entry.new_token(user, token_id, now);
        result = service
            .store
            .create_token(Owner::from(user), new, cap, change, now)
            .await
            .map(|()| PublicTokenId {
                user_id: user.id,
                token_id,
            });
        if !matches!(result, Err(StoreError::Refused(Refusal::TokenIdTaken))) {
            break;
        }
    }
    Ok(match result {
        Ok(id) => Outcome::stored(index, Status::Imported, id),
        Err(StoreError::Refused(Refusal::AlreadyImported(id))) => {
            // Another platform's key is never named: its id would name its owner.
            let holder = service.store.get_user(id.user_id).await?;
            match holder.is_some_and(|holder| holder.platform_id == user.platform_id) {
                true => Outcome::stored(index, Status::Existing, id),
                false => Outcome::error(index, "The secret is already in use: not imported."),
            }
        }
        Err(StoreError::Refused(refusal)) => Outcome::error(index, refused(&refusal)),
        Err(StoreError::Fault(fault)) => return Err(fault),
    })
}

/// An entry's refusal, as its outcome says it.
fn refused(refusal: &Refusal) -> String {
    match refusal {
        Refusal::UserNotFound => "The user was not found.".into(),
        Refusal::UserBlocked => "The user is blocked.".into(),
        Refusal::TokenLimitReached { max } => {
            format!("The user already holds the maximum of {max} tokens.")
        }
        other => format!("The token was not imported: {other}."),
    }
}
