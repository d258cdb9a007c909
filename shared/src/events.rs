//! Events out: what the `events` function publishes on the EventBridge bus, read from the
//! table's stream (every audit event; `credits.low` when a meter's credits cross a threshold)
//! and from the daily run over the index of expiry days (`token.expiring`). The request path
//! writes nothing for them. Every entry's detail has an `id`: an audit event's own, or one
//! derived from what it notifies, so that a duplicate (delivery is at least once) is known.

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::{timestamp_seconds, EpochMs};
use crate::limits::Meter;
use crate::store::stream::{observe, MeterChange, Observed, StreamRecord};
use crate::store::{expiry_day, DynamoStore, Expiring, Fault, TokenRecord};
use crate::token::hex;

/// Every entry's `source`.
pub const SOURCE: &str = "token-service";

/// At most this many entries go in one PutEvents request (EventBridge's limit).
pub const PUT_EVENTS_LIMIT: usize = 10;

/// The `detail-type` of a meter's crossing of a threshold.
pub const CREDITS_LOW: &str = "credits.low";

/// The `detail-type` of a notice of expiry.
pub const TOKEN_EXPIRING: &str = "token.expiring";

/// The notices of expiry, in days before `valid_until`, the farthest first.
pub const EXPIRY_NOTICE_DAYS: [u64; 2] = [7, 1];

/// One entry of a PutEvents request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub detail_type: String,
    /// JSON, never holding a secret or a hash.
    pub detail: String,
}

/// Entries that could not be published.
#[derive(Debug, thiserror::Error)]
#[error("entry {first_failed} and later were not published: {reason}")]
pub struct Unpublished {
    /// The index (in the entries given) of the first entry not published.
    pub first_failed: usize,
    pub reason: String,
}

/// Where entries go: the EventBridge bus, or what `tokenctl events tail` prints.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Publishes up to [`PUT_EVENTS_LIMIT`] entries, retrying those refused as it sees fit.
    async fn put(&self, entries: &[Entry]) -> Result<(), Unpublished>;
}

/// The `credits.low` thresholds, in percent of the credits last set or refilled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds(Vec<u64>);

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds(vec![20, 10, 0])
    }
}

impl Thresholds {
    /// `CREDITS_LOW_PERCENT`: comma-separated whole percents from 0 to 100 (unset: 20,10,0).
    pub fn parse(text: Option<&str>) -> Result<Thresholds, String> {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return Ok(Thresholds::default());
        };
        let mut percents = text
            .split(',')
            .map(|p| p.trim().parse::<u64>().ok().filter(|p| *p <= 100))
            .collect::<Option<Vec<u64>>>()
            .ok_or_else(|| {
                format!(
                    "CREDITS_LOW_PERCENT must be percents from 0 to 100, comma-separated: {text:?}"
                )
            })?;
        percents.sort_unstable_by(|a, b| b.cmp(a));
        percents.dedup();
        Ok(Thresholds(percents))
    }

    /// The thresholds a write from `old` to `new` took the remaining credits to or below,
    /// from above: each crossing is seen by exactly one write, however many ran in parallel.
    pub fn crossed(&self, old: &Meter, new: &Meter) -> Vec<u64> {
        let (Some(before), Some(after)) = (old.limits.credits, new.limits.credits) else {
            return Vec::new();
        };
        let Some(full) = new
            .credits_full
            .or_else(|| after.refill.map(|refill| refill.amount))
        else {
            return Vec::new();
        };
        let (before, after, full) = (
            u128::from(before.remaining) * 100,
            u128::from(after.remaining) * 100,
            u128::from(full),
        );
        self.0
            .iter()
            .copied()
            .filter(|percent| {
                let level = u128::from(*percent) * full;
                after <= level && level < before
            })
            .collect()
    }
}

fn derived_id(parts: &[&str]) -> String {
    hex(&Sha256::digest(parts.join("\n").as_bytes())[..16])
}

/// What one stream record publishes (in order); a record that cannot be read is an error.
pub fn entries(record: &StreamRecord, thresholds: &Thresholds) -> Result<Vec<Entry>, Fault> {
    Ok(match observe(record)? {
        Observed::Audit { action, event } => vec![Entry {
            detail_type: action,
            detail: event,
        }],
        Observed::Meter(change) => thresholds
            .crossed(&change.old, &change.new)
            .into_iter()
            .map(|percent| credits_low(&change, &record.sequence, percent))
            .collect(),
        Observed::Nothing => Vec::new(),
    })
}

fn credits_low(change: &MeterChange, sequence: &str, percent: u64) -> Entry {
    let mut detail = Map::new();
    detail.insert(
        "id".into(),
        derived_id(&[CREDITS_LOW, sequence, &percent.to_string()]).into(),
    );
    detail.insert("platform_id".into(), change.platform_id.0.into());
    detail.insert("user_id".into(), change.user_id.0.into());
    if let Some(token) = change.token_id {
        detail.insert("token_id".into(), token.to_string().into());
    }
    detail.insert("threshold_percent".into(), percent.into());
    let remaining = change.new.limits.credits.map_or(0, |c| c.remaining);
    detail.insert("remaining".into(), remaining.into());
    Entry {
        detail_type: CREDITS_LOW.into(),
        detail: Value::Object(detail).to_string(),
    }
}

/// The notice that `token` expires in `days` days or less.
pub fn expiring(token: &TokenRecord, days: u64) -> Entry {
    let public = token.public_id().to_string();
    let detail = json!({
        "id": derived_id(&[TOKEN_EXPIRING, &public, &days.to_string()]),
        "platform_id": token.platform_id.0,
        "user_id": token.user_id.0,
        "token_id": public,
        "kind": token.kind.as_str(),
        "name": token.name,
        "valid_until": timestamp_seconds(token.expires_at.unwrap_or(0) * 1000),
        "days_before": days,
    });
    Entry {
        detail_type: TOKEN_EXPIRING.into(),
        detail: detail.to_string(),
    }
}

/// Publishes what `records` (a shard's, in order) say, in PutEvents batches of up to
/// [`PUT_EVENTS_LIMIT`]. Stops at the first record that cannot be read or whose entries could
/// not all be published, and returns its sequence number: the Lambda event source mapping (or
/// the local poller) sends it and every later record again, so a retry publishes duplicates
/// (same ids), never a gap.
pub async fn publish_records(
    sink: &dyn Sink,
    records: &[StreamRecord],
    thresholds: &Thresholds,
) -> Option<String> {
    // Each entry with the index of its record.
    let mut pending: Vec<(usize, Entry)> = Vec::new();
    let mut poison = None;
    for (index, record) in records.iter().enumerate() {
        match entries(record, thresholds) {
            Ok(found) => pending.extend(found.into_iter().map(|entry| (index, entry))),
            Err(fault) => {
                tracing::error!(sequence = %record.sequence, error = %fault, "unreadable stream record");
                poison = Some(index);
                break;
            }
        }
    }
    for chunk in pending.chunks(PUT_EVENTS_LIMIT) {
        let batch: Vec<Entry> = chunk.iter().map(|(_, entry)| entry.clone()).collect();
        if let Err(unpublished) = sink.put(&batch).await {
            let record = chunk[unpublished.first_failed.min(chunk.len() - 1)].0;
            tracing::error!(
                sequence = %records[record].sequence,
                error = %unpublished,
                "entries not published"
            );
            return Some(records[record].sequence.clone());
        }
    }
    poison.map(|index| records[index].sequence.clone())
}

/// The notice due to a token at `now`: the nearest threshold it has reached, if it had more
/// time than that when it was made and was not given that notice (or a nearer one) yet.
pub fn notice_due(expiring: &Expiring, now: EpochMs) -> Option<u64> {
    let token = &expiring.token;
    let until = token.expires_at?;
    let now_s = now.seconds().0;
    let created_s = token.created_at_ms / 1000;
    if until <= now_s {
        return None;
    }
    EXPIRY_NOTICE_DAYS
        .iter()
        .rev()
        .copied()
        .find(|days| until - now_s <= days * 86_400)
        .filter(|days| until.saturating_sub(created_s) > days * 86_400)
        .filter(|days| expiring.noticed.is_none_or(|given| given > *days))
}

/// What a daily run gave notice of, and what it could not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoticeRun {
    pub notified: usize,
    pub unpublished: usize,
}

/// The daily run: every live token expiring within the farthest threshold is given the notice
/// due (see [`notice_due`]), each token and threshold once. A token is marked before its notice
/// is published, and the mark taken back when publishing fails, so two runs never both notify
/// and a failed run leaves the notice to the next.
pub async fn notify_expiring(
    store: &DynamoStore,
    sink: &dyn Sink,
    now: EpochMs,
) -> Result<NoticeRun, Fault> {
    let now_s = now.seconds().0;
    let mut run = NoticeRun::default();
    let mut claimed: Vec<(Expiring, u64)> = Vec::new();
    for day in 0..=EXPIRY_NOTICE_DAYS[0] {
        for expiring in store.expiring_on(&expiry_day(now_s + day * 86_400)).await? {
            let Some(days) = notice_due(&expiring, now) else {
                continue;
            };
            if store
                .claim_expiry_notice(&expiring.token, days, now)
                .await?
            {
                claimed.push((expiring, days));
            }
        }
    }
    for chunk in claimed.chunks(PUT_EVENTS_LIMIT) {
        let batch: Vec<Entry> = chunk
            .iter()
            .map(|(expiring, days)| self::expiring(&expiring.token, *days))
            .collect();
        match sink.put(&batch).await {
            Ok(()) => run.notified += chunk.len(),
            Err(unpublished) => {
                tracing::error!(error = %unpublished, "expiry notices not published");
                for (expiring, days) in &chunk[unpublished.first_failed.min(chunk.len())..] {
                    store
                        .release_expiry_notice(&expiring.token, *days, expiring.noticed)
                        .await?;
                    run.unpublished += 1;
                }
                run.notified += unpublished.first_failed.min(chunk.len());
            }
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Credits, Limits};

    fn meter(remaining: u64, full: u64) -> Meter {
        Meter {
            limits: Limits {
                credits: Some(Credits {
                    remaining,
                    refill: None,
                }),
                rate_limit: None,
            },
            credits_full: Some(full),
            ..Meter::default()
        }
    }

    #[test]
    fn thresholds_parse_sorted_and_refuse_what_is_not_a_percent() {
        assert_eq!(
            Thresholds::parse(None).unwrap(),
            Thresholds(vec![20, 10, 0])
        );
        assert_eq!(
            Thresholds::parse(Some("5, 50,5")).unwrap(),
            Thresholds(vec![50, 5])
        );
        assert!(Thresholds::parse(Some("101")).is_err());
        assert!(Thresholds::parse(Some("ten")).is_err());
        assert!(Thresholds::parse(Some("10,")).is_err());
    }

    #[test]
    fn each_threshold_is_crossed_by_one_write_from_above() {
        let t = Thresholds::default();
        // 10 credits: 20% is 2, 10% is 1, 0% is 0.
        let crossed: Vec<Vec<u64>> = (1..=10)
            .rev()
            .map(|before| t.crossed(&meter(before, 10), &meter(before - 1, 10)))
            .collect();
        let all: Vec<u64> = crossed.concat();
        assert_eq!(all, vec![20, 10, 0]);
        assert_eq!(crossed[7], vec![20]);
        // One write taking it from 3 to 0 crosses all three.
        assert_eq!(t.crossed(&meter(3, 10), &meter(0, 10)), vec![20, 10, 0]);
        // Going up (a refill, limits set again) crosses nothing.
        assert!(t.crossed(&meter(0, 10), &meter(10, 10)).is_empty());
        // Without a known full amount (a meter stored before it was kept): nothing.
        let mut old = meter(5, 10);
        old.credits_full = None;
        let mut new = meter(0, 10);
        new.credits_full = None;
        assert!(t.crossed(&old, &new).is_empty());
    }
}
