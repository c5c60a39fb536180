//! Schedules and `ferry run-due`, on a clock the tests set (`FERRY_NOW`,
//! honoured by debug builds only): a new job waits for its first firing,
//! missed firings run once, two run-dues never run one job twice, a crashed
//! run never leaves a job stuck, New York's daylight-saving changes behave
//! as cron(8) does, one failing job does not stop the others.

use std::fs::File;
use std::process::{Command, Stdio};

use crate::util::{Dir, assert_exit, demo_job, stderr, stdout};

fn scheduled(schedule: &str) -> Dir {
    let d = Dir::with_project();
    d.write("jobs/demo.toml", demo_job(&format!("schedule = \"{schedule}\""), ""));
    d
}

fn run_due(d: &Dir, now: &str) -> std::process::Output {
    let out = d.ferry_env(&["-v", "run-due"], &[("FERRY_NOW", now)]);
    assert!(out.status.code().is_some(), "run-due died: {}", stderr(&out));
    out
}

/// `ferry history demo --json`, oldest first.
fn runs(d: &Dir) -> Vec<serde_json::Value> {
    let out = d.ferry(&["history", "demo", "--json", "--limit", "100"]);
    assert_exit(&out, 0);
    let mut v: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    v.reverse();
    v
}

fn status_line(d: &Dir, now: &str) -> String {
    let out = d.ferry_env(&["status"], &[("FERRY_NOW", now)]);
    assert_exit(&out, 0);
    stdout(&out).lines().find(|l| l.starts_with("demo ")).unwrap_or_default().to_string()
}

#[test]
fn a_new_job_waits_for_its_first_firing_then_missed_firings_run_once() {
    let d = scheduled("0 * * * *");
    let out = run_due(&d, "2026-06-01T00:10:00-04:00");
    assert_exit(&out, 0);
    assert_eq!(runs(&d).len(), 0, "a job run-due has just met waits for its schedule");
    assert!(status_line(&d, "2026-06-01T00:10:00-04:00").contains("2026-06-01 01:00 EDT"));

    // Five hourly firings missed (the machine was off): one run.
    let out = run_due(&d, "2026-06-01T05:20:00-04:00");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("missed=5"), "{}", stderr(&out));
    let r = runs(&d);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["outcome"], "ok");
    assert!(r[0]["started_at"].as_str().unwrap().starts_with("2026-06-01T09:20:00"), "{:?}", r[0]);

    // Every minute after that: nothing until the next firing.
    for now in ["2026-06-01T05:21:00-04:00", "2026-06-01T05:59:59-04:00"] {
        assert_exit(&run_due(&d, now), 0);
    }
    assert_eq!(runs(&d).len(), 1);
    let line = status_line(&d, "2026-06-01T05:30:00-04:00");
    assert!(line.contains(" ok ") && line.contains("2026-06-01 06:00 EDT"), "{line}");
    assert!(status_line(&d, "2026-06-01T06:05:00-04:00").contains("now (due since 2026-06-01 06:00 EDT)"));
    assert_exit(&run_due(&d, "2026-06-01T06:00:30-04:00"), 0);
    assert_eq!(runs(&d).len(), 2);
}

#[test]
fn spring_forward_the_skipped_time_runs_once_when_the_clocks_jump() {
    // New York, 2026-03-08: 02:00 EST is followed by 03:00 EDT.
    let d = scheduled("30 2 * * *");
    assert_exit(&run_due(&d, "2026-03-07T12:00:00-05:00"), 0);
    assert!(status_line(&d, "2026-03-07T12:00:00-05:00").contains("2026-03-08 03:00 EDT"));
    assert_exit(&run_due(&d, "2026-03-08T01:59:00-05:00"), 0);
    assert_eq!(runs(&d).len(), 0);
    assert_exit(&run_due(&d, "2026-03-08T03:00:30-04:00"), 0);
    assert_eq!(runs(&d).len(), 1, "02:30 does not exist that day: the job runs at 03:00");
    for now in ["2026-03-08T03:30:30-04:00", "2026-03-08T12:00:00-04:00"] {
        assert_exit(&run_due(&d, now), 0);
    }
    assert_eq!(runs(&d).len(), 1, "and only once");
    assert!(status_line(&d, "2026-03-08T12:00:00-04:00").contains("2026-03-09 02:30 EDT"));
    assert_exit(&run_due(&d, "2026-03-09T02:30:10-04:00"), 0);
    assert_eq!(runs(&d).len(), 2);
}

#[test]
fn fall_back_the_repeated_time_runs_once() {
    // New York, 2026-11-01: 01:00-02:00 happens twice (EDT, then EST).
    let d = scheduled("30 1 * * *");
    assert_exit(&run_due(&d, "2026-10-31T12:00:00-04:00"), 0);
    assert_exit(&run_due(&d, "2026-11-01T01:30:30-04:00"), 0);
    assert_eq!(runs(&d).len(), 1);
    // The same wall-clock time an hour later: not again.
    assert_exit(&run_due(&d, "2026-11-01T01:30:30-05:00"), 0);
    assert_exit(&run_due(&d, "2026-11-01T01:59:00-05:00"), 0);
    assert_eq!(runs(&d).len(), 1, "01:30 came twice, the job ran once");
    assert!(status_line(&d, "2026-11-01T03:00:00-05:00").contains("2026-11-02 01:30 EST"));
    assert_exit(&run_due(&d, "2026-11-02T01:30:30-05:00"), 0);
    assert_eq!(runs(&d).len(), 2);
}

#[test]
fn two_run_dues_at_once_run_the_job_once() {
    let d = scheduled("*/5 * * * *");
    assert_exit(&run_due(&d, "2026-06-01T00:01:00-04:00"), 0);

    // A run that holds the lock (here: the test) keeps run-due off the job,
    // quietly, and `ferry run` says why it cannot start.
    std::fs::create_dir_all(d.home().join("locks")).unwrap();
    let held = File::create(d.home().join("locks/demo.lock")).unwrap();
    held.try_lock().unwrap();
    let out = run_due(&d, "2026-06-01T00:06:00-04:00");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("Still running"), "{}", stderr(&out));
    let out = d.ferry(&["run", "demo"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    drop(held);
    assert_eq!(runs(&d).len(), 0);

    // Two run-dues started together; the first holds the lock for 4 s.
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["-v", "run-due"])
            .current_dir(d.path(""))
            .env("FERRY_HOME", d.home())
            .env("FERRY_NOW", "2026-06-01T00:06:00-04:00")
            .env("FERRY_PAUSE", "locked:4000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_exit(&a, 0);
    assert_exit(&b, 0);
    assert_eq!(runs(&d).len(), 1, "one run\nA: {}\nB: {}", stderr(&a), stderr(&b));
    let skipped = [&a, &b].iter().filter(|o| stderr(o).contains("Still running")).count();
    assert_eq!(skipped, 1, "A: {}\nB: {}", stderr(&a), stderr(&b));
}

#[test]
fn a_crashed_run_does_not_leave_the_job_stuck() {
    let d = scheduled("0 2 * * *");
    assert_exit(&run_due(&d, "2026-06-01T00:00:00-04:00"), 0);
    // Killed right after the run started (as kill -9 or a power cut would).
    let out = d.ferry_env(
        &["run-due"],
        &[("FERRY_NOW", "2026-06-01T02:00:10-04:00"), ("FERRY_FAILPOINT", "run_started:1")],
    );
    assert_eq!(out.status.code(), None, "the failpoint aborts: {}", stderr(&out));
    // Before any other run: the store still says running, but nobody holds
    // the lock, so status and history say what happened.
    assert!(status_line(&d, "2026-06-01T02:00:30-04:00").contains(" abandoned "));
    assert_eq!(runs(&d)[0]["outcome"], "abandoned");
    // The OS dropped the lock; the crashed run does not count as done.
    assert_exit(&run_due(&d, "2026-06-01T02:01:00-04:00"), 0);
    let r = runs(&d);
    assert_eq!(r.len(), 2);
    assert_eq!((r[0]["outcome"].as_str(), r[1]["outcome"].as_str()), (Some("abandoned"), Some("ok")));
    assert_exit(&run_due(&d, "2026-06-01T02:02:00-04:00"), 0);
    assert_eq!(runs(&d).len(), 2);
}

#[test]
fn a_run_under_way_is_shown_running() {
    let d = scheduled("0 2 * * *");
    assert_exit(&run_due(&d, "2026-06-01T00:00:00-04:00"), 0);
    let mut run = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run-due"])
        .current_dir(d.path(""))
        .env("FERRY_HOME", d.home())
        .env("FERRY_NOW", "2026-06-01T02:00:10-04:00")
        .env("FERRY_PAUSE", "run_started:3000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while runs(&d).is_empty() {
        assert!(started.elapsed().as_secs() < 20, "the run never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(runs(&d)[0]["outcome"], "running");
    assert!(status_line(&d, "2026-06-01T02:00:10-04:00").contains(" running "));
    assert!(run.wait().unwrap().success());
    assert_eq!(runs(&d)[0]["outcome"], "ok");
}

#[test]
fn one_failing_job_does_not_stop_the_others() {
    let d = scheduled("0 2 * * *");
    // `bad` sorts first and fails: its only file cannot be read at all.
    d.fixture("ehr_bad_header.csv", "bad-inbox/ehr_patients_bad.csv");
    d.write(
        "jobs/bad.toml",
        "schedule = \"0 2 * * *\"\ntime_zone = \"America/New_York\"\n[source]\ntype = \"local\"\ninbox = \"../bad-inbox\"\nmin_age = \"0\"\n\
         after = \"keep\"\n[[inputs]]\nfiles = \"*.csv\"\nschema = \"ehr_patients\"\n",
    );
    // And one job file that is not valid at all.
    d.write("jobs/broken.toml", "schedule = \"every day\"\n");
    assert_exit(&run_due(&d, "2026-06-01T00:00:00-04:00"), 2);
    let out = run_due(&d, "2026-06-01T02:00:30-04:00");
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("job bad run 1 failed"), "{err}");
    // What cron mails says which file and where the reports are.
    assert!(err.contains("(file(s) not read: ehr_patients_bad.csv); reports: "), "{err}");
    assert!(err.contains(&d.home().join("reports/bad").display().to_string()), "{err}");
    assert!(err.contains("broken.toml"), "{err}");
    assert_eq!(runs(&d).len(), 1, "demo ran all the same");
    assert_eq!(runs(&d)[0]["outcome"], "ok");
}

/// A job run by hand before cron ran run-due (go-live on Friday, cron set
/// up on Sunday): the firings since that run are due, as `status` says,
/// and run-due runs the job once.
#[test]
fn a_run_by_hand_before_run_due_met_the_job_counts_as_its_last_run() {
    let d = scheduled("30 2 * * *");
    let out = d.ferry_env(&["run", "demo"], &[("FERRY_NOW", "2026-11-20T07:00:00-05:00")]);
    assert_exit(&out, 0);
    let sunday = "2026-11-22T07:00:00-05:00";
    assert!(status_line(&d, sunday).contains("now (due since 2026-11-21 02:30 EST)"));
    assert_exit(&run_due(&d, sunday), 0);
    assert_eq!(runs(&d).len(), 2, "the missed firings run once");
    assert!(status_line(&d, sunday).contains("2026-11-23 02:30 EST"));
}

/// A run recorded while the clock was ahead (a wrong clock at boot, a VM
/// restored) does not stop the schedule until that time: it is read as
/// now, and run-due says so.
#[test]
fn a_last_run_after_the_clock_does_not_stop_the_schedule() {
    let d = scheduled("*/5 * * * *");
    let out = d.ferry_env(&["run", "demo"], &[("FERRY_NOW", "2027-06-01T00:00:00-04:00")]);
    assert_exit(&out, 0);
    let out = run_due(&d, "2026-11-23T10:01:00-05:00");
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("recorded after this machine's clock"), "{}", stderr(&out));
    let line = status_line(&d, "2026-11-23T10:02:00-05:00");
    assert!(line.contains(" ok ") && line.ends_with("2026-11-23 10:05 EST  -"), "{line}");
    assert_exit(&run_due(&d, "2026-11-23T10:06:00-05:00"), 0);
    assert_eq!(runs(&d).len(), 2, "the schedule goes on");
}
