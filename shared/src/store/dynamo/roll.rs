//! Rolls: a successor takes the predecessor's cap slot and meter in one transaction, while the
//! predecessor is still as read.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use crate::clock::{EpochMs, EpochSeconds};
use crate::domain::{UserId, UserStatus};
use crate::metrics;
use crate::store::item::{
    abilities_value, child_item, n, s, token_item, Key, ENABLED, EXPIRY_DAY, META, METER_ATTRIBUTES,
};
use crate::store::{
    Fault, NewToken, Owner, Predecessor, Refusal, RollOutcome, Rolls, StoreError, TokenRecord,
    TokenState, Tokens,
};
use crate::token::{CapCounter, TokenFamily};

use super::core::*;
use super::meters::meter_as_read;
use super::DynamoStore;
use crate::model::{Audit, Written};

/// [`meter_as_read`] of a token's meter, and its name, abilities, `enabled` and meta as read: what a
/// roll hands on (an update racing the roll sends it back for a fresh read, so a narrowing of
/// abilities is never undone by a successor made from the wider ones).
pub(super) fn record_as_read(
    record: &TokenRecord,
    expression_names: &mut HashMap<String, String>,
    expression_values: &mut HashMap<String, AttributeValue>,
) -> String {
    let meter = meter_as_read(record.meter.as_ref(), expression_names, expression_values);
    expression_names.insert("#name".into(), "name".into());
    expression_values.insert(":name".into(), s(&record.name));
    expression_values.insert(":abilities".into(), abilities_value(&record.abilities));
    let meter = format!("{meter} AND #name = :name AND abilities = :abilities");
    expression_names.insert("#enabled".into(), ENABLED.into());
    let enabled = if record.enabled {
        "attribute_not_exists(#enabled)"
    } else {
        expression_values.insert(":disabled".into(), AttributeValue::Bool(false));
        "#enabled = :disabled"
    };
    expression_names.insert("#meta".into(), META.into());
    let meta = match &record.meta {
        Some(meta) => {
            expression_values.insert(":meta".into(), s(meta.to_json()));
            "#meta = :meta"
        }
        None => "attribute_not_exists(#meta)",
    };
    format!("{meter} AND {enabled} AND {meta}")
}

impl DynamoStore {
    /// Holds the owner active for a transaction that adds no token to its count (a roll): for a
    /// capped family an update of its counter by zero (what the function's role may write),
    /// else the check [`Self::owner_guard`] makes.
    pub(super) fn owner_hold(
        &self,
        owner: UserId,
        family: TokenFamily,
    ) -> Result<TransactWriteItem, Fault> {
        let Some(counter) = family.cap().map(CapCounter::attribute) else {
            return self.owner_guard(owner, family, u32::MAX, 1);
        };
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::user(owner).to_item()))
            .update_expression("ADD #counter :zero")
            .condition_expression("attribute_exists(pk) AND #status = :active")
            .set_expression_attribute_names(names([("#status", "status"), ("#counter", counter)]))
            .set_expression_attribute_values(values([
                (":zero", n(0)),
                (":active", s(UserStatus::Active.as_str())),
            ]))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[async_trait]
impl Rolls for DynamoStore {
    async fn roll_token(
        &self,
        owner: Owner,
        predecessor: &TokenRecord,
        successor: NewToken,
        grace_end: EpochSeconds,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<RollOutcome, StoreError> {
        let family = predecessor.kind.family();
        let now_s = now.seconds().0;
        let mut predecessor = predecessor.clone();
        for _ in 0..TRANSACTION_ATTEMPTS {
            if predecessor.rolled_to.is_some() {
                return Ok(RollOutcome::AlreadyRolled);
            }
            // Its own predecessor may still be in its grace period: then there would be two
            // predecessors working. Once a token no longer works it never works again, so what
            // this read finds dead stays dead until the roll commits.
            if let Some(previous) = predecessor
                .predecessor
                .filter(|_| predecessor.predecessor_works(now))
            {
                let working = self
                    .get_token(predecessor.user_id, family, previous.id)
                    .await?
                    .is_some_and(|p| p.state(now) == TokenState::Live);
                if working {
                    return Ok(RollOutcome::PredecessorWorks);
                }
            }
            let until = predecessor
                .expires_at
                .map_or(grace_end.0, |own| own.min(grace_end.0));
            // One meter for the lineage: the successor takes the predecessor's limits and their
            // use as read (the condition below pins them), the predecessor keeps none and is
            // charged through its successor while it works. A disabled key's successor is
            // disabled too.
            let mut record = successor.record(owner);
            record.name = predecessor.name.clone();
            record.abilities = predecessor.abilities.clone();
            record.expires_at = predecessor.expires_at;
            record.meter = predecessor.meter;
            record.enabled = predecessor.enabled;
            record.meta = predecessor.meta.clone();
            record.predecessor = (until > now_s).then_some(Predecessor {
                id: predecessor.id,
                until,
            });
            let mut names = HashMap::new();
            let mut expression_values = HashMap::from([
                (":until".to_string(), n(until)),
                (":successor".to_string(), s(record.id.to_string())),
                (":now".to_string(), n(now_s)),
            ]);
            let unchanged = record_as_read(&predecessor, &mut names, &mut expression_values);
            // The predecessor hands its meter on, and leaves the index of expiry days: its grace
            // period is no expiry to give notice of.
            let meter: Vec<String> = (0..METER_ATTRIBUTES.len())
                .map(|i| format!("#pin{i}"))
                .chain([EXPIRY_DAY.to_string()])
                .collect();
            let rolling = Update::builder()
                .table_name(&self.table)
                .set_key(Some(
                    Key::token(predecessor.user_id, family, predecessor.id).to_item(),
                ))
                .update_expression(set_and_remove(
                    &["valid_until = :until", "rolled_to = :successor"],
                    &meter,
                ))
                .condition_expression(format!(
                    "{LIVE} AND attribute_not_exists(rolled_to) AND {unchanged}"
                ))
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(expression_values))
                .build()
                .map_err(unavailable)?;
            let mut items = Transaction::default()
                .with(Part::Owner, self.owner_hold(predecessor.user_id, family)?)
                .with(
                    Part::NewToken,
                    self.put(token_item(&record), "attribute_not_exists(pk)")?,
                )
                .with(
                    Part::Rolling,
                    TransactWriteItem::builder().update(rolling).build(),
                )
                .with(
                    Part::Event,
                    self.event_put(&audit.event(&Written::TokenRolled {
                        predecessor: &predecessor,
                        successor: &record,
                        until,
                    }))?,
                );
            if let Some(child) = child_item(&record) {
                items = items.with(Part::Child, self.put_any(child)?);
            }
            let rolled = RollOutcome::Rolled {
                successor: Box::new(record.clone()),
                previous_expires_at: until,
            };
            let failed = match self.transact(items).await {
                Ok(()) => {
                    metrics::minted(record.kind.as_str(), 1);
                    return Ok(rolled);
                }
                Err(TransactionFailure::Fault(e)) => return Err(e.into()),
                Err(TransactionFailure::Unknown(e)) => {
                    if self.settle_new_token(&record, e, now).await? {
                        metrics::minted(record.kind.as_str(), 1);
                        return Ok(rolled);
                    }
                    return Err(Fault::Unavailable(
                        "a roll's outcome stayed unknown; it was made void".into(),
                    )
                    .into());
                }
                Err(TransactionFailure::Conditions(failed)) => failed,
            };
            let current = self
                .get_token(predecessor.user_id, family, predecessor.id)
                .await?;
            match current {
                // An attempt of this very call that committed, its answer lost.
                Some(current) if current.rolled_to == Some(record.id) => {
                    metrics::minted(record.kind.as_str(), 1);
                    return Ok(rolled);
                }
                Some(current)
                    if failed == [Part::NewToken] && current.state(now) == TokenState::Live =>
                {
                    return Err(Refusal::TokenIdTaken.into())
                }
                _ if failed.contains(&Part::Owner) => return Err(Refusal::UserBlocked.into()),
                // Rolled, or changed (a charge, a limits change, an update) since it was read:
                // decided again from what is stored now.
                Some(current) if current.state(now) == TokenState::Live => predecessor = current,
                Some(current) if current.rolled_to.is_some() => {
                    return Ok(RollOutcome::AlreadyRolled)
                }
                _ => return Ok(RollOutcome::Gone),
            }
        }
        Err(unavailable(std::io::Error::other(
            "the token kept changing while it was rolled",
        ))
        .into())
    }
}
