//! Job schedules: ordinary five-field crontab expressions (`30 2 * * 1-5`,
//! `@daily`, ...) read in the job's time zone, and the question `ferry
//! run-due` asks every minute: did this job's schedule fire since it last ran?
//!
//! The `cron` crate walks the calendar, but it wants a seconds field,
//! numbers Sunday as 1 and ANDs day-of-month with day-of-week. So each field
//! is parsed here, as crontab(5) defines it, into the set of values it
//! allows, and handed to the crate as explicit lists; when both day fields
//! are restricted the schedule is the union of two crate schedules (crontab's
//! "either day matches").
//!
//! Firing times are found in local wall-clock time and then placed on the
//! real time line the way cron(8) does across daylight-saving changes: a
//! time that does not exist (the skipped hour) fires once, at the moment the
//! clocks jump; a time that exists twice (the repeated hour) fires once, the
//! first time, for a job at a fixed time. A job with `*` in its minute or
//! hour field (every 15 minutes, `@hourly`) follows the clock on the wall
//! and so fires in both copies of the repeated hour, as cron(8) does.
//!
//! This module knows nothing of stores or runs; `commands::run_due` asks it.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    /// The union of these fires (one, or two when both day fields are set).
    parts: Vec<cron::Schedule>,
    /// No `*` in the minute or hour field: a repeated hour fires once.
    fixed_time: bool,
}

const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTHS: [&str; 12] =
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
/// The cron crate's day names, Sunday first.
const CRATE_DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// The largest gap between a wall-clock time and UTC anywhere (+14h), with
/// room to spare: firing times are searched this far around the target.
const MAX_OFFSET_HOURS: i64 = 15;

impl Schedule {
    /// Read a crontab expression: five fields (minute, hour, day of month,
    /// month, day of week) or a macro such as `@daily`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let source = text.trim().to_string();
        let expanded = if source.starts_with('@') {
            let lower = source.to_ascii_lowercase();
            match MACROS.iter().find(|(m, _)| *m == lower) {
                Some((_, e)) => e.to_string(),
                None => {
                    return Err(format!(
                        "{source:?} is not a schedule ferry knows; use five crontab fields or one of \
                         @yearly, @monthly, @weekly, @daily, @hourly"
                    ));
                }
            }
        } else {
            source.clone()
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{source:?} has {} field(s); a crontab schedule has five: minute hour day-of-month month \
                 day-of-week (e.g. \"30 2 * * 1-5\")",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        // 7 is Sunday too, as in crontab.
        let weekdays: BTreeSet<u32> =
            field(fields[4], "day of week", 0, 7, &DAYS)?.into_iter().map(|d| d % 7).collect();

        let list = |set: &BTreeSet<u32>, min: u32, max: u32| -> String {
            if set.len() as u32 == max - min + 1 {
                "*".to_string()
            } else {
                set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let day_names = |set: &BTreeSet<u32>| -> String {
            if set.len() == 7 {
                "*".to_string()
            } else {
                set.iter().map(|&d| CRATE_DAYS[d as usize]).collect::<Vec<_>>().join(",")
            }
        };
        let (min, hour, month) = (list(&minutes, 0, 59), list(&hours, 0, 23), list(&months, 1, 12));
        let build = |dom: &str, dow: &str| -> Result<cron::Schedule, String> {
            let expr = format!("0 {min} {hour} {dom} {month} {dow}");
            cron::Schedule::from_str(&expr).map_err(|e| format!("{source:?}: {e}"))
        };
        // crontab(5): a day field is restricted unless it starts with '*';
        // when both are restricted, either one matching is enough.
        let dom_restricted = !fields[2].starts_with('*');
        let dow_restricted = !fields[4].starts_with('*');
        let parts = if dom_restricted && dow_restricted {
            vec![build(&list(&days, 1, 31), "*")?, build("*", &day_names(&weekdays))?]
        } else if dow_restricted {
            vec![build("*", &day_names(&weekdays))?]
        } else {
            vec![build(&list(&days, 1, 31), &day_names(&weekdays))?]
        };
        let fixed_time = !fields[0].contains('*') && !fields[1].contains('*');
        Ok(Schedule { source, parts, fixed_time })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first time strictly after `after` that this schedule fires in
    /// time zone `tz`, or None if it never fires again (Feb 30).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz).naive_local();
        // Start early enough that a skipped or repeated wall-clock time just
        // before `after` is still seen.
        let start = local - Duration::hours(3);
        let mut best: Option<DateTime<Utc>> = None;
        for part in &self.parts {
            // The crate walks wall-clock time; UTC stands in for "no zone".
            for naive in part.after(&Utc.from_utc_datetime(&start)).take(200_000).map(|t| t.naive_utc()) {
                // Every later wall-clock time lands later than `best`.
                if best.is_some_and(|b| naive - Duration::hours(MAX_OFFSET_HOURS) > b.naive_utc()) {
                    break;
                }
                for t in self.instants(naive, tz) {
                    if t > after && best.is_none_or(|b| t < b) {
                        best = Some(t);
                    }
                }
            }
        }
        best
    }

    /// The real instants a wall-clock firing time stands for.
    fn instants(&self, naive: NaiveDateTime, tz: Tz) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (first, second) = if a <= b { (a, b) } else { (b, a) };
                if self.fixed_time { vec![first] } else { vec![first, second] }
            }
            // Skipped by the clocks: fire when they jump, the first wall-clock
            // minute that exists after it.
            LocalResult::None => (1..=24 * 60)
                .map(|m| naive + Duration::minutes(m))
                .find_map(|n| tz.from_local_datetime(&n).earliest())
                .map(|t| t.with_timezone(&Utc))
                .into_iter()
                .collect(),
        }
    }

    /// Whether the schedule fired in (`since`, `now`]: the first firing
    /// missed and how many there were (counted up to 1,000).
    pub fn due(&self, since: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> Option<Due> {
        let first = self.next_after(since, tz).filter(|t| *t <= now)?;
        let mut missed = 1;
        let mut t = first;
        while missed < 1_000 {
            match self.next_after(t, tz) {
                Some(n) if n <= now => {
                    missed += 1;
                    t = n;
                }
                _ => break,
            }
        }
        Some(Due { first, last: t, missed })
    }
}

/// A schedule that fired since the job last ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Firings in the window (1 when on time; capped at 1,000).
    pub missed: u32,
}

/// One crontab field as the set of values it allows: `*`, `N`, `A-B`,
/// `*/S`, `A-B/S`, `A/S` (A to the maximum), names where the field has
/// them, and comma lists of these.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<BTreeSet<u32>, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Month names count from 1, day names from 0 (Sunday).
            return Ok(i as u32 + min);
        }
        let n: u32 =
            s.parse().map_err(|_| format!("{what} field: {s:?} is not a number from {min} to {max}"))?;
        if n < min || n > max {
            return Err(format!("{what} field: {n} is out of range ({min}-{max})"));
        }
        Ok(n)
    };
    let mut out = BTreeSet::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{what} field {text:?}: empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what} field: step {s:?} must be a whole number above 0"))?;
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what} field: range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // "5/15" means 5, 20, 35, 50 (as in cronie); a bare "5" is just 5.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1);
        out.extend((lo..=hi).step_by(step as usize));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> Tz {
        "America/New_York".parse().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, after: &str, tz: Tz) -> String {
        Schedule::parse(expr)
            .unwrap()
            .next_after(at(after), tz)
            .map(|t| t.with_timezone(&tz).to_rfc3339())
            .unwrap_or_default()
    }

    #[test]
    fn five_fields_and_macros() {
        // Monday to Friday at 02:30: Friday evening -> Monday.
        assert_eq!(next("30 2 * * 1-5", "2026-06-05T20:00:00-04:00", ny()), "2026-06-08T02:30:00-04:00");
        // Sunday is 0 and 7, and has a name.
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * sun", "0 9 * * SUN"] {
            assert_eq!(
                next(sunday, "2026-06-01T00:00:00Z", Tz::UTC),
                "2026-06-07T09:00:00+00:00",
                "{sunday}"
            );
        }
        // Friday to Sunday across the week's end.
        assert_eq!(next("0 9 * * 5-7", "2026-06-06T10:00:00Z", Tz::UTC), "2026-06-07T09:00:00+00:00");
        assert_eq!(next("@daily", "2026-06-01T00:00:00Z", Tz::UTC), "2026-06-02T00:00:00+00:00");
        assert_eq!(next("@hourly", "2026-06-01T00:10:00Z", Tz::UTC), "2026-06-01T01:00:00+00:00");
        assert_eq!(next("@weekly", "2026-06-01T00:00:00Z", Tz::UTC), "2026-06-07T00:00:00+00:00");
        assert_eq!(next("*/15 * * * *", "2026-06-01T00:10:00Z", Tz::UTC), "2026-06-01T00:15:00+00:00");
        assert_eq!(next("0 0 1 jan *", "2026-06-01T00:00:00Z", Tz::UTC), "2027-01-01T00:00:00+00:00");
        assert_eq!(next("5/20 * * * *", "2026-06-01T00:26:00Z", Tz::UTC), "2026-06-01T00:45:00+00:00");
    }

    #[test]
    fn either_day_field_matches_when_both_are_set() {
        // The 1st of the month or any Monday (crontab's OR), from Tue 2 June.
        assert_eq!(next("0 6 1 * 1", "2026-06-02T00:00:00Z", Tz::UTC), "2026-06-08T06:00:00+00:00");
        assert_eq!(next("0 6 1 * 1", "2026-06-29T07:00:00Z", Tz::UTC), "2026-07-01T06:00:00+00:00");
        // A day field that starts with '*' (a step) makes it AND, as in cron(8):
        // the 13th that is a Sunday.
        assert_eq!(next("0 6 13 * */7", "2026-06-02T00:00:00Z", Tz::UTC), "2026-09-13T06:00:00+00:00");
    }

    #[test]
    fn bad_schedules_say_why() {
        for (bad, says) in [
            ("30 2 * *", "has 4 field(s)"),
            ("0 30 2 * * 1", "has 6 field(s)"),
            ("60 2 * * *", "out of range"),
            ("x 2 * * *", "not a number"),
            ("0 2 * * 8", "out of range"),
            ("0 5-2 * * *", "runs backwards"),
            ("*/0 * * * *", "step"),
            ("@reboot", "not a schedule"),
            ("0 2 L * *", "not a number"),
        ] {
            let err = Schedule::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn skipped_hour_fires_once_when_the_clocks_jump() {
        // New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT.
        let s = Schedule::parse("30 2 * * *").unwrap();
        let first = s.next_after(at("2026-03-07T12:00:00-05:00"), ny()).unwrap();
        assert_eq!(first, at("2026-03-08T03:00:00-04:00"));
        // Then the next day as usual: once, not again at 03:30.
        assert_eq!(s.next_after(first, ny()).unwrap(), at("2026-03-09T02:30:00-04:00"));
        let due = s.due(at("2026-03-07T12:00:00-05:00"), at("2026-03-08T04:00:00-04:00"), ny()).unwrap();
        assert_eq!(due.missed, 1);
    }

    #[test]
    fn repeated_hour_fires_once_for_a_fixed_time() {
        // New York falls back on 2026-11-01: 01:00-02:00 happens twice.
        let s = Schedule::parse("30 1 * * *").unwrap();
        let first = s.next_after(at("2026-10-31T12:00:00-04:00"), ny()).unwrap();
        assert_eq!(first, at("2026-11-01T01:30:00-04:00"));
        assert_eq!(s.next_after(first, ny()).unwrap(), at("2026-11-02T01:30:00-05:00"));
        assert!(s.due(first, at("2026-11-01T01:45:00-05:00"), ny()).is_none());
    }

    #[test]
    fn wildcard_jobs_follow_the_wall_clock_through_the_repeated_hour() {
        let s = Schedule::parse("30 * * * *").unwrap();
        let a = s.next_after(at("2026-11-01T01:00:00-04:00"), ny()).unwrap();
        assert_eq!(a, at("2026-11-01T01:30:00-04:00"));
        assert_eq!(s.next_after(a, ny()).unwrap(), at("2026-11-01T01:30:00-05:00"));
    }

    #[test]
    fn catch_up_counts_missed_firings_but_is_one_due() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let due = s.due(at("2026-06-01T00:10:00Z"), at("2026-06-01T05:20:00Z"), Tz::UTC).unwrap();
        assert_eq!(due.first, at("2026-06-01T01:00:00Z"));
        assert_eq!(due.last, at("2026-06-01T05:00:00Z"));
        assert_eq!(due.missed, 5);
        assert!(s.due(at("2026-06-01T05:20:00Z"), at("2026-06-01T05:59:59Z"), Tz::UTC).is_none());
    }
}
