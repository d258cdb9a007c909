//! The `events` function: the table's stream (through an event source mapping that filters it
//! to audit events and metered records) to the EventBridge bus, and the daily run that gives
//! notice of expiring tokens. What goes out, and why each once, is [`shared::events`]'s.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use base64::Engine;
use serde_json::{json, Value};

use shared::clock::now_ms;
use shared::config::Config;
use shared::events::{notify_expiring, publish_records, Entry, Sink, Thresholds, Unpublished};
use shared::store::stream::StreamRecord;
use shared::store::{DynamoStore, Item};

#[cfg(feature = "local")]
pub mod local;
#[cfg(feature = "recorder")]
pub mod recorder;

/// How often a PutEvents request is made for entries EventBridge refused (throttled, failed
/// inside): the entries it refused each time, with a growing pause.
pub const PUT_ATTEMPTS: u32 = 4;

/// The bus the entries go on: `EVENT_BUS_NAME`.
pub const EVENT_BUS_VARIABLE: &str = "EVENT_BUS_NAME";

/// EventBridge's PutEvents on one bus.
pub struct Publisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl Publisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Publisher {
        Publisher {
            client,
            bus: bus.into(),
        }
    }

    /// The publisher of `bus` with the service's AWS settings (`AWS_ENDPOINT_URL_EVENTBRIDGE`
    /// where set, as the SDK reads it).
    pub async fn for_bus(config: &Config, bus: impl Into<String>) -> Publisher {
        let sdk = shared::config::sdk_config(config.trust_roots, None).await;
        Publisher::new(aws_sdk_eventbridge::Client::new(&sdk), bus)
    }
}

#[async_trait]
impl Sink for Publisher {
    async fn put(&self, entries: &[Entry]) -> Result<(), Unpublished> {
        // The indexes (in `entries`) still to publish.
        let mut left: Vec<usize> = (0..entries.len()).collect();
        let mut reason = String::new();
        for attempt in 0..PUT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let request = left.iter().map(|&i| {
                PutEventsRequestEntry::builder()
                    .source(shared::events::SOURCE)
                    .detail_type(&entries[i].detail_type)
                    .detail(&entries[i].detail)
                    .event_bus_name(&self.bus)
                    .build()
            });
            let sent = self
                .client
                .put_events()
                .set_entries(Some(request.collect()))
                .send()
                .await;
            match sent {
                Ok(output) => {
                    let results = output.entries();
                    let refused: Vec<usize> = left
                        .iter()
                        .enumerate()
                        // An entry without its result is not known to be published.
                        .filter(|(k, _)| results.get(*k).is_none_or(|r| r.error_code().is_some()))
                        .map(|(_, &i)| i)
                        .collect();
                    if let Some(refusal) = results.iter().find(|r| r.error_code().is_some()) {
                        reason = format!(
                            "{}: {}",
                            refusal.error_code().unwrap_or_default(),
                            refusal.error_message().unwrap_or_default()
                        );
                    }
                    left = refused;
                    if left.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => reason = aws_sdk_eventbridge::error::DisplayErrorContext(&e).to_string(),
            }
        }
        Err(Unpublished {
            first_failed: left[0],
            reason,
        })
    }
}

/// A stream record of a Lambda event, or why it could not be read (its sequence number if it
/// had one).
pub fn stream_record(record: &Value) -> Result<StreamRecord, (Option<String>, String)> {
    let dynamodb = &record["dynamodb"];
    let sequence = dynamodb["SequenceNumber"].as_str().map(str::to_string);
    let fail = |reason: String| (sequence.clone(), reason);
    let image = |name: &str| match &dynamodb[name] {
        Value::Null => Ok(None),
        value => item(value)
            .map(Some)
            .map_err(|e| fail(format!("{name}: {e}"))),
    };
    Ok(StreamRecord {
        event_name: record["eventName"]
            .as_str()
            .ok_or_else(|| fail("no eventName".into()))?
            .to_string(),
        sequence: sequence
            .clone()
            .ok_or_else(|| fail("no SequenceNumber".into()))?,
        old: image("OldImage")?,
        new: image("NewImage")?,
    })
}

/// An item in DynamoDB's JSON (`{"pk": {"S": "…"}, …}`), as streams deliver it to Lambda.
pub fn item(value: &Value) -> Result<Item, String> {
    value
        .as_object()
        .ok_or("an item is not an object")?
        .iter()
        .map(|(name, v)| Ok((name.clone(), attribute(v)?)))
        .collect()
}

fn attribute(value: &Value) -> Result<AttributeValue, String> {
    let bad = || format!("not an attribute value: {value}");
    let object = value.as_object().filter(|o| o.len() == 1).ok_or_else(bad)?;
    let (kind, inner) = object.iter().next().ok_or_else(bad)?;
    let text = || inner.as_str().map(str::to_string).ok_or_else(bad);
    let texts = || {
        inner
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<Vec<String>, String>>()
    };
    let blob = |t: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map(Blob::new)
            .map_err(|_| bad())
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(blob(&text()?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(bad)?),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(texts()?.iter().map(|t| blob(t)).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(attribute)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item(inner)?.into_iter().collect::<HashMap<_, _>>()),
        _ => return Err(bad()),
    })
}

/// Why an invocation failed as a whole (Lambda then retries it).
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// What the function holds for its lifetime.
pub struct Function {
    pub store: DynamoStore,
    pub sink: Box<dyn Sink>,
    pub thresholds: Thresholds,
}

impl Function {
    /// The service's settings, `EVENT_BUS_NAME` and `CREDITS_LOW_PERCENT`: a missing or bad one
    /// stops the cold start.
    pub async fn from_env() -> Result<Function, Failed> {
        let config = Config::from_env().map_err(|e| Failed(e.to_string()))?;
        let bus = std::env::var(EVENT_BUS_VARIABLE)
            .ok()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| Failed(format!("{EVENT_BUS_VARIABLE} is not set")))?;
        let thresholds = Thresholds::parse(std::env::var("CREDITS_LOW_PERCENT").ok().as_deref())
            .map_err(Failed)?;
        let client = shared::config::dynamodb_client(config.trust_roots).await;
        Ok(Function {
            store: DynamoStore::new(client, config.table_name.clone()),
            sink: Box::new(Publisher::for_bus(&config, bus).await),
            thresholds,
        })
    }

    /// A batch of stream records (answered with the records to send again, the first one that
    /// failed: `ReportBatchItemFailures`), or the daily scheduled run.
    pub async fn handle(&self, payload: Value) -> Result<Value, Failed> {
        if let Some(records) = payload["Records"].as_array() {
            return self.stream_batch(records).await;
        }
        if payload["source"] == "aws.events" {
            let run = notify_expiring(&self.store, self.sink.as_ref(), now_ms())
                .await
                .map_err(|e| Failed(format!("the daily run could not read the table: {e}")))?;
            if run.unpublished > 0 {
                return Err(Failed(format!(
                    "{} expiry notices were not published (left for the next run)",
                    run.unpublished
                )));
            }
            return Ok(json!({"notified": run.notified}));
        }
        Err(Failed(
            "neither a stream batch nor a scheduled event".into(),
        ))
    }

    async fn stream_batch(&self, records: &[Value]) -> Result<Value, Failed> {
        let mut read = Vec::with_capacity(records.len());
        let mut unreadable = None;
        for record in records {
            match stream_record(record) {
                Ok(record) => read.push(record),
                Err((sequence, reason)) => {
                    tracing::error!(?sequence, reason, "unreadable stream record");
                    // Without a sequence number the batch itself is retried (and bisected).
                    unreadable = Some(sequence.ok_or(Failed(reason))?);
                    break;
                }
            }
        }
        let failed = publish_records(self.sink.as_ref(), &read, &self.thresholds)
            .await
            .or(unreadable);
        let failures: Vec<Value> = failed
            .into_iter()
            .map(|sequence| json!({"itemIdentifier": sequence}))
            .collect();
        Ok(json!({"batchItemFailures": failures}))
    }
}
