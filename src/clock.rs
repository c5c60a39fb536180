//! The time ferry believes it is, and the test hooks that go with it.
//!
//! Schedules, run stamps and the store's timestamps all read [`now`]. In a
//! debug build (the one `cargo test` runs) `FERRY_NOW` (RFC 3339, such as
//! `2026-03-08T03:00:30-04:00`) fixes that time, so tests can prove catch-up
//! and daylight-saving behaviour without waiting for the calendar. A release
//! build ignores it: production always runs on the real clock.

use chrono::{DateTime, Utc};

/// Now, in UTC.
pub fn now() -> DateTime<Utc> {
    #[cfg(debug_assertions)]
    if let Some(t) = std::env::var("FERRY_NOW").ok().and_then(|v| DateTime::parse_from_rfc3339(&v).ok()) {
        return t.with_timezone(&Utc);
    }
    Utc::now()
}

/// Test hook (debug builds only): with `FERRY_PAUSE=POINT:MILLIS` the
/// process sleeps that long when it passes POINT, so a test can hold a job's
/// lock open while a second process tries to take it.
pub fn pause(point: &str) {
    #[cfg(debug_assertions)]
    if let Some((p, ms)) = std::env::var("FERRY_PAUSE").ok().as_deref().and_then(|v| v.split_once(':'))
        && p == point
        && let Ok(ms) = ms.parse::<u64>()
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}
