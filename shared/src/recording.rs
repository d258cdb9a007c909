//! What each change records in the audit trail: the standard events of a [`Change`] (who acts,
//! from where), their action, target and details decided here, from what the store wrote. The
//! store only writes them, in the change's own transaction.

use serde_json::{json, Map, Value};

use crate::audit::{Action, Change, Event, Target};
use crate::domain::UserStatus;
use crate::model::{Audit, Metered, Revocation, TokenRecord, Written};

impl Audit for Change {
    fn event(&self, written: &Written<'_>) -> Event {
        match *written {
            Written::UserCreated(user) => Event::new(
                self,
                Action::UserCreated,
                user.platform_id,
                Target::user(user.id),
                details([
                    ("email", json!(user.email)),
                    ("role", json!(user.role.as_str())),
                    ("status", json!(user.status.as_str())),
                ]),
            ),
            Written::UserStatusSet { before, status } => Event::new(
                self,
                match status {
                    UserStatus::Blocked => Action::UserBlocked,
                    UserStatus::Active => Action::UserUnblocked,
                },
                before.platform_id,
                Target::user(before.id),
                details([("previous_status", json!(before.status.as_str()))]),
            ),
            Written::UserUpdated { before, after } => {
                let mut changed = Vec::new();
                if before.name != after.name {
                    changed.push(("previous_name", json!(before.name)));
                }
                if before.meta != after.meta {
                    changed.push(("meta_changed", json!(true)));
                }
                Event::new(
                    self,
                    Action::UserUpdated,
                    after.platform_id,
                    Target::user(after.id),
                    details(changed),
                )
            }
            Written::TokenCreated(record) | Written::TokenImported(record) => Event::new(
                self,
                match written {
                    Written::TokenImported(_) => Action::TokenImported,
                    _ => Action::TokenCreated,
                },
                record.platform_id,
                target(record),
                details([
                    ("abilities", json!(record.abilities.as_slice())),
                    ("expires_at", json!(record.expires_at)),
                    ("parent_id", json!(record.parent_id.map(|p| p.to_string()))),
                ]),
            ),
            Written::TokenRolled {
                predecessor,
                successor,
                until,
            } => Event::new(
                self,
                Action::TokenRolled,
                predecessor.platform_id,
                target(predecessor),
                details([
                    ("successor_id", json!(successor.public_id().to_string())),
                    ("previous_expires_at", json!(until)),
                ]),
            ),
            Written::TokenUpdated { record, fields } => Event::new(
                self,
                Action::TokenUpdated,
                record.platform_id,
                target(record),
                details([
                    ("name", json!(fields.name.as_ref().map(|n| n.as_str()))),
                    (
                        "abilities",
                        json!(fields.abilities.as_ref().map(|a| a.as_slice())),
                    ),
                    ("enabled", json!(fields.enabled)),
                    ("meta_changed", json!(fields.meta.is_some().then_some(true))),
                ]),
            ),
            Written::LimitsSet {
                target: metered,
                limits,
            } => {
                let (platform, changed) = match metered {
                    Metered::User(user) => (user.platform_id, Target::user(user.id)),
                    Metered::Token(token) => (token.platform_id, target(token)),
                };
                Event::new(
                    self,
                    Action::LimitsUpdated,
                    platform,
                    changed,
                    details([
                        ("limits", json!(limits)),
                        ("previous", json!(metered.limits())),
                    ]),
                )
            }
            Written::TokenRevoked { record, why } => {
                let (url, source, parent) = match why {
                    Revocation::Leaked(leak) => (
                        json!(leak.url),
                        json!(leak.source),
                        json!(leak.parent.map(|p| p.to_string())),
                    ),
                    _ => (json!(null), json!(null), json!(null)),
                };
                Event::new(
                    self,
                    Action::TokenRevoked,
                    record.platform_id,
                    target(record),
                    details([
                        ("reason", json!(why.name())),
                        ("url", url),
                        ("source", source),
                        ("leak_parent", parent),
                    ]),
                )
            }
            Written::PermanentIssued {
                record,
                generation,
                rotated,
            } => Event::new(
                self,
                if rotated {
                    Action::PermanentTokenRotated
                } else {
                    Action::PermanentTokenIssued
                },
                record.platform_id,
                target(record),
                details([("generation", json!(generation))]),
            ),
        }
    }
}

/// A token as an event's target.
fn target(record: &TokenRecord) -> Target {
    Target {
        user_id: record.user_id,
        token_id: Some(record.public_id()),
        kind: Some(record.kind),
        name: Some(record.name.clone()),
    }
}

/// An event's details from (name, value) pairs, nulls left out.
fn details(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}
