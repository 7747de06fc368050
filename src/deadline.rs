//! One time budget for a Cognito call: the cold start and the invocation together.
//!
//! Cognito gives the trigger 5 s, counted from its side, and a cold start spends part of them
//! before the invocation begins (Lambda's own deadline does not count the init). So the first
//! invocation of an execution environment, when it was waiting while the environment started,
//! must end by the start of the init plus what is left of Cognito's limit; every invocation ends
//! by Lambda's deadline. Both less `DEADLINE_MARGIN_MS`, kept to report the error. The README's
//! "Time budget" table adds these up.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Cognito's fixed limit for a trigger.
pub const COGNITO_LIMIT: Duration = Duration::from_millis(5000);
/// Kept for what happens before this process runs (Lambda creating the execution environment)
/// and for the network between Cognito and Lambda.
pub const PLATFORM_ALLOWANCE: Duration = Duration::from_millis(500);
/// An invocation that arrives this soon after the init ended was waiting for it: it belongs to
/// the Cognito call that caused the cold start. (One that arrives later followed a proactive
/// initialisation, and has Lambda's whole deadline.)
pub const QUEUED_GAP: Duration = Duration::from_millis(250);
/// With no usable Lambda deadline (local tools), only the configured caps bound an invocation.
const NO_DEADLINE: Duration = Duration::from_secs(60);
/// Lambda's deadline is milliseconds since the Unix epoch; anything before 2001-09-09 is not one.
/// (`cargo lambda watch` 1.9 sends its timeout, `600000`, instead; other tools send 0.)
const EARLIEST_PLAUSIBLE_DEADLINE_MS: u64 = 1_000_000_000_000;

/// When the cold start ran.
#[derive(Clone, Copy, Debug)]
pub struct ColdStart {
    pub began: Instant,
    pub ended: Instant,
}

/// The instant by which this invocation must have answered. `cold` is the cold start, for the
/// first invocation of the execution environment only.
pub fn invocation_deadline(
    lambda_deadline_ms: u64,
    margin: Duration,
    cold: Option<ColdStart>,
) -> Instant {
    deadline_at(
        Instant::now(),
        epoch_ms(SystemTime::now()),
        lambda_deadline_ms,
        margin,
        cold,
    )
}

/// `at` in milliseconds since the Unix epoch, as Lambda's deadline, EMF's `Timestamp` and a
/// parked message's `parked_at_ms` count time (0 for a clock before 1970).
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn deadline_at(
    now: Instant,
    epoch_ms: u64,
    lambda_deadline_ms: u64,
    margin: Duration,
    cold: Option<ColdStart>,
) -> Instant {
    let mut end = if lambda_deadline_ms < EARLIEST_PLAUSIBLE_DEADLINE_MS {
        now + NO_DEADLINE
    } else {
        now + Duration::from_millis(lambda_deadline_ms.saturating_sub(epoch_ms))
    };
    if let Some(cold) = cold.filter(|c| now.saturating_duration_since(c.ended) <= QUEUED_GAP) {
        end = end.min(cold.began + (COGNITO_LIMIT - PLATFORM_ALLOWANCE));
    }
    end.checked_sub(margin).unwrap_or(now).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_millis(200);
    const EPOCH: u64 = 1_800_000_000_000;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_warm_invocation_ends_at_lambdas_deadline_less_the_margin() {
        let now = Instant::now();
        assert_eq!(
            deadline_at(now, EPOCH, EPOCH + 4000, MARGIN, None),
            now + ms(3800)
        );
    }

    #[test]
    fn the_first_invocation_shares_cognitos_limit_with_the_cold_start() {
        let now = Instant::now();
        // The init took 1.5 s and the invocation was waiting for it.
        let cold = ColdStart {
            began: now - ms(1500),
            ended: now - ms(10),
        };
        let end = deadline_at(now, EPOCH, EPOCH + 4000, MARGIN, Some(cold));
        // 5000 - 500 (platform) - 200 (margin) from the init's start, not 4000 - 200 from now.
        assert_eq!(end, cold.began + ms(4300));
        assert_eq!(end, now + ms(2800));
    }

    #[test]
    fn after_a_proactive_init_the_first_invocation_has_lambdas_whole_deadline() {
        let now = Instant::now();
        let cold = ColdStart {
            began: now - ms(60_000),
            ended: now - ms(59_000),
        };
        assert_eq!(
            deadline_at(now, EPOCH, EPOCH + 4000, MARGIN, Some(cold)),
            now + ms(3800)
        );
    }

    #[test]
    fn missing_relative_or_past_deadlines_are_handled() {
        let now = Instant::now();
        // cargo lambda watch sends its timeout in place of a deadline; other tools send 0.
        for implausible in [0, 600_000] {
            assert_eq!(
                deadline_at(now, EPOCH, implausible, MARGIN, None),
                now + NO_DEADLINE - MARGIN
            );
        }
        assert_eq!(deadline_at(now, EPOCH, EPOCH - 1000, MARGIN, None), now);
        assert_eq!(deadline_at(now, EPOCH, EPOCH + 100, MARGIN, None), now);
    }
}
