//! What records written before events out lack of what it reads, written onto them: the expiry
//! day of live tokens (the sparse index the daily expiry notices read) and the full credits of
//! meters (what the low-credit thresholds are percentages of).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Update};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::clock::EpochMs;
use crate::store::item::{
    missing_for_events, n, s, Item, CREDITS, CREDITS_FULL, EXPIRY_DAY, PK, ROLLED_TO, SK,
    TOKEN_PREFIX, VALID_UNTIL,
};
use crate::store::Fault;

use super::core::*;
use super::DynamoStore;

/// Segments of the table scanned at the same time.
const SEGMENTS: i32 = 4;

/// What a backfill read and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backfilled {
    /// Items the scan's filter let through (each lacking one of the two).
    pub found: usize,
    /// Live tokens given their expiry day.
    pub expiry_days: usize,
    /// Meters given their full credits.
    pub credits_full: usize,
}

impl Backfilled {
    fn add(self, other: Backfilled) -> Backfilled {
        Backfilled {
            found: self.found + other.found,
            expiry_days: self.expiry_days + other.expiry_days,
            credits_full: self.credits_full + other.credits_full,
        }
    }
}

impl DynamoStore {
    /// Scans the whole table (in 4 parallel segments) for live tokens without an
    /// expiry day that expire after `now` and meters without full credits, and writes them.
    /// Each write is conditional on what it completes being still missing and the token still
    /// live and unrolled: safe while the service runs, and run again it writes nothing.
    pub async fn backfill(&self, now: EpochMs) -> Result<Backfilled, Fault> {
        let runs: Vec<Backfilled> =
            stream::iter((0..SEGMENTS).map(|s| self.backfill_segment(s, now)))
                .buffer_unordered(SEGMENTS as usize)
                .try_collect()
                .await?;
        Ok(runs
            .into_iter()
            .fold(Backfilled::default(), Backfilled::add))
    }

    async fn backfill_segment(&self, segment: i32, now: EpochMs) -> Result<Backfilled, Fault> {
        let filter = format!(
            "(begins_with({SK}, :token) AND {VALID_UNTIL} > :now \
              AND attribute_not_exists({EXPIRY_DAY}) AND attribute_not_exists(revoked_at) \
              AND attribute_not_exists({ROLLED_TO})) \
             OR (attribute_exists({CREDITS}) AND attribute_not_exists({CREDITS_FULL}))"
        );
        let mut done = Backfilled::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .segment(segment)
                .total_segments(SEGMENTS)
                .filter_expression(&filter)
                .expression_attribute_values(":token", s(TOKEN_PREFIX))
                .expression_attribute_values(":now", n(now.seconds().0))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .before_deadline()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                done.found += 1;
                let (day, full) = missing_for_events(&item)?;
                if let Some(day) = day {
                    let condition = format!(
                        "attribute_exists({PK}) AND attribute_not_exists({EXPIRY_DAY}) \
                         AND attribute_not_exists(revoked_at) \
                         AND attribute_not_exists({ROLLED_TO}) AND {VALID_UNTIL} = :until"
                    );
                    let values = vec![(":value", s(day)), (":until", item[VALID_UNTIL].clone())];
                    if self.complete(&item, EXPIRY_DAY, condition, values).await? {
                        done.expiry_days += 1;
                    }
                }
                if let Some(full) = full {
                    let condition = format!(
                        "attribute_exists({CREDITS}) AND attribute_not_exists({CREDITS_FULL})"
                    );
                    let values = vec![(":value", n(full))];
                    if self
                        .complete(&item, CREDITS_FULL, condition, values)
                        .await?
                    {
                        done.credits_full += 1;
                    }
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(done),
            }
        }
    }

    /// Sets `attribute` of `item` to `:value` under `condition`: `false` when the condition no
    /// longer holds (a change since the scan, which the next run looks at again).
    async fn complete(
        &self,
        item: &Item,
        attribute: &str,
        condition: String,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, Fault> {
        let key = [PK, SK]
            .into_iter()
            .filter_map(|name| Some((name.to_string(), item.get(name)?.clone())))
            .collect::<HashMap<_, _>>();
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(format!("SET {attribute} = :value"))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(
                values
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
            ))
            .build()
            .map_err(unavailable)?;
        Ok(self
            .update(update, ReturnValue::None, Resend::Safe)
            .await?
            .is_some())
    }
}
