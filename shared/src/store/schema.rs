//! The table definition, shared by `tokenctl init`, the tests and (by comparison) template.yaml.

use std::time::Duration;

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::item::{AUDIT_INDEX, AUDIT_PLATFORM, EXPIRY_DAY, EXPIRY_INDEX, PK, SK};
use super::Fault;

pub use super::item::TTL_ATTRIBUTE;

/// Hash and range key attribute names, both strings.
pub const KEY_ATTRIBUTES: [(&str, &str); 2] = [(PK, "HASH"), (SK, "RANGE")];

/// A global secondary index (all attributes projected): its name, its hash and range key
/// attributes, both strings.
pub type IndexKeys = (&'static str, [(&'static str, &'static str); 2]);

/// Every platform's audit events, newest last.
pub const AUDIT_INDEX_KEYS: IndexKeys = (AUDIT_INDEX, [(AUDIT_PLATFORM, "HASH"), (SK, "RANGE")]);

/// Live tokens by the day they expire (sparse: only those with an expiry).
pub const EXPIRY_INDEX_KEYS: IndexKeys = (EXPIRY_INDEX, [(EXPIRY_DAY, "HASH"), (SK, "RANGE")]);

/// The table's global secondary indexes, in the order they were added.
pub const INDEXES: [IndexKeys; 2] = [AUDIT_INDEX_KEYS, EXPIRY_INDEX_KEYS];

/// What the table's stream carries: both images, so that the `events` function sees what a
/// change did to a meter.
pub const STREAM_VIEW: &str = "NEW_AND_OLD_IMAGES";

fn key_schema(keys: &[(&str, &str)]) -> Result<Vec<KeySchemaElement>, Fault> {
    keys.iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(*name)
                .key_type(KeyType::from(*kind))
                .build()
                .map_err(unavailable)
        })
        .collect()
}

/// Every key attribute of the table and its indexes: strings.
fn attribute_definitions() -> Result<Vec<AttributeDefinition>, Fault> {
    definitions(&[PK, SK, AUDIT_PLATFORM, EXPIRY_DAY])
}

fn definitions(names: &[&str]) -> Result<Vec<AttributeDefinition>, Fault> {
    names
        .iter()
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(*name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        })
        .collect()
}

fn all_attributes() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::All)
        .build()
}

/// Whether `create_table` made the table or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOutcome {
    Created,
    AlreadyExisted,
}

fn stream() -> StreamSpecification {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::from(STREAM_VIEW))
        .build()
        .expect("the stream's fields are set")
}

/// What a table has beyond its keys and indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// The stream of both images, which the events function reads.
    pub stream: bool,
    /// Time to live on `expires_at`, set when the table is created.
    pub ttl: bool,
}

impl Features {
    /// What the template declares, and `tokenctl init` makes.
    pub const ALL: Features = Features {
        stream: true,
        ttl: true,
    };
}

/// Creates the table (on-demand, `pk`/`sk` strings, TTL on `expires_at`, its indexes, a stream
/// of both images) unless it exists, and waits until it is active. A table made before an index
/// or the stream existed gets them.
pub async fn create_table(client: &Client, table: &str) -> Result<TableOutcome, Fault> {
    create_table_with(client, table, Features::ALL).await
}

/// [`create_table`] with only some [`Features`]; the test suites' tables leave out what DynamoDB
/// Local makes costly there. It writes a stream's records in the write's own path, which makes
/// a burst of parallel writes several times slower than DynamoDB's; and it serves each table's
/// time to live from one background worker that also activates new indexes, so with a hundred
/// tables of the suites an index added to an old table waited five minutes. DynamoDB Local never
/// deletes an expired item anyway.
pub async fn create_table_with(
    client: &Client,
    table: &str,
    features: Features,
) -> Result<TableOutcome, Fault> {
    let indexes = INDEXES
        .iter()
        .map(|(name, keys)| {
            GlobalSecondaryIndex::builder()
                .index_name(*name)
                .set_key_schema(Some(key_schema(keys)?))
                .projection(all_attributes())
                .build()
                .map_err(unavailable)
        })
        .collect::<Result<Vec<_>, Fault>>()?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attribute_definitions()?))
        .set_key_schema(Some(key_schema(&KEY_ATTRIBUTES)?))
        .set_global_secondary_indexes(Some(indexes))
        .set_stream_specification(features.stream.then(stream))
        .send()
        .await;
    let outcome = match created {
        Ok(_) => TableOutcome::Created,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            TableOutcome::AlreadyExisted
        }
        Err(e) => return Err(unavailable(e)),
    };
    wait_until_active(client, table).await?;
    if outcome == TableOutcome::AlreadyExisted {
        for index in INDEXES {
            add_index(client, table, index).await?;
        }
        if features.stream {
            add_stream(client, table).await?;
        }
    }
    if outcome == TableOutcome::Created && features.ttl {
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(unavailable)?,
            )
            .send()
            .await
            .map_err(unavailable)?;
    }
    Ok(outcome)
}

async fn wait_until_active(client: &Client, table: &str) -> Result<(), Fault> {
    let active = |d: &DescribeTableOutput| {
        d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active)
    };
    wait_for(client, table, Duration::from_secs(60), active, "the table").await
}

/// Describes `table` every half second until `done` says so, for at most `within`.
async fn wait_for(
    client: &Client,
    table: &str,
    within: Duration,
    done: impl Fn(&DescribeTableOutput) -> bool,
    what: &str,
) -> Result<(), Fault> {
    let step = Duration::from_millis(500);
    for _ in 0..(within.as_millis() / step.as_millis()) {
        if done(&describe(client, table).await?) {
            return Ok(());
        }
        tokio::time::sleep(step).await;
    }
    Err(Fault::Unavailable(
        format!("{what} of {table} did not become active within {within:?}").into(),
    ))
}

async fn describe(client: &Client, table: &str) -> Result<DescribeTableOutput, Fault> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(unavailable)
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Fault {
    Fault::Unavailable(Box::new(e))
}

/// Turns on the stream of a table made before it existed.
async fn add_stream(client: &Client, table: &str) -> Result<(), Fault> {
    let described = describe(client, table).await?;
    let streaming = described
        .table()
        .and_then(|t| t.stream_specification())
        .is_some_and(|s| s.stream_enabled());
    if !streaming {
        client
            .update_table()
            .table_name(table)
            .stream_specification(stream())
            .send()
            .await
            .map_err(unavailable)?;
        wait_until_active(client, table).await?;
    }
    Ok(())
}

/// Adds an index to a table made before it existed, and waits until it is active.
async fn add_index(client: &Client, table: &str, index: IndexKeys) -> Result<(), Fault> {
    let (index_name, index_keys) = index;
    let status = |described: &DescribeTableOutput| {
        described
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .find(|i| i.index_name() == Some(index_name))
            .and_then(|i| i.index_status().cloned())
    };
    let described = describe(client, table).await?;
    if status(&described).is_none() {
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(index_name)
            .set_key_schema(Some(key_schema(&index_keys)?))
            .projection(all_attributes())
            .build()
            .map_err(unavailable)?;
        client
            .update_table()
            .table_name(table)
            // The table's keys and this index's: DynamoDB refuses a definition no key uses.
            .set_attribute_definitions(Some(definitions(&[PK, SK, index_keys[0].0])?))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(unavailable)?;
    }
    let active = |d: &DescribeTableOutput| status(d) == Some(IndexStatus::Active);
    wait_for(client, table, Duration::from_secs(300), active, index_name).await
}
