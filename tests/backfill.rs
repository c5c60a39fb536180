use std::fmt::Write as _;

use rusqlite::Connection;

use crate::util::{Dir, assert_exit, count, pairs, read_csv, stderr, stdout, summary};

const JOB: &str = r#"
[source]
type = "local"
inbox = "../inbox"
min_age = "0"

[[inputs]]
files = "*.csv"
schema = "ehr_patients"

[[inputs]]
files = "*.hl7"
schema = "ehr_hl7"

[practice]
file = "../roster.csv"
schema = "practice_roster"
"#;

const EHR_HEADER: &str = "PatientID,FirstName,LastName,DOB,Gender,Address1,Address2,City,State,Zip,Phone,Email,InsuranceProvider,MemberID,GroupNumber,PracticeMRN\r\n";
const ROSTER_HEADER: &str = "Chart Number,EHR Patient ID,Last Name,First Name,Middle Name,Date of Birth,Sex,Street,Street 2,City,ST,ZIP Code,Home Phone,Cell Phone,E-mail\r\n";

const FIRST: [&str; 10] = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ida", "Jo"];
const LAST: [&str; 10] = ["Lee", "Ng", "Po", "Roy", "Shaw", "Tam", "Uhl", "Vance", "Wu", "Yates"];

/// `n` EHR patients as CSV, one in three carrying its practice MRN.
fn ehr_csv(n: usize) -> String {
    let mut s = EHR_HEADER.to_string();
    for i in 0..n {
        let mrn = if i % 3 == 0 { format!("{}", 500000 + i) } else { String::new() };
        writeln!(
            s,
            "E{:07},{},{},{:02}/{:02}/{},{},{} Main St,,Boston,MA,02134,617555{:04},,,,,{mrn}\r",
            i,
            FIRST[i % 10],
            LAST[(i / 10) % 10],
            1 + i % 12,
            1 + i % 28,
            1930 + (i / 100) % 90,
            if i % 2 == 0 { "F" } else { "M" },
            i,
            i % 10000,
        )
        .unwrap();
    }
    s
}

/// The same people at the practice, none carrying the EHR ID.
fn roster_csv(n: usize) -> String {
    let mut s = ROSTER_HEADER.to_string();
    for i in 0..n {
        writeln!(
            s,
            "{},,{},{},,{}-{:02}-{:02},{},{} Main Street,,Boston,MA,02134,617-555-{:04},,\r",
            500000 + i,
            LAST[(i / 10) % 10],
            FIRST[i % 10],
            1930 + (i / 100) % 90,
            1 + i % 12,
            1 + i % 28,
            if i % 2 == 0 { "F" } else { "M" },
            i,
            i % 10000,
        )
        .unwrap();
    }
    s
}

/// `n` ADT^A28 messages for EHR IDs H0..Hn.
fn hl7_batch(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        write!(
            s,
            "MSH|^~\\&|ATHENA|C|FERRY|P|20261101090000||ADT^A28|M{i}|P|2.5.1\rPID|1||H{i:07}^^^ATHENA^PI||Zed^Al{i}||19800102|F\r\n"
        )
        .unwrap();
    }
    s
}

fn setup(n: usize) -> Dir {
    let d = Dir::with_project();
    d.write("jobs/bf.toml", JOB);
    d.write("inbox/ehr_full.csv", ehr_csv(n));
    d.write("roster.csv", roster_csv(n));
    d
}

fn db(d: &Dir) -> Connection {
    Connection::open(d.home().join("ferry.db")).unwrap()
}

#[test]
fn killed_backfill_goes_on_from_its_last_batch() {
    let d = setup(2_000);
    // Abort (as kill -9 would) at the second checkpoint of the EHR file.
    let o =
        d.ferry_env(&["backfill", "jobs/bf.toml", "--batch", "500"], &[("FERRY_FAILPOINT", "checkpoint:2")]);
    assert!(!o.status.success(), "the failpoint stops the process: {}", stderr(&o));
    let (state, done): (String, i64) = db(&d)
        .query_row("SELECT state, records_done FROM files WHERE name = 'ehr_full.csv'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((state.as_str(), done), ("loading", 1000), "two batches committed");
    let loaded: i64 =
        db(&d).query_row("SELECT count(*) FROM patients WHERE side = 'ehr'", [], |r| r.get(0)).unwrap();
    assert_eq!(loaded, 1000);
    assert!(d.path("inbox/ehr_full.csv").exists(), "the source file stays until the load is complete");

    let o = d.ferry(&["backfill", "jobs/bf.toml", "--batch", "500"]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("matched"), "a summary: {err}");
    let conn = db(&d);
    let rows: Vec<(String, i64, i64)> = conn
        .prepare("SELECT state, records_done, accepted FROM files WHERE name = 'ehr_full.csv'")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1, "one ledger row: the file was continued, not taken again");
    assert_eq!(rows[0].0, "archived");
    assert_eq!(rows[0].2, 2000, "every record counted once");
    let kinds: Vec<String> = conn
        .prepare("SELECT kind || ':' || outcome FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(kinds, ["backfill:abandoned", "backfill:ok"]);

    // Counts add up, and demographics link what the IDs do not.
    let s = summary(&d.latest_report("bf"));
    assert_eq!(count(&s, "reconcile", "ehr_patients"), 2000);
    let by_mrn = count(&s, "reconcile", "matched_by_practice_mrn");
    let by_demo = count(&s, "reconcile", "matched_by_demographics");
    assert_eq!(by_mrn, 667, "one in three carries the MRN");
    assert_eq!(by_mrn + by_demo + count(&s, "reconcile", "unmatched_ehr"), 2000);
    assert!(by_demo > 1300, "demographics link the rest: {by_demo}");
    let updates = read_csv(&d.latest_report("bf").join("id_updates.csv"));
    assert_eq!(updates.len() as u64, by_demo, "each confident demographic link is an ID update");
    let wrong = updates
        .iter()
        .filter(|u| u["PracticeMRN"] != format!("{}", 500000 + u["PatientID"][1..].parse::<usize>().unwrap()))
        .count();
    assert_eq!(wrong, 0, "every ID update pairs the right people");
}

#[test]
fn killed_hl7_backfill_loads_no_message_twice() {
    // Killed while the file was mapped ahead of its load, then resumed
    // with it mapped as it loads, and the other way round.
    for (killed, resumed) in [("on", "off"), ("off", "on")] {
        let d = setup(10);
        d.write("inbox/adt_full.hl7", hl7_batch(9_000));
        // A checkpoint every 1000 messages (not at a chunk's end: messages are
        // mapped 1024 at a time): abort after the first.
        let o = d.ferry_env(
            &["backfill", "jobs/bf.toml", "--batch", "1000"],
            &[("FERRY_FAILPOINT", "checkpoint:1"), ("FERRY_MAP_AHEAD", killed)],
        );
        assert!(!o.status.success());
        // The messages after the checkpoint are NEW: listed from ferry's copy
        // of the file, with no ID in the store yet, and counted.
        let o = d.ferry(&["queue", "--job", "jobs/bf.toml", "--state", "new", "--json"]);
        assert_exit(&o, 0);
        let new: Vec<serde_json::Value> =
            stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(new.len(), 9000 - 1000, "every message after the first batch waits");
        let first = &new[0];
        assert_eq!(
            (&first["number"], &first["control_id"], &first["event"], &first["state"], &first["id"]),
            (&1001.into(), &"M1000".into(), &"ADT^A28".into(), &"NEW".into(), &serde_json::Value::Null)
        );
        assert_eq!(first["time"], "2026-11-01T09:00:00.000Z", "read in the job's time zone (UTC): {first}");
        let o = d.ferry(&["queue", "--job", "jobs/bf.toml"]);
        assert!(
            stdout(&o).contains("job bf: 8000 NEW, 1000 PROCESSED, 0 ERROR, 0 DELETED"),
            "{}",
            stdout(&o)
        );
        let o =
            d.ferry_env(&["backfill", "jobs/bf.toml", "--batch", "1000"], &[("FERRY_MAP_AHEAD", resumed)]);
        assert_exit(&o, 0);
        let o = d.ferry(&["queue", "--job", "jobs/bf.toml"]);
        assert!(stdout(&o).contains("job bf: 0 NEW, 9000 PROCESSED, 0 ERROR, 0 DELETED"), "{}", stdout(&o));
        let conn = db(&d);
        let (messages, distinct): (i64, i64) = conn
            .query_row("SELECT count(*), count(DISTINCT number) FROM messages", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((messages, distinct), (9000, 9000), "every message queued exactly once");
        let s = summary(&d.latest_report("bf"));
        assert_eq!(count(&s, "file:ehr/adt_full.hl7", "read"), 9000);
        assert_eq!(count(&s, "file:ehr/adt_full.hl7", "accepted"), 9000);
    }
}

/// What a file's messages did before a kill is counted with what they did
/// after it: the file's detail covers the whole file.
#[test]
fn a_resumed_hl7_load_counts_what_its_messages_did_before_the_kill() {
    let d = setup(10);
    // 600 messages, then 1200 older ones: those of the first 600 patients
    // are older than the stored data, 400 before the checkpoint, 200 after.
    let newer = hl7_batch(600).replace("20261101090000", "20261102090000");
    d.write("inbox/adt_full.hl7", format!("{newer}{}", hl7_batch(1200)));
    let o =
        d.ferry_env(&["backfill", "jobs/bf.toml", "--batch", "1000"], &[("FERRY_FAILPOINT", "checkpoint:1")]);
    assert!(!o.status.success());
    assert_exit(&d.ferry(&["backfill", "jobs/bf.toml", "--batch", "1000"]), 0);
    let s = summary(&d.latest_report("bf"));
    assert_eq!(
        s[&("file:ehr/adt_full.hl7".to_string(), "detail".to_string())],
        "600 message(s) older than the stored data were queued but not applied"
    );
}

/// A load killed after a checkpoint goes on from ferry's own copy even when
/// the source no longer lists the file as it was: gone, or sent again
/// under its name with other bytes (which is then a file of its own). The
/// messages in ERROR before the kill are in the reports of the run that
/// finishes the load.
#[test]
fn an_interrupted_load_goes_on_when_its_source_file_is_gone_or_replaced() {
    for replaced in [false, true] {
        let d = setup(10);
        let bad =
            "MSH|^~\\&|ATHENA|C|FERRY|P|20261101090000||ADT^A99|BAD1|P|2.5.1\rPID|1||H9^^^ATHENA^PI\r\n";
        d.write("inbox/adt_full.hl7", format!("{bad}{}", hl7_batch(3_000)));
        let o = d
            .ferry_env(&["backfill", "jobs/bf.toml", "--batch", "1"], &[("FERRY_FAILPOINT", "checkpoint:1")]);
        assert!(!o.status.success());
        if replaced {
            d.write("inbox/adt_full.hl7", hl7_batch(5));
        } else {
            std::fs::remove_file(d.path("inbox/adt_full.hl7")).unwrap();
        }
        let o = d.ferry(&["run", "jobs/bf.toml"]);
        assert_exit(&o, 0);
        let o = d.ferry(&["queue", "--job", "jobs/bf.toml"]);
        let counts =
            if replaced { "0 NEW, 3005 PROCESSED, 1 ERROR" } else { "0 NEW, 3000 PROCESSED, 1 ERROR" };
        assert!(
            stdout(&o).contains(&format!("job bf: {counts}, 0 DELETED")),
            "replaced {replaced}: {}",
            stdout(&o)
        );
        let dir = d.latest_report("bf");
        let rejects = read_csv(&dir.join("rejects.csv"));
        assert!(rejects.iter().any(|r| r["record_id"] == "BAD1"), "replaced {replaced}: {rejects:?}");
        let files: Vec<(String, i64)> =
            pairs(&db(&d), "SELECT state, read FROM files WHERE name = 'adt_full.hl7' ORDER BY id");
        let mut want = vec![("loaded".to_string(), 3001)];
        if replaced {
            // The new file is archived at the source; the old one is not there.
            want.push(("archived".to_string(), 5));
        }
        assert_eq!(files, want, "replaced {replaced}");
        let o = d.ferry(&["run", "jobs/bf.toml"]);
        assert_exit(&o, 0);
        let o = d.ferry(&["queue", "--job", "jobs/bf.toml"]);
        assert!(
            stdout(&o).contains(&format!("job bf: {counts}, 0 DELETED")),
            "a re-run loads nothing: {}",
            stdout(&o)
        );
    }
}

#[test]
fn backfill_without_a_kill_matches_a_plain_run() {
    let d = setup(300);
    let o = d.ferry(&["backfill", "jobs/bf.toml", "--batch", "7"]);
    assert_exit(&o, 0);
    let s = summary(&d.latest_report("bf"));
    assert_eq!(count(&s, "file:ehr/ehr_full.csv", "accepted"), 300);
    assert_eq!(count(&s, "reconcile", "matched"), 300);
    let o = d.ferry(&["backfill", "jobs/bf.toml", "--batch", "0"]);
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("invalid value '0' for '--batch <BATCH>'"), "{}", stderr(&o));
}
