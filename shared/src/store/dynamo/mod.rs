//! The DynamoDB implementation of [`crate::store::Store`]: one table, no Scan, conditions and
//! transactions where invariants need them. [`core`] reaches DynamoDB; each other file is one
//! kind of record's operations.

mod backfill;
mod core;
mod directory;
mod events;
mod meters;
mod notices;
mod permanent;
mod retire;
mod roll;
mod tokens;

use aws_sdk_dynamodb::Client;

pub use self::backfill::Backfilled;
use self::core::unavailable;
pub(crate) use self::core::IN_FLIGHT;
pub use self::notices::Expiring;
use crate::domain::UserId;
use crate::store::item::{Item, Key};
use crate::store::{Fault, Refusal, StoreError};
use crate::token::CapCounter;

/// See [`DynamoStore::direct`].
#[derive(Clone, Copy, Debug)]
pub struct Direct<'a> {
    pub client: &'a Client,
    pub table: &'a str,
}

impl Direct<'_> {
    /// One item as stored (a strongly consistent GetItem), as only an outside reader sees it.
    pub async fn item(&self, key: &Key) -> Result<Option<Item>, Fault> {
        let output = self
            .client
            .get_item()
            .table_name(self.table)
            .set_key(Some(key.to_item()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    /// The count `counter` keeps on `user`'s profile (0 where a profile has none), signed so
    /// that a count driven below zero shows as such.
    pub async fn cap_count(&self, user: UserId, counter: CapCounter) -> Result<i64, StoreError> {
        let profile = self
            .item(&Key::user(user))
            .await?
            .ok_or(Refusal::UserNotFound)?;
        Ok(profile
            .get(counter.attribute())
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

/// The store over one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// How long audit events are kept (days; their TTL).
    audit_retention_days: u64,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore {
            client,
            table: table.into(),
            audit_retention_days: crate::config::DEFAULT_AUDIT_RETENTION_DAYS,
        }
    }

    /// The store, its audit events kept `days` days.
    pub fn with_audit_retention(mut self, days: u64) -> DynamoStore {
        self.audit_retention_days = days;
        self
    }

    /// The client and table this store works on, for code that must address the table
    /// directly: `make bench`'s raw operations (the least a route can cost) and tests that
    /// inspect or damage items as only an outside writer could. No route uses it.
    pub fn direct(&self) -> Direct<'_> {
        Direct {
            client: &self.client,
            table: &self.table,
        }
    }
}
