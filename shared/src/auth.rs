//! Authentication: one strongly consistent GetItem per presented token.

use crate::domain::{Abilities, PlatformId, Role, UserId};
use crate::error::ApiError;
use crate::store::{Owner, Store, StoreError, TokenRecord, TokenState, LAST_USED_RESOLUTION_MS};
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
    /// When the token last authenticated, to the resolution of [`LAST_USED_RESOLUTION_MS`].
    pub last_used_at_ms: Option<u64>,
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

    /// Whether `last_used_at` is due an update: unset, or older than the resolution.
    pub fn last_use_is_stale(&self, now_ms: u64) -> bool {
        self.last_used_at_ms
            .is_none_or(|at| at.saturating_add(LAST_USED_RESOLUTION_MS) <= now_ms)
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

/// What verification concluded about a presented token (the verify route's `code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationCode {
    Valid,
    /// Malformed, unknown, or a secret that does not match the record.
    NotFound,
    Expired,
    Revoked,
    /// The owner is blocked.
    Disabled,
}

impl VerificationCode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerificationCode::Valid => "VALID",
            VerificationCode::NotFound => "NOT_FOUND",
            VerificationCode::Expired => "EXPIRED",
            VerificationCode::Revoked => "REVOKED",
            VerificationCode::Disabled => "DISABLED",
        }
    }
}

/// A verified token: the code, and the record unless it is `NotFound`.
#[derive(Clone, Debug)]
pub struct Verification {
    pub code: VerificationCode,
    pub record: Option<TokenRecord>,
}

/// Checks a presented token: malformed ones are refused before any database read; otherwise one
/// strongly consistent GetItem, a constant-time hash comparison and the record's state.
pub async fn verify(
    store: &dyn Store,
    presented: &str,
    now_ms: u64,
) -> Result<Verification, StoreError> {
    let not_found = Verification {
        code: VerificationCode::NotFound,
        record: None,
    };
    let Ok(parsed) = token::parse(presented) else {
        return Ok(not_found);
    };
    let Some(record) = store
        .get_token(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await?
    else {
        return Ok(not_found);
    };
    if !record.hash.matches(&parsed.hash) || record.kind != parsed.kind {
        return Ok(not_found);
    }
    let code = match record.state(now_ms) {
        TokenState::Live => VerificationCode::Valid,
        TokenState::Expired => VerificationCode::Expired,
        TokenState::Revoked => VerificationCode::Revoked,
        TokenState::OwnerBlocked => VerificationCode::Disabled,
    };
    Ok(Verification {
        code,
        record: Some(record),
    })
}

/// Authenticates a request's token. Every failure is the same 401, so a caller learns nothing
/// about which check failed.
pub async fn authenticate(
    store: &dyn Store,
    presented: Option<&str>,
    now_ms: u64,
) -> Result<Principal, ApiError> {
    let verification = verify(store, presented.ok_or(ApiError::Unauthenticated)?, now_ms).await?;
    match (verification.code, verification.record) {
        (VerificationCode::Valid, Some(record)) => Ok(Principal {
            user_id: record.user_id,
            platform_id: record.platform_id,
            role: record.owner_role,
            token_id: record.id,
            kind: record.kind,
            abilities: record.abilities,
            last_used_at_ms: record.last_used_at_ms,
        }),
        _ => Err(ApiError::Unauthenticated),
    }
}
