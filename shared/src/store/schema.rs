//! The table definition, shared by `tokenctl init`, the tests and (by comparison) template.yaml.

use std::time::Duration;

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::item::{AUDIT_INDEX, AUDIT_PLATFORM, PK, SK};
use super::Fault;

pub use super::item::TTL_ATTRIBUTE;

/// Hash and range key attribute names, both strings.
pub const KEY_ATTRIBUTES: [(&str, &str); 2] = [(PK, "HASH"), (SK, "RANGE")];

/// The one global secondary index: every platform's audit events (all attributes projected),
/// its hash and range key attributes, both strings.
pub const AUDIT_INDEX_KEYS: (&str, [(&str, &str); 2]) =
    (AUDIT_INDEX, [(AUDIT_PLATFORM, "HASH"), (SK, "RANGE")]);

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

/// Every key attribute of the table and its index: strings.
fn attribute_definitions() -> Result<Vec<AttributeDefinition>, Fault> {
    [PK, SK, AUDIT_PLATFORM]
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

/// Creates the table (on-demand, `pk`/`sk` strings, TTL on `expires_at`) unless it exists, and
/// waits until it is active.
pub async fn create_table(client: &Client, table: &str) -> Result<TableOutcome, Fault> {
    let (index_name, index_keys) = AUDIT_INDEX_KEYS;
    let index = GlobalSecondaryIndex::builder()
        .index_name(index_name)
        .set_key_schema(Some(key_schema(&index_keys)?))
        .projection(all_attributes())
        .build()
        .map_err(unavailable)?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(attribute_definitions()?))
        .set_key_schema(Some(key_schema(&KEY_ATTRIBUTES)?))
        .global_secondary_indexes(index)
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
        add_audit_index(client, table).await?;
    }
    if outcome == TableOutcome::Created {
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
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(unavailable)?;
        if done(&described) {
            return Ok(());
        }
        tokio::time::sleep(step).await;
    }
    Err(Fault::Unavailable(
        format!("{what} of {table} did not become active within {within:?}").into(),
    ))
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Fault {
    Fault::Unavailable(Box::new(e))
}

/// Adds the audit index to a table made before it existed, and waits until it is active.
async fn add_audit_index(client: &Client, table: &str) -> Result<(), Fault> {
    let (index_name, index_keys) = AUDIT_INDEX_KEYS;
    let status = |described: &DescribeTableOutput| {
        described
            .table()
            .map(|t| t.global_secondary_indexes())
            .unwrap_or_default()
            .iter()
            .find(|i| i.index_name() == Some(index_name))
            .and_then(|i| i.index_status().cloned())
    };
    let described = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(unavailable)?;
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
            .set_attribute_definitions(Some(attribute_definitions()?))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(unavailable)?;
    }
    let active = |d: &DescribeTableOutput| status(d) == Some(IndexStatus::Active);
    wait_for(
        client,
        table,
        Duration::from_secs(300),
        active,
        "the audit index",
    )
    .await
}
