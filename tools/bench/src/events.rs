//! Events out through the local consumer: the table's stream read by the poller that stands in
//! for the event source mapping, published with the SDK's real PutEvents requests to a local
//! recorder (EventBridge has no emulator). Figures: entries published per second against the
//! stream read alone (the same records, no publishing), and the delay from a change's commit to
//! its PutEvents against the change's own write.

use std::time::{Duration, Instant};

use events::local::{streams_client, Poller, Start};
use events::recorder::Recorder;
use events::Publisher;
use shared::events::{Entry, Sink, Thresholds, Unpublished};
use shared::trust::TrustRoots;

use crate::{figures, mint_key, ms, World};

/// Takes every entry and publishes nothing: the stream read alone.
struct Discard;

#[async_trait::async_trait]
impl Sink for Discard {
    async fn put(&self, _: &[Entry]) -> Result<(), Unpublished> {
        Ok(())
    }
}

async fn poller(w: &World) -> Poller {
    let direct = w.store.direct();
    let streams = streams_client(TrustRoots::default(), None, None).await;
    Poller::new(direct.client, streams, direct.table, Start::Latest)
        .await
        .expect("the bench table's stream")
}

pub async fn report(w: &World, changes: usize) {
    let recorder = Recorder::start().await;
    let publisher = Publisher::new(recorder.client().await, "tokens-bench");
    let thresholds = Thresholds::default();
    let user = &w.demo.user;

    // Throughput: `changes` keys minted, then the stream drained twice from the same point.
    let mut publishing = poller(w).await;
    let mut reading = poller(w).await;
    for _ in 0..changes {
        mint_key(&w.store, user).await;
    }
    let started = Instant::now();
    let read = reading
        .drain(&Discard, &thresholds, 3, 10_000)
        .await
        .expect("read");
    let read_time = started.elapsed();
    let started = Instant::now();
    let published = publishing
        .drain(&publisher, &thresholds, 3, 10_000)
        .await
        .expect("publish");
    let publish_time = started.elapsed();
    let entries = recorder.entries().len();
    // Both drains end with the same quiet passes; they are counted in both.
    let per_second = entries as f64 / publish_time.as_secs_f64();
    let read_per_second = read.records as f64 / read_time.as_secs_f64();
    println!(
        "Events out through the local consumer (DynamoDB Local's stream, PutEvents to a local recorder; {changes} keys minted)"
    );
    println!(
        "published: {entries} entries from {} records in {:.2} s = {per_second:.0} entries/s; stream read alone: {} records in {:.2} s = {read_per_second:.0} records/s; ratio (time) {:.2}",
        published.records,
        publish_time.as_secs_f64(),
        read.records,
        read_time.as_secs_f64(),
        publish_time.as_secs_f64() / read_time.as_secs_f64()
    );

    // Delay: one change at a time, the consumer polling as `tokenctl serve` does.
    let mut running = poller(w).await;
    let background = tokio::spawn(async move {
        let (publisher, thresholds) = (publisher, thresholds);
        running
            .run(&publisher, &thresholds, Duration::from_millis(10))
            .await
    });
    let samples = 100.min(changes);
    let (mut delays, mut writes) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        let before = recorder.entries().len();
        let started = Instant::now();
        mint_key(&w.store, user).await;
        let committed = Instant::now();
        writes.push(committed - started);
        while recorder.entries().len() == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let arrived = recorder.entries()[before].at;
        delays.push(arrived.saturating_duration_since(committed));
    }
    background.abort();
    let wall = Duration::from_secs(1);
    let (delay, write) = (figures(delays, wall), figures(writes, wall));
    println!(
        "change to PutEvents ({samples} changes, poller idle 10 ms): p50 {} ms, p99 {} ms; the change's own write: p50 {} ms, p99 {} ms; ratio {:.2}",
        ms(delay.p50),
        ms(delay.p99),
        ms(write.p50),
        ms(write.p99),
        delay.p50.as_secs_f64() / write.p50.as_secs_f64()
    );
}
