//! The time a request has left.
//!
//! Lambda stops a function at its timeout whatever it is doing, and API Gateway then answers an
//! opaque 502, possibly after a write landed. So each invocation runs inside [`within`] its
//! deadline (from the Lambda context), and the store cuts every DynamoDB call off, and retries
//! no more, when what is left would not let it answer in time: the client gets the route's 503
//! instead.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Kept back from the deadline to build and send the answer after the last database call.
pub const RESPONSE_MARGIN: Duration = Duration::from_millis(300);

/// The request ran out of time before the store could finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the request's deadline passed before DynamoDB answered")]
pub struct DeadlineExceeded;

/// Runs `future` as a request that must answer by `deadline` (`None`: no deadline, as in
/// `tokenctl`).
pub async fn within<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, future).await,
        None => future.await,
    }
}

/// The instant of a Lambda context's deadline (wall-clock time). `None` for one already past as
/// the invocation starts, which no real invocation has: some emulators send their timeout
/// there instead of a time (cargo-lambda's sends 600000, i.e. 1970), and a request must not be
/// failed for it.
pub fn instant_of(deadline: SystemTime) -> Option<Instant> {
    let left = deadline.duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left)
}

/// What is left for database calls (the deadline less [`RESPONSE_MARGIN`]); `None` without a
/// deadline.
pub fn time_left() -> Option<Duration> {
    DEADLINE
        .try_with(|deadline| {
            deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(RESPONSE_MARGIN)
        })
        .ok()
}

/// Whether another attempt that may take `attempt` still fits.
pub fn allows(attempt: Duration) -> bool {
    time_left().is_none_or(|left| left >= attempt)
}

/// `future`, or [`DeadlineExceeded`] when the request's time runs out first.
pub async fn bounded<F: Future>(future: F) -> Result<F::Output, DeadlineExceeded> {
    match time_left() {
        None => Ok(future.await),
        Some(left) if left.is_zero() => Err(DeadlineExceeded),
        Some(left) => tokio::time::timeout(left, future)
            .await
            .map_err(|_| DeadlineExceeded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_already_past_are_no_deadlines() {
        assert!(instant_of(SystemTime::UNIX_EPOCH + Duration::from_millis(600_000)).is_none());
        let soon = instant_of(SystemTime::now() + Duration::from_secs(10)).unwrap();
        assert!(soon > Instant::now() + Duration::from_secs(9));
    }

    #[tokio::test]
    async fn calls_are_cut_off_at_the_deadline_less_the_margin() {
        assert_eq!(time_left(), None);
        assert!(allows(Duration::from_secs(3600)));
        let deadline = Instant::now() + RESPONSE_MARGIN + Duration::from_millis(200);
        let slow = within(Some(deadline), async {
            assert!(!allows(Duration::from_secs(1)));
            assert!(allows(Duration::from_millis(10)));
            bounded(tokio::time::sleep(Duration::from_secs(30))).await
        });
        let started = Instant::now();
        assert_eq!(slow.await, Err(DeadlineExceeded));
        assert!(started.elapsed() < Duration::from_secs(30));
        let past = within(Some(Instant::now()), bounded(async { 1 })).await;
        assert_eq!(past, Err(DeadlineExceeded));
        assert_eq!(within(None, bounded(async { 1 })).await, Ok(1));
    }
}
