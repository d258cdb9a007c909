//! Events out on a local table: the poller of its stream (the event source mapping's part),
//! publishing to the EventBridge endpoint `AWS_ENDPOINT_URL_EVENTBRIDGE` names (`serve`), or
//! printing what would be published (`events tail`).

use std::time::Duration;

use async_trait::async_trait;
use events::local::{streams_client, Poller, Start};
use serde_json::json;
use shared::events::{Entry, Sink, Thresholds, Unpublished, SOURCE};
use shared::service::Service;

/// The bus `serve` publishes to when `EVENT_BUS_NAME` is not set.
pub const LOCAL_BUS: &str = "tokens-local";

/// How long a poller waits after a pass that read nothing.
pub const IDLE: Duration = Duration::from_millis(250);

/// Prints each entry as one JSON line: what PutEvents would receive.
pub struct Printer;

#[async_trait]
impl Sink for Printer {
    async fn put(&self, entries: &[Entry]) -> Result<(), Unpublished> {
        for entry in entries {
            let detail: serde_json::Value =
                serde_json::from_str(&entry.detail).unwrap_or_else(|_| entry.detail.clone().into());
            println!(
                "{}",
                json!({"source": SOURCE, "detail-type": entry.detail_type, "detail": detail})
            );
        }
        Ok(())
    }
}

/// A poller of the service's table, through `endpoint` (else the environment's).
pub async fn poller(
    service: &Service,
    endpoint: Option<&str>,
    region: Option<&str>,
    start: Start,
) -> Result<Poller, events::local::Error> {
    let roots = service.config.trust_roots;
    let dynamodb = shared::config::dynamodb_client_for(roots, endpoint, region).await;
    let streams = streams_client(roots, endpoint, region).await;
    Poller::new(&dynamodb, streams, &service.config.table_name, start).await
}

/// `CREDITS_LOW_PERCENT`, or the defaults.
pub fn thresholds() -> Result<Thresholds, String> {
    Thresholds::parse(std::env::var("CREDITS_LOW_PERCENT").ok().as_deref())
}

/// For `serve`: publishes the table's changes from now on to the local EventBridge endpoint
/// while the server runs, when `AWS_ENDPOINT_URL_EVENTBRIDGE` is set; says what it does.
pub async fn publish_while_serving(
    service: &Service,
    endpoint: Option<&str>,
    region: Option<&str>,
) -> Result<(), String> {
    if std::env::var_os("AWS_ENDPOINT_URL_EVENTBRIDGE").is_none() {
        eprintln!(
            "events: not published (AWS_ENDPOINT_URL_EVENTBRIDGE is not set); `tokenctl events tail` prints them"
        );
        return Ok(());
    }
    let bus = std::env::var("EVENT_BUS_NAME").unwrap_or_else(|_| LOCAL_BUS.to_string());
    let thresholds = thresholds()?;
    let mut poller = poller(service, endpoint, region, Start::Latest)
        .await
        .map_err(|e| format!("cannot read the table's stream: {e}"))?;
    let publisher = events::Publisher::for_bus(&service.config, bus.clone()).await;
    eprintln!("events: the table's changes go to bus {bus} at AWS_ENDPOINT_URL_EVENTBRIDGE");
    tokio::spawn(async move { poller.run(&publisher, &thresholds, IDLE).await });
    Ok(())
}
