//! Time: instants as named units ([`EpochMs`], [`EpochSeconds`]), the system clock, and the
//! timestamp formats of the seeds' responses and the audit trail.

use serde::{Serialize, Serializer};
use time::macros::format_description;
use time::OffsetDateTime;

/// An instant in milliseconds since the Unix epoch: a request's `now`, a record's creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochMs(pub u64);

/// An instant in whole seconds since the Unix epoch: expiries, grace ends, TTLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochSeconds(pub u64);

impl EpochMs {
    /// The system clock (the epoch itself should the clock stand before it).
    pub fn now() -> EpochMs {
        EpochMs(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        )
    }

    /// The whole second it falls in.
    pub fn seconds(self) -> EpochSeconds {
        EpochSeconds(self.0 / 1000)
    }

    /// `ms` milliseconds earlier (the epoch at the earliest).
    pub fn minus_ms(self, ms: u64) -> EpochMs {
        EpochMs(self.0.saturating_sub(ms))
    }
}

impl EpochSeconds {
    /// Its first millisecond.
    pub fn ms(self) -> EpochMs {
        EpochMs(self.0.saturating_mul(1000))
    }

    /// `seconds` later.
    pub fn plus(self, seconds: u64) -> EpochSeconds {
        EpochSeconds(self.0.saturating_add(seconds))
    }

    /// `days` later (an expiry given in days).
    pub fn plus_days(self, days: u64) -> EpochSeconds {
        self.plus(days.saturating_mul(86_400))
    }
}

impl std::fmt::Display for EpochMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The system clock's now ([`EpochMs::now`]).
pub fn now_ms() -> EpochMs {
    EpochMs::now()
}

/// `2025-01-08T10:30:00.000000Z`, the api-keys seed's timestamps.
pub fn timestamp_micros(ms: u64) -> String {
    exact_timestamp(u64::saturating_mul(ms, 1000))
}

/// `2025-01-08T10:30:00.123456Z` of a time in microseconds (audit events).
pub fn exact_timestamp(us: u64) -> String {
    format_nanos(
        i128::from(us) * 1000,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"),
    )
}

/// `2024-01-15T19:00:00Z`, the api-tokens seed's timestamps.
pub fn timestamp_seconds(ms: u64) -> String {
    format_nanos(
        i128::from(ms) * 1_000_000,
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

/// An instant rendered as [`timestamp_micros`] does (the api-keys seed's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MicrosText(pub EpochMs);

/// An instant rendered as [`timestamp_seconds`] does (the api-tokens seed's fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondsText(pub EpochMs);

impl From<EpochSeconds> for MicrosText {
    fn from(at: EpochSeconds) -> MicrosText {
        MicrosText(at.ms())
    }
}

impl From<EpochSeconds> for SecondsText {
    fn from(at: EpochSeconds) -> SecondsText {
        SecondsText(at.ms())
    }
}

impl Serialize for MicrosText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&timestamp_micros(self.0 .0))
    }
}

impl Serialize for SecondsText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&timestamp_seconds(self.0 .0))
    }
}

fn format_nanos(
    nanos: i128,
    format: &[time::format_description::BorrowedFormatItem<'_>],
) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_follow_the_seeds() {
        assert_eq!(
            timestamp_micros(1_736_332_200_000),
            "2025-01-08T10:30:00.000000Z"
        );
        assert_eq!(
            timestamp_micros(1_736_332_200_123),
            "2025-01-08T10:30:00.123000Z"
        );
        assert_eq!(timestamp_seconds(1_705_345_200_999), "2024-01-15T19:00:00Z");
        assert_eq!(
            serde_json::to_value((
                MicrosText(EpochMs(1_736_332_200_000)),
                SecondsText::from(EpochSeconds(1_705_345_200))
            ))
            .unwrap(),
            json!(["2025-01-08T10:30:00.000000Z", "2024-01-15T19:00:00Z"])
        );
    }

    #[test]
    fn units_convert_without_overflow() {
        assert_eq!(EpochMs(1_999).seconds(), EpochSeconds(1));
        assert_eq!(EpochSeconds(2).ms(), EpochMs(2_000));
        assert_eq!(EpochSeconds(u64::MAX).ms(), EpochMs(u64::MAX));
        assert_eq!(EpochMs(5).minus_ms(10), EpochMs(0));
        assert_eq!(EpochSeconds(10).plus_days(2), EpochSeconds(10 + 2 * 86_400));
        assert_eq!(EpochSeconds(1).plus_days(u64::MAX), EpochSeconds(u64::MAX));
    }
}
