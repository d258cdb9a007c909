//! Minting: the one path from a request for a token to a stored record and a plaintext.

use crate::auth::Principal;
use crate::domain::{Abilities, TokenName};
use crate::error::ApiError;
use crate::store::{NewToken, Owner, Store, StoreError, TokenRecord};
use crate::token::{self, PublicTokenId, TokenKind, TokenSecret};

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
}

impl MintRequest {
    /// A token minted by `caller`: it records its parent and never outlives it (an expiry later
    /// than the caller's is refused; none asked for is the caller's).
    pub fn by(
        caller: &Principal,
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
        })
    }
}

/// A stored token and the plaintext that is shown once.
#[derive(Clone, Debug)]
pub struct Minted {
    pub secret: TokenSecret,
    pub record: TokenRecord,
}

/// Generates a token for `owner` and stores its hash, within the per-user cap.
pub async fn mint(
    store: &dyn Store,
    owner: Owner,
    request: MintRequest,
    cap: u32,
    now_ms: u64,
) -> Result<Minted, StoreError> {
    // A record id clashes only with one of the same owner, family and millisecond sharing 32
    // random bits; then a fresh token is drawn.
    for _ in 0..3 {
        let issued = token::generate(request.kind, owner.id, now_ms);
        let new = NewToken {
            parsed: issued.parsed,
            name: request.name.as_str().to_string(),
            abilities: request.abilities.clone(),
            created_at_ms: now_ms,
            expires_at: request.expires_at,
            parent_id: request.parent_id,
        };
        let record = new.record(owner);
        match store.create_token(owner, new, cap, now_ms).await {
            Ok(()) => {
                return Ok(Minted {
                    secret: issued.secret,
                    record,
                })
            }
            Err(StoreError::TokenIdTaken) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::TokenIdTaken)
}

/// A never-expiring token of `kind` for `owner`, as plaintext: the operator's and
/// the tests' shortcut around a route.
pub async fn mint_plaintext(
    store: &dyn Store,
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
    };
    let minted = mint(store, owner, request, cap, crate::store::now_ms()).await?;
    Ok(minted.secret.expose().to_string())
}
