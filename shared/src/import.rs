//! Import of another system's tokens (`POST /api/v1/tokens/import`, `tokenctl token import`):
//! each entry becomes an API key of its owner that authenticates by the SHA-256 of its secret
//! (see [`crate::token::foreign_hash`]), stored with its import pointer in the owner's capped
//! creation transaction, so a hash is imported once and a re-import answers `existing`.

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

/// Owners whose entries are imported at the same time (one owner's entries go one after the
/// other, so they never race for its cap counter).
pub const OWNERS_IN_FLIGHT: usize = 8;

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
pub async fn import(
    service: &Service,
    platform: Option<PlatformId>,
    entries: Vec<Result<Entry, String>>,
    change: &Change,
    now: EpochMs,
) -> Result<Vec<Outcome>, Fault> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; entries.len()];
    let mut by_owner: Vec<(OwnerRef, Vec<(usize, Entry)>)> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        match entry {
            Err(error) => outcomes[index] = Some(Outcome::error(index, error)),
            Ok(entry) => match by_owner.iter_mut().find(|(owner, _)| *owner == entry.owner) {
                Some((_, group)) => group.push((index, entry)),
                None => by_owner.push((entry.owner.clone(), vec![(index, entry)])),
            },
        }
    }
    let done: Vec<Vec<Outcome>> = stream::iter(by_owner)
        .map(|(owner, group)| import_for(service, platform, owner, group, change, now))
        .buffer_unordered(OWNERS_IN_FLIGHT)
        .try_collect()
        .await?;
    for outcome in done.into_iter().flatten() {
        let index = outcome.index;
        outcomes[index] = Some(outcome);
    }
    Ok(outcomes.into_iter().flatten().collect())
}

/// One owner's entries, one after the other.
async fn import_for(
    service: &Service,
    platform: Option<PlatformId>,
    owner: OwnerRef,
    group: Vec<(usize, Entry)>,
    change: &Change,
    now: EpochMs,
) -> Result<Vec<Outcome>, Fault> {
    let Some(user) = find_owner(service, platform, &owner).await? else {
        let unknown = match owner {
            OwnerRef::External(_) if platform.is_none() => {
                "An external id names a user of a platform: give the platform."
            }
            _ => "The user was not found.",
        };
        return Ok(group
            .into_iter()
            .map(|(index, _)| Outcome::error(index, unknown))
            .collect());
    };
    let mut outcomes = Vec::with_capacity(group.len());
    for (index, entry) in group {
        outcomes.push(import_one(service, &user, index, entry, change, now).await?);
    }
    Ok(outcomes)
}

/// The entry's owner, when it is a user of `platform`.
async fn find_owner(
    service: &Service,
    platform: Option<PlatformId>,
    owner: &OwnerRef,
) -> Result<Option<User>, Fault> {
    let user = match (owner, platform) {
        (OwnerRef::Id(id), _) => service.store.get_user(*id).await?,
        (OwnerRef::External(external), Some(platform)) => {
            service
                .store
                .find_user_by_external_id(platform, external)
                .await?
        }
        (OwnerRef::External(_), None) => None,
    };
    Ok(user.filter(|user| platform.is_none_or(|platform| user.platform_id == platform)))
}

async fn import_one(
    service: &Service,
    user: &User,
    index: usize,
    entry: Entry,
    change: &Change,
    now: EpochMs,
) -> Result<Outcome, Fault> {
    let kind = TokenKind::ApiKey;
    let cap = service.config.cap(kind.family());
    let mut result = Err(StoreError::Refused(Refusal::TokenIdTaken));
    for _ in 0..3 {
        let token_id = TokenId::generate(now);
        let new = NewToken {
            parsed: ParsedToken {
                kind,
                user_id: user.id,
                token_id,
                hash: entry.hash,
            },
            name: entry.name.as_str().to_string(),
            abilities: entry.abilities.clone(),
            created_at_ms: entry.created_at.map_or(now.0, |at| at * 1000),
            expires_at: entry.expires_at,
            parent_id: None,
            meta: entry.meta.clone(),
            imported: true,
        };
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
