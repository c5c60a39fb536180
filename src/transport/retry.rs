//! Retrying one transport operation: exponential backoff with full jitter,
//! temporary errors only. A refused login, an untrusted server, a missing
//! file or a hostile name fails at once.

use std::time::Duration;

use rand::Rng;
use tracing::warn;

use super::{Limits, TransportError};

/// Run `op` until it succeeds, fails for good, or the retries in `limits`
/// are spent. `what` names the operation in log lines ("list", "fetch
/// ADT.hl7"); the last error is returned as it was, with the attempt count
/// added to its text.
pub fn retry<T>(
    limits: &Limits,
    what: &str,
    mut op: impl FnMut() -> Result<T, TransportError>,
) -> Result<T, TransportError> {
    let mut attempt = 0u32;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_temporary() && attempt < limits.retries => {
                let wait = backoff(limits, attempt);
                attempt += 1;
                warn!(
                    operation = what,
                    attempt,
                    of = limits.retries,
                    wait_ms = wait.as_millis() as u64,
                    error = %e,
                    "Transport operation failed; retrying."
                );
                std::thread::sleep(wait);
            }
            Err(TransportError::Temporary { what: w, cause: source }) if attempt > 0 => {
                return Err(TransportError::Temporary {
                    what: format!("{w} (gave up after {} attempts)", attempt + 1),
                    cause: source,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Full jitter: a random wait between half and all of `retry_wait * 2^attempt`,
/// capped, so that many jobs cut off by one outage do not come back in step.
fn backoff(limits: &Limits, attempt: u32) -> Duration {
    let base = limits.retry_wait.saturating_mul(1u32 << attempt.min(16)).min(Limits::MAX_WAIT);
    let ms = base.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn limits(retries: u32) -> Limits {
        Limits { retries, retry_wait: Duration::from_millis(1), ..Limits::remote_default() }
    }

    #[test]
    fn temporary_errors_are_retried_until_spent() {
        let calls = Cell::new(0);
        let r: Result<(), _> = retry(&limits(3), "list", || {
            calls.set(calls.get() + 1);
            Err(TransportError::temporary("sftp host", "connection reset"))
        });
        assert_eq!(calls.get(), 4, "the first try and three retries");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("gave up after 4 attempts"), "{msg}");
    }

    #[test]
    fn success_after_a_failure() {
        let calls = Cell::new(0);
        let r = retry(&limits(3), "list", || {
            calls.set(calls.get() + 1);
            if calls.get() < 2 { Err(TransportError::temporary("h", "timeout")) } else { Ok(7) }
        });
        assert_eq!(r.unwrap(), 7);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn auth_and_trust_failures_are_not_retried() {
        for err in [
            || TransportError::Auth { what: "h".into(), why: "wrong password".into() },
            || TransportError::Untrusted { what: "h".into(), why: "host key changed".into() },
            || TransportError::NotFound { what: "h".into() },
        ] {
            let calls = Cell::new(0);
            let r: Result<(), _> = retry(&limits(5), "list", || {
                calls.set(calls.get() + 1);
                Err(err())
            });
            assert!(r.is_err());
            assert_eq!(calls.get(), 1);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let l = Limits { retry_wait: Duration::from_secs(2), ..Limits::remote_default() };
        for attempt in 0..5 {
            let full = Duration::from_secs(2 << attempt);
            let w = backoff(&l, attempt);
            assert!(w >= full / 2 && w <= full, "attempt {attempt}: {w:?}");
        }
        assert!(backoff(&l, 30) <= Limits::MAX_WAIT);
    }
}
