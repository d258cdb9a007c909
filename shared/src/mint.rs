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
    let issued = token::generate(request.kind, owner.id, now_ms);
    let new = NewToken {
        parsed: issued.parsed,
        name: request.name.as_str().to_string(),
        abilities: request.abilities,
        created_at_ms: now_ms,
        expires_at: request.expires_at,
    };
    let record = new.record(owner, UserStatus::Active);
    store.create_token(owner, new, cap, now_ms).await?;
    Ok(Minted {
        secret: issued.secret,
        record,
    })
}
