//! Meters: usage limits set with their event, and units of use charged by conditional writes
//! that never spend the same credit twice.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};

use crate::clock::EpochMs;
use crate::limits::{usage, Limits, Meter, Standing, Usage};
use crate::store::item::{meter_attributes, n, Key, CREDITS, METER_ATTRIBUTES, WINDOW_USED};
use crate::store::{Fault, Metered, Meters, TokenRecord, TokenState, Tokens};

use super::core::*;
use super::DynamoStore;
use crate::model::{Audit, Written};
use crate::store::meter_holder;

/// How often a unit of use is charged again after its write lost a race (a refill or a new rate
/// window written by another unit, limits changed meanwhile): each time from a fresh read.
pub(super) const CHARGE_ATTEMPTS: u32 = 10;

/// The condition that a record's meter is still `meter` (as read): each meter attribute equal
/// to what was read, or absent as it was. Names `#pin<i>` and values `:pin<i>` are added.
pub(super) fn meter_as_read(
    meter: Option<&Meter>,
    expression_names: &mut HashMap<String, String>,
    expression_values: &mut HashMap<String, AttributeValue>,
) -> String {
    let stored = meter.map(meter_attributes).unwrap_or_default();
    METER_ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(i, attribute)| {
            let name = format!("#pin{i}");
            expression_names.insert(name.clone(), attribute.to_string());
            match stored.iter().find(|(stored, _)| stored == attribute) {
                Some((_, value)) => {
                    expression_values.insert(format!(":pin{i}"), value.clone());
                    format!("{name} = :pin{i}")
                }
                None => format!("attribute_not_exists({name})"),
            }
        })
        .collect::<Vec<String>>()
        .join(" AND ")
}

impl DynamoStore {
    /// The conditional write that charges one unit to a meter standing as `standing`: it
    /// decrements the credits (or refills them, less the unit) and counts the unit in the rate
    /// window (or starts the window with it), only while the stored counters are still the
    /// ones `standing` was read from in every respect the unit depends on.
    pub(super) fn charge_update(&self, key: &Key, standing: &Standing) -> Result<Update, Fault> {
        let mut sets = Vec::new();
        let mut conditions = vec!["attribute_exists(pk)"];
        let mut expression_values = HashMap::new();
        match (standing.credits, standing.refill_for) {
            (Some(amount), Some(period)) => {
                sets.push("credits = :refilled, refilled_for = :period, credits_full = :full");
                conditions.push("attribute_exists(credits) AND refilled_for < :period");
                expression_values.insert(":refilled".into(), n(amount - 1));
                expression_values.insert(":full".into(), n(amount));
                expression_values.insert(":period".into(), n(period));
            }
            (Some(_), None) => {
                sets.push("credits = credits - :one");
                conditions.push("credits >= :one");
                expression_values.insert(":one".into(), n(1));
            }
            (None, _) => {}
        }
        if let Some(window) = standing.window {
            // The window's counters exist exactly while a rate limit is set.
            if window.new {
                sets.push("window_start = :window, window_used = :one");
                conditions.push("window_start < :window");
            } else {
                sets.push("window_used = window_used + :one");
                conditions.push("window_start = :window AND window_used < :limit");
                expression_values.insert(":limit".into(), n(window.limit));
            }
            expression_values.insert(":window".into(), n(window.start));
            expression_values.insert(":one".into(), n(1));
        }
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(key.to_item()))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_values(Some(expression_values))
            .build()
            .map_err(unavailable)
    }
}

#[async_trait]
impl Meters for DynamoStore {
    async fn set_limits(
        &self,
        target: Metered<'_>,
        limits: &Limits,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let mut expression_values = HashMap::new();
        let (key, condition) = match target {
            Metered::User(user) => (Key::user(user.id), "attribute_exists(pk)"),
            Metered::Token(token) => {
                expression_values.insert(":now".to_string(), n(now.seconds().0));
                (
                    Key::token(token.user_id, token.kind.family(), token.id),
                    // A rolled token's units go to its successor's meter.
                    LIVE_AND_NOT_ROLLED,
                )
            }
        };
        let set = meter_attributes(&Meter::set(*limits, now));
        let mut expression_names = HashMap::new();
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        for (index, name) in METER_ATTRIBUTES.into_iter().enumerate() {
            expression_names.insert(format!("#m{index}"), name.to_string());
            match set.iter().find(|(attribute, _)| *attribute == name) {
                Some((_, value)) => {
                    sets.push(format!("#m{index} = :m{index}"));
                    expression_values.insert(format!(":m{index}"), value.clone());
                }
                None => removes.push(format!("#m{index}")),
            }
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key.to_item()))
            .update_expression(set_and_remove(&sets, &removes))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expression_names))
            .set_expression_attribute_values(
                (!expression_values.is_empty()).then_some(expression_values),
            )
            .build()
            .map_err(unavailable)?;
        let event = audit.event(&Written::LimitsSet { target, limits });
        self.update_with_event(Part::Updating, update, &event).await
    }

    async fn charge(
        &self,
        holder: &TokenRecord,
        owner: Option<&Meter>,
        now: EpochMs,
    ) -> Result<Option<Usage>, Fault> {
        let (mut holder, mut owner_meter) = (holder.clone(), owner.copied());
        for _ in 0..CHARGE_ATTEMPTS {
            let family = holder.kind.family();
            let metered: Vec<(Key, Meter)> = [
                holder
                    .meter
                    .map(|m| (Key::token(holder.user_id, family, holder.id), m)),
                owner_meter.map(|m| (Key::user(holder.user_id), m)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let standings: Vec<Standing> = metered
                .iter()
                .map(|(_, meter)| meter.standing(now))
                .collect();
            if metered.is_empty() || standings.iter().any(|s| s.refusal().is_some()) {
                return Ok(Some(usage(&standings, 0, now)));
            }
            let mut updates = metered
                .iter()
                .zip(&standings)
                .map(|((key, _), standing)| self.charge_update(key, standing))
                .collect::<Result<Vec<Update>, Fault>>()?;
            let charged = if updates.len() == 1 {
                // What the write left is what this unit reports, whatever ran beside it.
                self.update(updates.remove(0), ReturnValue::UpdatedNew, Resend::Never)
                    .await?
                    .map(|written| {
                        let left = |name| {
                            written
                                .get(name)
                                .and_then(|v| v.as_n().ok())
                                .and_then(|v| v.parse().ok())
                        };
                        vec![standings[0].before_written(left(CREDITS), left(WINDOW_USED))]
                    })
            } else {
                let items = updates
                    .into_iter()
                    .fold(Transaction::default(), |items, update| {
                        let item = TransactWriteItem::builder().update(update).build();
                        items.with(Part::Charging, item)
                    });
                match self.transact(items).await {
                    Ok(()) => Some(standings),
                    Err(TransactionFailure::Conditions(_)) => None,
                    Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => {
                        return Err(e)
                    }
                }
            };
            if let Some(standings) = charged {
                return Ok(Some(usage(&standings, 1, now)));
            }
            // Lost a race: read both again and decide anew. A holder rolled meanwhile handed
            // its meter to its successor, which is charged from now on.
            let (current, user) = self
                .get_token_and_owner(holder.user_id, family, holder.id)
                .await?;
            let (Some(current), Some(user)) = (current, user) else {
                return Ok(None);
            };
            if current.state(now) != TokenState::Live {
                return Ok(None);
            }
            owner_meter = user.meter;
            holder = match meter_holder(self, &current, now).await? {
                Some(holder) => holder,
                None => return Ok(None),
            };
        }
        Err(unavailable(std::io::Error::other(
            "a unit of use lost the race for its usage counters too often",
        )))
    }
}
