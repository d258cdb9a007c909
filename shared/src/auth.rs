//! Authentication: one strongly consistent GetItem per presented token.

use crate::clock::EpochMs;
use crate::domain::{Abilities, Permission, PlatformId, Role, UserId, UserStatus};
use crate::error::ApiError;
use crate::limits::{self, Meter, Usage};
use crate::model::{Identity, OfPlatform};
use crate::store::{Fault, Owner, Store, TokenRecord, TokenState, LAST_USED_RESOLUTION_MS};
use crate::token::{self, ParsedToken, PublicTokenId, TokenFormat, TokenId, TokenKind};

pub use crate::domain::MANAGE_TOKENS;

/// Who is calling: the verified token and its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub platform_id: PlatformId,
    pub role: Role,
    pub token_id: TokenId,
    pub kind: TokenKind,
    pub abilities: Abilities,
    /// When the token stops working (epoch seconds); whatever it mints expires no later.
    pub expires_at: Option<u64>,
    /// When the token last authenticated, to the resolution of [`LAST_USED_RESOLUTION_MS`].
    pub last_used_at_ms: Option<u64>,
    /// Whether the token has usage limits of its own (its key lineage's): it may then mint no
    /// token, since a new token would escape them.
    pub metered: bool,
    /// Who the owner is in the platform's own system.
    pub identity: Identity,
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
    pub fn last_use_is_stale(&self, now: EpochMs) -> bool {
        self.last_used_at_ms
            .is_none_or(|at| at.saturating_add(LAST_USED_RESOLUTION_MS) <= now.0)
    }

    /// The calling token's public id, kept on the tokens it mints.
    pub fn token(&self) -> PublicTokenId {
        PublicTokenId {
            user_id: self.user_id,
            token_id: self.token_id,
        }
    }

    /// Whether `record` is of the caller's platform: the one tenancy check. A record of
    /// another platform is answered exactly as an absent one.
    pub fn shares_platform(&self, record: &impl OfPlatform) -> bool {
        record.platform() == self.platform_id
    }

    /// Managing tokens (create, list, delete) takes `*` or [`MANAGE_TOKENS`], so a leaked
    /// narrow token cannot mint copies of itself or remove its owner's other tokens.
    pub fn require_token_management(&self) -> Result<(), ApiError> {
        if self.abilities.manage_tokens() {
            Ok(())
        } else {
            Err(ApiError::CannotManageTokens)
        }
    }

    /// Whether this token may see or act on a token with `abilities`: only on ones within its
    /// own.
    pub fn may_manage(&self, abilities: &Abilities) -> bool {
        self.abilities.covers(abilities)
    }

    /// The expiry of a token this one mints: what was asked for, never later than this token's
    /// own (`None` asked: this token's). Asking for later is refused.
    pub fn child_expiry(&self, requested: Option<u64>) -> Result<Option<u64>, ApiError> {
        match (requested, self.expires_at) {
            (Some(wanted), Some(limit)) if wanted > limit => {
                Err(ApiError::OutlivesParent { limit })
            }
            (Some(wanted), _) => Ok(Some(wanted)),
            (None, limit) => Ok(limit),
        }
    }

    /// Minting a token takes a token without limits of its own: a child would not be charged
    /// to them, and so would escape them (a user's limits bind every token of the user anyway).
    pub fn require_unmetered(&self) -> Result<(), ApiError> {
        if self.metered {
            Err(ApiError::MeteredMinting)
        } else {
            Ok(())
        }
    }

    /// Whether the caller is one of its platform's service keys (not a user).
    pub fn is_service_key(&self) -> bool {
        self.kind == TokenKind::ServiceKey
    }

    /// Whether the caller may use a platform-admin route that takes `permission`: a service key
    /// holding it (or `*`), or an admin's full-access token.
    pub fn holds(&self, permission: Permission) -> bool {
        if self.is_service_key() {
            permission.granted_by(&self.abilities)
        } else {
            self.role == Role::Admin && self.abilities.is_full()
        }
    }

    /// [`Self::holds`], or the 403.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.holds(permission) {
            Ok(())
        } else {
            Err(ApiError::NotAdministrator)
        }
    }

    /// A route that acts for the calling user (its own tokens, its profile) takes a user's
    /// token, never a service key.
    pub fn require_user(&self) -> Result<(), ApiError> {
        if self.is_service_key() {
            Err(ApiError::ServiceKeyNotAUser)
        } else {
            Ok(())
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

/// What verification concluded about a presented token (the verify route's `code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerificationCode {
    Valid,
    /// Malformed, unknown, or a secret that does not match the record.
    NotFound,
    Expired,
    Revoked,
    /// The token is disabled, or its owner is blocked (or no longer in the directory).
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

/// A verified token: the code, the record unless it is `NotFound`, and the owner's role while
/// the owner is active.
#[derive(Clone, Debug)]
pub struct Verification {
    pub code: VerificationCode,
    pub record: Option<TokenRecord>,
    pub owner_role: Option<Role>,
    /// Why the token was taken out of use, if it was: its revocation's reason (`deleted`,
    /// `rolled`, `leaked`, `self_revoked`), `rolled` for a rolled token (working until the end
    /// of its grace period), `blocked` for a token of a blocked owner.
    pub revoked_reason: Option<&'static str>,
    /// The owner's usage limits and their use (shared by its tokens); `None`: unmetered.
    pub owner_meter: Option<Meter>,
    /// Who the owner is in the platform's own system (empty when the owner is gone).
    pub owner_identity: Identity,
    /// The record whose meter the token's units are charged to: the token's own, or, for a
    /// rolled token in its grace period, its successor's (one meter a key lineage).
    pub meter_holder: Option<TokenRecord>,
}

impl Verification {
    /// The token's limits and their use (its lineage's); `None`: no limits of its own.
    pub fn token_meter(&self) -> Option<Meter> {
        self.meter_holder.as_ref().and_then(|holder| holder.meter)
    }

    /// Whether using the token is charged (it, or its owner, has usage limits).
    pub fn is_metered(&self) -> bool {
        self.token_meter().is_some() || self.owner_meter.is_some()
    }

    /// Where the token's limits and its owner's stand at `now`, without charging.
    pub fn usage(&self, now: EpochMs) -> Usage {
        let standings: Vec<_> = [self.token_meter(), self.owner_meter]
            .into_iter()
            .flatten()
            .map(|meter| meter.standing(now))
            .collect();
        limits::usage(&standings, 0, now)
    }

    /// One unit of use of a valid token: charged to its limits and its owner's (none for an
    /// unmetered token, with no write). `None`: the token stopped being usable meanwhile.
    pub async fn charge(&self, store: &dyn Store, now: EpochMs) -> Result<Option<Usage>, Fault> {
        match &self.meter_holder {
            Some(holder) if self.is_metered() => {
                store.charge(holder, self.owner_meter.as_ref(), now).await
            }
            _ => Ok(Some(Usage::default())),
        }
    }
}

/// Checks a presented token: malformed ones are refused before any database read; otherwise one
/// strongly consistent BatchGetItem of the token and its owner's profile, a constant-time hash
/// comparison, the record's state and the owner's current status (a block is one write to the
/// profile, so it holds for every token at once).
pub async fn verify(
    store: &dyn Store,
    format: &TokenFormat,
    presented: &str,
    now: EpochMs,
) -> Result<Verification, Fault> {
    let verification = check(store, format, presented, now).await?;
    crate::metrics::verified(verification.code.as_str());
    Ok(verification)
}

/// [`verify`] without the metric.
async fn check(
    store: &dyn Store,
    format: &TokenFormat,
    presented: &str,
    now: EpochMs,
) -> Result<Verification, Fault> {
    let not_found = Verification {
        code: VerificationCode::NotFound,
        record: None,
        owner_role: None,
        revoked_reason: None,
        owner_meter: None,
        owner_identity: Identity::default(),
        meter_holder: None,
    };
    let Some(parsed) = resolve(store, format, presented).await? else {
        return Ok(not_found);
    };
    let (record, owner) = store
        .get_token_and_owner(parsed.user_id, parsed.kind.family(), parsed.token_id)
        .await?;
    let Some(record) = record else {
        return Ok(not_found);
    };
    if !record.hash.matches(&parsed.hash) || record.kind != parsed.kind {
        return Ok(not_found);
    }
    let owner_role = owner
        .as_ref()
        .filter(|owner| owner.status == UserStatus::Active)
        .map(|owner| owner.role);
    let mut code = match (record.state(now), owner_role) {
        (TokenState::Revoked, _) => VerificationCode::Revoked,
        (TokenState::Expired, _) => VerificationCode::Expired,
        (TokenState::Live, None) => VerificationCode::Disabled,
        (TokenState::Live, Some(_)) if !record.enabled => VerificationCode::Disabled,
        (TokenState::Live, Some(_)) => VerificationCode::Valid,
    };
    // A rolled token in its grace period works through its successor: one more read, only
    // then. It stops with the successor (revoked: the lineage ended) and is disabled with it.
    let mut meter_holder = Some(record.clone());
    if let (VerificationCode::Valid, Some(successor)) = (code, record.successor()) {
        let successor = store
            .get_token(successor.user_id, successor.family, successor.id)
            .await?;
        code = match &successor {
            Some(s) if s.state(now) != TokenState::Live => VerificationCode::Revoked,
            Some(s) if !s.enabled => VerificationCode::Disabled,
            Some(_) => VerificationCode::Valid,
            None => VerificationCode::Revoked,
        };
        meter_holder = successor;
    }
    let blocked = owner
        .as_ref()
        .is_some_and(|owner| owner.status == UserStatus::Blocked);
    let revoked_reason = match &record.revocation {
        Some(revocation) => Some(revocation.name()),
        None if record.rolled_to.is_some() => Some("rolled"),
        None if blocked => Some("blocked"),
        None => None,
    };
    Ok(Verification {
        code,
        owner_role,
        revoked_reason,
        owner_identity: owner.as_ref().map(Identity::from).unwrap_or_default(),
        owner_meter: owner.and_then(|owner| owner.meter),
        meter_holder,
        record: Some(record),
    })
}

/// What a presented string names: a token of an accepted prefix, parsed offline (a string of a
/// native token's shape whose checksum does not hold names nothing, and is never read); any
/// other string, the imported token the SHA-256 of its secret points to (one GetItem, see
/// [`token::foreign_hash`]).
pub async fn resolve(
    store: &dyn Store,
    format: &TokenFormat,
    presented: &str,
) -> Result<Option<ParsedToken>, Fault> {
    if let Ok(parsed) = format.parse(presented) {
        return Ok(Some(parsed));
    }
    let foreign = token::foreign_hash(presented).filter(|_| !format.looks_native(presented));
    let Some(hash) = foreign else {
        return Ok(None);
    };
    Ok(store
        .find_imported(&hash)
        .await?
        .map(|address| ParsedToken {
            kind: TokenKind::ApiKey,
            user_id: address.user_id,
            token_id: address.id,
            hash,
        }))
}

/// Authenticates a request's token. Every failure is the same 401, so a caller learns nothing
/// about which check failed.
pub async fn authenticate(
    store: &dyn Store,
    format: &TokenFormat,
    presented: Option<&str>,
    now: EpochMs,
) -> Result<Principal, ApiError> {
    authenticated(store, format, presented, now)
        .await
        .map(|(principal, _)| principal)
}

/// [`authenticate`], with the verification it made (the records it read).
pub async fn authenticated(
    store: &dyn Store,
    format: &TokenFormat,
    presented: Option<&str>,
    now: EpochMs,
) -> Result<(Principal, Verification), ApiError> {
    let presented = presented.ok_or(ApiError::Unauthenticated)?;
    let verification = verify(store, format, presented, now).await?;
    Ok((principal(&verification)?, verification))
}

/// The caller a verification found: a valid token of an active owner, or the 401.
fn principal(verification: &Verification) -> Result<Principal, ApiError> {
    match (
        verification.code,
        &verification.record,
        verification.owner_role,
    ) {
        (VerificationCode::Valid, Some(record), Some(role)) => Ok(Principal {
            user_id: record.user_id,
            platform_id: record.platform_id,
            role,
            token_id: record.id,
            kind: record.kind,
            abilities: record.abilities.clone(),
            expires_at: record.expires_at,
            last_used_at_ms: record.last_used_at_ms,
            metered: verification.token_meter().is_some(),
            identity: verification.owner_identity.clone(),
        }),
        _ => Err(ApiError::Unauthenticated),
    }
}
