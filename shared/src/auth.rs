//! Authentication: one strongly consistent GetItem per presented token.

use crate::domain::{Abilities, PlatformId, Role, UserId};
use crate::error::ApiError;
use crate::store::{Owner, Store, TokenState};
use crate::token::{self, TokenId, TokenKind};

/// Who is calling: the verified token and its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub platform_id: PlatformId,
    pub role: Role,
    pub token_id: TokenId,
    pub kind: TokenKind,
    pub abilities: Abilities,
}

impl Principal {
    /// The caller as the owner of tokens it mints for itself.
    pub fn owner(&self) -> Owner {
        Owner {
            id: self.user_id,
            platform_id: self.platform_id,
            role: self.role,
        }
    }

    /// Minting tokens for other users takes an admin's full-access token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.role == Role::Admin && self.abilities.is_full() {
            Ok(())
        } else {
            Err(ApiError::NotAdministrator)
        }
    }

    /// A token never creates one with abilities it does not have itself.
    pub fn require_abilities(&self, wanted: &Abilities) -> Result<(), ApiError> {
        if self.abilities.covers(wanted) {
            Ok(())
        } else {
            Err(ApiError::AbilitiesExceeded)
        }
    }
}

/// Verifies a presented token: malformed ones are refused before any database read; otherwise
/// one GetItem, a constant-time hash comparison and the record's state. Every failure is the same
/// 401, so a caller learns nothing about which check failed.
pub async fn authenticate(
    store: &dyn Store,
    presented: Option<&str>,
    now_ms: u64,
) -> Result<Principal, ApiError> {
    let parsed = token::parse(presented.ok_or(ApiError::Unauthenticated)?)
        .map_err(|_| ApiError::Unauthenticated)?;
    let record = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    if !record.hash.matches(&parsed.hash)
        || record.kind != parsed.kind
        || record.state(now_ms) != TokenState::Live
    {
        return Err(ApiError::Unauthenticated);
    }
    Ok(Principal {
        user_id: record.user_id,
        platform_id: record.platform_id,
        role: record.owner_role,
        token_id: record.id,
        kind: record.kind,
        abilities: record.abilities,
    })
}
