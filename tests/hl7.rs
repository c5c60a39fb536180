use rusqlite::Connection;

use crate::util::{Dir, assert_exit, pairs, read_csv, stderr, stdout, summary};

const JOB: &str = r#"
time_zone = "America/New_York"

[source]
type = "local"
inbox = "../inbox"
min_age = "0"

[[inputs]]
files = "*.hl7"
schema = "ehr_hl7"

[practice]
file = "../roster.csv"
schema = "practice_roster"
"#;

const ROSTER: &str = "Chart Number,EHR Patient ID,Last Name,First Name,Middle Name,Date of Birth,Sex,Street,Street 2,City,ST,ZIP Code,Home Phone,Cell Phone,E-mail\n\
100100,E1,Lee,Ann,,1980-01-02,F,2 New St,,Boston,MA,02134,,,\n\
100200,E2,Ng,Bo,,1970-03-04,M,5 Elm St,,Salem,MA,01970,,,\n";

fn msg(control: &str, event: &str, evn_time: &str, pid: &str) -> String {
    format!("MSH|^~\\&|ATHENA|C|FERRY|P|{evn_time}||{event}|{control}|P|2.5.1\rEVN||{evn_time}\r{pid}\r\n")
}

fn pid(id: &str, mrn: &str, street: &str) -> String {
    format!("PID|1||{id}^^^ATHENA^PI~{mrn}^^^PRACTICE^MR||Lee^Ann||19800102|F|||{street}^^Boston^MA^02134")
}

/// A batch exercising ordering, ID history, the queue and appointments.
fn batch() -> String {
    let mut b = String::from("FHS|^~\\&|ATHENA\r\nBHS|^~\\&|ATHENA\r\n");
    b += &msg("M1", "ADT^A28", "20261101090000", &pid("E1", "100100", "1 Old St"));
    b += &msg("M2", "ADT^A31", "20261103090000", &pid("E1", "100100", "2 New St"));
    // Older than M2, arriving after it: must not overwrite.
    b += &msg("M3", "ADT^A08", "20261102090000", &pid("E1", "100100", "1 Old St"));
    b += &msg(
        "M4",
        "ADT^A28",
        "20261101090000",
        "PID|1||E2^^^ATHENA^PI~100999^^^PRACTICE^MR||Ng^Bo||19700304|M|||5 Elm St^^Salem^MA^01970",
    );
    b += &msg(
        "M5",
        "ADT^A31",
        "20261104090000",
        "PID|1||E2^^^ATHENA^PI~100200^^^PRACTICE^MR||Ng^Bo||19700304|M|||5 Elm St^^Salem^MA^01970",
    );
    // The EHR ID under the wrong identifier type: ERROR until the schema accepts it.
    b += &msg("M6", "ADT^A28", "20261104090000", "PID|1||E3^^^ATHENA^MR||Po^Cy||19900101|M");
    b += &msg("M7", "ADT^A99", "20261104090000", &pid("E4", "1", "x"));
    b += "MSH|^~\\&|ATHENA|C|FERRY|P|20261105090000||SIU^S12|M8|P|2.5.1\rSCH||A1|||||Visit|FU|30|MIN|^^^20261201093000||||||||||||||BOOKED\rPID|1||E1^^^ATHENA^PI\r\n";
    b += "MSH|^~\\&|ATHENA|C|FERRY|P|20261106090000||SIU^S15|M9|P|2.5.1\rSCH||A1|||||Visit|FU|30|MIN|^^^20261201093000||||||||||||||CANCELLED\rPID|1||E1^^^ATHENA^PI\r\n";
    b += "MSH|^~\\&|ATHENA|C|FERRY|P|20261106090100||SIU^S12|M10|P|2.5.1\rSCH||A2|||||Visit|FU|30|MIN|^^^20261202093000||||||||||||||BOOKED\rPID|1||E1^^^ATHENA^PI\r\n";
    // Ten messages, but the trailer says eleven.
    b += "BTS|11\r\nFTS|1\r\n";
    b
}

fn setup() -> Dir {
    let d = Dir::with_project();
    d.write("jobs/h.toml", JOB);
    d.write("roster.csv", ROSTER);
    d.write("inbox/feed.hl7", batch());
    d
}

/// An MRN the EHR took away from its record is a changed_id conflict for a
/// person, and is not written back by id_updates.csv meanwhile, though the
/// roster's chart still carries the EHR ID.
#[test]
fn an_mrn_the_ehr_took_away_is_not_written_back() {
    let d = Dir::with_project();
    d.write("jobs/h.toml", JOB);
    d.write("roster.csv", ROSTER);
    let mut feed = msg("M1", "ADT^A28", "20261101090000", &pid("E1", "100100", "2 New St"));
    feed += &msg(
        "M2",
        "ADT^A08",
        "20261102090000",
        "PID|1||E1^^^ATHENA^PI||Lee^Ann||19800102|F|||2 New St^^Boston^MA^02134",
    );
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let conflicts = read_csv(&dir.join("external_id_conflicts.csv"));
    let changed: Vec<(&str, &str)> = conflicts
        .iter()
        .filter(|c| c["kind"] == "changed_id")
        .map(|c| (c["id"].as_str(), c["records"].as_str()))
        .collect();
    assert_eq!(changed, [("100100", "ehr:E1")], "the ID taken away is named: {conflicts:?}");
    let linked: Vec<String> =
        read_csv(&dir.join("matched.csv")).iter().map(|r| r["ehr_id"].clone()).collect();
    assert!(linked.contains(&"E1".to_string()), "the roster's chart still links by the EHR ID it carries");
    assert!(read_csv(&dir.join("id_updates.csv")).is_empty(), "no MRN goes back while the change waits");
}

/// id_updates.csv is the EHR's import: its IDs go exactly as they are, so
/// a link whose ID a spreadsheet would run as a formula (the reports
/// defuse it with an apostrophe) is not written back at all.
#[test]
fn an_id_that_reads_as_a_formula_is_not_written_back() {
    let d = Dir::with_project();
    d.write("jobs/h.toml", JOB);
    d.write("roster.csv", ROSTER.replace("100100,E1,", "-A100,E1,"));
    let mut feed = msg(
        "M1",
        "ADT^A28",
        "20261101090000",
        "PID|1||E1^^^ATHENA^PI||Lee^Ann||19800102|F|||2 New St^^Boston^MA^02134",
    );
    feed += &msg(
        "M2",
        "ADT^A28",
        "20261101090000",
        "PID|1||E2^^^ATHENA^PI||Ng^Bo||19700304|M|||5 Elm St^^Salem^MA^01970",
    );
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let linked: Vec<(String, String)> = read_csv(&dir.join("matched.csv"))
        .iter()
        .map(|r| (r["ehr_id"].clone(), r["practice_mrn"].clone()))
        .collect();
    assert_eq!(linked, [("E1".into(), "'-A100".into()), ("E2".into(), "100200".into())]);
    let updates: Vec<(String, String)> = read_csv(&dir.join("id_updates.csv"))
        .iter()
        .map(|r| (r["PatientID"].clone(), r["PracticeMRN"].clone()))
        .collect();
    assert_eq!(updates, [("E2".into(), "100200".into())]);
}

/// The sender's header values are printed with their control characters
/// escaped, raw or written as HL7 escapes: a newline in MSH-10 would start
/// a line of its own in `ferry queue`, and ESC reach the terminal.
#[test]
fn the_queue_prints_no_control_character_of_the_sender() {
    let d = Dir::with_project();
    d.write("jobs/h.toml", JOB);
    d.write("roster.csv", ROSTER);
    let pid = "PID|1||E9^^^ATHENA^PI||Lee^Ann||19800102|F";
    let mut feed = msg("CTL\x1b[2J1", "ADT^Z\x1b[31mRED", "20261101090000", pid);
    feed += &msg("CTL\\X0A\\forged line", "ADT^A\\X1B\\[31m", "20261101090000", pid);
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let listing = stdout(&d.ferry(&["queue"]));
    assert!(listing.contains(r"CTL\u{1b}[2J1") && listing.contains(r"ADT^Z\u{1b}[31mRED"), "{listing}");
    assert!(listing.contains(r"CTL\nforged line"), "{listing}");
    let retried = stderr(&d.ferry(&["queue", "retry", "--all"]));
    assert!(retried.contains(r"2 still in ERROR") && retried.contains(r"ADT^A\u{1b}[31m"), "{retried}");
    for text in [listing, retried] {
        assert!(!text.contains('\x1b') && !text.contains("\nforged"), "{text}");
    }
}

#[test]
fn hl7_batch_loads_in_order_and_queues_bad_messages() {
    let d = setup();
    let out = d.ferry(&["run", "h"]);
    assert_exit(&out, 0);
    let dir = d.latest_report("h");
    let s = summary(&dir);
    let n = |m: &str| s[&("file:ehr/feed.hl7".to_string(), m.to_string())].clone();
    assert_eq!(
        (n("read"), n("accepted"), n("rejected"), n("warnings")),
        ("10".into(), "8".into(), "2".into(), "1".into())
    );

    // E1's newest address won although an older message came last; E2's MRN
    // changed from 100999 to 100200 and it links under the new one.
    let matched = read_csv(&dir.join("matched.csv"));
    let linked: Vec<(&str, &str)> =
        matched.iter().map(|r| (r["ehr_id"].as_str(), r["practice_mrn"].as_str())).collect();
    assert_eq!(linked, [("E1", "100100"), ("E2", "100200")]);
    assert!(read_csv(&dir.join("field_differences.csv")).is_empty(), "the late A08 must not win");

    let rejects = read_csv(&dir.join("rejects.csv"));
    let got: Vec<(&str, &str, &str)> = rejects
        .iter()
        .map(|r| (r["line"].as_str(), r["severity"].as_str(), r["record_id"].as_str()))
        .collect();
    assert_eq!(
        got,
        [("18", "rejected", "M6"), ("21", "rejected", "M7"), ("33", "warning", "")],
        "{rejects:?}"
    );
    assert!(rejects[0]["reason"].contains("no identifier with assigning authority ATHENA and type PI"));
    assert!(rejects[2]["reason"].contains("BTS-1 says 11"), "{}", rejects[2]["reason"]);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let history: Vec<(String, String)> =
        pairs(&db, "SELECT old_value, new_value FROM id_history WHERE own_id = 'E2'");
    assert_eq!(history, [("100999".to_string(), "100200".to_string())]);
    let appts: Vec<(String, String)> =
        pairs(&db, "SELECT appt_id, status FROM appointments ORDER BY appt_id");
    assert_eq!(
        appts,
        [("A1".into(), "CANCELLED".into()), ("A2".into(), "BOOKED".into())],
        "a reschedule keeps both"
    );
    let start: String =
        db.query_row("SELECT start_utc FROM appointments WHERE appt_id = 'A2'", [], |r| r.get(0)).unwrap();
    assert_eq!(start, "2026-12-02T14:30:00+00:00", "09:30 New York is 14:30 UTC");

    // The queue lists both errors, shows one, retries it after a schema fix, deletes the other.
    let out = d.ferry(&["queue"]);
    assert_exit(&out, 0);
    let list = stdout(&out);
    let ids: Vec<String> = list
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(list.ends_with("\njob h: 0 NEW, 8 PROCESSED, 2 ERROR, 0 DELETED\n"), "{list}");
    assert!(list.contains("feed.hl7") && list.contains("M6") && list.contains("ADT^A99"), "{list}");
    let out = d.ferry(&["queue", "show", &ids[0]]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("PID-3") && stdout(&out).contains("reason:"), "{}", stdout(&out));

    // Jobs may share a state folder: with --job, only that job's messages.
    d.write("jobs/other.toml", JOB);
    for command in ["show", "retry", "delete"] {
        let out = d.ferry(&["queue", command, &ids[0], "--job", "other"]);
        assert_exit(&out, 1);
        let want = format!("no message {} in the queue of job other", ids[0]);
        assert!(stderr(&out).contains(&want), "{command}: {}", stderr(&out));
    }

    let out = d.ferry(&["queue", "retry", &ids[0]]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("still in ERROR"), "{}", stderr(&out));
    let schema = std::fs::read_to_string(d.path("schemas/ehr_hl7.toml")).unwrap();
    d.write("schemas/ehr_hl7.toml", schema.replacen("type = \"PI\"\n", "", 1));
    let out = d.ferry(&["queue", "retry", &ids[0], "--job", "h"]);
    assert_exit(&out, 0);
    let n: i64 = db.query_row("SELECT count(*) FROM patients WHERE own_id = 'E3'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1, "the retried message was loaded");

    assert_exit(&d.ferry(&["queue", "delete", &ids[1]]), 0);
    let out = d.ferry(&["queue", "--json"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).trim(), "", "nothing left in ERROR");
    assert_exit(&d.ferry(&["queue", "delete", &ids[1]]), 1);
}

/// Events ferry does not map are ERROR until the schema's `[events]` says
/// what they are; `ferry queue retry --all` then loads them, and later
/// files read them as the schema says from the start.
#[test]
fn the_schemas_events_read_or_ignore_more_events_and_retry_all_loads_them() {
    let d = setup();
    let mut feed = msg("M1", "ADT^A05", "20261101090000", &pid("E1", "100100", "2 New St"));
    feed += &msg("M2", "ADT^A03", "20261101100000", &pid("E1", "100100", "2 New St"));
    feed += "MSH|^~\\&|LAB|C|FERRY|P|20261101110000||ORU^R01|M3|P|2.5.1\rOBX|1|ST|GLU||95\r\n";
    feed += &msg("M4", "ADT^A02", "20261101120000", &pid("E2", "100200", "5 Elm St"));
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let rejects = read_csv(&d.latest_report("h").join("rejects.csv"));
    let reasons: Vec<&str> = rejects.iter().map(|r| r["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.iter().all(|r| r.contains("unknown event") && r.contains("[events]")), "{reasons:?}");

    let schema = std::fs::read_to_string(d.path("schemas/ehr_hl7.toml")).unwrap();
    d.write(
        "schemas/ehr_hl7.toml",
        format!("{schema}\n[events]\npatient = [\"ADT^A05\"]\nignore = [\"ADT^A03\", \"ORU\"]\n"),
    );
    let out = d.ferry(&["queue", "retry", "--all", "--job", "h"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains(
            "4 message(s) in ERROR retried: 1 processed, 2 of events the schema ignores processed with \
                      nothing loaded, 1 still in ERROR"
        ),
        "{err}"
    );
    assert!(err.contains("  1 x unknown event ADT^A02"), "{err}");

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let states: Vec<(String, Option<String>)> =
        pairs(&db, "SELECT state, reason FROM messages ORDER BY number");
    let states: Vec<(&str, Option<&str>)> = states.iter().map(|(s, r)| (s.as_str(), r.as_deref())).collect();
    assert_eq!(states[0], ("PROCESSED", None), "{states:?}");
    assert_eq!(
        states[1],
        ("PROCESSED", Some("not loaded: schema ehr_hl7 ignores ADT^A03 ([events] ignore)"))
    );
    assert_eq!(
        states[2],
        ("PROCESSED", Some("not loaded: schema ehr_hl7 ignores ORU^R01 ([events] ignore)"))
    );
    assert_eq!(states[3].0, "ERROR");
    let loaded: Vec<(String, String)> =
        pairs(&db, "SELECT own_id, address1 FROM patients WHERE side = 'ehr'");
    assert_eq!(loaded, [("E1".to_string(), "2 New St".to_string())], "A05 loaded, A03 ignored, A02 not");

    // The one left is still ERROR; its reason is what the retry said.
    let out = d.ferry(&["queue", "--job", "h"]);
    assert!(stdout(&out).ends_with("job h: 0 NEW, 3 PROCESSED, 1 ERROR, 0 DELETED\n"), "{}", stdout(&out));

    // A later file is read by the schema from the start; nothing to retry.
    let mut later = msg("N1", "ADT^A03", "20261102090000", &pid("E1", "100100", "2 New St"));
    later += &msg("N2", "ADT^A05", "20261102100000", &pid("E1", "100100", "7 Later St"));
    d.write("inbox/later.hl7", later);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let s = summary(&dir);
    let n = |m: &str| s[&("file:ehr/later.hl7".to_string(), m.to_string())].clone();
    assert_eq!((n("read"), n("accepted"), n("rejected")), ("2".into(), "2".into(), "0".into()));
    assert!(
        n("detail").contains("1 message(s) of events the schema ignores were queued as PROCESSED"),
        "{}",
        n("detail")
    );
    assert!(read_csv(&dir.join("rejects.csv")).is_empty());
    let street: String =
        db.query_row("SELECT address1 FROM patients WHERE own_id = 'E1'", [], |r| r.get(0)).unwrap();
    assert_eq!(street, "7 Later St");

    // Retrying with nothing that maps now leaves the queue as it was.
    let out = d.ferry(&["queue", "retry", "--all"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("1 message(s) in ERROR retried: 0 processed"), "{}", stderr(&out));
    let out = d.ferry(&["queue", "retry"]);
    assert_exit(&out, 2);
}

/// `retry --all` reads a long queue a page at a time, across files, and
/// leaves alone the messages of a job that is running (it holds the job's
/// lock, as a run does): they stay in ERROR, counted, and exit 1.
#[test]
fn retry_all_pages_through_a_long_queue_and_not_while_the_job_runs() {
    let d = setup();
    // More than one page (1,000 messages), and two files.
    let mut feed = String::new();
    for i in 0..1205 {
        let time = format!("2026110{}{:02}{:02}00", 2 + i / 600, i / 60 % 10, i % 60);
        let street = format!("{i} New St");
        feed += &msg(&format!("M{i}"), "ADT^A05", &time, &pid(&format!("E{}", i % 7), "100100", &street));
    }
    d.write("inbox/feed.hl7", feed);
    d.write("inbox/later.hl7", msg("L1", "ADT^A05", "20261105090000", &pid("E0", "100100", "Last St")));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let schema = std::fs::read_to_string(d.path("schemas/ehr_hl7.toml")).unwrap();
    d.write("schemas/ehr_hl7.toml", format!("{schema}\n[events]\npatient = [\"ADT^A05\"]\n"));
    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let in_error = || -> i64 {
        db.query_row("SELECT count(*) FROM messages WHERE state = 'ERROR'", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(in_error(), 1206);

    let lock = std::fs::File::create(d.home().join("locks/h.lock")).unwrap();
    lock.try_lock().unwrap();
    for args in [
        &["queue", "retry", "--all"][..],
        &["queue", "retry", "--all", "--job", "h"],
        &["queue", "retry", "7"],
    ] {
        let out = d.ferry(args);
        assert_exit(&out, 1);
        assert!(stderr(&out).contains("job h is already running"), "{args:?}: {}", stderr(&out));
    }
    assert!(
        stderr(&d.ferry(&["queue", "retry", "--all"])).contains("1206 message(s) not retried, left in ERROR"),
    );
    assert_eq!(in_error(), 1206, "nothing retried while the job runs");
    drop(lock);

    // The job may be named by its file, as anywhere.
    let out = d.ferry(&["queue", "retry", "--all", "--job", d.path("jobs/h.toml").to_str().unwrap()]);
    assert_exit(&out, 0);
    assert!(
        stderr(&out).contains("1206 message(s) in ERROR retried: 1206 processed, 0 of events"),
        "{}",
        stderr(&out)
    );
    assert_eq!(in_error(), 0);
    let streets: Vec<(String, String)> =
        pairs(&db, "SELECT own_id, address1 FROM patients WHERE side = 'ehr' ORDER BY own_id");
    let newest = |e: usize| (0..1205).rev().find(|i| i % 7 == e).unwrap();
    let want: Vec<(String, String)> = (0..7)
        .map(|e| (format!("E{e}"), if e == 0 { "Last St".into() } else { format!("{} New St", newest(e)) }))
        .collect();
    assert_eq!(streets, want, "each patient as its newest message says");
}

/// A run killed after its load committed, before its reports, leaves its
/// files to the next run's reports: their counts, their rejects and the
/// run's totals, as if that run had loaded them; and only once.
#[test]
fn files_of_a_run_killed_before_its_reports_are_in_the_next_runs() {
    let d = setup();
    let out = d.ferry_env(&["run", "h"], &[("FERRY_FAILPOINT", "reports:1")]);
    assert!(!out.status.success(), "the failpoint stops the run: {}", stderr(&out));
    assert!(d.report_dirs("h").is_empty(), "no reports written");

    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let s = summary(&dir);
    let n = |m: &str| s[&("file:ehr/feed.hl7".to_string(), m.to_string())].clone();
    assert_eq!(
        (n("status"), n("read"), n("accepted"), n("rejected")),
        ("loaded".into(), "10".into(), "8".into(), "2".into())
    );
    // What the file's messages did, as the killed run counted it: M3 is
    // older than M2.
    assert_eq!(
        n("detail"),
        "loaded by run 1, which stopped before it reported them; 1 message(s) older than the stored data \
         were queued but not applied"
    );
    let rejected: Vec<String> = read_csv(&dir.join("rejects.csv"))
        .iter()
        .filter(|r| r["severity"] == "rejected")
        .map(|r| r["record_id"].clone())
        .collect();
    assert_eq!(rejected, ["M6", "M7"]);
    // Each file once: the roster, still listed at its place, is not also
    // "already loaded" (it was listed twice).
    let text = std::fs::read_to_string(dir.join("summary.csv")).unwrap();
    let statuses: Vec<&str> = text.lines().filter(|l| l.contains(",status,")).collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(statuses.iter().all(|l| l.ends_with(",loaded")), "{statuses:?}");
    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let runs: Vec<(String, String)> =
        pairs(&db, "SELECT outcome, records || '/' || rejects FROM runs ORDER BY id");
    let want = [("abandoned", "0/0"), ("ok", "10/2")];
    assert_eq!(
        runs,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "the roster's 2 records and the feed's 8"
    );

    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    assert!(read_csv(&dir.join("rejects.csv")).iter().all(|r| r["record_id"] != "M6"), "reported once");
}

/// A run killed as its reports are renamed into place has its folder on
/// record, for pruning to reach; its files are reported again by the next
/// run, which mails and counts them as the killed run did not. Folders
/// left unfinished by a run killed while writing them are removed.
#[test]
fn report_folders_of_killed_runs_are_on_record_or_removed() {
    let d = setup();
    let out = d.ferry_env(&["run", "h"], &[("FERRY_FAILPOINT", "reports_written:1")]);
    assert!(!out.status.success(), "the failpoint stops the run: {}", stderr(&out));
    let first = d.latest_report("h");
    let partial = d.home().join("reports/h/.2026-01-01T000000.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("matched.csv"), "ehr_id\r\nE1\r\n").unwrap();

    assert_exit(&d.ferry(&["run", "h"]), 0);
    assert!(!partial.exists(), "the unfinished folder is removed");
    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let runs: Vec<(String, String)> =
        pairs(&db, "SELECT outcome, ifnull(report_dir, '-') FROM runs ORDER BY id");
    assert_eq!(runs[0], ("abandoned".to_string(), first.display().to_string()));
    assert_eq!(runs[1].1, d.latest_report("h").display().to_string());
    let s = summary(&d.latest_report("h"));
    let detail = &s[&("file:ehr/feed.hl7".to_string(), "detail".to_string())];
    assert!(detail.contains("loaded by run 1, which stopped before it reported them"), "{detail}");
}

/// HL7 files mapped whole ahead of their load (in parallel across files)
/// load exactly as files mapped while they load: the same queue, records,
/// ID history and appointments, in file order across files.
#[test]
fn files_mapped_ahead_load_as_files_mapped_while_they_load() {
    let mut dumps = Vec::new();
    for ahead in ["on", "off"] {
        let d = setup();
        // Older than feed.hl7's newest address for E1: must not overwrite it.
        d.write("inbox/feed2.hl7", msg("N1", "ADT^A08", "20261102120000", &pid("E1", "100100", "3 Late St")));
        // Newer for E2, and a changed MRN: must win, and go to the history.
        d.write("inbox/feed3.hl7", msg("N2", "ADT^A31", "20261107090000", &pid("E2", "100300", "9 Last St")));
        let out = d.ferry_env(&["-vv", "run", "h"], &[("FERRY_MAP_AHEAD", ahead)]);
        assert_exit(&out, 0);
        let mapped = if ahead == "on" { "files=3" } else { "files=0" };
        assert!(
            stderr(&out).lines().any(|l| l.contains("Mapped HL7 files ahead") && l.contains(mapped)),
            "{ahead}: {}",
            stderr(&out)
        );
        let db = Connection::open(d.home().join("ferry.db")).unwrap();
        let dump = |sql: &str| -> Vec<String> {
            let mut stmt = db.prepare(sql).unwrap();
            let n = stmt.column_count();
            stmt.query_map([], |r| {
                (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i).map(|v| format!("{v:?}"))).collect()
            })
            .unwrap()
            .map(|row: rusqlite::Result<Vec<String>>| row.unwrap().join("|"))
            .collect()
        };
        dumps.push([
            dump("SELECT f.name, m.number, m.line, m.control_id, m.event, m.msg_time, m.state, m.reason
                  FROM messages m JOIN files f ON f.id = m.file_id ORDER BY m.id"),
            dump("SELECT own_id, address1, practice_mrn, source_time FROM patients WHERE side = 'ehr' ORDER BY own_id"),
            dump("SELECT own_id, old_value, new_value, source_time FROM id_history ORDER BY id"),
            dump("SELECT appt_id, status, start_utc FROM appointments ORDER BY appt_id"),
            dump("SELECT f.name, r.line, r.severity, r.record_id, r.col, r.reason
                  FROM rejects r JOIN files f ON f.id = r.file_id ORDER BY r.id"),
            dump("SELECT name, read, accepted, rejected, warnings FROM files ORDER BY id"),
        ]);
    }
    assert_eq!(dumps[0], dumps[1]);
    let [messages, patients, history, _, rejects, _] = &dumps[0];
    assert!(rejects.iter().any(|r| r.contains("BTS-1")), "the count mismatch is kept: {rejects:#?}");
    assert_eq!(messages.len(), 12, "{messages:#?}");
    assert!(patients.iter().any(|p| p.starts_with("Text(\"E1\")|Text(\"2 New St\")")), "{patients:#?}");
    assert!(patients.iter().any(|p| p.starts_with("Text(\"E2\")|Text(\"9 Last St\")")), "{patients:#?}");
    assert!(history.iter().any(|h| h.contains("Text(\"100300\")")), "{history:#?}");
}

#[test]
fn truncated_last_message_goes_to_error_and_the_rest_loads() {
    let d = setup();
    // A batch header promises a trailer; the file ends mid-segment instead.
    let text = String::from("BHS|^~\\&|ATHENA\r\n")
        + &msg("M1", "ADT^A28", "20261101090000", &pid("E1", "100100", "2 New St"))
        + "MSH|^~\\&|ATHENA|C|FERRY|P|20261101090000||ADT^A28|M2|P|2.5.1\rPID|1||E1^^^ATHENA^PI||Le";
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let rejects = read_csv(&dir.join("rejects.csv"));
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert!(rejects[0]["reason"].contains("has no BTS"), "{}", rejects[0]["reason"]);
    assert_eq!((rejects[1]["line"].as_str(), rejects[1]["record_id"].as_str()), ("5", "M2"));
    assert!(rejects[1]["reason"].contains("truncated"), "{}", rejects[1]["reason"]);
    let s = summary(&dir);
    assert_eq!(s[&("file:ehr/feed.hl7".into(), "accepted".into())], "1");

    // Its bytes end at the cut: a retry would load what is left of it.
    let out = d.ferry(&["queue", "--json"]);
    let item: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!((&item["control_id"], &item["cut"]), (&"M2".into(), &true.into()), "{item}");
    let id = item["id"].to_string();
    let out = d.ferry(&["queue", "retry", &id]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&format!("message {id} may have been cut short")), "{}", stderr(&out));
    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let last: String =
        db.query_row("SELECT last_name FROM patients WHERE own_id = 'E1'", [], |r| r.get(0)).unwrap();
    assert_eq!(last, "Lee", "not the cut message's Le");
    assert_exit(&d.ferry(&["queue", "delete", &id]), 0);
}

/// HL7's rule for updates: a field left empty is no change, `""` clears
/// the value. An ADT^A08 or A40 carrying a short PID keeps what it leaves
/// out; a cancellation without its resource segments keeps the start.
#[test]
fn an_empty_field_keeps_the_stored_value_and_hl7_null_clears_it() {
    let d = setup();
    let full = "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann||19800102|F|||2 New St^^Boston^MA^02134||^PRN^PH^^1^617^5550101\rPD1||||1234567893^Rivera^Ana^^^^^^NPI";
    let short = "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann||\"\"||||||^^";
    let siu = |control: &str, time: &str, trigger: &str, sch: &str, rest: &str| {
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|{time}||SIU^{trigger}|{control}|P|2.5.1\r{sch}\rPID|1||E1^^^ATHENA^PI{rest}\r\n"
        )
    };
    let mut text = msg("M1", "ADT^A28", "20261101090000", full);
    text += &msg("M2", "ADT^A08", "20261102090000", short);
    text += &msg(
        "M3",
        "ADT^A40",
        "20261103090000",
        "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann\rMRG|E9^^^ATHENA^PI",
    );
    text += &siu(
        "M4",
        "20261104090000",
        "S12",
        "SCH||A1|||||Visit|FU|30|MIN|^^^20261201093000||||||||||||||BOOKED",
        "\rAIP|1||1234567893^Rivera^Ana^^^^^^NPI",
    );
    // SCH-25 alone after SCH-2: a cancellation without its resource segments.
    let status = |id: &str, status: &str| format!("SCH||{id}{}{status}", "|".repeat(23));
    text += &siu("M5", "20261105090000", "S15", &status("A1", "CANCELLED"), "");
    text += &siu("M6", "20261105090000", "S15", &status("A2", "BOOKED"), "");
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: [Option<String>; 6] = db
        .query_row(
            "SELECT birth_date, sex, address1, phone_home, provider_id, first_name FROM patients WHERE own_id = 'E1'",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?]),
        )
        .unwrap();
    let want = [None, Some("F"), Some("2 New St"), Some("+16175550101"), Some("1234567893"), Some("Ann")];
    assert_eq!(
        row,
        want.map(|v| v.map(String::from)),
        "PID-7 \"\" clears; empty PID-8, -11, -13 and no PD1 keep"
    );
    let appt: (String, Option<String>, Option<i64>, Option<String>) = db
        .query_row(
            "SELECT status, start_utc, duration_minutes, provider_id FROM appointments WHERE appt_id = 'A1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        appt,
        ("CANCELLED".into(), Some("2026-12-01T14:30:00+00:00".into()), Some(30), Some("1234567893".into()))
    );
    let rejects = read_csv(&d.latest_report("h").join("rejects.csv"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["record_id"], "M6");
    assert!(rejects[0]["reason"].contains("SIU^S15 (a cancellation) with SCH-25 (filler status) BOOKED"));
}

/// Message times keep their fraction of a second: of two updates in one
/// second, the one that arrives last but was sent first is stale, in this
/// run and in the next.
#[test]
fn updates_within_one_second_are_ordered_by_its_fraction() {
    let d = setup();
    let mut text = msg("M1", "ADT^A08", "20261103090000.7", &pid("E1", "100100", "2 New St"));
    text += &msg("M2", "ADT^A08", "20261103090000.25", &pid("E1", "100100", "1 Old St"));
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    d.write("inbox/late.hl7", msg("M3", "ADT^A08", "20261103090000.6999", &pid("E1", "100100", "9 Late St")));
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: (String, String) = db
        .query_row("SELECT address1, source_time FROM patients WHERE own_id = 'E1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(row, ("2 New St".into(), "2026-11-03T14:00:00.700Z".into()));
    let times: Vec<(String, String)> = pairs(&db, "SELECT control_id, msg_time FROM messages ORDER BY id");
    let want = [("M1", "14:00:00.700Z"), ("M2", "14:00:00.250Z"), ("M3", "14:00:00.699Z")];
    assert_eq!(times, want.map(|(c, t)| (c.to_string(), format!("2026-11-03T{t}"))));
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/late.hl7".to_string(), "detail".to_string())];
    assert!(detail.contains("1 message(s) older than the stored data"), "{detail}");
}

/// SCH-25 carries HL7 table 0278 codes from some senders: those that mean
/// one of ferry's statuses load as it, an empty one on an update changes
/// nothing, and a blocked slot is no appointment.
#[test]
fn sch25_reads_table_0278_and_an_empty_status_keeps_the_stored_one() {
    let d = setup();
    let siu = |control: &str, event: &str, time: &str, appt: &str, status: &str| {
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|{time}||SIU^{event}|{control}|P|2.5.1\r\
             SCH||{appt}|||||Visit|FU|30|MIN|^^^20261201093000||||||||||||||{status}\r\
             PID|1||E1^^^ATHENA^PI\r\n"
        )
    };
    let mut text = siu("M1", "S12", "20261105090000", "A1", "Booked");
    text += &siu("M2", "S14", "20261105100000", "A1", "Noshow");
    text += &siu("M3", "S14", "20261105110000", "A1", "");
    text += &siu("M4", "S14", "20261105090000", "A2", "Waitlist");
    text += &siu("M5", "S14", "20261105100000", "A2", "Started");
    text += &siu("M6", "S14", "20261105090000", "A3", "");
    text += &siu("M7", "S14", "20261105090000", "A4", "Blocked");
    text += &siu("M8", "S14", "20261105090000", "A5", "Gone fishing");
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let statuses: Vec<(String, String)> =
        pairs(&db, "SELECT appt_id, status FROM appointments ORDER BY appt_id");
    let want = [("A1", "NOSHOW"), ("A2", "ARRIVED"), ("A3", "UPDATE")];
    assert_eq!(statuses, want.map(|(a, s)| (a.to_string(), s.to_string())));
    let errors: Vec<(String, String)> =
        pairs(&db, "SELECT control_id, reason FROM messages WHERE state = 'ERROR' ORDER BY id");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].0, "M7");
    assert!(errors[0].1.contains("blocked time slot"), "{}", errors[0].1);
    assert_eq!(errors[1].0, "M8");
    assert!(errors[1].1.contains("[appointment_status]"), "{}", errors[1].1);

    // The sender's own code, mapped in the schema, loads on retry.
    let schema = d.path("schemas/ehr_hl7.toml");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text += "\n[appointment_status]\n\"Gone fishing\" = \"CANCELLED\"\n";
    std::fs::write(&schema, text).unwrap();
    let id: i64 = db.query_row("SELECT id FROM messages WHERE control_id = 'M8'", [], |r| r.get(0)).unwrap();
    assert_exit(&d.ferry(&["queue", "retry", &id.to_string(), "--job", "h"]), 0);
    let status: String =
        db.query_row("SELECT status FROM appointments WHERE appt_id = 'A5'", [], |r| r.get(0)).unwrap();
    assert_eq!(status, "CANCELLED");
}

/// Control characters never reach the store or the reports: `\X00\`,
/// `\X0D\` and a stray 0x1C are taken out of a name with a warning naming
/// the field, and a message labelled 8859/1 is read as Windows-1252, whose
/// 0x92 is a quote, not a control code.
#[test]
fn control_characters_leave_names_with_a_warning() {
    let d = setup();
    let adt = |control: &str, pid: &[u8], msh18: &str| {
        let mut m = format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|20261120090000||ADT^A08|{control}|P|2.5.1||||||{msh18}\rPID|1||"
        )
        .into_bytes();
        m.extend_from_slice(pid);
        m.extend_from_slice(b"||19800102|F\r\n");
        m
    };
    let mut text = adt("M1", b"E1^^^ATHENA^PI||O\\X00\\Brien^Ann", "");
    text.extend(adt("M2", b"E2^^^ATHENA^PI||Mac\\X0D\\Lean^Bo\\X1C\\b", ""));
    text.extend(adt("M3", b"E3^^^ATHENA^PI||O\x92Neil^Ann", "8859/1"));
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let names: Vec<(String, String)> =
        pairs(&db, "SELECT last_name, first_name FROM patients WHERE side = 'ehr' ORDER BY own_id");
    let want = [("OBrien", "Ann"), ("Mac Lean", "Bob"), ("O\u{2019}Neil", "Ann")];
    assert_eq!(names, want.map(|(l, f)| (l.to_string(), f.to_string())));
    let report = d.latest_report("h");
    let warnings: Vec<(String, String)> = read_csv(&report.join("rejects.csv"))
        .into_iter()
        .map(|r| (r["record_id"].clone(), r["column"].clone()))
        .collect();
    let want = [("M1", "PID-5.1"), ("M2", "PID-5.2"), ("M2", "PID-5.1")];
    assert_eq!(warnings, want.map(|(m, c)| (m.to_string(), c.to_string())));
    let unmatched = std::fs::read(report.join("unmatched_ehr.csv")).unwrap();
    assert!(
        !unmatched.iter().any(|&b| b < 0x20 && b != b'\r' && b != b'\n'),
        "no control bytes in the report"
    );
}

/// An appointment's IDs, type and department lose control characters as a
/// patient's values do, each with a warning; an appointment ID of nothing
/// else is an error.
#[test]
fn control_characters_leave_appointments_with_a_warning() {
    let d = setup();
    let siu = |control: &str, appt: &str, kind: &str| {
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|20261105090000||SIU^S12|{control}|P|2.5.1\r\
             SCH||{appt}|||||Visit|{kind}|30|MIN|^^^20261201093000||||||||||||||BOOKED\r\
             PID|1||E1^^^ATHENA^PI\rAIL|1||DEP\\X09\\1\r\n"
        )
    };
    let mut text = siu("M1", "A\\X00\\1", "FU");
    text += &siu("M2", "\\X07\\", "FU");
    text += &siu("M3", "A2", "New\\X0A\\Patient");
    d.write("inbox/feed.hl7", text);
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let rows: Vec<(String, String)> = pairs(
        &db,
        "SELECT appt_id, appointment_type || '/' || department_id FROM appointments ORDER BY appt_id",
    );
    let want = [("A1", "FU/DEP 1"), ("A2", "New Patient/DEP 1")];
    assert_eq!(rows, want.map(|(a, t)| (a.to_string(), t.to_string())));
    let errors: Vec<(String, String)> =
        pairs(&db, "SELECT control_id, reason FROM messages WHERE state = 'ERROR' ORDER BY id");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "M2");
    assert!(errors[0].1.contains("holds only control characters"), "{}", errors[0].1);
    let warnings: Vec<(String, String)> = read_csv(&d.latest_report("h").join("rejects.csv"))
        .into_iter()
        .filter(|r| r["severity"] == "warning")
        .map(|r| (r["record_id"].clone(), r["column"].clone()))
        .collect();
    let want = [("M1", "SCH-2/SCH-1"), ("M1", "AIL-3/PV1-3"), ("M3", "AIL-3/PV1-3"), ("M3", "SCH-8/SCH-7")];
    assert_eq!(warnings, want.map(|(m, c)| (m.to_string(), c.to_string())));
}

/// A late message still sets what no newer message said: an address
/// change that arrives after a newer name change that left the address out
/// is applied to the address, not dropped whole; what the newer message
/// said stays.
#[test]
fn a_late_message_sets_the_fields_no_newer_message_said() {
    let d = setup();
    let full = |street: &str, last: &str| {
        format!(
            "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||{last}^Ann||19800102|F|||{street}^^Boston^MA^02134"
        )
    };
    d.write("inbox/1.hl7", msg("M1", "ADT^A28", "20261120080000", &full("1 Old Rd", "Lee")));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    // 10:00 a name change with a short PID: the address is not said.
    let short = "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee-Smith^Ann";
    d.write("inbox/3.hl7", msg("M3", "ADT^A08", "20261120100000", short));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    // 09:00 an address change, late: its name is older than M3's.
    d.write("inbox/2.hl7", msg("M2", "ADT^A08", "20261120090000", &full("77 New St", "Lee")));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/2.hl7".to_string(), "detail".to_string())];
    assert!(
        detail.contains("1 message(s) older than the stored data were applied only to the fields"),
        "{detail}"
    );
    // 08:30, later still: everything it says was said since.
    d.write("inbox/0.hl7", msg("M0", "ADT^A08", "20261120083000", &full("5 Gone Rd", "Leigh")));
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: (String, String, String) = db
        .query_row(
            "SELECT last_name, address1, source_time FROM patients WHERE side = 'ehr' AND own_id = 'E1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, ("Lee-Smith".into(), "77 New St".into(), "2026-11-20T15:00:00.000Z".into()));
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/0.hl7".to_string(), "detail".to_string())];
    assert!(detail.contains("1 message(s) older than the stored data"), "{detail}");
}

/// A late SIU message sets what no newer message about the appointment
/// said, as for patients: a start moved at 10:00 that arrives after an
/// 11:00 check-in (which said nothing of the start) moves the start, and
/// leaves the status and the patient's MRN the 11:00 message gave.
#[test]
fn a_late_siu_message_sets_the_fields_no_newer_message_said() {
    let d = setup();
    let siu = |control: &str, time: &str, mrn: &str, kind: &str, start: &str, status: &str| {
        // SCH-7 (the reason) stands in for an empty SCH-8 (the type).
        let reason = if kind.is_empty() { "" } else { "Visit" };
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|{time}||SIU^S14|{control}|P|2.5.1\r\
             SCH||B7|||||{reason}|{kind}|30|MIN|{start}||||||||||||||{status}\r\
             PID|1||E1^^^ATHENA^PI~{mrn}^^^PRACTICE^MR\r\n"
        )
    };
    let booked = siu("M1", "20261105090000", "100100", "FU", "^^^20261201093000", "Booked");
    d.write("inbox/1.hl7", booked.replace("SIU^S14", "SIU^S12"));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    // 11:00 the patient arrives: the start is not said, the MRN is new.
    d.write("inbox/3.hl7", siu("M3", "20261105110000", "100200", "", "", "Started"));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    // 10:00, late: the start moved to 10:00 local, and the type changed.
    d.write("inbox/2.hl7", siu("M2", "20261105100000", "100100", "NP", "^^^20261201100000", "Booked"));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/2.hl7".to_string(), "detail".to_string())];
    assert!(
        detail.contains("1 message(s) older than the stored data were applied only to the fields"),
        "{detail}"
    );
    // 08:00, later still: the booking again, nothing it says is news.
    d.write("inbox/0.hl7", siu("M0", "20261105080000", "100100", "XX", "^^^20261201080000", "Booked"));
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: [String; 5] = db
        .query_row(
            "SELECT status, start_utc, appointment_type, patient_mrn, source_time FROM appointments
             WHERE appt_id = 'B7'",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]),
        )
        .unwrap();
    let want = ["ARRIVED", "2026-12-01T15:00:00+00:00", "NP", "100200", "2026-11-05T16:00:00.000Z"];
    assert_eq!(row, want.map(String::from));
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/0.hl7".to_string(), "detail".to_string())];
    assert!(detail.contains("1 message(s) older than the stored data"), "{detail}");
}

/// The fields the newer message that made a record left out were never
/// said: a late message sets them. Here the newer messages come first in
/// one file, before the store held either record.
#[test]
fn a_late_message_sets_what_the_message_that_made_the_record_left_out() {
    let d = setup();
    let short = "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee-Smith^Ann";
    let full = "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann||19800102|F|||77 New St^^Boston^MA^02134\
                ||^PRN^PH^^1^617^5551234";
    let siu = |control: &str, event: &str, time: &str, kind: &str, start: &str, status: &str| {
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|{time}||SIU^{event}|{control}|P|2.5.1\r\
             SCH||B7||||||{kind}|30|MIN|{start}||||||||||||||{status}\r\
             PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR\r\n"
        )
    };
    let mut feed = msg("M2", "ADT^A08", "20261120100000", short);
    feed += &msg("M1", "ADT^A08", "20261120090000", full);
    feed += &siu("S2", "S14", "20261120110000", "", "", "Started");
    feed += &siu("S1", "S12", "20261120100000", "NP", "^^^20261201100000", "Booked");
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let detail = &summary(&d.latest_report("h"))[&("file:ehr/feed.hl7".to_string(), "detail".to_string())];
    assert!(
        detail.contains("2 message(s) older than the stored data were applied only to the fields"),
        "{detail}"
    );

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: [Option<String>; 5] = db
        .query_row(
            "SELECT last_name, birth_date, address1, phone_home, source_time FROM patients
             WHERE side = 'ehr' AND own_id = 'E1'",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?]),
        )
        .unwrap();
    let want = ["Lee-Smith", "1980-01-02", "77 New St", "+16175551234", "2026-11-20T15:00:00.000Z"];
    assert_eq!(row, want.map(|v| Some(v.to_string())), "the newer name stays; the late rest is set");
    let row: [Option<String>; 4] = db
        .query_row(
            "SELECT status, start_utc, appointment_type, source_time FROM appointments WHERE appt_id = 'B7'",
            [],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]),
        )
        .unwrap();
    let want = ["ARRIVED", "2026-12-01T15:00:00+00:00", "NP", "2026-11-20T16:00:00.000Z"];
    assert_eq!(row, want.map(|v| Some(v.to_string())), "the newer status stays; the late start is set");
}

/// An ADT^A40 that arrives after a newer message about the ID it merges
/// leaves that record, as time order would have: the newer message would
/// have brought the ID back. It says so in a warning.
#[test]
fn a_late_merge_keeps_a_record_newer_than_it() {
    let d = setup();
    let mut text = msg("M1", "ADT^A08", "20261103120000", &pid("E2", "100200", "5 Elm St"));
    text += &msg(
        "M2",
        "ADT^A40",
        "20261103100000",
        "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann\rMRG|E2^^^ATHENA^PI",
    );
    text += &msg(
        "M3",
        "ADT^A40",
        "20261103130000",
        "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann\rMRG|E3^^^ATHENA^PI",
    );
    d.write("inbox/feed.hl7", text);
    d.write("inbox/e3.hl7", msg("M0", "ADT^A28", "20261103110000", &pid("E3", "100300", "7 Oak St")));
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let ids: Vec<(String, String)> =
        pairs(&db, "SELECT own_id, ifnull(address1, '-') FROM patients WHERE side = 'ehr' ORDER BY own_id");
    let want = [("E1", "-"), ("E2", "5 Elm St")];
    assert_eq!(
        ids,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "E2 newer than its merge stays; E3 goes"
    );
    let merges: Vec<(String, String)> = pairs(&db, "SELECT surviving_id, merged_id FROM merges ORDER BY id");
    assert_eq!(merges.len(), 2, "both merges are recorded: {merges:?}");
    let rejects = read_csv(&d.latest_report("h").join("rejects.csv"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!((rejects[0]["severity"].as_str(), rejects[0]["record_id"].as_str()), ("warning", "M2"));
    assert!(rejects[0]["reason"].contains("newer than this merge, which arrived late"), "{rejects:?}");

    // The same merge sent again, in a file of its own, is listed once.
    let again = msg(
        "M3",
        "ADT^A40",
        "20261103130000",
        "PID|1||E1^^^ATHENA^PI~100100^^^PRACTICE^MR||Lee^Ann\rMRG|E3^^^ATHENA^PI",
    );
    d.write("inbox/again.hl7", again);
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let merges: Vec<(String, String)> = pairs(&db, "SELECT surviving_id, merged_id FROM merges ORDER BY id");
    assert_eq!(merges.len(), 2, "{merges:?}");
    let listed: Vec<String> = read_csv(&d.latest_report("h").join("merges.csv"))
        .iter()
        .map(|r| format!("{}<-{}", r["surviving_ehr_id"], r["merged_ehr_id"]))
        .collect();
    assert_eq!(listed, ["E1<-E2", "E1<-E3"]);
}

/// An ADT^A40 moves the merged ID's appointments to the surviving patient
/// (ID and MRN), in time order as a message about them would: a booking
/// newer than the merge that names the merged ID keeps it, and a late SIU
/// older than the merge does not bring the merged ID back. A second merge
/// of the same ID into another patient contradicts the first: both are
/// listed, with a warning.
#[test]
fn a_merge_moves_the_merged_ids_appointments_and_a_contradicting_merge_is_flagged() {
    let d = setup();
    let siu = |control: &str, time: &str, appt: &str, id: &str, mrn: &str| {
        format!(
            "MSH|^~\\&|ATHENA|C|FERRY|P|{time}||SIU^S12|{control}|P|2.5.1\r\
             SCH||{appt}||||||FU|30|MIN|^^^20261201093000||||||||||||||Booked\r\
             PID|1||{id}^^^ATHENA^PI~{mrn}^^^PRACTICE^MR\r\n"
        )
    };
    let a40 = |control: &str, time: &str, into: &str, mrn: &str| {
        msg(
            control,
            "ADT^A40",
            time,
            &format!("PID|1||{into}^^^ATHENA^PI~{mrn}^^^PRACTICE^MR||Lee^Ann\rMRG|E2^^^ATHENA^PI"),
        )
    };
    let mut feed = msg("P1", "ADT^A28", "20261103080000", &pid("E1", "100100", "1 Main St"));
    feed += &msg("P2", "ADT^A28", "20261103080000", &pid("E2", "100222", "2 Main St"));
    feed += &msg("P3", "ADT^A28", "20261103080000", &pid("E3", "100300", "3 Main St"));
    feed += &siu("S1", "20261103083000", "A1", "E2", "100222");
    feed += &siu("S3", "20261103110000", "A3", "E2", "100222");
    feed += &a40("M1", "20261103090000", "E1", "100100");
    // Older than the merge, newer than the booking: its patient is passed over.
    feed += &siu("S2", "20261103084500", "A1", "E2", "100222").replace("|FU|", "|NP|");
    feed += &a40("M2", "20261103100000", "E3", "100300");
    d.write("inbox/feed.hl7", feed);
    assert_exit(&d.ferry(&["run", "h"]), 0);

    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let appts: Vec<[String; 4]> = {
        let mut stmt = db
            .prepare("SELECT appt_id, patient_ehr_id, patient_mrn, appointment_type FROM appointments ORDER BY appt_id")
            .unwrap();
        stmt.query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?]))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let want = [["A1", "E1", "100100", "NP"], ["A3", "E2", "100222", "FU"]];
    assert_eq!(appts, want.map(|r| r.map(String::from)), "A1 moved to E1; A3, newer than the merge, not");

    let rejects = read_csv(&d.latest_report("h").join("rejects.csv"));
    let warnings: Vec<(&str, &str, &str)> = rejects
        .iter()
        .map(|r| (r["record_id"].as_str(), r["column"].as_str(), r["severity"].as_str()))
        .collect();
    assert_eq!(warnings, [("M2", "MRG-1", "warning")], "{rejects:?}");
    assert!(rejects[0]["reason"].contains("an earlier ADT^A40 merged this EHR ID into another patient"));
    let listed: Vec<String> = read_csv(&d.latest_report("h").join("merges.csv"))
        .iter()
        .map(|r| format!("{}<-{}", r["surviving_ehr_id"], r["merged_ehr_id"]))
        .collect();
    assert_eq!(listed, ["E1<-E2", "E3<-E2"]);

    // The same merge again is recorded, and flagged, once.
    d.write("inbox/again.hl7", a40("M1", "20261103090000", "E1", "100100"));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let rejects = read_csv(&d.latest_report("h").join("rejects.csv"));
    assert!(rejects.is_empty(), "{rejects:?}");
}

/// A file with no HL7 in it, such as a batch saved as UTF-16, is not
/// loaded and taken as done: the run fails and the file stays at the
/// source, named in rejects.csv, while the other files load.
#[test]
fn a_file_without_hl7_in_it_fails_and_stays_at_the_source() {
    let d = setup();
    let text = msg("M1", "ADT^A28", "20261101090000", &pid("E1", "100100", "2 New St"));
    let utf16: Vec<u8> =
        [0xFF, 0xFE].into_iter().chain(text.encode_utf16().flat_map(u16::to_le_bytes)).collect();
    d.write("inbox/wide.hl7", utf16);
    let out = d.ferry(&["run", "h"]);
    assert_exit(&out, 1);
    assert!(d.path("inbox/wide.hl7").exists(), "left at the source");
    let dir = d.latest_report("h");
    let rejects = read_csv(&dir.join("rejects.csv"));
    let wide: Vec<_> = rejects.iter().filter(|r| r["file"] == "wide.hl7").collect();
    assert_eq!(wide.len(), 1, "{rejects:?}");
    assert!(wide[0]["reason"].contains("UTF-16"), "{}", wide[0]["reason"]);
    let s = summary(&dir);
    assert_eq!(s[&("file:ehr/wide.hl7".to_string(), "status".to_string())], "failed");
    assert_eq!(s[&("file:ehr/feed.hl7".to_string(), "status".to_string())], "loaded", "the others load");
    // Not in the ledger: taken again next time, and refused again.
    assert_exit(&d.ferry(&["run", "h"]), 1);
    assert!(d.path("inbox/wide.hl7").exists());
}

/// A value that cannot be read (a four-digit ZIP, an unknown sex code, a
/// bad phone or email) leaves its field empty with a warning that names
/// the field, not the value; a bad number followed by a good one is not a
/// warning. Every warning is counted in the summary.
#[test]
fn a_value_that_cannot_be_read_is_loaded_empty_with_a_warning() {
    let d = setup();
    let pid = "PID|1||E1^^^ATHENA^PI||Lee^Ann||19800102|Q|||2 New St^^Boston^XX^0213||^PRN^PH^^1^617^555~^PRN^PH^^1^617^5550101~^NET^Internet^no-at-sign";
    d.write("inbox/feed.hl7", msg("M1", "ADT^A28", "20261101090000", pid));
    assert_exit(&d.ferry(&["run", "h"]), 0);
    let dir = d.latest_report("h");
    let rejects = read_csv(&dir.join("rejects.csv"));
    let got: Vec<(&str, &str, &str, &str)> = rejects
        .iter()
        .map(|r| (r["severity"].as_str(), r["record_id"].as_str(), r["column"].as_str(), r["field"].as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("warning", "M1", "PID-8", "sex"),
            ("warning", "M1", "PID-11.4", "state"),
            ("warning", "M1", "PID-11.5", "zip"),
            ("warning", "M1", "PID-13.4", "email"),
        ],
        "{rejects:?}"
    );
    assert!(rejects[2]["reason"].contains("PID-11.5 is not a valid US ZIP code; loaded without it"));
    for r in &rejects {
        assert!(!r["reason"].contains("0213") && !r["reason"].contains("no-at-sign"), "{}", r["reason"]);
    }
    let s = summary(&dir);
    let n = |m: &str| s[&("file:ehr/feed.hl7".to_string(), m.to_string())].clone();
    assert_eq!((n("accepted"), n("warnings")), ("1".into(), "4".into()));
    let db = Connection::open(d.home().join("ferry.db")).unwrap();
    let row: (Option<String>, Option<String>, Option<String>) = db
        .query_row("SELECT zip, phone_home, city FROM patients WHERE own_id = 'E1'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(row, (None, Some("+16175550101".into()), Some("Boston".into())));
}

#[test]
fn parse_shows_segments_and_mapped_records() {
    let d = setup();
    let out = d.ferry(&["parse", "inbox/feed.hl7"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("message 3 (line 9)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("PID-3[2]   .1=\"100100\" .4=\"PRACTICE\" .5=\"MR\""), "{}", stdout(&out));
    assert!(stdout(&out).contains("PROBLEM line 33: BTS-1 says 11"), "{}", stdout(&out));
    // A value cut short by a v2.7 sender is shown as it stands, marked.
    d.write(
        "cut.hl7",
        "MSH|^~\\&#|A|B|C|D|20261101090000||ADT^A28|M1|P|2.7\rPID|1||E1^^^ATHENA^PI||Lee#^Ann\r",
    );
    let out = d.ferry(&["parse", "cut.hl7"]);
    assert!(
        stdout(&out).contains("PID-5      .1=\"Lee#\" (cut short by the sender) .2=\"Ann\""),
        "{}",
        stdout(&out)
    );
    let out = d.ferry(&["parse", "inbox/feed.hl7", "--json"]);
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["record"]["patient"]["ehr_id"], "E1");
    assert_eq!(lines[7]["record"]["appointment"]["id"], "A1");
    assert!(lines[5]["error"].as_str().unwrap().contains("PID-3"));
    // What the message leaves out is listed: M9's SIU^S15 has no AIP.
    assert_eq!(
        lines[8]["record"]["appointment"]["keep_stored"],
        serde_json::json!(["provider_id", "department_id"])
    );
    // Without a job, times without an offset are UTC, and it says so; with
    // the job (or --time-zone), they are read as the run reads them.
    assert_eq!(lines[7]["record"]["appointment"]["start"], "2026-12-01T09:30:00Z");
    assert!(stderr(&out).contains("read as UTC"), "{}", stderr(&out));
    for args in [&["--job", "h"][..], &["--time-zone", "America/New_York"]] {
        let out = d.ferry(&[&["parse", "inbox/feed.hl7", "--json"][..], args].concat());
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("read as UTC"), "{}", stderr(&out));
        let line: serde_json::Value = serde_json::from_str(stdout(&out).lines().nth(7).unwrap()).unwrap();
        assert_eq!(line["record"]["appointment"]["start"], "2026-12-01T14:30:00Z", "{args:?}");
        assert_eq!(line["time"], "2026-11-05T14:00:00Z", "{args:?}");
    }
    let out = d.ferry(&["parse", "inbox/feed.hl7", "--json", "--time-zone", "Mars/Olympus"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("not a time zone name"), "{}", stderr(&out));
    // The job's roster is read as the job reads it, by its schema.
    let out = d.ferry(&["parse", "roster.csv", "--job", "h", "--json"]);
    assert_exit(&out, 0);
    let first: serde_json::Value = serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["record"]["practice_mrn"], "100100", "{first}");
    d.write("other.csv", ROSTER);
    let out = d.ferry(&["parse", "other.csv", "--job", "h"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no input of job h takes a file named \"other.csv\""), "{}", stderr(&out));
    d.write("inbox/empty.hl7", "\r\n");
    let out = d.ferry(&["parse", "inbox/empty.hl7"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("the file is empty"), "{}", stderr(&out));
}
