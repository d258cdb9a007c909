//! The audit trail: one event for every change to a token or a user, written in the same
//! DynamoDB transaction as the change, so no change lands without its event and a change that
//! fails leaves none. Reads write none. An event never holds a secret or a hash of one.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::exact_timestamp;
use crate::domain::{PlatformId, UserId};
use crate::token::{PublicTokenId, TokenKind};

/// Who acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// A user's token, through a route.
    User,
    /// `tokenctl`.
    Operator,
    /// A signed secret-scanning report.
    SecretScanning,
    /// Whoever holds a token, revoking it.
    TokenHolder,
    /// A platform's service key, through a route.
    ServiceKey,
}

crate::domain::named!(ActorKind {
    User => "user",
    Operator => "operator",
    SecretScanning => "secret_scanning",
    TokenHolder => "token_holder",
    ServiceKey => "service_key",
});

/// Who makes a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub user_id: Option<UserId>,
    pub token_id: Option<PublicTokenId>,
}

/// Where a request came from, as API Gateway saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Source {
    pub ip: String,
    pub user_agent: String,
}

/// Who makes a change and from where: what every write of the store takes, so that it writes
/// the change's event with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub actor: Actor,
    pub source: Option<Source>,
}

impl Change {
    fn of(
        kind: ActorKind,
        user_id: Option<UserId>,
        token_id: Option<PublicTokenId>,
        source: Option<Source>,
    ) -> Change {
        Change {
            actor: Actor {
                kind,
                user_id,
                token_id,
            },
            source,
        }
    }

    /// A change made with `tokenctl` (no source).
    pub fn operator() -> Change {
        Change::of(ActorKind::Operator, None, None, None)
    }

    /// A change made by `token`, a token of `user`.
    pub fn by(user: UserId, token: PublicTokenId, source: Option<Source>) -> Change {
        Change::of(ActorKind::User, Some(user), Some(token), source)
    }

    /// A change made by a platform's service key `token`.
    pub fn service_key(token: PublicTokenId, source: Option<Source>) -> Change {
        Change::of(ActorKind::ServiceKey, None, Some(token), source)
    }

    /// A change made on a secret-scanning report's word.
    pub fn secret_scanning(source: Option<Source>) -> Change {
        Change::of(ActorKind::SecretScanning, None, None, source)
    }

    /// A token revoked by whoever held it.
    pub fn token_holder(token: PublicTokenId, source: Option<Source>) -> Change {
        Change::of(ActorKind::TokenHolder, None, Some(token), source)
    }
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    TokenCreated,
    TokenImported,
    TokenRolled,
    TokenUpdated,
    TokenRevoked,
    PermanentTokenIssued,
    PermanentTokenRotated,
    UserCreated,
    UserBlocked,
    UserUnblocked,
    UserUpdated,
    LimitsUpdated,
}

crate::domain::named!(Action {
    TokenCreated => "token.created",
    TokenImported => "token.imported",
    TokenRolled => "token.rolled",
    TokenUpdated => "token.updated",
    TokenRevoked => "token.revoked",
    PermanentTokenIssued => "permanent_token.issued",
    PermanentTokenRotated => "permanent_token.rotated",
    UserCreated => "user.created",
    UserBlocked => "user.blocked",
    UserUnblocked => "user.unblocked",
    UserUpdated => "user.updated",
    LimitsUpdated => "limits.updated",
});

/// What a change was made to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub user_id: UserId,
    pub token_id: Option<PublicTokenId>,
    pub kind: Option<TokenKind>,
    pub name: Option<String>,
}

impl Target {
    /// A user (user changes).
    pub fn user(user_id: UserId) -> Target {
        Target {
            user_id,
            token_id: None,
            kind: None,
            name: None,
        }
    }
}

/// One audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Sortable and unique: the time's microseconds then random bits, in hex.
    pub id: String,
    /// Microseconds since the epoch.
    pub at_us: u64,
    pub platform_id: PlatformId,
    pub action: Action,
    pub actor: Actor,
    pub target: Target,
    pub source: Option<Source>,
    pub details: Map<String, Value>,
}

impl Event {
    /// The event of `change` doing `action` to `target`, now.
    pub fn new(
        change: &Change,
        action: Action,
        platform_id: PlatformId,
        target: Target,
        details: Map<String, Value>,
    ) -> Event {
        let at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Event {
            id: format!("{at_us:016x}{}", crate::token::random_hex(4)),
            at_us,
            platform_id,
            action,
            actor: change.actor.clone(),
            target,
            source: change.source.clone(),
            details,
        }
    }

    /// The event as the API and `tokenctl audit` show it.
    pub fn view(&self) -> Value {
        let actor = &self.actor;
        let mut shown_actor = Map::new();
        shown_actor.insert("type".into(), actor.kind.as_str().into());
        if let Some(user) = actor.user_id {
            shown_actor.insert("user_id".into(), user.0.into());
        }
        if let Some(token) = actor.token_id {
            shown_actor.insert("token_id".into(), token.to_string().into());
        }
        let mut target = Map::new();
        target.insert("user_id".into(), self.target.user_id.0.into());
        if let Some(token) = self.target.token_id {
            target.insert("token_id".into(), token.to_string().into());
        }
        if let Some(kind) = self.target.kind {
            target.insert("kind".into(), kind.as_str().into());
        }
        if let Some(name) = &self.target.name {
            target.insert("name".into(), name.clone().into());
        }
        serde_json::json!({
            "id": self.id,
            "at": exact_timestamp(self.at_us),
            "platform_id": self.platform_id.0,
            "action": self.action.as_str(),
            "actor": shown_actor,
            "target": target,
            "source": self.source,
            "details": self.details,
        })
    }
}
