//! The transaction core: how one request reaches DynamoDB. Reads and conditional writes, one
//! transaction's items each with what it stands for ([`Part`]), retries with jittered backoff
//! while a write lost a race or was throttled, and the same client request token while an
//! outcome is unknown; nothing here knows a product rule.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update,
};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::audit::Event;
use crate::deadline;
use crate::domain::UserId;
use crate::store::item::{s, user_partition, Item, Key, PK, SK};
use crate::store::Fault;
use crate::token::{fill_random, random_hex};

use super::DynamoStore;

/// Keys a BatchGetItem may name.
pub(super) const BATCH_GET_KEYS: usize = 100;

/// Items a TransactWriteItems may hold.
pub(super) const TRANSACTION_ITEMS: usize = 100;

/// Requests of one call sent at once (batched reads, owners' revocations).
pub(crate) const IN_FLIGHT: usize = 8;

/// How often a transaction that lost a race with another one on the same item is tried again.
pub(super) const TRANSACTION_ATTEMPTS: u32 = 10;

/// The longest one SDK attempt may take (the client's per-attempt timeout): another attempt is
/// started only while the request's deadline leaves this much.
pub(super) const ATTEMPT_TIME: Duration = Duration::from_millis(1500);

/// The one attempt of a write that must never be sent twice (a charge's `credits - 1`): it may
/// wait this long for DynamoDB's answer, since no later attempt can take over.
pub(super) const SINGLE_ATTEMPT_TIME: Duration = Duration::from_secs(4);

/// Why a cancelled transaction is worth another attempt: it lost a race or was throttled.
pub(super) const RETRIED_CANCELLATIONS: [&str; 3] = [
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
];

/// Errors of a single-item write that prove nothing was written and are worth another attempt:
/// a transaction held the item, or the request was throttled.
pub(super) const RETRIED_WRITE_ERRORS: [&str; 4] = [
    "TransactionConflictException",
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Jittered exponential backoff between attempts: 5 ms doubling to 200 ms, each wait up to
/// twice that.
pub(super) struct Backoff(u64);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(5)
    }
}

impl Backoff {
    pub(super) async fn wait(&mut self) {
        let mut jitter = [0u8; 1];
        fill_random(&mut jitter);
        let wait = self.0 + self.0 * u64::from(jitter[0]) / 255;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        self.0 = (self.0 * 2).min(200);
    }
}

/// A new idempotency token for one logical transaction (DynamoDB keeps it for 10 minutes).
pub(super) fn client_request_token() -> String {
    random_hex(16)
}

/// The SDK settings of a write that must never be sent twice: one attempt, no retry of the
/// SDK's own, and [`SINGLE_ATTEMPT_TIME`] to answer (the request's deadline still comes first).
pub(super) fn single_attempt() -> aws_sdk_dynamodb::config::Builder {
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

/// A token item that is live: present, not revoked, not past `valid_until` (`:now`, epoch
/// seconds).
pub(super) const LIVE: &str = "attribute_exists(pk) AND attribute_not_exists(revoked_at) \
                    AND (attribute_not_exists(valid_until) OR valid_until > :now)";

/// [`LIVE`], and not rolled: the token holds its lineage's meter.
pub(super) const LIVE_AND_NOT_ROLLED: &str =
    "attribute_exists(pk) AND attribute_not_exists(revoked_at) \
                    AND (attribute_not_exists(valid_until) OR valid_until > :now) \
                    AND attribute_not_exists(rolled_to)";

/// Why a transaction did not commit.
pub(super) enum TransactionFailure {
    /// What the items whose conditions failed stand for.
    Conditions(Vec<Part>),
    Fault(Fault),
    /// It may have committed: an attempt was sent and no answer settled it before the attempts
    /// or the deadline ran out (a timeout, a dropped connection, a server error). It may still
    /// commit later, exactly once (every attempt carried the same client request token).
    Unknown(Fault),
}

/// Whether a single-item write may be sent again when its outcome is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resend {
    /// Writing it twice leaves what writing it once does (a time set under a condition).
    Safe,
    /// It changes what it reads (`credits = credits - 1`): sent once, by one attempt of the SDK.
    Never,
}

/// What an item of a transaction stands for, so that a cancellation is read by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The platform a new user joins exists.
    Platform,
    /// The new user's email is free on its platform.
    Email,
    /// The user's profile: a new user's id is free, or a status change's user exists.
    User,
    /// The new user's customer id is free.
    CustomerId,
    /// The new user's external id is free on its platform.
    ExternalId,
    /// The new user's place in its platform's listing.
    Member,
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
    /// An imported token's hash was never imported before.
    Imported,
    /// The change's audit event.
    Event,
    /// A metered record charged one unit (its limits as read).
    Charging,
    /// The owner's cap counter given a slot back (the owner exists).
    Counter,
}

/// The items of one transaction, each with what it stands for.
#[derive(Default)]
pub(super) struct Transaction(Vec<(Part, TransactWriteItem)>);

impl Transaction {
    pub(super) fn with(mut self, part: Part, item: TransactWriteItem) -> Transaction {
        self.0.push((part, item));
        self
    }

    pub(super) fn and(mut self, other: Transaction) -> Transaction {
        self.0.extend(other.0);
        self
    }

    /// Whether DynamoDB takes it as one TransactWriteItems: at most [`TRANSACTION_ITEMS`]
    /// items, no two of them on the same item (else it refuses the whole request, a
    /// `ValidationException`, not a cancellation).
    pub(super) fn sendable(&self) -> bool {
        let mut targets = HashSet::new();
        self.0.len() <= TRANSACTION_ITEMS
            && self.0.iter().all(|(_, item)| {
                let key = match (
                    item.put(),
                    item.update(),
                    item.condition_check(),
                    item.delete(),
                ) {
                    (Some(put), ..) => put.item(),
                    (_, Some(update), ..) => update.key(),
                    (_, _, Some(check), _) => check.key(),
                    (.., Some(delete)) => delete.key(),
                    _ => return false,
                };
                let part = |name: &str| key.get(name).and_then(|v| v.as_s().ok()).cloned();
                targets.insert((part(PK), part(SK)))
            })
    }
}

impl From<Fault> for TransactionFailure {
    fn from(e: Fault) -> Self {
        TransactionFailure::Fault(e)
    }
}

pub(super) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Fault {
    Fault::Unavailable(Box::new(e))
}

pub(super) fn is_conditional_failure<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// SDK calls that give up, as a timeout, when the request's deadline comes first.
pub(super) trait BeforeDeadline<T, E, R>:
    Future<Output = Result<T, SdkError<E, R>>> + Sized
{
    async fn before_deadline(self) -> Result<T, SdkError<E, R>> {
        deadline::bounded(self)
            .await
            .unwrap_or_else(|late| Err(SdkError::timeout_error(late)))
    }
}

impl<T, E, R, F: Future<Output = Result<T, SdkError<E, R>>>> BeforeDeadline<T, E, R> for F {}

/// An update expression of `sets` (`a = :a`) and `removes` (attribute names), either may be
/// empty.
pub(super) fn set_and_remove(sets: &[impl AsRef<str>], removes: &[impl AsRef<str>]) -> String {
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
pub(super) fn values<'a>(
    pairs: impl IntoIterator<Item = (&'a str, AttributeValue)>,
) -> Option<HashMap<String, AttributeValue>> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

pub(super) fn names<const N: usize>(pairs: [(&str, &str); N]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

impl DynamoStore {
    pub(super) async fn get(&self, key: Key) -> Result<Option<Item>, Fault> {
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

    /// A transaction's put of an item whatever is there.
    pub(super) fn put_any(&self, item: Item) -> Result<TransactWriteItem, Fault> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    pub(super) fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, Fault> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .build()
            .map_err(unavailable)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// `update` sent alone, as one conditional UpdateItem (built as a transaction's item, so
    /// one builder serves both), answering the attributes `returning` asks for; `None` when its
    /// condition failed. While it is refused in a way that proves nothing was written (a
    /// transaction holding the item: `TransactionConflictException`; throttling), it is sent
    /// again with jittered backoff, as a transaction that lost a race is. A write that must
    /// never be sent twice ([`Resend::Never`]) goes out as one SDK attempt with no retry of
    /// the SDK's own ([`single_attempt`]): a timeout or a lost connection leaves its outcome
    /// unknown, and that is the error, never a second write.
    pub(super) async fn update(
        &self,
        update: Update,
        returning: ReturnValue,
        resend: Resend,
    ) -> Result<Option<Item>, Fault> {
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
    pub(super) async fn update_with_event(
        &self,
        part: Part,
        update: Update,
        event: &Event,
    ) -> Result<bool, Fault> {
        let items = Transaction::default()
            .with(part, TransactWriteItem::builder().update(update).build())
            .with(Part::Event, self.event_put(event)?);
        match self.transact(items).await {
            Ok(()) => Ok(true),
            Err(TransactionFailure::Conditions(_)) => Ok(false),
            Err(TransactionFailure::Fault(e) | TransactionFailure::Unknown(e)) => Err(e),
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
    pub(super) async fn transact(
        &self,
        transaction: Transaction,
    ) -> Result<(), TransactionFailure> {
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

    /// Strongly consistent reads of any number of items: BatchGetItems of at most
    /// [`BATCH_GET_KEYS`] distinct keys (it refuses a request that names one key twice), up to
    /// [`IN_FLIGHT`] at a time. The items found, in no particular order.
    pub(super) async fn batch_get_all(&self, keys: Vec<Key>) -> Result<Vec<Item>, Fault> {
        let mut seen = HashSet::new();
        let mut keys = keys
            .into_iter()
            .filter(|key| seen.insert(key.clone()))
            .peekable();
        let mut chunks = Vec::new();
        while keys.peek().is_some() {
            chunks.push(keys.by_ref().take(BATCH_GET_KEYS).collect::<Vec<_>>());
        }
        let pages: Vec<Vec<Item>> = stream::iter(chunks.into_iter().map(|c| self.batch_get(c)))
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// Strongly consistent reads of several items in one BatchGetItem, asking again for any
    /// keys DynamoDB left unprocessed.
    pub(super) async fn batch_get(&self, keys: Vec<Key>) -> Result<Vec<Item>, Fault> {
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
        Err(Fault::Unavailable(
            "DynamoDB kept leaving keys of a BatchGetItem unprocessed".into(),
        ))
    }

    /// One Query over a prefix of a user's partition, newest first, every page.
    pub(super) async fn query_tokens(
        &self,
        user: UserId,
        prefix: &str,
        filter: Option<(&str, HashMap<String, AttributeValue>)>,
    ) -> Result<Vec<Item>, Fault> {
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
}
