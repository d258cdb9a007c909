//! Notices of expiry: the live tokens that expire on a day (the sparse index of expiry days),
//! and the mark on a token of the notice it was given, so that each is given once.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{ReturnValue, Update};

use crate::clock::EpochMs;
use crate::store::item::{n, s, token_from_item, EXPIRY_DAY, EXPIRY_INDEX};
use crate::store::{Fault, TokenRecord};

use super::core::*;
use super::DynamoStore;

/// On a live token: the threshold (days before its expiry) of the latest notice it was given.
const EXPIRY_NOTICE: &str = "expiry_notice";

/// A live token that expires on the day asked for, and its latest notice.
#[derive(Clone, Debug, PartialEq)]
pub struct Expiring {
    pub token: TokenRecord,
    /// The threshold (days) of the notice already given, if one was.
    pub noticed: Option<u64>,
}

impl DynamoStore {
    /// The live tokens that expire on `day` (`YYYY-MM-DD`, UTC; see
    /// [`crate::store::expiry_day`]), every page of the index.
    pub async fn expiring_on(&self, day: &str) -> Result<Vec<Expiring>, Fault> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(EXPIRY_INDEX)
                .key_condition_expression("#day = :day")
                .expression_attribute_names("#day", EXPIRY_DAY)
                .expression_attribute_values(":day", s(day))
                .set_exclusive_start_key(start)
                .send()
                .before_deadline()
                .await
                .map_err(unavailable)?;
            for item in page.items.unwrap_or_default() {
                let noticed = match item.get(EXPIRY_NOTICE).map(|v| v.as_n()) {
                    Some(Ok(days)) => Some(days.parse().map_err(|_| {
                        Fault::Corrupt(format!("attribute {EXPIRY_NOTICE:?} is not a number"))
                    })?),
                    Some(Err(_)) => {
                        return Err(Fault::Corrupt(format!(
                            "attribute {EXPIRY_NOTICE:?} is not a number"
                        )))
                    }
                    None => None,
                };
                found.push(Expiring {
                    token: token_from_item(&item)?,
                    noticed,
                });
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(found),
            }
        }
    }

    /// Marks `token` as given the notice `days` before its expiry, if it is still live, still
    /// expires when it did, and was given no notice as near its expiry: `false` when another
    /// run marked it first or it no longer qualifies (no notice is then due from this run).
    pub async fn claim_expiry_notice(
        &self,
        token: &TokenRecord,
        days: u64,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let Some(until) = token.expires_at else {
            return Ok(false);
        };
        let values = HashMap::from([
            (":days".to_string(), n(days)),
            (":until".to_string(), n(until)),
            (":now".to_string(), n(now.seconds().0)),
        ]);
        let condition = format!(
            "{LIVE_AND_NOT_ROLLED} AND valid_until = :until \
             AND (attribute_not_exists({EXPIRY_NOTICE}) OR {EXPIRY_NOTICE} > :days)"
        );
        let set = format!("SET {EXPIRY_NOTICE} = :days");
        let update = self.notice_update(token, set, condition, values)?;
        Ok(self
            .update(update, ReturnValue::None, Resend::Safe)
            .await?
            .is_some())
    }

    /// Takes back a claim of [`Self::claim_expiry_notice`] whose notice could not be published:
    /// the mark goes back to `previous`, unless another run changed it since.
    pub async fn release_expiry_notice(
        &self,
        token: &TokenRecord,
        days: u64,
        previous: Option<u64>,
    ) -> Result<(), Fault> {
        let mut values = HashMap::from([(":days".to_string(), n(days))]);
        let expression = match previous {
            Some(previous) => {
                values.insert(":previous".into(), n(previous));
                format!("SET {EXPIRY_NOTICE} = :previous")
            }
            None => format!("REMOVE {EXPIRY_NOTICE}"),
        };
        let condition = format!("{EXPIRY_NOTICE} = :days");
        let update = self.notice_update(token, expression, condition, values)?;
        self.update(update, ReturnValue::None, Resend::Safe).await?;
        Ok(())
    }

    fn notice_update(
        &self,
        token: &TokenRecord,
        expression: String,
        condition: String,
        values: HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) -> Result<Update, Fault> {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(
                crate::store::Key::token(token.user_id, token.kind.family(), token.id).to_item(),
            ))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(unavailable)
    }
}
