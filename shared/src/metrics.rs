//! CloudWatch metrics in the embedded metric format: one JSON log line per event, which
//! CloudWatch Logs turns into metrics (no API call, nothing to wait for).
//!
//! | metric | dimension | counted |
//! |---|---|---|
//! | `TokensMinted` | `Kind` | each token stored: created by any route or `tokenctl`, a roll's successor, a permanent key's new generation |
//! | `Verifications` | `Code` | each presented token checked (routes, the authorizer, the verify route): `VALID`, `NOT_FOUND`, `EXPIRED`, `REVOKED`, `DISABLED` |
//! | `TokensRevoked` | `Reason` | each token revoked: `deleted`, `rolled`, `leaked`, `self_revoked` |
//! | `Authorizations` | `Outcome` | each authorizer event: `allowed`, `unauthorized`, `USAGE_EXCEEDED`, `RATE_LIMITED`, `failed` (DynamoDB unreachable) |
//!
//! A metric is a tracing event of target [`TARGET`] whose message is the EMF line;
//! [`init_tracing`](crate::service::init_tracing) writes those lines to stdout as they are,
//! apart from the ordinary log lines, and tests capture them like any event.

use std::fmt::Debug;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};

/// The tracing target of metric lines.
pub const TARGET: &str = "emf";

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "TokenService";

/// One count of `metric` with `dimension` = `value`, as an EMF line.
pub fn line(metric: &str, dimension: &str, value: &str, count: u64) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[dimension]],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        dimension: value,
        metric: count,
    })
    .to_string()
}

fn emit(metric: &str, dimension: &str, value: &str, count: u64) {
    if count > 0 {
        tracing::info!(target: TARGET, "{}", line(metric, dimension, value, count));
    }
}

/// `count` tokens of `kind` stored.
pub fn minted(kind: &str, count: u64) {
    emit("TokensMinted", "Kind", kind, count);
}

/// A presented token checked, with the verification's code.
pub fn verified(code: &str) {
    emit("Verifications", "Code", code, 1);
}

/// `count` tokens revoked for `reason`.
pub fn revoked(reason: &str, count: u64) {
    emit("TokensRevoked", "Reason", reason, count);
}

/// An authorizer event answered with `outcome`.
pub fn authorized(outcome: &str) {
    emit("Authorizations", "Outcome", outcome, 1);
}

/// The layer that writes the metric events' lines, as they are, one per line, to `writer`; it
/// sees only events of [`TARGET`] (its filter, so no other level or target is enabled for it).
pub fn lines<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    Lines(writer).with_filter(filter_fn(is_metric))
}

/// Whether an event or span is a metric line.
pub fn is_metric(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == TARGET
}

/// See [`lines`].
struct Lines<W>(W);

impl<S, W> Layer<S> for Lines<W>
where
    S: Subscriber,
    W: for<'a> MakeWriter<'a> + 'static,
{
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = Message(None);
        event.record(&mut message);
        if let Some(line) = message.0 {
            let _ = writeln!(self.0.make_writer(), "{line}");
        }
    }
}

/// An event's `message` field.
struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embedded_metric_format() {
        let line: serde_json::Value =
            serde_json::from_str(&line("TokensMinted", "Kind", "api_key", 2)).unwrap();
        assert_eq!(line["TokensMinted"], 2);
        assert_eq!(line["Kind"], "api_key");
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["Kind"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "TokensMinted", "Unit": "Count"}])
        );
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    }
}
