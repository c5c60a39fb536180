use crate::util::{Dir, assert_exit, stderr, stdout};

const GOOD_JOB: &str = r#"
[source]
type = "local"
inbox = "../inbox"

[[inputs]]
files = "*.csv"
schema = "ehr_patients"
"#;

fn job_dir_with(text: &str) -> Dir {
    let d = Dir::with_project();
    std::fs::create_dir_all(d.path("inbox")).unwrap();
    d.write("jobs/t.toml", text);
    d
}

/// Settings that could never take effect fail `check`, instead of doing
/// something else at 03:00 (a job told to archive that deletes).
#[test]
fn check_refuses_settings_that_cannot_take_effect() {
    let cases = [
        (
            GOOD_JOB.replace(
                "inbox = \"../inbox\"",
                "inbox = \"../inbox\"\nafter = \"delete\"\narchive_dir = \"../archive\"",
            ),
            "source.archive_dir: only used with after = \"archive\", and after is \"delete\"",
        ),
        (
            GOOD_JOB.replace("inbox = \"../inbox\"", "inbox = \"../inbox\"\ninclude = []"),
            "source.include: an empty list takes no file",
        ),
        (GOOD_JOB.replace("files = \"*.csv\"", "files = \"sub/*.csv\""), "\"sub/*.csv\" holds a '/'"),
        (
            format!("{GOOD_JOB}\n[reconcile.matching]\nenabled = false\nlink_at = 7\n"),
            "reconcile.matching.link_at: 7 must be a probability",
        ),
    ];
    for (job, says) in cases {
        let d = job_dir_with(&job);
        let out = d.ferry(&["check", "jobs/t.toml"]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{says}: {}", stderr(&out));
    }
}

#[test]
fn check_misspelt_key_exits_2_naming_the_key() {
    let d = job_dir_with(&GOOD_JOB.replace("inbox = ", "inbx = "));
    let out = d.ferry(&["check", "jobs/t.toml"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("jobs/t.toml"), "{err}");
    assert!(err.contains("inbx"), "{err}");
}

#[test]
fn check_reports_wrong_type_missing_file_and_bad_pattern() {
    let d = job_dir_with(&GOOD_JOB.replace("files = \"*.csv\"", "files = 7"));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("line 7, key inputs.files: invalid type"), "{}", stderr(&out));

    let d = job_dir_with(&GOOD_JOB.replace("ehr_patients", "no_such_schema"));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("inputs[0].schema") && stderr(&out).contains("does not exist"),
        "{}",
        stderr(&out)
    );

    let d = job_dir_with(&GOOD_JOB.replace("\"*.csv\"", "\"[*.csv\""));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("bad pattern"), "{}", stderr(&out));

    let d = job_dir_with(&GOOD_JOB.replace("../inbox", "../nowhere"));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("source.inbox"), "{}", stderr(&out));

    // Inside [source] (a tagged table), the key and its line are named.
    let d = job_dir_with(&GOOD_JOB.replace("type = \"local\"", "type = \"local\"\nafter = \"archiv\""));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("line 4, key source.after: unknown variant `archiv`"), "{}", stderr(&out));
    let d = job_dir_with(&GOOD_JOB.replace("[source]\ntype = \"local\"\ninbox = \"../inbox\"\n", ""));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("[source]: missing"), "{}", stderr(&out));

    // A schedule that parses but never fires: the job would never run.
    let d = job_dir_with(&format!("schedule = \"0 3 30 2 *\"\n{GOOD_JOB}"));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("schedule: \"0 3 30 2 *\" never fires"), "{}", stderr(&out));
    let d = job_dir_with(&format!("schedule = \"0 3 28 2 *\"\n{GOOD_JOB}"));
    assert_exit(&d.ferry(&["check", "t"]), 0);
}

/// A folder or roster the job names that is missing when it runs (a share
/// not mounted) is a failed run, recorded in history (exit 1), not a bad
/// job file: `status` and `history` still read the job, and `check` names
/// what is missing (exit 2).
#[test]
fn a_missing_inbox_or_roster_fails_the_run_and_is_recorded() {
    let job = format!("{GOOD_JOB}\n[practice]\nfile = \"../roster.csv\"\nschema = \"practice_roster\"\n");
    let d = job_dir_with(&job.replace("../inbox", "../share/inbox"));
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("source.inbox: folder") && err.contains("does not exist"), "{err}");
    assert!(err.contains("practice.file:"), "{err}");
    let out = d.ferry(&["history", "t"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("failed") && stdout(&out).contains("source.inbox"), "{}", stdout(&out));
    let out = d.ferry(&["status"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("failed") && !stdout(&out).contains("no job file"), "{}", stdout(&out));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("source.inbox") && stderr(&out).contains("practice.file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_refuses_a_password_in_the_job_file() {
    let d = job_dir_with(&GOOD_JOB.replace("type = \"local\"", "type = \"local\"\npassword = \"s3cret\""));
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("password_env"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cret"), "the secret must not be echoed");
}

#[test]
fn check_all_passes_on_the_shipped_files() {
    let d = Dir::with_project();
    let out = d.ferry(&["check"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    for name in ["schema ehr_patients", "schema practice_roster", "schema practice_roster_fixed", "job demo"]
    {
        assert!(err.contains(name), "{name} not checked: {err}");
    }
    // An HL7 schema says which IDs it picks and what it makes of other events.
    let want = "ok    schema ehr_hl7 (HL7; EHR ID: assigning authority ATHENA and type PI; practice MRN: \
                assigning authority PRACTICE and type MR)";
    assert!(err.contains(want), "{err}");
    let shipped = std::fs::read_to_string(d.path("schemas/ehr_hl7.toml")).unwrap();
    d.write(
        "schemas/ehr_hl7.toml",
        format!("{shipped}\n[events]\npatient = [\"ADT^A05\"]\nignore = [\"ADT^A03\", \"ORU\"]\n"),
    );
    let err = stderr(&d.ferry(&["check"]));
    assert!(err.contains("MR; also read as patient updates: ADT^A05; ignored: ADT^A03, ORU)"), "{err}");
}

/// Two job files with one name (a job copied, its name left as it was)
/// would share one ledger, lock, reports and schedule: `check`, `run-due`
/// and `status` refuse both, each naming the other (ferry cannot tell
/// which one the operator edited; `run-due` ran the first in file order).
#[test]
fn two_jobs_of_one_name_are_refused() {
    let job = format!("name = \"nightly\"\nschedule = \"* * * * *\"\n{GOOD_JOB}");
    let d = job_dir_with(&job);
    d.write("jobs/u.toml", &job);
    // run-due twice, so that the schedule fires between the two.
    fn at(t: &str) -> [(&str, &str); 1] {
        [("FERRY_NOW", t)]
    }
    assert_exit(&d.ferry_env(&["run-due"], &at("2026-12-01T02:30:10Z")), 2);
    for args in [&["check"][..], &["run-due"], &["status"]] {
        let out = d.ferry_env(args, &at("2026-12-01T02:35:10Z"));
        assert_exit(&out, 2);
        let err = stderr(&out);
        for (file, other) in [("t.toml", "u.toml"), ("u.toml", "t.toml")] {
            let says = format!("{file}: name: \"nightly\" is also the name of");
            assert!(err.contains(&says) && err.contains(other), "{args:?}: {err}");
        }
    }
    assert!(!d.home().join("reports").exists(), "run-due ran neither");
    d.write("jobs/u.toml", format!("name = \"weekly\"\n{GOOD_JOB}"));
    assert!(!stderr(&d.ferry(&["check"])).contains("is also the name of"));
}

#[test]
fn bad_schema_file_is_exit_2() {
    let d = job_dir_with(GOOD_JOB);
    d.write(
        "schemas/ehr_patients.toml",
        "format = \"delimited\"\n[[columns]]\nname = \"A\"\nfield = \"ehr_id\"\nrequired = tru\n",
    );
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("ehr_patients.toml"), "{}", stderr(&out));
}

#[test]
fn every_command_has_help_and_bad_usage_is_exit_2() {
    let d = Dir::new();
    for cmd in ["run", "check", "parse", "status", "history"] {
        let out = d.ferry(&[cmd, "--help"]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("Usage: ferry"), "{cmd}: {}", stdout(&out));
    }
    assert_exit(&d.ferry(&["frobnicate"]), 2);
    assert_exit(&d.ferry(&["run"]), 2);
}

#[test]
fn missing_job_is_exit_2() {
    let d = Dir::new();
    let out = d.ferry(&["run", "nope"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("cannot read job file"), "{}", stderr(&out));
}

#[test]
fn parse_prints_records_and_rejects() {
    let d = Dir::with_project();
    d.fixture("ehr_small.csv", "ehr_small.csv");
    let out = d.ferry(&["parse", "ehr_small.csv", "--schema", "ehr_patients"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.contains("line 2: ehr_id=\"E1\""), "{text}");
    assert!(text.contains("line 3: ehr_id=\"E2\""), "{text}");
    assert!(text.contains("phone_home=\"+16175550100\""), "{text}");
    assert!(text.contains("line 4: REJECTED DOB"), "{text}");
    assert!(stderr(&out).contains("3 read = 2 accepted + 1 rejected"), "{}", stderr(&out));

    let out = d.ferry(&["parse", "ehr_small.csv", "--schema", "ehr_patients", "--json"]);
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["record"]["birth_date"], "1970-01-02");
    assert_eq!(lines[2]["reject"]["severity"], "rejected");
}

#[test]
fn parse_fixed_width_windows_1252() {
    let d = Dir::with_project();
    d.fixture("roster_fixed.txt", "roster.txt");
    let out = d.ferry(&["parse", "roster.txt", "--schema", "practice_roster_fixed", "--json"]);
    assert_exit(&out, 0);
    let lines: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{}", stdout(&out));
    assert_eq!(lines[0]["record"]["practice_mrn"], "100");
    assert_eq!(lines[0]["record"]["sex"], "F");
    assert_eq!(lines[0]["record"]["address1"], "1 Main St");
    assert_eq!(lines[2]["record"]["last_name"], "Muñoz");
    assert_eq!(lines[2]["record"]["first_name"], "José");
    assert_eq!(lines[3]["line"], 5);
    assert_eq!(lines[3]["reject"]["severity"], "rejected");
}

#[test]
fn status_and_history_after_a_run() {
    let d = Dir::with_project();
    let out = d.ferry(&["status"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("demo") && stdout(&out).contains("never"), "{}", stdout(&out));
    assert_exit(&d.ferry(&["run", "demo"]), 0);
    let out = d.ferry(&["status"]);
    assert_exit(&out, 0);
    let line = stdout(&out).lines().find(|l| l.starts_with("demo")).unwrap().to_string();
    assert!(line.contains(" ok "), "{line}");
    // The last run in the job's zone, as its next due time would be.
    assert!(line.contains(" EST ") || line.contains(" EDT "), "{line}");
    let out = d.ferry(&["history"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).lines().any(|l| l.contains("demo") && l.contains("ok")), "{}", stdout(&out));
    // Times carry their offset.
    let row = stdout(&out).lines().nth(1).unwrap().to_string();
    let offset = row.split_whitespace().nth(4).unwrap_or_default();
    assert!(offset.len() == 5 && (offset.starts_with('+') || offset.starts_with('-')), "{row}");

    // A job file that cannot be read is named, not left out in silence.
    d.write("jobs/other.toml", "[source]\ntype = \"local\"\ninbox = \".\"\nafter = \"archiv\"\n");
    let out = d.ferry(&["status"]);
    assert_exit(&out, 2);
    assert!(stdout(&out).lines().any(|l| l.starts_with("demo")), "{}", stdout(&out));
    assert!(stderr(&out).contains("other.toml") && stderr(&out).contains("do not run"), "{}", stderr(&out));
    // As an ERROR in JSON logs, for alerts.
    let out = d.ferry(&["--log-format", "json", "status"]);
    let line = stderr(&out).lines().find(|l| l.contains("other.toml")).unwrap().to_string();
    assert!(line.contains(r#""level":"ERROR""#), "{line}");

    // A jobs folder mistyped: every job would show "no job file".
    std::fs::remove_file(d.path("jobs/other.toml")).unwrap();
    let out = d.ferry_env(&["status"], &[("FERRY_JOBS_DIR", "jbos")]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no job files in jbos"), "{}", stderr(&out));
}

#[test]
fn a_store_written_by_a_newer_ferry_is_refused_with_its_version() {
    let d = Dir::with_project();
    assert_exit(&d.ferry(&["run", "demo"]), 0);
    let db = rusqlite::Connection::open(d.home().join("ferry.db")).unwrap();
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    db.pragma_update(None, "user_version", version + 1).unwrap();
    drop(db);
    for args in [&["queue", "--job", "demo"][..], &["run", "demo"]] {
        let out = d.ferry(args);
        assert_exit(&out, 1);
        let err = stderr(&out);
        let says = format!(
            "the store is at version {}, newer than this ferry knows (version {version})",
            version + 1
        );
        assert!(err.contains(&says), "{args:?}: {err}");
        assert_eq!(stdout(&out), "", "{args:?}: nothing printed before the error");
    }
}
