//! The event source mapping's part where there is none (DynamoDB Local): a poller of the
//! table's stream that hands each shard's records to [`publish_records`] in order, sends the
//! records again from the first that failed, at most [`RETRIES`] times, then sets that one
//! record aside as a dead letter and goes on, so a poison record never blocks its shard (as the
//! template's mapping does with its bounded retries, bisection and SQS queue).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use aws_sdk_dynamodbstreams::Client as StreamsClient;

use shared::events::{publish_records, Sink, Thresholds};
use shared::store::stream::StreamRecord;
use shared::store::Item;

/// How many times a failed record is sent again before it is set aside (the template's
/// `MaximumRetryAttempts`).
pub const RETRIES: u32 = 3;

/// Records read from a shard at once (the template's `BatchSize`).
pub const BATCH: i32 = 100;

/// A record set aside after [`RETRIES`]: where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub shard: String,
    pub sequence: String,
}

/// Where a poller starts: at what is written from now on, or at the oldest record kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Latest,
    Oldest,
}

/// What one pass over the shards did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub records: usize,
    pub dead_letters: Vec<DeadLetter>,
}

/// A stream reading error.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A poller of one table's stream.
pub struct Poller {
    streams: StreamsClient,
    stream_arn: String,
    start: Start,
    /// Each shard's next iterator; `None` once the shard is closed and read to its end.
    shards: BTreeMap<String, Option<String>>,
}

impl Poller {
    /// A poller of `table`'s stream (which `tokenctl init` turns on), read with `streams` (see
    /// [`streams_client`]).
    pub async fn new(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: StreamsClient,
        table: &str,
        start: Start,
    ) -> Result<Poller, Error> {
        let described = dynamodb.describe_table().table_name(table).send().await?;
        let stream_arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| format!("table {table} has no stream (run `tokenctl init`)"))?
            .to_string();
        let mut poller = Poller {
            streams,
            stream_arn,
            start,
            shards: BTreeMap::new(),
        };
        poller.discover().await?;
        // Shards found later are read from their first record.
        poller.start = Start::Oldest;
        Ok(poller)
    }

    /// Adds the shards not yet known, each with an iterator at this poller's start.
    async fn discover(&mut self) -> Result<(), Error> {
        let mut last = None;
        loop {
            let described = self
                .streams
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(last.clone())
                .send()
                .await?;
            let Some(description) = described.stream_description() else {
                return Ok(());
            };
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                if self.shards.contains_key(id) {
                    continue;
                }
                let closed = shard
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some());
                let iterator = if self.start == Start::Latest && closed {
                    None
                } else {
                    let kind = match self.start {
                        Start::Latest => ShardIteratorType::Latest,
                        Start::Oldest => ShardIteratorType::TrimHorizon,
                    };
                    self.iterator(id, kind).await?
                };
                self.shards.insert(id.to_string(), iterator);
            }
            match description.last_evaluated_shard_id() {
                Some(id) => last = Some(id.to_string()),
                None => return Ok(()),
            }
        }
    }

    async fn iterator(
        &self,
        shard: &str,
        kind: ShardIteratorType,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_string))
    }

    /// Reads every open shard once and publishes what it read.
    pub async fn pass(&mut self, sink: &dyn Sink, thresholds: &Thresholds) -> Result<Pass, Error> {
        self.discover().await?;
        let mut pass = Pass::default();
        let shards: Vec<(String, String)> = self
            .shards
            .iter()
            .filter_map(|(id, it)| it.clone().map(|it| (id.clone(), it)))
            .collect();
        for (shard, iterator) in shards {
            let read = self
                .streams
                .get_records()
                .shard_iterator(iterator)
                .limit(BATCH)
                .send()
                .await;
            let read = match read {
                Ok(read) => read,
                // Past the oldest record kept (DynamoDB Local also says so of a new, empty
                // shard): start again from the oldest.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_trimmed_data_access_exception()) =>
                {
                    let iterator = self
                        .iterator(&shard, ShardIteratorType::TrimHorizon)
                        .await?;
                    self.shards.insert(shard, iterator);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let records = read
                .records()
                .iter()
                .map(stream_record)
                .collect::<Vec<StreamRecord>>();
            pass.records += records.len();
            pass.dead_letters
                .extend(deliver(sink, thresholds, &shard, &records).await);
            self.shards
                .insert(shard, read.next_shard_iterator().map(str::to_string));
        }
        Ok(pass)
    }

    /// Passes until `quiet` passes in a row read nothing (at most `limit` passes).
    pub async fn drain(
        &mut self,
        sink: &dyn Sink,
        thresholds: &Thresholds,
        quiet: u32,
        limit: u32,
    ) -> Result<Pass, Error> {
        let mut total = Pass::default();
        let mut idle = 0;
        for _ in 0..limit {
            let pass = self.pass(sink, thresholds).await?;
            idle = if pass.records == 0 { idle + 1 } else { 0 };
            let records = pass.records;
            total.records += records;
            total.dead_letters.extend(pass.dead_letters);
            if idle >= quiet {
                break;
            }
            if records == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(total)
    }

    /// Polls for good, every `idle` when nothing came; a read error is logged and retried.
    pub async fn run(&mut self, sink: &dyn Sink, thresholds: &Thresholds, idle: Duration) {
        loop {
            match self.pass(sink, thresholds).await {
                Ok(pass) if pass.records > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "reading the table's stream"),
            }
            tokio::time::sleep(idle).await;
        }
    }
}

/// The client of the streams of the DynamoDB at `endpoint` (else `AWS_ENDPOINT_URL_DYNAMODB`,
/// else as the SDK reads the environment): DynamoDB Local serves its streams where it serves
/// its tables.
pub async fn streams_client(
    roots: shared::trust::TrustRoots,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> StreamsClient {
    let sdk = shared::config::sdk_config(roots, region).await;
    let mut config = aws_sdk_dynamodbstreams::config::Builder::from(&sdk);
    let from_env = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok();
    if let Some(endpoint) = endpoint.or(from_env.as_deref()) {
        config = config.endpoint_url(endpoint);
    }
    StreamsClient::from_conf(config.build())
}

/// Publishes one shard's `records` as the event source mapping would: from the first failed
/// record again, each at most [`RETRIES`] times, then that record set aside.
pub async fn deliver(
    sink: &dyn Sink,
    thresholds: &Thresholds,
    shard: &str,
    records: &[StreamRecord],
) -> Vec<DeadLetter> {
    let mut dead = Vec::new();
    let mut from = 0;
    let mut retries: HashMap<String, u32> = HashMap::new();
    while from < records.len() {
        let Some(failed) = publish_records(sink, &records[from..], thresholds).await else {
            break;
        };
        let at = from
            + records[from..]
                .iter()
                .position(|r| r.sequence == failed)
                .unwrap_or(0);
        let tried = retries.entry(failed.clone()).or_default();
        if *tried < RETRIES {
            *tried += 1;
            tokio::time::sleep(Duration::from_millis(50 << *tried)).await;
            from = at;
        } else {
            tracing::error!(shard, sequence = %failed, "stream record set aside as a dead letter");
            dead.push(DeadLetter {
                shard: shard.to_string(),
                sequence: failed,
            });
            from = at + 1;
        }
    }
    dead
}

fn stream_record(record: &aws_sdk_dynamodbstreams::types::Record) -> StreamRecord {
    let data = record.dynamodb();
    let image = |image: Option<&HashMap<String, StreamValue>>| image.map(item);
    StreamRecord {
        event_name: record
            .event_name()
            .map(|e| e.as_str().to_string())
            .unwrap_or_default(),
        sequence: data
            .and_then(|d| d.sequence_number())
            .unwrap_or_default()
            .to_string(),
        old: image(data.and_then(|d| d.old_image.as_ref())),
        new: image(data.and_then(|d| d.new_image.as_ref())),
    }
}

fn item(image: &HashMap<String, StreamValue>) -> Item {
    image
        .iter()
        .map(|(name, value)| (name.clone(), attribute(value)))
        .collect()
}

fn attribute(value: &StreamValue) -> AttributeValue {
    let blob = |b: &aws_sdk_dynamodbstreams::primitives::Blob| Blob::new(b.as_ref().to_vec());
    match value {
        StreamValue::S(s) => AttributeValue::S(s.clone()),
        StreamValue::N(n) => AttributeValue::N(n.clone()),
        StreamValue::B(b) => AttributeValue::B(blob(b)),
        StreamValue::Bool(b) => AttributeValue::Bool(*b),
        StreamValue::Null(n) => AttributeValue::Null(*n),
        StreamValue::Ss(v) => AttributeValue::Ss(v.clone()),
        StreamValue::Ns(v) => AttributeValue::Ns(v.clone()),
        StreamValue::Bs(v) => AttributeValue::Bs(v.iter().map(blob).collect()),
        StreamValue::L(v) => AttributeValue::L(v.iter().map(attribute).collect()),
        StreamValue::M(m) => AttributeValue::M(item(m)),
        // A kind this SDK does not know: kept as nothing rather than guessed.
        _ => AttributeValue::Null(true),
    }
}
