//! Retirements: revocations and expired tokens' release. The live item goes, a `GONE#` copy
//! says why, and the cap slots come back, all in one transaction per owner.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Delete, TransactWriteItem, Update};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::clock::EpochMs;
use crate::domain::UserId;
use crate::metrics;
use crate::store::item::{n, s, token_from_item, token_item_at, token_sort_prefix, Key, ROLLED_TO};
use crate::store::schema::TTL_ATTRIBUTE;
use crate::store::{Fault, Revocation, Revocations, TokenAddress, TokenRecord, TokenState, Tokens};
use crate::token::CapCounter;

use super::core::*;
use super::meters::meter_as_read;
use super::DynamoStore;
use crate::model::{Audit, Written};

/// Tokens one transaction retires: three items each (the live item, its copy, its audit event)
/// and the owner's counter update, within DynamoDB's 100 items a transaction.
pub(super) const RETIRED_PER_TRANSACTION: usize = 33;

/// Why a token leaves its family's range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Retirement {
    Revoked(Revocation),
    /// Expired, and its cap slot given back.
    Released,
}

impl DynamoStore {
    /// Gives back the cap slots of expired, never-revoked tokens that `counter` counts, moving
    /// each out of its family's range. Their TTL attribute is set only now, so DynamoDB's TTL
    /// never deletes an item whose slot is still counted. Returns how many were freed.
    pub(super) async fn release_expired(
        &self,
        user: UserId,
        counter: CapCounter,
        now: EpochMs,
    ) -> Result<u32, Fault> {
        let now_s = now.seconds().0;
        // Revoked tokens have left the range already; what is left expired still holds a slot.
        let expired_and_held = "valid_until <= :now";
        let mut released = 0;
        for family in counter.families() {
            let filter = (
                expired_and_held,
                HashMap::from([(":now".to_string(), n(now_s))]),
            );
            let expired = self
                .query_tokens(user, &token_sort_prefix(family), Some(filter))
                .await?;
            for item in expired {
                let record = token_from_item(&item)?;
                let items = self.retire(&record, &Retirement::Released, now)?;
                match self.transact(items).await {
                    Ok(()) => released += 1,
                    // Another request released it first.
                    Err(TransactionFailure::Conditions(_)) => {}
                    Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => {
                        return Err(e)
                    }
                }
            }
        }
        Ok(released)
    }

    /// Gives slots back on `user`'s profile: `by` of each counter, in one update (a transaction
    /// may write an item once).
    pub(super) fn counter_decrement(
        &self,
        user: UserId,
        counters: &[(CapCounter, usize)],
    ) -> Result<TransactWriteItem, Fault> {
        let mut additions = Vec::new();
        let mut expression_names = HashMap::new();
        let mut expression_values = HashMap::new();
        for (i, (counter, by)) in counters.iter().enumerate() {
            additions.push(format!("#counter{i} :minus{i}"));
            expression_names.insert(format!("#counter{i}"), counter.attribute().to_string());
            expression_values.insert(format!(":minus{i}"), n(-(*by as i64)));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::user(user).to_item()))
            .update_expression(format!("ADD {}", additions.join(", ")))
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(expression_names))
            .set_expression_attribute_values(Some(expression_values))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The writes of one transaction that take `record` out of its family's range (see
    /// [`Self::retire_all`]).
    pub(super) fn retire(
        &self,
        record: &TokenRecord,
        why: &Retirement,
        now: EpochMs,
    ) -> Result<Transaction, Fault> {
        self.retire_all(&[(record, why)], false, now)
    }

    /// The writes of one transaction that take each token out of its family's range: the live
    /// item goes (only while it is as its retirement requires), a `GONE#` copy saying why takes
    /// its place with the TTL attribute set, and the cap slots are given back, one update per
    /// owner. With their audit events, at most [`RETIRED_PER_TRANSACTION`] tokens (DynamoDB's
    /// 100 items a transaction). `pin_meter`: only while each meter is still as read (where a
    /// new record takes it over).
    pub(super) fn retire_all(
        &self,
        retiring: &[(&TokenRecord, &Retirement)],
        pin_meter: bool,
        now: EpochMs,
    ) -> Result<Transaction, Fault> {
        let now_s = now.seconds().0;
        let mut items = Transaction::default();
        let mut slots: Vec<(UserId, Vec<(CapCounter, usize)>)> = Vec::new();
        for (record, why) in retiring {
            let (user, family, id) = (record.user_id, record.kind.family(), record.id);
            let mut retired = (*record).clone();
            let (condition, ttl) = match why {
                Retirement::Revoked(revocation) => {
                    retired.revoked_at_ms = Some(now.0);
                    retired.revocation = Some(revocation.clone());
                    (LIVE, now_s)
                }
                Retirement::Released => (
                    "attribute_exists(pk) AND valid_until <= :now",
                    record.expires_at.unwrap_or(now_s),
                ),
            };
            // Whether it gives a slot back is decided from `rolled_to` as read: the delete
            // holds it to that, so a roll that lands first sends this retirement back for a
            // fresh read instead of giving back a slot its successor holds.
            let mut expression_names = HashMap::new();
            let mut expression_values = HashMap::from([(":now".to_string(), n(now_s))]);
            let mut conditions = vec![condition.to_string()];
            match record.rolled_to {
                None => conditions.push(format!("attribute_not_exists({ROLLED_TO})")),
                Some(successor) => {
                    conditions.push(format!("{ROLLED_TO} = :rolled"));
                    expression_values.insert(":rolled".into(), s(successor.to_string()));
                }
            }
            if pin_meter {
                conditions.push(meter_as_read(
                    record.meter.as_ref(),
                    &mut expression_names,
                    &mut expression_values,
                ));
            }
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(Key::token(user, family, id).to_item()))
                .condition_expression(conditions.join(" AND "))
                .set_expression_attribute_names(
                    (!expression_names.is_empty()).then_some(expression_names),
                )
                .set_expression_attribute_values(Some(expression_values))
                .build()
                .map_err(unavailable)?;
            let mut tombstone = token_item_at(&Key::retired(user, family, id), &retired);
            tombstone.insert(TTL_ATTRIBUTE.into(), n(ttl));
            if matches!(why, Retirement::Released) {
                tombstone.insert("released_at".into(), n(now));
            }
            items = items
                .with(
                    Part::Retiring,
                    TransactWriteItem::builder().delete(delete).build(),
                )
                .with(Part::Tombstone, self.put_any(tombstone)?);
            // A rolled token's slot went to its successor.
            if let Some(counter) = family.cap().filter(|_| record.rolled_to.is_none()) {
                let owner = match slots.iter().position(|(u, _)| *u == user) {
                    Some(position) => &mut slots[position].1,
                    None => {
                        slots.push((user, Vec::new()));
                        &mut slots.last_mut().expect("just pushed").1
                    }
                };
                match owner.iter_mut().find(|(c, _)| *c == counter) {
                    Some((_, by)) => *by += 1,
                    None => owner.push((counter, 1)),
                }
            }
        }
        for (user, counters) in slots {
            items = items.with(Part::Counter, self.counter_decrement(user, &counters)?);
        }
        Ok(items)
    }

    /// Revokes one owner's `records`, [`RETIRED_PER_TRANSACTION`] a transaction.
    pub(super) async fn revoke_owner(
        &self,
        records: Vec<(TokenRecord, Revocation)>,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<usize, Fault> {
        let mut revoked = 0;
        for chunk in records.chunks(RETIRED_PER_TRANSACTION) {
            revoked += self.revoke_together(chunk, audit, now).await?;
        }
        Ok(revoked)
    }

    /// Revokes one owner's `records` (as read) in one transaction; when any changed meanwhile,
    /// one at a time, leaving the changed ones as they are. Returns how many it revoked.
    pub(super) async fn revoke_together(
        &self,
        records: &[(TokenRecord, Revocation)],
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<usize, Fault> {
        let retirements: Vec<Retirement> = records
            .iter()
            .map(|(_, why)| Retirement::Revoked(why.clone()))
            .collect();
        let retiring: Vec<(&TokenRecord, &Retirement)> = records
            .iter()
            .zip(&retirements)
            .map(|((record, _), why)| (record, why))
            .collect();
        let mut items = self.retire_all(&retiring, false, now)?;
        for (record, why) in records {
            items = items.with(
                Part::Event,
                self.event_put(&audit.event(&Written::TokenRevoked { record, why }))?,
            );
        }
        match self.transact(items).await {
            Ok(()) => {
                for (_, why) in records {
                    metrics::revoked(why.name(), 1);
                }
                return Ok(records.len());
            }
            Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => return Err(e),
            Err(TransactionFailure::Conditions(_)) => {}
        }
        let mut revoked = 0;
        for (record, why) in records {
            let hash = record.hash;
            let same_token = move |r: &TokenRecord| r.hash.matches(&hash);
            if self
                .revoke_token_if(record.address(), why, audit, now, &same_token)
                .await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }
}

#[async_trait]
impl Revocations for DynamoStore {
    async fn revoke_token_if(
        &self,
        address: TokenAddress,
        why: &Revocation,
        audit: &dyn Audit,
        now: EpochMs,
        allowed: &(dyn for<'r> Fn(&'r TokenRecord) -> bool + Sync),
    ) -> Result<bool, Fault> {
        let TokenAddress {
            user_id: user,
            family,
            id,
        } = address;
        let revoked_by_this_call = || async {
            Ok::<_, Fault>(self.get_retired(user, family, id).await?.is_some_and(|r| {
                r.revoked_at_ms == Some(now.0) && r.revocation.as_ref() == Some(why) && allowed(&r)
            }))
        };
        for _ in 0..TRANSACTION_ATTEMPTS {
            let live = self
                .get_token(user, family, id)
                .await?
                .filter(|record| record.state(now) == TokenState::Live && allowed(record));
            let Some(record) = live else {
                // Gone already: by this very call when an attempt committed and its answer was
                // lost.
                return revoked_by_this_call().await;
            };
            // A predecessor still in its grace period goes with its successor: it works only
            // through it (its meter), and a deleted key must not live on in its old secret.
            let mut retiring = vec![record.clone()];
            if let Some(predecessor) = record.predecessor.filter(|_| record.predecessor_works(now))
            {
                retiring.extend(
                    self.get_token(user, family, predecessor.id)
                        .await?
                        .filter(|p| {
                            p.state(now) == TokenState::Live && p.rolled_to == Some(record.id)
                        }),
                );
            }
            let retirement = Retirement::Revoked(why.clone());
            let pairs: Vec<(&TokenRecord, &Retirement)> =
                retiring.iter().map(|r| (r, &retirement)).collect();
            let mut items = self.retire_all(&pairs, false, now)?;
            for retired in &retiring {
                items = items.with(
                    Part::Event,
                    self.event_put(&audit.event(&Written::TokenRevoked {
                        record: retired,
                        why,
                    }))?,
                );
            }
            let revoked = match self.transact(items).await {
                Ok(()) => true,
                // Revoked meanwhile (then it is not ours), or changed (rolled): read again.
                Err(TransactionFailure::Conditions(_)) => {
                    if revoked_by_this_call().await? {
                        true
                    } else {
                        continue;
                    }
                }
                Err(TransactionFailure::Fault(e)) => return Err(e),
                Err(TransactionFailure::Unknown(e)) => {
                    if revoked_by_this_call().await? {
                        true
                    } else {
                        return Err(e);
                    }
                }
            };
            if revoked {
                metrics::revoked(why.name(), retiring.len() as u64);
            }
            return Ok(revoked);
        }
        Err(unavailable(std::io::Error::other(
            "the token kept changing while it was revoked",
        )))
    }

    async fn revoke_tokens(
        &self,
        records: &[(TokenRecord, Revocation)],
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<usize, Fault> {
        // One owner's tokens one transaction after another (they share its profile's counter);
        // owners in parallel.
        let mut owners: Vec<Vec<(TokenRecord, Revocation)>> = Vec::new();
        for entry in records {
            match owners
                .iter_mut()
                .find(|group| group[0].0.user_id == entry.0.user_id)
            {
                Some(group) => group.push(entry.clone()),
                None => owners.push(vec![entry.clone()]),
            }
        }
        let revocations: Vec<_> = owners
            .into_iter()
            .map(|group| self.revoke_owner(group, audit, now))
            .collect();
        stream::iter(revocations)
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |total, revoked| async move { Ok(total + revoked) })
            .await
    }
}
