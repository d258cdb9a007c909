//! Permanent tokens: the generation that works, written on first use and moved on by rotation.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};

use crate::clock::EpochMs;
use crate::metrics;
use crate::store::item::{n, token_item, Key};
use crate::store::{
    Directory, Fault, NewToken, Owner, PermanentGeneration, PermanentKeys, Refusal, Revocation,
    StoreError, TokenAddress, TokenRecord, TokenState, Tokens, User, WorkingPermanent,
};
use crate::token::{TokenFamily, TokenId, TokenKind};

use super::core::*;
use super::retire::Retirement;
use super::DynamoStore;
use crate::model::{Audit, Written};

impl DynamoStore {
    /// Which of `candidates` (the keys the current server key derives for the generation, one
    /// an accepted prefix) `record` holds the hash of, when it is live.
    pub(super) fn permanent_works(
        record: Option<&TokenRecord>,
        candidates: &[NewToken],
        now: EpochMs,
    ) -> Option<usize> {
        let record = record.filter(|r| r.state(now) == TokenState::Live)?;
        candidates
            .iter()
            .position(|candidate| record.hash.matches(&candidate.parsed.hash))
    }
}

#[async_trait]
impl PermanentKeys for DynamoStore {
    async fn issue_permanent_token(
        &self,
        owner: &User,
        derive: &(dyn Fn(u32) -> Vec<NewToken> + Sync),
        wanted: PermanentGeneration,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<WorkingPermanent, StoreError> {
        let family = TokenFamily::Permanent;
        let mut owner = owner.clone();
        // A rotation moves on from the generation it found issued; once the profile has moved
        // past it (this call's transaction, or a rotation that raced it), what works is kept.
        let rotating_from = (wanted == PermanentGeneration::Next && owner.permanent_issued)
            .then_some(owner.permanent_generation);
        for _ in 0..5 {
            let generation = owner.permanent_generation;
            let candidates = derive(generation);
            // The live record, or else its retired copy: its limits go on to the next
            // generation either way.
            let stored = if owner.permanent_issued {
                let address = TokenAddress {
                    user_id: owner.id,
                    family,
                    id: TokenId::permanent(generation),
                };
                self.find_tokens(&[address], &[])
                    .await?
                    .tokens
                    .remove(&address)
            } else {
                None
            };
            let must_move = rotating_from == Some(generation) && owner.permanent_issued;
            let works = Self::permanent_works(stored.as_ref(), &candidates, now);
            if let (false, Some(candidate)) = (must_move, works) {
                return Ok(WorkingPermanent {
                    generation,
                    candidate,
                });
            }
            // First use: write this generation. Otherwise its record was revoked, is gone, or
            // was made with another server key: move on to the next generation.
            let next = if owner.permanent_issued {
                generation + 1
            } else {
                generation
            };
            let profile = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Key::user(owner.id).to_item()))
                .update_expression("SET permanent_generation = :next, permanent_issued = :yes")
                .condition_expression(
                    "permanent_generation = :generation AND permanent_issued = :issued",
                )
                .set_expression_attribute_values(values([
                    (":next", n(next)),
                    (":yes", AttributeValue::Bool(true)),
                    (":generation", n(generation)),
                    (":issued", AttributeValue::Bool(owner.permanent_issued)),
                ]))
                .build()
                .map_err(unavailable)?;
            let new = derive(next)
                .into_iter()
                .next()
                .expect("a token format has a minting prefix");
            let mut record = new.record(Owner::from(&owner));
            record.meter = stored.as_ref().and_then(|old| old.meter);
            let mut items = Transaction::default()
                .with(
                    Part::Profile,
                    TransactWriteItem::builder().update(profile).build(),
                )
                .with(
                    Part::NewToken,
                    self.put(token_item(&record), "attribute_not_exists(pk)")?,
                );
            let event = audit.event(&Written::PermanentIssued {
                record: &record,
                generation: next,
                rotated: owner.permanent_issued,
            });
            items = items.with(Part::Event, self.event_put(&event)?);
            let retiring = stored.filter(|r| r.state(now) == TokenState::Live);
            if let Some(old) = &retiring {
                // Live but made with another server key: whoever holds the old key loses it.
                // Only while its meter is still the one the new record takes over.
                items = items.and(self.retire_all(
                    &[(old, &Retirement::Revoked(Revocation::Rolled))],
                    true,
                    now,
                )?);
            }
            match self.transact(items).await {
                Ok(()) => {
                    metrics::minted(TokenKind::Permanent.as_str(), 1);
                    if retiring.is_some() {
                        metrics::revoked(Revocation::Rolled.name(), 1);
                    }
                    return Ok(WorkingPermanent {
                        generation: next,
                        candidate: 0,
                    });
                }
                Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => {
                    return Err(e.into())
                }
                Err(TransactionFailure::Conditions(failed)) => {
                    let profile_changed = failed.contains(&Part::Profile);
                    owner = self
                        .get_user(owner.id)
                        .await?
                        .ok_or(Refusal::UserNotFound)?;
                    if !profile_changed && !owner.permanent_issued {
                        // The record of a first use was written by an earlier call that did not
                        // get to mark the profile: check it as an issued one.
                        owner.permanent_issued = true;
                    }
                }
            }
        }
        Err(Fault::Unavailable(
            "the owner kept changing while its permanent token was written".into(),
        )
        .into())
    }
}
