//! Platforms and users: ids from atomic counters, profiles with their unique email and customer
//! id items, and status changes.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{ConditionCheck, ReturnValue, TransactWriteItem, Update};

use crate::clock::EpochMs;
use crate::domain::{CustomerId, Email, ExternalId, PlatformId, Role, UserId, UserStatus};
use crate::store::item::{
    members_partition, n, platform_from_item, platform_item, platform_item_at, s, user_from_item,
    user_item, Item, Key, META, PLATFORMS,
};
use crate::store::{
    Directory, Fault, NewUser, Platform, Refusal, StoreError, Tokens, User, UserChange, UserPage,
};

use super::core::*;
use super::DynamoStore;
use crate::model::{Audit, Written};

/// The attribute that marks which call created an item (see `create_platform`).
pub(super) const CREATION: &str = "creation";

/// The user a uniqueness item points to.
fn pointed_user(pointer: &Item) -> Result<UserId, Fault> {
    pointer
        .get("user_id")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .map(UserId)
        .ok_or_else(|| Fault::Corrupt("uniqueness item without user_id".into()))
}

impl DynamoStore {
    /// Writes a new platform's registry item (what `list_platforms` reads): after the platform
    /// itself, unconditionally, so a retry of the creation writes it again harmlessly.
    async fn register(&self, platform: Platform) -> Result<Platform, Fault> {
        let item = platform_item_at(&Key::registered(platform.id), &platform);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        Ok(platform)
    }

    /// The user a uniqueness item (email, customer id) points to.
    pub(super) async fn follow_pointer(&self, key: Key) -> Result<Option<User>, Fault> {
        match self.get(key).await? {
            Some(pointer) => self.get_user(pointed_user(&pointer)?).await,
            None => Ok(None),
        }
    }

    /// Next value of a named counter (atomic `ADD`).
    pub(super) async fn allocate(&self, counter: &str) -> Result<u64, Fault> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Key::counter(counter).to_item()))
            .update_expression("ADD #value :one")
            .set_expression_attribute_names(names([("#value", "value")]))
            .set_expression_attribute_values(values([(":one", n(1))]))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        output
            .attributes()
            .and_then(|a| a.get("value"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Fault::Corrupt(format!("counter {counter} has no number")))
    }
}

impl DynamoStore {
    /// Any profile, a platform's service account's too (which [`Directory::get_user`] never
    /// answers): what the store itself reads of a token's owner.
    pub(super) async fn profile(&self, id: UserId) -> Result<Option<User>, Fault> {
        self.get(Key::user(id))
            .await?
            .map(|item| user_from_item(&item))
            .transpose()
    }
}

#[async_trait]
impl Directory for DynamoStore {
    async fn create_platform(&self, name: &str, now: EpochMs) -> Result<Platform, Fault> {
        // Marks this call's item, so a put that the SDK sent again after it landed (its answer
        // lost) is recognised instead of taken for an id in use. Ids skipped by a retried `ADD`
        // leave gaps: ids are unique, not dense.
        let creation = client_request_token();
        loop {
            let platform = Platform {
                id: PlatformId(self.allocate("platforms").await?),
                name: name.to_string(),
                created_at_ms: now.0,
            };
            let mut item = platform_item(&platform);
            item.insert(CREATION.into(), s(&creation));
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .before_deadline()
                .await;
            match put {
                Ok(_) => return self.register(platform).await,
                Err(e) if is_conditional_failure(&e) => {
                    let existing = self.get(Key::platform(platform.id)).await?;
                    if existing.is_some_and(|item| item.get(CREATION) == Some(&s(&creation))) {
                        return self.register(platform).await;
                    }
                    // An id taken outside the counter (a restored backup): take the next one.
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn get_platform(&self, id: PlatformId) -> Result<Option<Platform>, Fault> {
        self.get(Key::platform(id))
            .await?
            .map(|item| platform_from_item(&item))
            .transpose()
    }

    async fn list_platforms(&self) -> Result<Vec<Platform>, Fault> {
        let mut platforms = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .set_expression_attribute_values(values([(":pk", s(PLATFORMS))]))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .before_deadline()
                .await
                .map_err(unavailable)?;
            for item in page.items() {
                platforms.push(platform_from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(platforms),
            }
        }
    }

    async fn create_user(
        &self,
        new: NewUser,
        audit: &dyn Audit,
        now: EpochMs,
    ) -> Result<User, StoreError> {
        if new.id.is_some_and(UserId::is_service_account) {
            return Err(Refusal::UserIdTaken.into());
        }
        loop {
            let id = match new.id {
                Some(id) => id,
                None => UserId(self.allocate("users").await?),
            };
            let user = User {
                id,
                platform_id: new.platform_id,
                name: new.name.clone(),
                email: new.email.as_str().to_string(),
                role: new.role,
                status: new.status,
                customer_id: new.customer_id.clone(),
                external_id: new.external_id.clone(),
                meta: new.meta.clone(),
                workspaces: new.workspaces.clone(),
                permanent_generation: 1,
                permanent_issued: false,
                created_at_ms: now.0,
                meter: None,
            };
            let absent = "attribute_not_exists(pk)";
            let mut email = Key::email(new.platform_id, &new.email.normalized()).to_item();
            email.insert("user_id".into(), n(id.0));
            let platform_exists = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(Key::platform(new.platform_id).to_item()))
                .condition_expression("attribute_exists(pk)")
                .build()
                .map_err(unavailable)?;
            let mut items = Transaction::default()
                .with(
                    Part::Platform,
                    TransactWriteItem::builder()
                        .condition_check(platform_exists)
                        .build(),
                )
                .with(Part::Email, self.put(email, absent)?)
                .with(Part::User, self.put(user_item(&user), absent)?)
                .with(Part::Member, self.put(member_item(&user), absent)?);
            if let Some(customer) = &new.customer_id {
                let mut item = Key::customer(customer).to_item();
                item.insert("user_id".into(), n(id.0));
                items = items.with(Part::CustomerId, self.put(item, absent)?);
            }
            if let Some(external) = &new.external_id {
                let mut item = Key::external(new.platform_id, external).to_item();
                item.insert("user_id".into(), n(id.0));
                items = items.with(Part::ExternalId, self.put(item, absent)?);
            }
            let event = audit.event(&Written::UserCreated(&user));
            items = items.with(Part::Event, self.event_put(&event)?);
            match self.transact(items).await {
                Ok(()) => return Ok(user),
                Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => {
                    return Err(e.into())
                }
                Err(TransactionFailure::Conditions(failed)) => {
                    if self.get_user(id).await?.as_ref() == Some(&user) {
                        // This very user: an attempt that committed, its answer lost.
                        return Ok(user);
                    }
                    if failed.contains(&Part::Platform) {
                        return Err(Refusal::PlatformNotFound.into());
                    } else if failed.contains(&Part::Email) {
                        return Err(Refusal::EmailTaken.into());
                    } else if failed.contains(&Part::CustomerId) {
                        return Err(Refusal::CustomerIdTaken.into());
                    } else if failed.contains(&Part::ExternalId) {
                        return Err(Refusal::ExternalIdTaken.into());
                    } else if new.id.is_some() {
                        return Err(Refusal::UserIdTaken.into());
                    }
                    // An allocated id that an imported user already holds: take the next one.
                }
            }
        }
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, Fault> {
        if id.is_service_account() {
            return Ok(None);
        }
        self.profile(id).await
    }

    async fn get_users(&self, ids: &[UserId]) -> Result<HashMap<UserId, User>, Fault> {
        let ids: Vec<UserId> = ids
            .iter()
            .copied()
            .filter(|id| !id.is_service_account())
            .collect();
        Ok(self.find_tokens(&[], &ids).await?.users)
    }

    async fn list_users(
        &self,
        platform: PlatformId,
        limit: u32,
        after: Option<UserId>,
    ) -> Result<UserPage, Fault> {
        let start = after.map(|id| Key::member(platform, id).to_item());
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .set_expression_attribute_values(values([(":pk", s(members_partition(platform)))]))
            .consistent_read(true)
            .limit(limit.max(1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        let ids = page
            .items()
            .iter()
            .map(|item| {
                item.get("user_id")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .map(UserId)
                    .ok_or_else(|| Fault::Corrupt("member item without user_id".into()))
            })
            .collect::<Result<Vec<UserId>, Fault>>()?;
        let mut found = self.get_users(&ids).await?;
        // A member whose profile is gone is left out; the page still ends where the Query did.
        let users = ids.iter().filter_map(|id| found.remove(id)).collect();
        let next = match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => ids.last().copied(),
            _ => None,
        };
        Ok(UserPage { users, next })
    }

    async fn update_user(
        &self,
        id: UserId,
        change: &UserChange,
        audit: &dyn Audit,
    ) -> Result<Option<User>, Fault> {
        // Read, then written only while the profile still holds what was read (name and meta),
        // so the event's before/after are exact when updates race.
        for _ in 0..3 {
            let Some(before) = self.get_user(id).await? else {
                return Ok(None);
            };
            let mut after = before.clone();
            if let Some(name) = &change.name {
                after.name = name.clone();
            }
            if let Some(meta) = &change.meta {
                after.meta = meta.clone();
            }
            let mut sets = vec!["#name = :name"];
            let mut values_ = vec![(":name", s(&after.name)), (":old_name", s(&before.name))];
            let mut condition = vec!["attribute_exists(pk)", "#name = :old_name"];
            let remove = match &after.meta {
                Some(meta) => {
                    sets.push("#meta = :meta");
                    values_.push((":meta", s(meta.to_json())));
                    ""
                }
                None => " REMOVE #meta",
            };
            match &before.meta {
                Some(meta) => {
                    condition.push("#meta = :old_meta");
                    values_.push((":old_meta", s(meta.to_json())));
                }
                None => condition.push("attribute_not_exists(#meta)"),
            }
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Key::user(id).to_item()))
                .update_expression(format!("SET {}{remove}", sets.join(", ")))
                .condition_expression(condition.join(" AND "))
                .set_expression_attribute_names(names([("#name", "name"), ("#meta", META)]))
                .set_expression_attribute_values(values(values_))
                .build()
                .map_err(unavailable)?;
            let event = audit.event(&Written::UserUpdated {
                before: &before,
                after: &after,
            });
            if self.update_with_event(Part::User, update, &event).await? {
                return Ok(Some(after));
            }
        }
        Err(Fault::Unavailable(
            "a user update kept losing races to other updates".into(),
        ))
    }

    async fn service_account(
        &self,
        platform: PlatformId,
        now: EpochMs,
    ) -> Result<User, StoreError> {
        let id = UserId::service_account(platform);
        if let Some(item) = self.get(Key::user(id)).await? {
            return Ok(user_from_item(&item)?);
        }
        if self.get_platform(platform).await?.is_none() {
            return Err(Refusal::PlatformNotFound.into());
        }
        let account = User {
            id,
            platform_id: platform,
            name: "service keys".into(),
            email: String::new(),
            role: Role::Service,
            status: UserStatus::Active,
            customer_id: None,
            external_id: None,
            meta: None,
            workspaces: Vec::new(),
            permanent_generation: 1,
            permanent_issued: false,
            created_at_ms: now.0,
            meter: None,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(user_item(&account)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .before_deadline()
            .await;
        match put {
            // Written by a call that raced this one: that one is the account.
            Err(e) if is_conditional_failure(&e) => {}
            other => {
                other.map_err(unavailable)?;
            }
        }
        let item = self.get(Key::user(id)).await?;
        Ok(item
            .map(|item| user_from_item(&item))
            .transpose()?
            .ok_or(Fault::Corrupt(
                "a service account vanished as it was written".into(),
            ))?)
    }

    async fn find_user_by_email(
        &self,
        platform: PlatformId,
        email: &Email,
    ) -> Result<Option<User>, Fault> {
        Ok(self
            .follow_pointer(Key::email(platform, &email.normalized()))
            .await?
            .filter(|u| u.platform_id == platform))
    }

    async fn find_user_by_external_id(
        &self,
        platform: PlatformId,
        external: &ExternalId,
    ) -> Result<Option<User>, Fault> {
        Ok(self
            .follow_pointer(Key::external(platform, external))
            .await?
            .filter(|u| u.platform_id == platform))
    }

    async fn find_users_by_external_ids(
        &self,
        platform: PlatformId,
        externals: &[ExternalId],
    ) -> Result<HashMap<ExternalId, User>, Fault> {
        let asked: HashSet<&ExternalId> = externals.iter().collect();
        let keys = externals
            .iter()
            .map(|e| Key::external(platform, e))
            .collect();
        let ids = self
            .batch_get_all(keys)
            .await?
            .iter()
            .map(pointed_user)
            .collect::<Result<Vec<UserId>, Fault>>()?;
        Ok(self
            .get_users(&ids)
            .await?
            .into_values()
            .filter(|user| user.platform_id == platform)
            .filter_map(|user| Some((user.external_id.clone()?, user)))
            .filter(|(external, _)| asked.contains(external))
            .collect())
    }

    async fn find_user_by_customer_id(&self, customer: &CustomerId) -> Result<Option<User>, Fault> {
        self.follow_pointer(Key::customer(customer)).await
    }

    async fn set_user_status(
        &self,
        id: UserId,
        status: UserStatus,
        audit: &dyn Audit,
    ) -> Result<(), StoreError> {
        let user = self.get_user(id).await?.ok_or(Refusal::UserNotFound)?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::user(id).to_item()))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(names([("#status", "status")]))
            .set_expression_attribute_values(values([(":status", s(status.as_str()))]))
            .build()
            .map_err(unavailable)?;
        let event = audit.event(&Written::UserStatusSet {
            before: &user,
            status,
        });
        match self.update_with_event(Part::User, update, &event).await? {
            true => Ok(()),
            false => Err(Refusal::UserNotFound.into()),
        }
    }
}

/// The item that lists `user` in its platform's directory.
fn member_item(user: &User) -> crate::store::item::Item {
    let mut item = Key::member(user.platform_id, user.id).to_item();
    item.insert("user_id".into(), n(user.id.0));
    item
}
