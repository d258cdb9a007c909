//! Minting: the one path from a request for a token to a stored record and a plaintext.

use crate::audit::Change;
use crate::auth::Principal;
use crate::clock::{EpochMs, EpochSeconds};
use crate::domain::{Abilities, Meta, TokenName};
use crate::error::ApiError;
use crate::store::{NewToken, Owner, Refusal, RollOutcome, Store, StoreError, TokenRecord};
use crate::token::{PublicTokenId, TokenFormat, TokenKind, TokenSecret};

/// What to mint.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub kind: TokenKind,
    pub name: TokenName,
    pub abilities: Abilities,
    /// Epoch seconds; `None` never expires.
    pub expires_at: Option<u64>,
    /// The token that asked for it; `None` for the operator.
    pub parent_id: Option<PublicTokenId>,
    /// The platform's own data on the token.
    pub meta: Option<Meta>,
    /// Who asks, and from where: the creation's audit event.
    pub change: Change,
}

impl MintRequest {
    /// A token minted by `caller`: it records its parent and never outlives it (an expiry later
    /// than the caller's is refused; none asked for is the caller's).
    pub fn by(
        caller: &Principal,
        change: Change,
        kind: TokenKind,
        name: TokenName,
        abilities: Abilities,
        expires_at: Option<u64>,
    ) -> Result<MintRequest, ApiError> {
        Ok(MintRequest {
            kind,
            name,
            abilities,
            expires_at: caller.child_expiry(expires_at)?,
            parent_id: Some(caller.token()),
            meta: None,
            change,
        })
    }
}

/// A stored token and the plaintext that is shown once.
#[derive(Clone, Debug)]
pub struct Minted {
    pub secret: TokenSecret,
    pub record: TokenRecord,
}

/// Generates a token of `format`'s prefix for `owner` and stores its hash, within the per-user
/// cap.
pub async fn mint(
    store: &dyn Store,
    format: &TokenFormat,
    owner: Owner,
    request: MintRequest,
    cap: u32,
    now: EpochMs,
) -> Result<Minted, StoreError> {
    let (minted, ()) = issue(format, owner, &request, now, |new| {
        store.create_token(owner, new, cap, &request.change, now)
    })
    .await?;
    Ok(minted)
}

/// What a roll answered.
#[derive(Clone, Debug)]
pub enum Roll {
    /// The successor, shown once; the predecessor works until this epoch second.
    Rolled {
        minted: Box<Minted>,
        previous_expires_at: u64,
    },
    /// The predecessor was rolled before.
    AlreadyRolled,
    /// The predecessor replaced a token still in its grace period.
    PredecessorWorks,
    /// The predecessor is no longer live.
    Gone,
}

/// Replaces `owner`'s live token `predecessor` by a successor minted as `request`, in one
/// transaction (see [`crate::store::Rolls::roll_token`]); the predecessor works until `grace_end`.
/// The successor carries `format`'s prefix, whatever the predecessor's.
pub async fn roll(
    store: &dyn Store,
    format: &TokenFormat,
    owner: Owner,
    predecessor: &TokenRecord,
    request: MintRequest,
    grace_end: EpochSeconds,
    now: EpochMs,
) -> Result<Roll, StoreError> {
    let (minted, outcome) = issue(format, owner, &request, now, |new| {
        store.roll_token(owner, predecessor, new, grace_end, &request.change, now)
    })
    .await?;
    Ok(match outcome {
        RollOutcome::Rolled {
            successor,
            previous_expires_at,
        } => Roll::Rolled {
            minted: Box::new(Minted {
                record: *successor,
                ..minted
            }),
            previous_expires_at,
        },
        RollOutcome::AlreadyRolled => Roll::AlreadyRolled,
        RollOutcome::PredecessorWorks => Roll::PredecessorWorks,
        RollOutcome::Gone => Roll::Gone,
    })
}

/// Draws a token for `request` and hands its record to `store_it`, drawing again while the
/// record id is taken: an id clashes only with one of the same owner, family and millisecond
/// sharing 32 random bits.
async fn issue<T, F, Fut>(
    format: &TokenFormat,
    owner: Owner,
    request: &MintRequest,
    now: EpochMs,
    mut store_it: F,
) -> Result<(Minted, T), StoreError>
where
    F: FnMut(NewToken) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    for _ in 0..3 {
        let issued = format.generate(request.kind, owner.id, now);
        let new = NewToken {
            parsed: issued.parsed,
            name: request.name.as_str().to_string(),
            abilities: request.abilities.clone(),
            created_at_ms: now.0,
            expires_at: request.expires_at,
            parent_id: request.parent_id,
            meta: request.meta.clone(),
            imported: false,
        };
        let record = new.record(owner);
        match store_it(new).await {
            Ok(stored) => {
                let minted = Minted {
                    secret: issued.secret,
                    record,
                };
                return Ok((minted, stored));
            }
            Err(StoreError::Refused(Refusal::TokenIdTaken)) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(Refusal::TokenIdTaken.into())
}

/// A never-expiring token of `kind` for `owner`, as plaintext: the operator's and
/// the tests' shortcut around a route.
pub async fn mint_plaintext(
    store: &dyn Store,
    format: &TokenFormat,
    owner: Owner,
    kind: TokenKind,
    name: TokenName,
    abilities: Abilities,
    cap: u32,
) -> Result<String, StoreError> {
    let request = MintRequest {
        kind,
        name,
        abilities,
        expires_at: None,
        parent_id: None,
        meta: None,
        change: Change::operator(),
    };
    let minted = mint(store, format, owner, request, cap, crate::clock::now_ms()).await?;
    Ok(minted.secret.expose().to_string())
}
