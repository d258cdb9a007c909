//! The table definition, shared by `tokenctl init`, the tests and (by comparison) template.yaml.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

use super::item::{PK, SK};
use super::StoreError;

/// Attribute DynamoDB's TTL deletes expired items by (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Hash and range key attribute names, both strings.
pub const KEY_ATTRIBUTES: [(&str, &str); 2] = [(PK, "HASH"), (SK, "RANGE")];

/// Whether `create_table` made the table or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOutcome {
    Created,
    AlreadyExisted,
}

/// Creates the table (on-demand, `pk`/`sk` strings, TTL on `expires_at`) unless it exists, and
/// waits until it is active.
pub async fn create_table(client: &Client, table: &str) -> Result<TableOutcome, StoreError> {
    let definitions = KEY_ATTRIBUTES
        .iter()
        .map(|(name, _)| {
            AttributeDefinition::builder()
                .attribute_name(*name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let schema = KEY_ATTRIBUTES
        .iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(*name)
                .key_type(KeyType::from(*kind))
                .build()
                .map_err(unavailable)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(definitions))
        .set_key_schema(Some(schema))
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

async fn wait_until_active(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..120 {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(unavailable)?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(StoreError::Unavailable(
        format!("table {table} did not become active within a minute").into(),
    ))
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}
