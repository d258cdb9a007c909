//! Usage limits: credits (with a lazy daily or monthly refill) and fixed-window rate limits, on a
//! user (shared by all its tokens) and on a token, and what one unit of use does to them.
//!
//! Everything here is arithmetic on a record's [`Meter`] at an instant; the store turns a
//! [`Standing`] into one conditional write per metered record (both in one transaction where both
//! apply), so two units can never spend the same credit or the same slot of a window.

use serde::Serialize;
use serde_json::{Map, Value};
use time::{Date, OffsetDateTime};

use crate::clock::EpochMs;
use crate::clock::{EpochSeconds, SecondsText};
use crate::validate::{both, integer_field, present, required, string_field, FieldErrors, Parsed};

/// The most credits a record may hold, and the largest refill.
pub const MAX_CREDITS: u64 = 1_000_000_000;
/// The largest rate limit per window.
pub const MAX_RATE: u64 = 1_000_000;
/// The longest rate window (a day).
pub const MAX_WINDOW_SECONDS: u64 = 86_400;

/// How often credits are refilled: at the first use after each UTC day or calendar month begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Day,
    Month,
}

crate::domain::named!(Interval {
    Day => "day",
    Month => "month",
});

impl Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl Interval {
    /// The start (epoch seconds) of the UTC day or calendar month holding `now_s`.
    pub fn period_start(self, now_s: u64) -> u64 {
        match self {
            Interval::Day => now_s - now_s % 86_400,
            Interval::Month => {
                let date = date_of(now_s);
                let first = date.replace_day(1).unwrap_or(date);
                seconds_of(first)
            }
        }
    }

    /// The start of the period after the one holding `now_s`.
    pub fn next_period(self, now_s: u64) -> u64 {
        match self {
            Interval::Day => self.period_start(now_s) + 86_400,
            Interval::Month => {
                let first = date_of(self.period_start(now_s));
                let next = match first.month() {
                    time::Month::December => first
                        .replace_year(first.year() + 1)
                        .and_then(|d| d.replace_month(time::Month::January)),
                    month => first.replace_month(month.next()),
                };
                next.map(seconds_of).unwrap_or(u64::MAX)
            }
        }
    }
}

fn date_of(now_s: u64) -> Date {
    OffsetDateTime::from_unix_timestamp(i64::try_from(now_s).unwrap_or(i64::MAX))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

fn seconds_of(date: Date) -> u64 {
    u64::try_from(date.midnight().assume_utc().unix_timestamp()).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Refill {
    pub amount: u64,
    pub interval: Interval,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Credits {
    pub remaining: u64,
    pub refill: Option<Refill>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimit {
    pub limit: u64,
    pub window_seconds: u64,
}

/// A record's limits, as set and as shown (`null`: unlimited in that respect).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub credits: Option<Credits>,
    pub rate_limit: Option<RateLimit>,
}

impl Limits {
    /// Parses `{"credits": {...} | null, "rate_limit": {...} | null}`; every problem is reported
    /// under its dotted field (`credits.refill.amount`), and unknown fields are refused, since an
    /// absent limit means unlimited and a misspelt one would otherwise lift it silently.
    pub fn parse(body: &Map<String, Value>) -> Parsed<Limits> {
        let unknown = only(body, "", &["credits", "rate_limit"]);
        let credits = object(body, "credits").and_then(|credits| {
            let Some(credits) = credits else {
                return Ok(None);
            };
            let known = only(&credits, "credits.", &["remaining", "refill"]);
            let remaining = required(
                "credits.remaining",
                integer_field(&credits, "credits.remaining", 0, MAX_CREDITS),
            );
            let refill = object(&credits, "credits.refill").and_then(|refill| {
                let Some(refill) = refill else {
                    return Ok(None);
                };
                let known = only(&refill, "credits.refill.", &["amount", "interval"]);
                let amount = required(
                    "credits.refill.amount",
                    integer_field(&refill, "credits.refill.amount", 1, MAX_CREDITS),
                );
                let interval = required(
                    "credits.refill.interval",
                    string_field(&refill, "credits.refill.interval"),
                )
                .and_then(|name| {
                    Interval::from_name(&name).ok_or_else(|| {
                        FieldErrors::single(
                            "credits.refill.interval",
                            "The selected credits.refill.interval is invalid (day or month).",
                        )
                    })
                });
                let ((amount, interval), ()) = both(both(amount, interval), known)?;
                Ok(Some(Refill { amount, interval }))
            });
            let ((remaining, refill), ()) = both(both(remaining, refill), known)?;
            Ok(Some(Credits { remaining, refill }))
        });
        let rate_limit = object(body, "rate_limit").and_then(|rate| {
            let Some(rate) = rate else {
                return Ok(None);
            };
            let known = only(&rate, "rate_limit.", &["limit", "window_seconds"]);
            let limit = required(
                "rate_limit.limit",
                integer_field(&rate, "rate_limit.limit", 1, MAX_RATE),
            );
            let window = required(
                "rate_limit.window_seconds",
                integer_field(&rate, "rate_limit.window_seconds", 1, MAX_WINDOW_SECONDS),
            );
            let ((limit, window_seconds), ()) = both(both(limit, window), known)?;
            Ok(Some(RateLimit {
                limit,
                window_seconds,
            }))
        });
        let ((credits, rate_limit), ()) = both(both(credits, rate_limit), unknown)?;
        Ok(Limits {
            credits,
            rate_limit,
        })
    }

    pub fn is_unlimited(&self) -> bool {
        self.credits.is_none() && self.rate_limit.is_none()
    }
}

/// A nested object field, its keys prefixed with `field.` so that messages name them as Laravel
/// does; `None` when absent or `null`.
fn object(body: &Map<String, Value>, field: &str) -> Parsed<Option<Map<String, Value>>> {
    match present(body, field) {
        None => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(
            inner
                .iter()
                .map(|(key, value)| (format!("{field}.{key}"), value.clone()))
                .collect(),
        )),
        Some(_) => Err(FieldErrors::single(
            field,
            format!(
                "The {} field must be an object or null.",
                crate::validate::label(field)
            ),
        )),
    }
}

/// Refuses the keys of `body` other than `prefix` + one of `known`.
fn only(body: &Map<String, Value>, prefix: &str, known: &[&str]) -> Parsed<()> {
    let mut errors = FieldErrors::new();
    for key in body.keys() {
        let name = key.strip_prefix(prefix).unwrap_or(key);
        if !known.contains(&name) {
            errors.add(key, format!("The {key} field is not a usage limit."));
        }
    }
    errors.into_result()
}

/// A record's limits and where its use of them stands (credits: the stored remaining).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meter {
    pub limits: Limits,
    /// The refill period (its start, epoch seconds) the stored credits belong to: the one in
    /// which they were set or last refilled.
    pub refilled_for: u64,
    /// The rate window (its start, epoch seconds) `window_used` counts, and the units used in it.
    pub window_start: u64,
    pub window_used: u64,
    /// The credits as last set or refilled: what `credits.low` thresholds are percentages of
    /// (`None` on meters stored before it was kept).
    pub credits_full: Option<u64>,
}

/// Why a unit of use was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credits left.
    UsageExceeded,
    /// The rate window is full.
    RateLimited,
}

impl Refusal {
    /// The code verify and the authorizer's Deny give.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::UsageExceeded => "USAGE_EXCEEDED",
            Refusal::RateLimited => "RATE_LIMITED",
        }
    }
}

/// A rate window as reported: the limit, what is left of it and when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    pub reset: SecondsText,
}

/// Remaining credits as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Remaining {
    pub remaining: u64,
}

/// Where the limits of a token (and its owner) stand: the tighter of both where both apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub credits: Option<Remaining>,
    pub ratelimit: Option<Window>,
    /// Whether the next unit would be refused, and why (credits first).
    pub refusal: Option<Refusal>,
    /// Seconds until a refused unit could pass (the window's end, the next refill); `None` when
    /// only an operator can lift the refusal.
    pub retry_after: Option<u64>,
}

/// Where one meter stands at an instant, before a unit is charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Credits left now (after a refill that is due); `None`: no credit limit.
    pub credits: Option<u64>,
    /// With a refill due: the period it is for (`credits` is then its amount), which the unit's
    /// write records.
    pub refill_for: Option<u64>,
    /// The rate window now; `None`: no rate limit.
    pub window: Option<RateWindow>,
    /// Seconds until the next refill, with a refill.
    pub refill_in: Option<u64>,
}

/// The rate window a unit counts in: the stored one, or a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Its start and end (epoch seconds).
    pub start: u64,
    pub end: u64,
    pub limit: u64,
    /// Units used in it (0 in a new window).
    pub used: u64,
    /// Whether it is a new window (the stored one is earlier): the unit's write starts it.
    pub new: bool,
}

impl RateWindow {
    fn is_full(&self) -> bool {
        self.used >= self.limit
    }
}

impl Meter {
    /// The meter of a record whose limits were just set at `now`: full credits for this
    /// refill period, a new rate window.
    pub fn set(limits: Limits, now: EpochMs) -> Meter {
        let now_s = now.seconds().0;
        Meter {
            limits,
            refilled_for: limits
                .credits
                .and_then(|c| c.refill)
                .map_or(0, |refill| refill.interval.period_start(now_s)),
            window_start: 0,
            window_used: 0,
            credits_full: limits.credits.map(|credits| credits.remaining),
        }
    }

    /// Where this meter stands at `now`.
    pub fn standing(&self, now: EpochMs) -> Standing {
        let now_s = now.seconds().0;
        let mut refill_for = None;
        let mut refill_in = None;
        let credits = self.limits.credits.map(|credits| match credits.refill {
            Some(refill) => {
                let period = refill.interval.period_start(now_s);
                refill_in = Some(refill.interval.next_period(now_s) - now_s);
                if self.refilled_for < period {
                    refill_for = Some(period);
                    refill.amount
                } else {
                    credits.remaining
                }
            }
            None => credits.remaining,
        });
        let window = self.limits.rate_limit.map(|rate| {
            let start = now_s - now_s % rate.window_seconds;
            // A stored window later than this clock's (another instance's clock runs ahead) is
            // the current one: the unit counts in it, never starts an earlier one.
            let (start, used, new) = if self.window_start >= start {
                (self.window_start, self.window_used, false)
            } else {
                (start, 0, true)
            };
            RateWindow {
                start,
                end: start + rate.window_seconds,
                limit: rate.limit,
                used,
                new,
            }
        });
        Standing {
            credits,
            refill_for,
            window,
            refill_in,
        }
    }
}

impl Standing {
    /// This standing as it was just before a unit whose write left `credits` and `window_used`
    /// (the values DynamoDB returned, where the meter has them): reported with [`usage`] after
    /// one unit, each concurrent unit then tells what its own write left, never a value read
    /// before other units were counted.
    pub fn before_written(mut self, credits: Option<u64>, window_used: Option<u64>) -> Standing {
        if let (Some(left), Some(_)) = (credits, self.credits) {
            self.credits = Some(left + 1);
        }
        if let (Some(used), Some(window)) = (window_used, self.window.as_mut()) {
            window.used = used.saturating_sub(1);
        }
        self
    }

    /// Why the next unit would be refused, if it would.
    pub fn refusal(&self) -> Option<Refusal> {
        if self.credits == Some(0) {
            Some(Refusal::UsageExceeded)
        } else if self.window.is_some_and(|w| w.is_full()) {
            Some(Refusal::RateLimited)
        } else {
            None
        }
    }
}

/// The usage of a token whose meters stand as `standings` (token and owner), after `charged`
/// units (0 or 1) at `now`.
pub fn usage(standings: &[Standing], charged: u64, now: EpochMs) -> Usage {
    let now_s = now.seconds().0;
    let credits = standings
        .iter()
        .filter_map(|s| s.credits)
        .map(|left| left.saturating_sub(charged))
        .min()
        .map(|remaining| Remaining { remaining });
    let ratelimit = standings
        .iter()
        .filter_map(|s| s.window)
        .map(|w| Window {
            limit: w.limit,
            remaining: w.limit.saturating_sub(w.used + charged),
            reset: SecondsText::from(EpochSeconds(w.end)),
        })
        .min_by_key(|w| (w.remaining, w.reset.0));
    let refusal = standings
        .iter()
        .filter_map(Standing::refusal)
        .min_by_key(|r| *r != Refusal::UsageExceeded);
    let retry_after = match refusal {
        // Credits without a refill are refused until an operator adds some.
        Some(Refusal::UsageExceeded) => standings
            .iter()
            .filter(|s| s.credits == Some(0))
            .map(|s| s.refill_in)
            .collect::<Option<Vec<u64>>>()
            .and_then(|waits| waits.into_iter().max()),
        Some(Refusal::RateLimited) => standings
            .iter()
            .filter_map(|s| s.window)
            .filter(RateWindow::is_full)
            .map(|w| w.end.saturating_sub(now_s).max(1))
            .max(),
        None => None,
    };
    Usage {
        credits,
        ratelimit,
        refusal: if charged == 0 { refusal } else { None },
        retry_after: if charged == 0 { retry_after } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: u64 = 86_400;
    // 2026-11-30T15:00:00Z
    const NOW_S: u64 = 1_796_050_800;

    fn parse(body: Value) -> Parsed<Limits> {
        Limits::parse(body.as_object().unwrap())
    }

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        assert_eq!(Interval::Day.period_start(NOW_S), NOW_S - 15 * 3600);
        assert_eq!(Interval::Day.next_period(NOW_S), NOW_S - 15 * 3600 + DAY);
        // 2026-11-01T00:00:00Z and 2026-12-01T00:00:00Z
        assert_eq!(Interval::Month.period_start(NOW_S), 1_793_491_200);
        assert_eq!(Interval::Month.next_period(NOW_S), 1_796_083_200);
        // December rolls into January.
        let december = 1_796_083_200 + 10 * DAY;
        assert_eq!(Interval::Month.next_period(december), 1_798_761_600);
    }

    #[test]
    fn limits_parse_or_name_every_problem() {
        let limits = parse(json!({
            "credits": {"remaining": 5, "refill": {"amount": 10, "interval": "month"}},
            "rate_limit": {"limit": 2, "window_seconds": 60}
        }))
        .unwrap();
        assert_eq!(
            limits.credits.unwrap().refill.unwrap().interval,
            Interval::Month
        );
        assert_eq!(parse(json!({})).unwrap(), Limits::default());
        assert_eq!(
            parse(json!({"credits": null, "rate_limit": null})).unwrap(),
            Limits::default()
        );
        let errors = parse(json!({
            "credits": {"remaining": -1, "refill": {"amount": 0, "interval": "week"}},
            "rate_limit": {"limit": "x"},
            "credit": 3
        }))
        .unwrap_err();
        let errors = serde_json::to_value(errors).unwrap();
        for field in [
            "credits.remaining",
            "credits.refill.amount",
            "credits.refill.interval",
            "rate_limit.limit",
            "rate_limit.window_seconds",
            "credit",
        ] {
            assert!(errors.get(field).is_some(), "{field}: {errors}");
        }
        assert!(parse(json!({"credits": 5})).is_err());
    }

    #[test]
    fn a_refill_is_due_once_per_period_and_windows_align_to_the_epoch() {
        let limits = Limits {
            credits: Some(Credits {
                remaining: 0,
                refill: Some(Refill {
                    amount: 7,
                    interval: Interval::Day,
                }),
            }),
            rate_limit: Some(RateLimit {
                limit: 3,
                window_seconds: 60,
            }),
        };
        let meter = Meter::set(limits, EpochMs(NOW_S * 1000));
        let now = meter.standing(EpochMs(NOW_S * 1000 + 500));
        assert_eq!(now.credits, Some(0));
        assert_eq!(now.refusal(), Some(Refusal::UsageExceeded));
        let tomorrow = meter.standing(EpochMs((NOW_S + DAY) * 1000));
        assert_eq!(tomorrow.credits, Some(7));
        assert_eq!(tomorrow.refill_for, Some(NOW_S - 15 * 3600 + DAY));
        let window = |start, used, new| RateWindow {
            start,
            end: start + 60,
            limit: 3,
            used,
            new,
        };
        assert_eq!(tomorrow.window, Some(window(NOW_S + DAY, 0, true)));
        let usage = usage(&[now], 0, EpochMs(NOW_S * 1000));
        assert_eq!(usage.retry_after, Some(9 * 3600));
    }

    #[test]
    fn a_clock_behind_the_stored_window_counts_in_it() {
        let limits = Limits {
            credits: None,
            rate_limit: Some(RateLimit {
                limit: 3,
                window_seconds: 60,
            }),
        };
        let window = NOW_S - NOW_S % 60;
        let meter = Meter {
            limits,
            window_start: window,
            window_used: 2,
            ..Meter::default()
        };
        // One second behind, in the previous window: still the stored one.
        let rate = |start, used, new| RateWindow {
            start,
            end: start + 60,
            limit: 3,
            used,
            new,
        };
        let behind = meter.standing(EpochMs((window - 1) * 1000));
        assert_eq!(behind.window, Some(rate(window, 2, false)));
        let next = meter.standing(EpochMs((window + 60) * 1000));
        assert_eq!(next.window, Some(rate(window + 60, 0, true)));
    }
}
