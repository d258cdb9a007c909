//! Tokens: creation within the owner's cap (settled when its outcome is unknown), reads of the
//! live item or its retired copy, updates and `last_used_at`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, ReturnValue, TransactWriteItem, Update,
};

use crate::clock::EpochMs;
use crate::domain::{UserId, UserStatus};
use crate::metrics;
use crate::store::item::{
    abilities_value, address_from_item, child_item, child_prefix, imported_item, is_void, n, s,
    token_from_item, token_item, token_sort_prefix, user_from_item, void_item, Item, Key, ENABLED,
    META, SK, TOKEN_PREFIX,
};
use crate::store::{
    Fault, Found, NewToken, Owner, Refusal, StoreError, TokenAddress, TokenChange, TokenRecord,
    TokenState, Tokens, User, LAST_USED_RESOLUTION_MS,
};
use crate::token::{PublicTokenId, TokenFamily, TokenHash, TokenId};

use super::core::*;
use super::DynamoStore;
use crate::model::{Audit, Written};

impl DynamoStore {
    /// The user's live tokens whose sort keys begin with `prefix` (one strongly consistent
    /// Query).
    async fn live_tokens(
        &self,
        user: UserId,
        prefix: &str,
        now: EpochMs,
    ) -> Result<Vec<TokenRecord>, Fault> {
        let items = self.query_tokens(user, prefix, None).await?;
        let mut live = Vec::with_capacity(items.len());
        for item in items.iter().filter(|item| !is_void(item)) {
            let record = token_from_item(item)?;
            if record.state(now) == TokenState::Live {
                live.push(record);
            }
        }
        Ok(live)
    }

    /// Settles a new token's creation (or roll) whose transaction's outcome stayed unknown:
    /// `true` when its record is stored. Otherwise its key is taken by a void item first, so
    /// the transaction, should an attempt of it still be on its way, can never commit (its put
    /// requires the key free): `false` means it never will. The fault when neither could be
    /// settled (DynamoDB still unreachable).
    pub(super) async fn settle_new_token(
        &self,
        record: &TokenRecord,
        fault: Fault,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let key = Key::token(record.user_id, record.kind.family(), record.id);
        let ours = |item: Option<Item>| -> Result<Option<bool>, Fault> {
            match item {
                None => Ok(None),
                Some(item) if is_void(&item) => Ok(Some(false)),
                Some(item) => Ok(Some(token_from_item(&item)?.hash.matches(&record.hash))),
            }
        };
        if let Some(stored) = ours(self.get(key.clone()).await.map_err(|_| fault)?)? {
            return Ok(stored);
        }
        let void = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(void_item(&key, now)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .before_deadline()
            .await;
        match void {
            Ok(_) => Ok(false),
            Err(e) if is_conditional_failure(&e) => {
                let item = self.get(key).await?;
                Ok(ours(item)?.unwrap_or(false))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The user update of `count` token creations: counts capped families (all `count` fit
    /// under `cap`, or none; `count` is at most `cap`: a profile without a counter yet passes
    /// whatever the count), and in every case holds the owner active for the transaction.
    pub(super) fn owner_guard(
        &self,
        owner: UserId,
        family: TokenFamily,
        cap: u32,
        count: u32,
    ) -> Result<TransactWriteItem, Fault> {
        let key = Some(Key::user(owner).to_item());
        let active = (":active", s(UserStatus::Active.as_str()));
        if let Some(counter) = family.cap() {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(key)
                .update_expression("ADD #counter :count")
                // Profiles written before a counter existed have none: zero.
                .condition_expression(
                    "attribute_exists(pk) AND #status = :active \
                     AND (attribute_not_exists(#counter) OR #counter <= :room)",
                )
                .set_expression_attribute_names(names([
                    ("#status", "status"),
                    ("#counter", counter.attribute()),
                ]))
                .set_expression_attribute_values(values([
                    (":count", n(count)),
                    active,
                    (":room", n(cap.saturating_sub(count))),
                ]))
                .build()
                .map_err(unavailable)?;
            Ok(TransactWriteItem::builder().update(update).build())
        } else {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(key)
                .condition_expression("attribute_exists(pk) AND #status = :active")
                .set_expression_attribute_names(names([("#status", "status")]))
                .set_expression_attribute_values(values([active]))
                .build()
                .map_err(unavailable)?;
            Ok(TransactWriteItem::builder().condition_check(check).build())
        }
    }

    /// A new token's items but its owner's guard: its record, its audit event, its child
    /// item (minted with a parent) and its import pointer (imported).
    fn creation(&self, record: &TokenRecord, audit: &dyn Audit) -> Result<Transaction, Fault> {
        let event = audit.event(&match record.imported {
            true => Written::TokenImported(record),
            false => Written::TokenCreated(record),
        });
        let mut items = Transaction::default()
            .with(
                Part::NewToken,
                self.put(token_item(record), "attribute_not_exists(pk)")?,
            )
            .with(Part::Event, self.event_put(&event)?);
        if let Some(child) = child_item(record) {
            items = items.with(Part::Child, self.put_any(child)?);
        }
        if record.imported {
            let pointer = self.put(imported_item(record), "attribute_not_exists(pk)")?;
            items = items.with(Part::Imported, pointer);
        }
        Ok(items)
    }

    /// The retired copy of a token, if it has one.
    pub(super) async fn get_retired(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, Fault> {
        self.batch_get(vec![Key::retired(user, family, id)])
            .await?
            .first()
            .map(token_from_item)
            .transpose()
    }
}

#[async_trait]
impl Tokens for DynamoStore {
    async fn get_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, Fault> {
        self.get(Key::token(user, family, id))
            .await?
            .filter(|item| !is_void(item))
            .map(|item| token_from_item(&item))
            .transpose()
    }

    async fn get_token_and_owner(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<(Option<TokenRecord>, Option<User>), Fault> {
        let items = self
            .batch_get(vec![Key::token(user, family, id), Key::user(user)])
            .await?;
        let (mut token, mut owner) = (None, None);
        for item in &items {
            match item.get("sk").and_then(|sk| sk.as_s().ok()) {
                Some(sk) if sk == "PROFILE" => owner = Some(user_from_item(item)?),
                _ if is_void(item) => {}
                _ => token = Some(token_from_item(item)?),
            }
        }
        if token.is_none() {
            // Revoked or released: a second read, only for tokens that no longer work.
            token = self.get_retired(user, family, id).await?;
        }
        Ok((token, owner))
    }

    async fn find_imported(&self, hash: &TokenHash) -> Result<Option<TokenAddress>, Fault> {
        self.get(Key::imported(hash))
            .await?
            .as_ref()
            .map(address_from_item)
            .transpose()
    }

    async fn create_token(
        &self,
        owner: Owner,
        token: NewToken,
        cap: u32,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<(), StoreError> {
        let family = token.parsed.kind.family();
        let record = token.record(owner);
        let mut released_once = false;
        loop {
            let items = Transaction::default()
                .with(Part::Owner, self.owner_guard(owner.id, family, cap, 1)?)
                .and(self.creation(&record, audit)?);
            let failed = match self.transact(items).await {
                Ok(()) => {
                    metrics::minted(record.kind.as_str(), 1);
                    return Ok(());
                }
                Err(TransactionFailure::Fault(e)) => return Err(e.into()),
                // Stored, or made void so that it never will be: never a 503 for a key that
                // exists, nor a key nobody saw that holds a slot.
                Err(TransactionFailure::Unknown(e)) => {
                    if self.settle_new_token(&record, e, now).await? {
                        metrics::minted(record.kind.as_str(), 1);
                        return Ok(());
                    }
                    return Err(Fault::Unavailable(
                        "a token creation's outcome stayed unknown; it was made void".into(),
                    )
                    .into());
                }
                Err(TransactionFailure::Conditions(failed)) => failed,
            };
            if failed.contains(&Part::Imported) {
                // The hash was imported before: by this very token when an earlier attempt of
                // ours committed and its answer was lost, or as another token.
                if let Some(holder) = self.find_imported(&record.hash).await? {
                    if holder == record.address() {
                        metrics::minted(record.kind.as_str(), 1);
                        return Ok(());
                    }
                    return Err(Refusal::AlreadyImported(PublicTokenId {
                        user_id: holder.user_id,
                        token_id: holder.id,
                    })
                    .into());
                }
            }
            let guard_failed = failed.contains(&Part::Owner);
            if failed.contains(&Part::NewToken) {
                // The record id is taken: by this very token when an earlier attempt of ours
                // committed and its answer was lost (then the slot is already counted).
                let stored = self
                    .get_token(owner.id, family, record.id)
                    .await?
                    .is_some_and(|stored| stored.hash.matches(&record.hash));
                if stored {
                    metrics::minted(record.kind.as_str(), 1);
                    return Ok(());
                }
                if !guard_failed {
                    return Err(Refusal::TokenIdTaken.into());
                }
            }
            match self.profile(owner.id).await? {
                None => return Err(Refusal::UserNotFound.into()),
                Some(user) if !user.is_active() => return Err(Refusal::UserBlocked.into()),
                Some(_) if !released_once => {
                    released_once = true;
                    let freed = match family.cap() {
                        Some(counter) => self.release_expired(owner.id, counter, now).await?,
                        None => 0,
                    };
                    if freed == 0 {
                        return Err(Refusal::TokenLimitReached { max: cap }.into());
                    }
                }
                Some(_) => return Err(Refusal::TokenLimitReached { max: cap }.into()),
            }
        }
    }

    async fn create_tokens(
        &self,
        tokens: Vec<(Owner, NewToken)>,
        cap: u32,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let records: Vec<TokenRecord> = tokens
            .into_iter()
            .map(|(owner, token)| token.record(owner))
            .collect();
        let Some(first) = records.first() else {
            return Ok(true);
        };
        // One guard an owner and family, counting all of its new tokens.
        let mut counts: Vec<(UserId, TokenFamily, u32)> = Vec::new();
        for record in &records {
            let family = record.kind.family();
            match counts
                .iter_mut()
                .find(|(user, f, _)| *user == record.user_id && *f == family)
            {
                Some((_, _, count)) => *count += 1,
                None => counts.push((record.user_id, family, 1)),
            }
        }
        let mut items = Transaction::default();
        for (user, family, count) in counts {
            if count > cap {
                // Never all of them: an owner without a counter yet would pass the guard.
                return Ok(false);
            }
            items = items.with(Part::Owner, self.owner_guard(user, family, cap, count)?);
        }
        for record in &records {
            items = items.and(self.creation(record, audit)?);
        }
        if !items.sendable() {
            return Ok(false);
        }
        let stored = match self.transact(items).await {
            Ok(()) => true,
            Err(TransactionFailure::Conditions(_)) => false,
            Err(TransactionFailure::Fault(e)) => return Err(e),
            // All or none: the first record settles the whole transaction.
            Err(TransactionFailure::Unknown(e)) => self.settle_new_token(first, e, now).await?,
        };
        if stored {
            for record in &records {
                metrics::minted(record.kind.as_str(), 1);
            }
        }
        Ok(stored)
    }

    async fn list_all_tokens(&self, user: UserId, now: EpochMs) -> Result<Vec<TokenRecord>, Fault> {
        self.live_tokens(user, TOKEN_PREFIX, now).await
    }

    async fn list_tokens(
        &self,
        user: UserId,
        family: TokenFamily,
        now: EpochMs,
    ) -> Result<Vec<TokenRecord>, Fault> {
        self.live_tokens(user, &token_sort_prefix(family), now)
            .await
    }

    async fn children(&self, parent: PublicTokenId) -> Result<Vec<TokenAddress>, Fault> {
        self.query_tokens(parent.user_id, &child_prefix(parent.token_id), None)
            .await?
            .iter()
            .map(address_from_item)
            .collect()
    }

    async fn find_tokens(&self, tokens: &[TokenAddress], users: &[UserId]) -> Result<Found, Fault> {
        let keys: Vec<Key> = tokens
            .iter()
            .flat_map(|a| {
                [
                    Key::token(a.user_id, a.family, a.id),
                    Key::retired(a.user_id, a.family, a.id),
                ]
            })
            .chain(users.iter().map(|user| Key::user(*user)))
            .collect();
        let items = self.batch_get_all(keys).await?;
        let mut found = Found::default();
        for item in items.iter().filter(|item| !is_void(item)) {
            let sk = item.get(SK).and_then(|sk| sk.as_s().ok());
            if sk.is_some_and(|sk| sk == "PROFILE") {
                let user = user_from_item(item)?;
                found.users.insert(user.id, user);
                continue;
            }
            let record = token_from_item(item)?;
            let address = record.address();
            if sk.is_some_and(|sk| sk.starts_with("TOKEN#")) {
                found.tokens.insert(address, record);
            } else {
                found.tokens.entry(address).or_insert(record);
            }
        }
        Ok(found)
    }

    async fn update_token(
        &self,
        record: &TokenRecord,
        fields: &TokenChange,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<Option<TokenRecord>, Fault> {
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        let mut expression_names = HashMap::new();
        let mut expression_values = HashMap::from([
            (":now".to_string(), n(now.seconds().0)),
            (":read".to_string(), abilities_value(&record.abilities)),
        ]);
        if let Some(name) = &fields.name {
            sets.push("#name = :name");
            expression_names.insert("#name".to_string(), "name".to_string());
            expression_values.insert(":name".into(), s(name.as_str()));
        }
        if let Some(abilities) = &fields.abilities {
            sets.push("abilities = :abilities");
            expression_values.insert(":abilities".into(), abilities_value(abilities));
        }
        match fields.enabled {
            Some(false) => {
                sets.push("#enabled = :disabled");
                expression_values.insert(":disabled".into(), AttributeValue::Bool(false));
            }
            Some(true) => removes.push("#enabled"),
            None => {}
        }
        if fields.enabled.is_some() {
            expression_names.insert("#enabled".to_string(), ENABLED.to_string());
        }
        match &fields.meta {
            Some(Some(meta)) => {
                sets.push("#meta = :meta");
                expression_values.insert(":meta".into(), s(meta.to_json()));
            }
            Some(None) => removes.push("#meta"),
            None => {}
        }
        if fields.meta.is_some() {
            expression_names.insert("#meta".to_string(), META.to_string());
        }
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(
                Key::token(record.user_id, record.kind.family(), record.id).to_item(),
            ))
            .update_expression(set_and_remove(&sets, &removes))
            .condition_expression(format!("{LIVE} AND abilities = :read"))
            .set_expression_attribute_names(
                (!expression_names.is_empty()).then_some(expression_names),
            )
            .set_expression_attribute_values(Some(expression_values))
            .build()
            .map_err(unavailable)?;
        let mut updated = record.clone();
        if let Some(name) = &fields.name {
            updated.name = name.as_str().to_string();
        }
        if let Some(abilities) = &fields.abilities {
            updated.abilities = abilities.clone();
        }
        if let Some(enabled) = fields.enabled {
            updated.enabled = enabled;
        }
        if let Some(meta) = &fields.meta {
            updated.meta = meta.clone();
        }
        let event = audit.event(&Written::TokenUpdated { record, fields });
        let written = self
            .update_with_event(Part::Updating, update, &event)
            .await?;
        Ok(written.then_some(updated))
    }

    async fn touch_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        now: EpochMs,
    ) -> Result<bool, Fault> {
        let touch = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::token(user, family, id).to_item()))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at <= :stale)",
            )
            .set_expression_attribute_values(values([
                (":now", n(now)),
                (
                    ":stale",
                    n(now.minus_ms(LAST_USED_RESOLUTION_MS)),
                ),
            ]))
            .build()
            .map_err(unavailable)?;
        Ok(self
            .update(touch, ReturnValue::None, Resend::Safe)
            .await?
            .is_some())
    }
}
