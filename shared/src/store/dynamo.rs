//! The DynamoDB implementation of [`Store`]: one table, no Scan, conditions and transactions
//! where invariants need them.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, KeysAndAttributes, Put, ReturnValue, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::item::{
    abilities_value, child_from_item, child_item, child_prefix, event_from_item, event_item,
    is_void, meter_attributes, n, platform_from_item, platform_item, revocation_name, s,
    token_from_item, token_item, token_item_at, token_sort_prefix, user_from_item, user_item,
    user_partition, void_item, Item, Key, AUDIT_INDEX, AUDIT_PLATFORM, AUDIT_PREFIX, CREDITS,
    ENABLED, METER_ATTRIBUTES, PK, ROLLED_TO, SK, WINDOW_USED,
};
use super::schema::TTL_ATTRIBUTE;
use super::{
    EventCursor, EventPage, EventScope, Found, Metered, NewToken, NewUser, Owner,
    PermanentGeneration, Platform, Predecessor, Revocation, RollOutcome, Store, StoreError,
    TokenAddress, TokenChange, TokenRecord, TokenState, User,
};
use crate::audit::{Action, Change, Event, Target};
use crate::domain::{CustomerId, Email, PlatformId, UserId, UserStatus};
use crate::limits::{usage, Limits, Meter, Standing, Usage};
use crate::token::{
    fill_random, random_hex, CapCounter, PublicTokenId, TokenFamily, TokenId, TokenKind,
};
use crate::{deadline, metrics};
use serde_json::json;

/// Keys a BatchGetItem may name.
const BATCH_GET_KEYS: usize = 100;

/// Tokens one transaction retires: three items each (the live item, its copy, its audit event)
/// and the owner's counter update, within DynamoDB's 100 items a transaction.
const RETIRED_PER_TRANSACTION: usize = 33;

/// Requests of one call sent at once (batched reads, owners' revocations).
pub(super) const IN_FLIGHT: usize = 8;

/// How often a transaction that lost a race with another one on the same item is tried again.
const TRANSACTION_ATTEMPTS: u32 = 10;

/// How often a unit of use is charged again after its write lost a race (a refill or a new rate
/// window written by another unit, limits changed meanwhile): each time from a fresh read.
const CHARGE_ATTEMPTS: u32 = 10;

/// The longest one SDK attempt may take (the client's per-attempt timeout): another attempt is
/// started only while the request's deadline leaves this much.
const ATTEMPT_TIME: Duration = Duration::from_millis(1500);

/// The one attempt of a write that must never be sent twice (a charge's `credits - 1`): it may
/// wait this long for DynamoDB's answer, since no later attempt can take over.
const SINGLE_ATTEMPT_TIME: Duration = Duration::from_secs(4);

/// Why a cancelled transaction is worth another attempt: it lost a race or was throttled.
const RETRIED_CANCELLATIONS: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Errors of a single-item write that prove nothing was written and are worth another attempt:
/// a transaction held the item, or the request was throttled.
const RETRIED_WRITE_ERRORS: [&str; 4] = [
    "TransactionConflictException",
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Jittered exponential backoff between attempts: 5 ms doubling to 200 ms, each wait up to
/// twice that.
struct Backoff(u64);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(5)
    }
}

impl Backoff {
    async fn wait(&mut self) {
        let mut jitter = [0u8; 1];
        fill_random(&mut jitter);
        let wait = self.0 + self.0 * u64::from(jitter[0]) / 255;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        self.0 = (self.0 * 2).min(200);
    }
}

/// The attribute that marks which call created an item (see `create_platform`).
const CREATION: &str = "creation";

/// A new idempotency token for one logical transaction (DynamoDB keeps it for 10 minutes).
fn client_request_token() -> String {
    random_hex(16)
}

/// The SDK settings of a write that must never be sent twice: one attempt, no retry of the
/// SDK's own, and [`SINGLE_ATTEMPT_TIME`] to answer (the request's deadline still comes first).
fn single_attempt() -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::config::Builder::default()
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_attempt_timeout(SINGLE_ATTEMPT_TIME)
                .operation_timeout(SINGLE_ATTEMPT_TIME)
                .build(),
        )
}

/// See [`DynamoStore::direct`].
#[derive(Clone, Copy, Debug)]
pub struct Direct<'a> {
    pub client: &'a Client,
    pub table: &'a str,
}

impl Direct<'_> {
    /// One item as stored (a strongly consistent GetItem), as only an outside reader sees it.
    pub async fn item(&self, key: &Key) -> Result<Option<Item>, StoreError> {
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
            .ok_or(StoreError::UserNotFound)?;
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

/// A token item that is live: present, not revoked, not past `valid_until` (`:now`, epoch
/// seconds).
const LIVE: &str = "attribute_exists(pk) AND attribute_not_exists(revoked_at) \
                    AND (attribute_not_exists(valid_until) OR valid_until > :now)";

/// [`LIVE`], and not rolled: the token holds its lineage's meter.
const LIVE_AND_NOT_ROLLED: &str = "attribute_exists(pk) AND attribute_not_exists(revoked_at) \
                    AND (attribute_not_exists(valid_until) OR valid_until > :now) \
                    AND attribute_not_exists(rolled_to)";

/// Why a token leaves its family's range.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Retirement {
    Revoked(Revocation),
    /// Expired, and its cap slot given back.
    Released,
}

/// Why a transaction did not commit.
enum TransactionFailure {
    /// What the items whose conditions failed stand for.
    Conditions(Vec<Part>),
    Store(StoreError),
    /// It may have committed: an attempt was sent and no answer settled it before the attempts
    /// or the deadline ran out (a timeout, a dropped connection, a server error). It may still
    /// commit later, exactly once (every attempt carried the same client request token).
    Unknown(StoreError),
}

/// Whether a single-item write may be sent again when its outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resend {
    /// Writing it twice leaves what writing it once does (a time set under a condition).
    Safe,
    /// It changes what it reads (`credits = credits - 1`): sent once, by one attempt of the SDK.
    Never,
}

/// What an item of a transaction stands for, so that a cancellation is read by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// The platform a new user joins exists.
    Platform,
    /// The new user's email is free on its platform.
    Email,
    /// The user's profile: a new user's id is free, or a status change's user exists.
    User,
    /// The new user's customer id is free.
    CustomerId,
    /// A token's owner is active (and under its cap, for a capped family).
    Owner,
    /// A new token record's id is free.
    NewToken,
    /// The owner's permanent-token generation is still the one read.
    Profile,
    /// The token being retired is still as the retirement requires.
    Retiring,
    /// The token being rolled is live and was never rolled.
    Rolling,
    /// The record being updated is as the change requires: a token update's token live with
    /// the abilities read; a limits change's user present, or its token live.
    Updating,
    /// The retired token's `GONE#` copy (no condition).
    Tombstone,
    /// A new token's child item under its parent (no condition).
    Child,
    /// The change's audit event.
    Event,
    /// A metered record charged one unit (its limits as read).
    Charging,
    /// The owner's cap counter given a slot back (the owner exists).
    Counter,
}

/// The items of one transaction, each with what it stands for.
#[derive(Default)]
struct Transaction(Vec<(Part, TransactWriteItem)>);

impl Transaction {
    fn with(mut self, part: Part, item: TransactWriteItem) -> Transaction {
        self.0.push((part, item));
        self
    }

    fn and(mut self, other: Transaction) -> Transaction {
        self.0.extend(other.0);
        self
    }
}

impl From<StoreError> for TransactionFailure {
    fn from(e: StoreError) -> Self {
        TransactionFailure::Store(e)
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn is_conditional_failure<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// SDK calls that give up, as a timeout, when the request's deadline comes first.
trait BeforeDeadline<T, E, R>: Future<Output = Result<T, SdkError<E, R>>> + Sized {
    async fn before_deadline(self) -> Result<T, SdkError<E, R>> {
        deadline::bounded(self)
            .await
            .unwrap_or_else(|late| Err(SdkError::timeout_error(late)))
    }
}

impl<T, E, R, F: Future<Output = Result<T, SdkError<E, R>>>> BeforeDeadline<T, E, R> for F {}

/// An update expression of `sets` (`a = :a`) and `removes` (attribute names), either may be
/// empty.
fn set_and_remove(sets: &[impl AsRef<str>], removes: &[impl AsRef<str>]) -> String {
    fn join(parts: &[impl AsRef<str>]) -> String {
        parts
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(", ")
    }
    let mut clauses = Vec::new();
    if !sets.is_empty() {
        clauses.push(format!("SET {}", join(sets)));
    }
    if !removes.is_empty() {
        clauses.push(format!("REMOVE {}", join(removes)));
    }
    clauses.join(" ")
}

/// Attribute values of one expression, built with `value(":name", v)`.
fn values<const N: usize>(
    pairs: [(&str, AttributeValue); N],
) -> Option<HashMap<String, AttributeValue>> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn names<const N: usize>(pairs: [(&str, &str); N]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The condition that a record's meter is still `meter` (as read): each meter attribute equal
/// to what was read, or absent as it was. Names `#pin<i>` and values `:pin<i>` are added.
fn meter_as_read(
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

/// [`meter_as_read`] of a token's meter, and its name, abilities and `enabled` as read: what a
/// roll hands on (an update racing the roll sends it back for a fresh read, so a narrowing of
/// abilities is never undone by a successor made from the wider ones).
fn record_as_read(
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
    format!("{meter} AND {enabled}")
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

    /// The put of `event` in a change's transaction (a new item: its id is unique).
    fn event_put(&self, event: &Event) -> Result<TransactWriteItem, StoreError> {
        let expires_at = event.at_us / 1_000_000 + self.audit_retention_days * 86_400;
        self.put(event_item(event, expires_at), "attribute_not_exists(pk)")
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

    async fn get(&self, key: Key) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.to_item()))
            .consistent_read(true)
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    /// The user a uniqueness item (email, customer id) points to.
    async fn follow_pointer(&self, key: Key) -> Result<Option<User>, StoreError> {
        let Some(pointer) = self.get(key).await? else {
            return Ok(None);
        };
        let id = pointer
            .get("user_id")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("uniqueness item without user_id".into()))?;
        self.get_user(UserId(id)).await
    }

    /// Next value of a named counter (atomic `ADD`).
    async fn allocate(&self, counter: &str) -> Result<u64, StoreError> {
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
            .ok_or_else(|| StoreError::Corrupt(format!("counter {counter} has no number")))
    }

    /// A transaction's put of an item whatever is there.
    fn put_any(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The conditional write that charges one unit to a meter standing as `standing`: it
    /// decrements the credits (or refills them, less the unit) and counts the unit in the rate
    /// window (or starts the window with it), only while the stored counters are still the
    /// ones `standing` was read from in every respect the unit depends on.
    fn charge_update(&self, key: &Key, standing: &Standing) -> Result<Update, StoreError> {
        let mut sets = Vec::new();
        let mut conditions = vec!["attribute_exists(pk)"];
        let mut expression_values = HashMap::new();
        match (standing.credits, standing.refill_for) {
            (Some(amount), Some(period)) => {
                sets.push("credits = :refilled, refilled_for = :period");
                conditions.push("attribute_exists(credits) AND refilled_for < :period");
                expression_values.insert(":refilled".into(), n(amount - 1));
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

    /// `update` sent alone, as one conditional UpdateItem (built as a transaction's item, so
    /// one builder serves both), answering the attributes `returning` asks for; `None` when its
    /// condition failed. While it is refused in a way that proves nothing was written (a
    /// transaction holding the item: `TransactionConflictException`; throttling), it is sent
    /// again with jittered backoff, as a transaction that lost a race is. A write that must
    /// never be sent twice ([`Resend::Never`]) goes out as one SDK attempt with no retry of
    /// the SDK's own ([`single_attempt`]): a timeout or a lost connection leaves its outcome
    /// unknown, and that is the error, never a second write.
    async fn update(
        &self,
        update: Update,
        returning: ReturnValue,
        resend: Resend,
    ) -> Result<Option<Item>, StoreError> {
        let mut backoff = Backoff::default();
        let mut attempt = 1;
        loop {
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(update.key.clone()))
                .update_expression(update.update_expression.clone())
                .set_condition_expression(update.condition_expression.clone())
                .set_expression_attribute_names(update.expression_attribute_names.clone())
                .set_expression_attribute_values(update.expression_attribute_values.clone())
                .return_values(returning.clone())
                .customize();
            if resend == Resend::Never {
                request = request.config_override(single_attempt());
            }
            let result = request.send().before_deadline().await;
            let error = match result {
                Ok(output) => return Ok(Some(output.attributes.unwrap_or_default())),
                Err(e) if is_conditional_failure(&e) => return Ok(None),
                Err(e) => e,
            };
            let nothing_written = error
                .as_service_error()
                .and_then(|e| e.code())
                .is_some_and(|code| RETRIED_WRITE_ERRORS.contains(&code));
            if !nothing_written
                || attempt == TRANSACTION_ATTEMPTS
                || !deadline::allows(ATTEMPT_TIME)
            {
                return Err(unavailable(error));
            }
            attempt += 1;
            backoff.wait().await;
        }
    }

    /// `update` (standing for `part`) and the change's audit `event` in one transaction;
    /// `false` when the update's condition failed (nothing written).
    async fn update_with_event(
        &self,
        part: Part,
        update: Update,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let items = Transaction::default()
            .with(part, TransactWriteItem::builder().update(update).build())
            .with(Part::Event, self.event_put(event)?);
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TransactionFailure::Conditions(_)) => Ok(false),
            Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => Err(e),
        }
    }

    /// Runs a transaction, trying again (with jittered backoff) while it only lost a race or
    /// was throttled, and while its outcome is unknown (a timeout, a dropped connection, a
    /// server error, or another attempt of it still in progress) — then with the same client
    /// request token, so DynamoDB applies it at most once. A cancelled attempt committed
    /// nothing, so the next one gets a new token, unless an earlier attempt's outcome is still
    /// unknown (that one may yet commit: every later attempt keeps its token). Stops when the
    /// request's deadline leaves no room for another attempt; an outcome still unknown then is
    /// [`TransactionFailure::Unknown`], never a failure the caller could take for "not done".
    async fn transact(&self, transaction: Transaction) -> Result<(), TransactionFailure> {
        let (parts, items): (Vec<Part>, Vec<TransactWriteItem>) = transaction.0.into_iter().unzip();
        let mut backoff = Backoff::default();
        let mut token = client_request_token();
        let mut unknown = false;
        let mut attempt = 1;
        loop {
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .before_deadline()
                .await;
            let error = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let retry = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    let codes: Vec<&str> = cancelled
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    if codes.contains(&"ConditionalCheckFailed") {
                        return Err(TransactionFailure::Conditions(
                            codes
                                .iter()
                                .zip(&parts)
                                .filter(|(code, _)| **code == "ConditionalCheckFailed")
                                .map(|(_, part)| *part)
                                .collect(),
                        ));
                    }
                    if !unknown {
                        token = client_request_token();
                    }
                    codes
                        .iter()
                        .any(|code| RETRIED_CANCELLATIONS.contains(code))
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_))
                | Some(TransactWriteItemsError::InternalServerError(_)) => {
                    unknown = true;
                    true
                }
                Some(other) => {
                    let code = other.code().unwrap_or_default();
                    RETRIED_WRITE_ERRORS.contains(&code)
                }
                // Never sent: nothing can have committed.
                None if matches!(error, SdkError::ConstructionFailure(_)) => false,
                // Sent, or perhaps sent (a connection that failed may have carried it).
                None => {
                    unknown = true;
                    true
                }
            };
            if !retry || attempt == TRANSACTION_ATTEMPTS || !deadline::allows(ATTEMPT_TIME) {
                return Err(if unknown {
                    TransactionFailure::Unknown(unavailable(error))
                } else {
                    unavailable(error).into()
                });
            }
            attempt += 1;
            backoff.wait().await;
        }
    }

    /// Settles a new token's creation (or roll) whose transaction's outcome stayed unknown:
    /// `true` when its record is stored. Otherwise its key is taken by a void item first, so
    /// the transaction, should an attempt of it still be on its way, can never commit (its put
    /// requires the key free): `false` means it never will. The fault when neither could be
    /// settled (DynamoDB still unreachable).
    async fn settle_new_token(
        &self,
        record: &TokenRecord,
        fault: StoreError,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let key = Key::token(record.user_id, record.kind.family(), record.id);
        let ours = |item: Option<Item>| -> Result<Option<bool>, StoreError> {
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
            .set_item(Some(void_item(&key, now_ms)))
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

    /// The user update of a token creation: counts capped families, and in every case holds
    /// the owner active for the transaction.
    fn owner_guard(
        &self,
        owner: UserId,
        family: TokenFamily,
        cap: u32,
    ) -> Result<TransactWriteItem, StoreError> {
        let key = Some(Key::user(owner).to_item());
        let active = (":active", s(UserStatus::Active.as_str()));
        if let Some(counter) = family.cap() {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(key)
                .update_expression("ADD #counter :one")
                // Profiles written before a counter existed have none: zero.
                .condition_expression(
                    "attribute_exists(pk) AND #status = :active \
                     AND (attribute_not_exists(#counter) OR #counter < :cap)",
                )
                .set_expression_attribute_names(names([
                    ("#status", "status"),
                    ("#counter", counter.attribute()),
                ]))
                .set_expression_attribute_values(values([(":one", n(1)), active, (":cap", n(cap))]))
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

    /// Holds the owner active for a transaction that adds no token to its count (a roll): for a
    /// capped family an update of its counter by zero (what the function's role may write),
    /// else the check [`Self::owner_guard`] makes.
    fn owner_hold(
        &self,
        owner: UserId,
        family: TokenFamily,
    ) -> Result<TransactWriteItem, StoreError> {
        let Some(counter) = family.cap().map(CapCounter::attribute) else {
            return self.owner_guard(owner, family, u32::MAX);
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

    /// One Query over a prefix of a user's partition, newest first, every page.
    async fn query_tokens(
        &self,
        user: UserId,
        prefix: &str,
        filter: Option<(&str, HashMap<String, AttributeValue>)>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut expression_values = HashMap::from([
                (":pk".to_string(), s(user_partition(user))),
                (":prefix".to_string(), s(prefix)),
            ]);
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if let Some((expression, filter_values)) = &filter {
                query = query.filter_expression(*expression);
                expression_values.extend(filter_values.clone());
            }
            let page = query
                .set_expression_attribute_values(Some(expression_values))
                .send()
                .before_deadline()
                .await
                .map_err(unavailable)?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Gives back the cap slots of expired, never-revoked tokens that `counter` counts, moving
    /// each out of its family's range. Their TTL attribute is set only now, so DynamoDB's TTL
    /// never deletes an item whose slot is still counted. Returns how many were freed.
    async fn release_expired(
        &self,
        user: UserId,
        counter: CapCounter,
        now_ms: u64,
    ) -> Result<u32, StoreError> {
        let now_s = now_ms / 1000;
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
                let items = self.retire(&record, &Retirement::Released, now_ms)?;
                match self.transact(items).await {
                    Ok(()) => released += 1,
                    // Another request released it first.
                    Err(TransactionFailure::Conditions(_)) => {}
                    Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => {
                        return Err(e)
                    }
                }
            }
        }
        Ok(released)
    }

    /// Gives slots back on `user`'s profile: `by` of each counter, in one update (a transaction
    /// may write an item once).
    fn counter_decrement(
        &self,
        user: UserId,
        counters: &[(CapCounter, usize)],
    ) -> Result<TransactWriteItem, StoreError> {
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
    fn retire(
        &self,
        record: &TokenRecord,
        why: &Retirement,
        now_ms: u64,
    ) -> Result<Transaction, StoreError> {
        self.retire_all(&[(record, why)], false, now_ms)
    }

    /// The writes of one transaction that take each token out of its family's range: the live
    /// item goes (only while it is as its retirement requires), a `GONE#` copy saying why takes
    /// its place with the TTL attribute set, and the cap slots are given back, one update per
    /// owner. With their audit events, at most [`RETIRED_PER_TRANSACTION`] tokens (DynamoDB's
    /// 100 items a transaction). `pin_meter`: only while each meter is still as read (where a
    /// new record takes it over).
    fn retire_all(
        &self,
        retiring: &[(&TokenRecord, &Retirement)],
        pin_meter: bool,
        now_ms: u64,
    ) -> Result<Transaction, StoreError> {
        let now_s = now_ms / 1000;
        let mut items = Transaction::default();
        let mut slots: Vec<(UserId, Vec<(CapCounter, usize)>)> = Vec::new();
        for (record, why) in retiring {
            let (user, family, id) = (record.user_id, record.kind.family(), record.id);
            let mut retired = (*record).clone();
            let (condition, ttl) = match why {
                Retirement::Revoked(revocation) => {
                    retired.revoked_at_ms = Some(now_ms);
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
                tombstone.insert("released_at".into(), n(now_ms));
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
    async fn revoke_owner(
        &self,
        records: Vec<(TokenRecord, Revocation)>,
        change: &Change,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut revoked = 0;
        for chunk in records.chunks(RETIRED_PER_TRANSACTION) {
            revoked += self.revoke_together(chunk, change, now_ms).await?;
        }
        Ok(revoked)
    }

    /// Revokes one owner's `records` (as read) in one transaction; when any changed meanwhile,
    /// one at a time, leaving the changed ones as they are. Returns how many it revoked.
    async fn revoke_together(
        &self,
        records: &[(TokenRecord, Revocation)],
        change: &Change,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let retirements: Vec<Retirement> = records
            .iter()
            .map(|(_, why)| Retirement::Revoked(why.clone()))
            .collect();
        let retiring: Vec<(&TokenRecord, &Retirement)> = records
            .iter()
            .zip(&retirements)
            .map(|((record, _), why)| (record, why))
            .collect();
        let mut items = self.retire_all(&retiring, false, now_ms)?;
        for (record, why) in records {
            items = items.with(
                Part::Event,
                self.event_put(&revocation_event(change, record, why))?,
            );
        }
        match self.transact(items).await {
            Ok(()) => {
                for (_, why) in records {
                    metrics::revoked(revocation_name(why), 1);
                }
                return Ok(records.len());
            }
            Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => return Err(e),
            Err(TransactionFailure::Conditions(_)) => {}
        }
        let mut revoked = 0;
        for (record, why) in records {
            let hash = record.hash;
            let same_token = move |r: &TokenRecord| r.hash.matches(&hash);
            if self
                .revoke_token_if(record.address(), why, change, now_ms, &same_token)
                .await?
            {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// The retired copy of a token, if it has one.
    async fn get_retired(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.batch_get(vec![Key::retired(user, family, id)])
            .await?
            .first()
            .map(token_from_item)
            .transpose()
    }

    /// Strongly consistent reads of several items in one BatchGetItem, asking again for any
    /// keys DynamoDB left unprocessed.
    async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<Item>, StoreError> {
        let mut pending = KeysAndAttributes::builder()
            .set_keys(Some(keys.iter().map(Key::to_item).collect()))
            .consistent_read(true)
            .build()
            .map_err(unavailable)?;
        let mut items = Vec::with_capacity(keys.len());
        let mut backoff = Backoff::default();
        for _ in 1..TRANSACTION_ATTEMPTS {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, pending)
                .send()
                .before_deadline()
                .await
                .map_err(unavailable)?;
            if let Some(mut responses) = output.responses {
                items.extend(responses.remove(&self.table).unwrap_or_default());
            }
            match output
                .unprocessed_keys
                .and_then(|mut unprocessed| unprocessed.remove(&self.table))
            {
                Some(rest) if !rest.keys.is_empty() => pending = rest,
                _ => return Ok(items),
            }
            if !deadline::allows(ATTEMPT_TIME) {
                break;
            }
            backoff.wait().await;
        }
        Err(StoreError::Unavailable(
            "DynamoDB kept leaving keys of a BatchGetItem unprocessed".into(),
        ))
    }

    /// Whether `record` is live and holds the hash of `new`, the key the current server key
    /// derives for its generation.
    fn permanent_works(record: Option<&TokenRecord>, new: &NewToken, now_ms: u64) -> bool {
        record.is_some_and(|r| {
            r.hash.matches(&new.parsed.hash) && r.state(now_ms) == TokenState::Live
        })
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn create_platform(&self, name: &str, now_ms: u64) -> Result<Platform, StoreError> {
        // Marks this call's item, so a put that the SDK sent again after it landed (its answer
        // lost) is recognised instead of taken for an id in use. Ids skipped by a retried `ADD`
        // leave gaps: ids are unique, not dense.
        let creation = client_request_token();
        loop {
            let platform = Platform {
                id: PlatformId(self.allocate("platforms").await?),
                name: name.to_string(),
                created_at_ms: now_ms,
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
                Ok(_) => return Ok(platform),
                Err(e) if is_conditional_failure(&e) => {
                    let existing = self.get(Key::platform(platform.id)).await?;
                    if existing.is_some_and(|item| item.get(CREATION) == Some(&s(&creation))) {
                        return Ok(platform);
                    }
                    // An id taken outside the counter (a restored backup): take the next one.
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn get_platform(&self, id: PlatformId) -> Result<Option<Platform>, StoreError> {
        self.get(Key::platform(id))
            .await?
            .map(|item| platform_from_item(&item))
            .transpose()
    }

    async fn create_user(
        &self,
        new: NewUser,
        change: &Change,
        now_ms: u64,
    ) -> Result<User, StoreError> {
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
                workspaces: new.workspaces.clone(),
                permanent_generation: 1,
                permanent_issued: false,
                created_at_ms: now_ms,
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
                .with(Part::User, self.put(user_item(&user), absent)?);
            if let Some(customer) = &new.customer_id {
                let mut item = Key::customer(customer).to_item();
                item.insert("user_id".into(), n(id.0));
                items = items.with(Part::CustomerId, self.put(item, absent)?);
            }
            let details = details([
                ("email", json!(user.email)),
                ("role", json!(user.role.as_str())),
                ("status", json!(user.status.as_str())),
            ]);
            let event = Event::new(
                change,
                Action::UserCreated,
                user.platform_id,
                Target::user(id),
                details,
            );
            items = items.with(Part::Event, self.event_put(&event)?);
            match self.transact(items).await {
                Ok(()) => return Ok(user),
                Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => {
                    return Err(e)
                }
                Err(TransactionFailure::Conditions(failed)) => {
                    if self.get_user(id).await?.as_ref() == Some(&user) {
                        // This very user: an attempt that committed, its answer lost.
                        return Ok(user);
                    }
                    if failed.contains(&Part::Platform) {
                        return Err(StoreError::PlatformNotFound);
                    } else if failed.contains(&Part::Email) {
                        return Err(StoreError::EmailTaken);
                    } else if failed.contains(&Part::CustomerId) {
                        return Err(StoreError::CustomerIdTaken);
                    } else if new.id.is_some() {
                        return Err(StoreError::UserIdTaken);
                    }
                    // An allocated id that an imported user already holds: take the next one.
                }
            }
        }
    }

    async fn get_user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.get(Key::user(id))
            .await?
            .map(|item| user_from_item(&item))
            .transpose()
    }

    async fn find_user_by_email(
        &self,
        platform: PlatformId,
        email: &Email,
    ) -> Result<Option<User>, StoreError> {
        Ok(self
            .follow_pointer(Key::email(platform, &email.normalized()))
            .await?
            .filter(|u| u.platform_id == platform))
    }

    async fn find_user_by_customer_id(
        &self,
        customer: &CustomerId,
    ) -> Result<Option<User>, StoreError> {
        self.follow_pointer(Key::customer(customer)).await
    }

    async fn set_user_status(
        &self,
        id: UserId,
        status: UserStatus,
        change: &Change,
    ) -> Result<(), StoreError> {
        let user = self.get_user(id).await?.ok_or(StoreError::UserNotFound)?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::user(id).to_item()))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(names([("#status", "status")]))
            .set_expression_attribute_values(values([(":status", s(status.as_str()))]))
            .build()
            .map_err(unavailable)?;
        let action = match status {
            UserStatus::Blocked => Action::UserBlocked,
            UserStatus::Active => Action::UserUnblocked,
        };
        let event = Event::new(
            change,
            action,
            user.platform_id,
            Target::user(id),
            details([("previous_status", json!(user.status.as_str()))]),
        );
        match self.update_with_event(Part::User, update, &event).await? {
            true => Ok(()),
            false => Err(StoreError::UserNotFound),
        }
    }

    async fn get_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
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
    ) -> Result<(Option<TokenRecord>, Option<User>), StoreError> {
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

    async fn create_token(
        &self,
        owner: Owner,
        token: NewToken,
        cap: u32,
        change: &Change,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let family = token.parsed.kind.family();
        let record = token.record(owner);
        let mut released_once = false;
        loop {
            let event = Event::new(
                change,
                Action::TokenCreated,
                record.platform_id,
                Target::token(&record),
                details([
                    ("abilities", json!(record.abilities.as_slice())),
                    ("expires_at", json!(record.expires_at)),
                    ("parent_id", json!(record.parent_id.map(|p| p.to_string()))),
                ]),
            );
            let mut items = Transaction::default()
                .with(Part::Owner, self.owner_guard(owner.id, family, cap)?)
                .with(
                    Part::NewToken,
                    self.put(token_item(&record), "attribute_not_exists(pk)")?,
                )
                .with(Part::Event, self.event_put(&event)?);
            if let Some(child) = child_item(&record) {
                items = items.with(Part::Child, self.put_any(child)?);
            }
            let failed = match self.transact(items).await {
                Ok(()) => {
                    metrics::minted(record.kind.as_str(), 1);
                    return Ok(());
                }
                Err(TransactionFailure::Store(e)) => return Err(e),
                // Stored, or made void so that it never will be: never a 503 for a key that
                // exists, nor a key nobody saw that holds a slot.
                Err(TransactionFailure::Unknown(e)) => {
                    if self.settle_new_token(&record, e, now_ms).await? {
                        metrics::minted(record.kind.as_str(), 1);
                        return Ok(());
                    }
                    return Err(StoreError::Unavailable(
                        "a token creation's outcome stayed unknown; it was made void".into(),
                    ));
                }
                Err(TransactionFailure::Conditions(failed)) => failed,
            };
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
                    return Err(StoreError::TokenIdTaken);
                }
            }
            match self.get_user(owner.id).await? {
                None => return Err(StoreError::UserNotFound),
                Some(user) if !user.is_active() => return Err(StoreError::UserBlocked),
                Some(_) if !released_once => {
                    released_once = true;
                    let freed = match family.cap() {
                        Some(counter) => self.release_expired(owner.id, counter, now_ms).await?,
                        None => 0,
                    };
                    if freed == 0 {
                        return Err(StoreError::TokenLimitReached { max: cap });
                    }
                }
                Some(_) => return Err(StoreError::TokenLimitReached { max: cap }),
            }
        }
    }

    async fn list_tokens(
        &self,
        user: UserId,
        family: TokenFamily,
        now_ms: u64,
    ) -> Result<Vec<TokenRecord>, StoreError> {
        let items = self
            .query_tokens(user, &token_sort_prefix(family), None)
            .await?;
        let mut live = Vec::with_capacity(items.len());
        for item in items.iter().filter(|item| !is_void(item)) {
            let record = token_from_item(item)?;
            if record.state(now_ms) == TokenState::Live {
                live.push(record);
            }
        }
        Ok(live)
    }

    async fn revoke_token_if(
        &self,
        address: TokenAddress,
        why: &Revocation,
        change: &Change,
        now_ms: u64,
        allowed: &(dyn for<'r> Fn(&'r TokenRecord) -> bool + Sync),
    ) -> Result<bool, StoreError> {
        let TokenAddress {
            user_id: user,
            family,
            id,
        } = address;
        let revoked_by_this_call = || async {
            Ok::<_, StoreError>(self.get_retired(user, family, id).await?.is_some_and(|r| {
                r.revoked_at_ms == Some(now_ms) && r.revocation.as_ref() == Some(why) && allowed(&r)
            }))
        };
        for _ in 0..TRANSACTION_ATTEMPTS {
            let live = self
                .get_token(user, family, id)
                .await?
                .filter(|record| record.state(now_ms) == TokenState::Live && allowed(record));
            let Some(record) = live else {
                // Gone already: by this very call when an attempt committed and its answer was
                // lost.
                return revoked_by_this_call().await;
            };
            // A predecessor still in its grace period goes with its successor: it works only
            // through it (its meter), and a deleted key must not live on in its old secret.
            let mut retiring = vec![record.clone()];
            if let Some(predecessor) = record
                .predecessor
                .filter(|_| record.predecessor_works(now_ms))
            {
                retiring.extend(
                    self.get_token(user, family, predecessor.id)
                        .await?
                        .filter(|p| {
                            p.state(now_ms) == TokenState::Live && p.rolled_to == Some(record.id)
                        }),
                );
            }
            let retirement = Retirement::Revoked(why.clone());
            let pairs: Vec<(&TokenRecord, &Retirement)> =
                retiring.iter().map(|r| (r, &retirement)).collect();
            let mut items = self.retire_all(&pairs, false, now_ms)?;
            for retired in &retiring {
                items = items.with(
                    Part::Event,
                    self.event_put(&revocation_event(change, retired, why))?,
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
                Err(TransactionFailure::Store(e)) => return Err(e),
                Err(TransactionFailure::Unknown(e)) => {
                    if revoked_by_this_call().await? {
                        true
                    } else {
                        return Err(e);
                    }
                }
            };
            if revoked {
                metrics::revoked(revocation_name(why), retiring.len() as u64);
            }
            return Ok(revoked);
        }
        Err(unavailable(std::io::Error::other(
            "the token kept changing while it was revoked",
        )))
    }

    async fn children(&self, parent: PublicTokenId) -> Result<Vec<TokenAddress>, StoreError> {
        self.query_tokens(parent.user_id, &child_prefix(parent.token_id), None)
            .await?
            .iter()
            .map(child_from_item)
            .collect()
    }

    async fn find_tokens(
        &self,
        tokens: &[TokenAddress],
        users: &[UserId],
    ) -> Result<Found, StoreError> {
        // BatchGetItem refuses a request that names one key twice.
        let mut seen = HashSet::new();
        let keys: Vec<Key> = tokens
            .iter()
            .flat_map(|a| {
                [
                    Key::token(a.user_id, a.family, a.id),
                    Key::retired(a.user_id, a.family, a.id),
                ]
            })
            .chain(users.iter().map(|user| Key::user(*user)))
            .filter(|key| seen.insert(key.clone()))
            .collect();
        let mut chunks = Vec::new();
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            chunks.push(keys.by_ref().take(BATCH_GET_KEYS).collect::<Vec<_>>());
        }
        let pages: Vec<Vec<Item>> = stream::iter(chunks.into_iter().map(|c| self.batch_get(c)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut found = Found::default();
        for item in pages.iter().flatten().filter(|item| !is_void(item)) {
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

    async fn revoke_tokens(
        &self,
        records: &[(TokenRecord, Revocation)],
        change: &Change,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
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
            .map(|group| self.revoke_owner(group, change, now_ms))
            .collect();
        stream::iter(revocations)
            .buffer_unordered(IN_FLIGHT)
            .try_fold(0, |total, revoked| async move { Ok(total + revoked) })
            .await
    }

    async fn roll_token(
        &self,
        owner: Owner,
        predecessor: &TokenRecord,
        successor: NewToken,
        grace_end_s: u64,
        change: &Change,
        now_ms: u64,
    ) -> Result<RollOutcome, StoreError> {
        let family = predecessor.kind.family();
        let now_s = now_ms / 1000;
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
                .filter(|_| predecessor.predecessor_works(now_ms))
            {
                let working = self
                    .get_token(predecessor.user_id, family, previous.id)
                    .await?
                    .is_some_and(|p| p.state(now_ms) == TokenState::Live);
                if working {
                    return Ok(RollOutcome::PredecessorWorks);
                }
            }
            let until = predecessor
                .expires_at
                .map_or(grace_end_s, |own| own.min(grace_end_s));
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
            let meter: Vec<String> = (0..METER_ATTRIBUTES.len())
                .map(|i| format!("#pin{i}"))
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
                    self.event_put(&Event::new(
                        change,
                        Action::TokenRolled,
                        predecessor.platform_id,
                        Target::token(&predecessor),
                        details([
                            ("successor_id", json!(record.public_id().to_string())),
                            ("previous_expires_at", json!(until)),
                        ]),
                    ))?,
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
                Err(TransactionFailure::Store(e)) => return Err(e),
                Err(TransactionFailure::Unknown(e)) => {
                    if self.settle_new_token(&record, e, now_ms).await? {
                        metrics::minted(record.kind.as_str(), 1);
                        return Ok(rolled);
                    }
                    return Err(StoreError::Unavailable(
                        "a roll's outcome stayed unknown; it was made void".into(),
                    ));
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
                    if failed == [Part::NewToken] && current.state(now_ms) == TokenState::Live =>
                {
                    return Err(StoreError::TokenIdTaken)
                }
                _ if failed.contains(&Part::Owner) => return Err(StoreError::UserBlocked),
                // Rolled, or changed (a charge, a limits change, an update) since it was read:
                // decided again from what is stored now.
                Some(current) if current.state(now_ms) == TokenState::Live => predecessor = current,
                Some(current) if current.rolled_to.is_some() => {
                    return Ok(RollOutcome::AlreadyRolled)
                }
                _ => return Ok(RollOutcome::Gone),
            }
        }
        Err(unavailable(std::io::Error::other(
            "the token kept changing while it was rolled",
        )))
    }

    async fn update_token(
        &self,
        record: &TokenRecord,
        fields: &TokenChange,
        change: &Change,
        now_ms: u64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut sets = Vec::new();
        let mut removes = Vec::new();
        let mut expression_names = HashMap::new();
        let mut expression_values = HashMap::from([
            (":now".to_string(), n(now_ms / 1000)),
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
        let event = Event::new(
            change,
            Action::TokenUpdated,
            record.platform_id,
            Target::token(record),
            details([
                ("name", json!(fields.name.as_ref().map(|n| n.as_str()))),
                (
                    "abilities",
                    json!(fields.abilities.as_ref().map(|a| a.as_slice())),
                ),
                ("enabled", json!(fields.enabled)),
            ]),
        );
        let written = self
            .update_with_event(Part::Updating, update, &event)
            .await?;
        Ok(written.then_some(updated))
    }

    async fn set_limits(
        &self,
        target: Metered<'_>,
        limits: &Limits,
        change: &Change,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut expression_values = HashMap::new();
        let (key, condition, platform, event_target) = match target {
            Metered::User(user) => (
                Key::user(user.id),
                "attribute_exists(pk)",
                user.platform_id,
                Target::user(user.id),
            ),
            Metered::Token(token) => {
                expression_values.insert(":now".to_string(), n(now_ms / 1000));
                (
                    Key::token(token.user_id, token.kind.family(), token.id),
                    // A rolled token's units go to its successor's meter.
                    LIVE_AND_NOT_ROLLED,
                    token.platform_id,
                    Target::token(token),
                )
            }
        };
        let set = meter_attributes(&Meter::set(*limits, now_ms));
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
        let event = Event::new(
            change,
            Action::LimitsUpdated,
            platform,
            event_target,
            details([
                ("limits", json!(limits)),
                ("previous", json!(target.limits())),
            ]),
        );
        self.update_with_event(Part::Updating, update, &event).await
    }

    async fn charge(
        &self,
        holder: &TokenRecord,
        owner: Option<&Meter>,
        now_ms: u64,
    ) -> Result<Option<Usage>, StoreError> {
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
                .map(|(_, meter)| meter.standing(now_ms))
                .collect();
            if metered.is_empty() || standings.iter().any(|s| s.refusal().is_some()) {
                return Ok(Some(usage(&standings, 0, now_ms)));
            }
            let mut updates = metered
                .iter()
                .zip(&standings)
                .map(|((key, _), standing)| self.charge_update(key, standing))
                .collect::<Result<Vec<Update>, StoreError>>()?;
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
                    Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => {
                        return Err(e)
                    }
                }
            };
            if let Some(standings) = charged {
                return Ok(Some(usage(&standings, 1, now_ms)));
            }
            // Lost a race: read both again and decide anew. A holder rolled meanwhile handed
            // its meter to its successor, which is charged from now on.
            let (current, user) = self
                .get_token_and_owner(holder.user_id, family, holder.id)
                .await?;
            let (Some(current), Some(user)) = (current, user) else {
                return Ok(None);
            };
            if current.state(now_ms) != TokenState::Live {
                return Ok(None);
            }
            owner_meter = user.meter;
            holder = match current.successor() {
                None => current,
                Some(successor) => match self
                    .get_token(successor.user_id, successor.family, successor.id)
                    .await?
                    .filter(|s| s.state(now_ms) == TokenState::Live)
                {
                    Some(successor) => successor,
                    None => return Ok(None),
                },
            };
        }
        Err(unavailable(std::io::Error::other(
            "a unit of use lost the race for its usage counters too often",
        )))
    }

    async fn list_events(
        &self,
        scope: EventScope,
        limit: u32,
        cursor: Option<&EventCursor>,
    ) -> Result<EventPage, StoreError> {
        // One more than asked for: whether a next page exists, without an empty last page.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .scan_index_forward(false)
            .limit(limit.saturating_add(1) as i32)
            .expression_attribute_values(":prefix", s(AUDIT_PREFIX));
        let mut start = cursor.map(|c| Key::event(c.user_id, &c.event_id).to_item());
        query = match scope {
            EventScope::User(user) => {
                if cursor.is_some_and(|c| c.user_id != user) {
                    // Another user's position: no event of this user follows it.
                    return Ok(EventPage::default());
                }
                query
                    .consistent_read(true)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":pk", s(user_partition(user)))
            }
            EventScope::Platform(platform) => {
                if let Some(start) = &mut start {
                    start.insert(AUDIT_PLATFORM.into(), s(platform.to_string()));
                }
                query
                    .index_name(AUDIT_INDEX)
                    .key_condition_expression("#platform = :platform AND begins_with(sk, :prefix)")
                    .expression_attribute_names("#platform", AUDIT_PLATFORM)
                    .expression_attribute_values(":platform", s(platform.to_string()))
            }
        };
        let output = query
            .set_exclusive_start_key(start)
            .send()
            .before_deadline()
            .await
            .map_err(unavailable)?;
        let mut items = output.items.unwrap_or_default();
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next = match items.last() {
            Some(last) if more => {
                let user = last
                    .get(PK)
                    .and_then(|pk| pk.as_s().ok())
                    .and_then(|pk| pk.strip_prefix("USER#"))
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| {
                        StoreError::Corrupt("an event outside a user's partition".into())
                    })?;
                let event = last
                    .get(SK)
                    .and_then(|sk| sk.as_s().ok())
                    .and_then(|sk| sk.strip_prefix(AUDIT_PREFIX))
                    .ok_or_else(|| StoreError::Corrupt("an event without its id".into()))?;
                Some(EventCursor {
                    user_id: UserId(user),
                    event_id: event.to_string(),
                })
            }
            _ => None,
        };
        Ok(EventPage {
            events: items
                .iter()
                .map(event_from_item)
                .collect::<Result<_, _>>()?,
            next,
        })
    }

    async fn touch_token(
        &self,
        user: UserId,
        family: TokenFamily,
        id: TokenId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let touch = Update::builder()
            .table_name(&self.table)
            .set_key(Some(Key::token(user, family, id).to_item()))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at <= :stale)",
            )
            .set_expression_attribute_values(values([
                (":now", n(now_ms)),
                (
                    ":stale",
                    n(now_ms.saturating_sub(super::LAST_USED_RESOLUTION_MS)),
                ),
            ]))
            .build()
            .map_err(unavailable)?;
        Ok(self
            .update(touch, ReturnValue::None, Resend::Safe)
            .await?
            .is_some())
    }

    async fn issue_permanent_token(
        &self,
        owner: &User,
        derive: &(dyn Fn(u32) -> NewToken + Sync),
        wanted: PermanentGeneration,
        change: &Change,
        now_ms: u64,
    ) -> Result<u32, StoreError> {
        let family = TokenFamily::Permanent;
        let mut owner = owner.clone();
        // A rotation moves on from the generation it found issued; once the profile has moved
        // past it (this call's transaction, or a rotation that raced it), what works is kept.
        let rotating_from = (wanted == PermanentGeneration::Next && owner.permanent_issued)
            .then_some(owner.permanent_generation);
        for _ in 0..5 {
            let generation = owner.permanent_generation;
            let current = derive(generation);
            // The live record, or else its retired copy: its limits go on to the next
            // generation either way.
            let stored = if owner.permanent_issued {
                let address = TokenAddress {
                    user_id: owner.id,
                    family,
                    id: current.parsed.token_id,
                };
                self.find_tokens(&[address], &[])
                    .await?
                    .tokens
                    .remove(&address)
            } else {
                None
            };
            let must_move = rotating_from == Some(generation) && owner.permanent_issued;
            if !must_move && Self::permanent_works(stored.as_ref(), &current, now_ms) {
                return Ok(generation);
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
            let mut record = derive(next).record(Owner::from(&owner));
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
            let action = if owner.permanent_issued {
                Action::PermanentTokenRotated
            } else {
                Action::PermanentTokenIssued
            };
            let event = Event::new(
                change,
                action,
                record.platform_id,
                Target::token(&record),
                details([("generation", json!(next))]),
            );
            items = items.with(Part::Event, self.event_put(&event)?);
            let retiring = stored.filter(|r| r.state(now_ms) == TokenState::Live);
            if let Some(old) = &retiring {
                // Live but made with another server key: whoever holds the old key loses it.
                // Only while its meter is still the one the new record takes over.
                items = items.and(self.retire_all(
                    &[(old, &Retirement::Revoked(Revocation::Rolled))],
                    true,
                    now_ms,
                )?);
            }
            match self.transact(items).await {
                Ok(()) => {
                    metrics::minted(TokenKind::Permanent.as_str(), 1);
                    if retiring.is_some() {
                        metrics::revoked(revocation_name(&Revocation::Rolled), 1);
                    }
                    return Ok(next);
                }
                Err(TransactionFailure::Store(e) | TransactionFailure::Unknown(e)) => {
                    return Err(e)
                }
                Err(TransactionFailure::Conditions(failed)) => {
                    let profile_changed = failed.contains(&Part::Profile);
                    owner = self
                        .get_user(owner.id)
                        .await?
                        .ok_or(StoreError::UserNotFound)?;
                    if !profile_changed && !owner.permanent_issued {
                        // The record of a first use was written by an earlier call that did not
                        // get to mark the profile: check it as an issued one.
                        owner.permanent_issued = true;
                    }
                }
            }
        }
        Err(StoreError::Unavailable(
            "the owner kept changing while its permanent token was written".into(),
        ))
    }
}

/// An event's details from (name, value) pairs, nulls left out.
fn details<const N: usize>(
    pairs: [(&str, serde_json::Value); N],
) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .into_iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The event of `record`'s revocation for `why`.
fn revocation_event(change: &Change, record: &TokenRecord, why: &Revocation) -> Event {
    let (url, source, parent) = match why {
        Revocation::Leaked(leak) => (
            json!(leak.url),
            json!(leak.source),
            json!(leak.parent.map(|p| p.to_string())),
        ),
        _ => (json!(null), json!(null), json!(null)),
    };
    Event::new(
        change,
        Action::TokenRevoked,
        record.platform_id,
        Target::token(record),
        details([
            ("reason", json!(revocation_name(why))),
            ("url", url),
            ("source", source),
            ("leak_parent", parent),
        ]),
    )
}
