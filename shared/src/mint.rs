//! Minting: the one path from a request for a token to a stored record and a plaintext.

use crate::domain::UserStatus;
use crate::domain::{Abilities, TokenName};
use crate::store::{NewToken, Owner, Store, StoreError, TokenRecord};
use crate::token::{self, TokenKind, TokenSecret};

/// What to mint.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub kind: TokenKind,
    pub name: TokenName,
    pub abilities: Abilities,
    /// Epoch seconds; `None` never expires.
    pub expires_at: Option<u64>,
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
        };
        let record = new.record(owner, UserStatus::Active);
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
    };
    let minted = mint(store, owner, request, cap, crate::store::now_ms()).await?;
    Ok(minted.secret.expose().to_string())
}
