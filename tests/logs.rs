//! Logs never carry patient data. The demo runs (with email and push-back)
//! at the most verbose level, as text and as JSON lines, and every log line
//! and the email's body are searched for every sample patient's names,
//! birth dates (as the files write them and as ISO dates) and IDs, read
//! straight from sample-data/ (rejected rows included).

use std::collections::BTreeSet;

use crate::smtpd::{self, Smtpd, email_env, email_table, make_certs, parts};
use crate::util::{Dir, assert_exit, demo_job, stderr};

/// Names, birth dates, IDs, emails and street lines of every patient in sample-data.
fn phi_tokens(d: &Dir) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: &str| {
        let v = v.trim();
        if v.len() >= 2 {
            out.insert(v.to_lowercase());
        }
    };
    let csvs = [
        (
            "sample-data/inbox/ehr_patients_20261120.csv",
            &["PatientID", "FirstName", "LastName", "DOB", "MemberID", "Email", "Address1", "PracticeMRN"][..],
        ),
        (
            "sample-data/practice/roster_20261120.csv",
            &[
                "Chart Number",
                "EHR Patient ID",
                "Last Name",
                "First Name",
                "Middle Name",
                "Date of Birth",
                "Street",
                "E-mail",
            ][..],
        ),
    ];
    for (file, columns) in csvs {
        let bytes = std::fs::read(d.path(file)).unwrap();
        let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(&bytes[..]);
        let headers = rdr.byte_headers().unwrap().clone();
        let idx: Vec<usize> = columns
            .iter()
            .filter_map(|c| {
                headers.iter().position(|h| String::from_utf8_lossy(h).trim_start_matches('\u{feff}') == *c)
            })
            .collect();
        assert!(idx.len() >= columns.len() - 1, "{file}: columns {columns:?} not found in {headers:?}");
        for rec in rdr.byte_records() {
            let rec = rec.unwrap();
            for &i in &idx {
                if let Some(v) = rec.get(i) {
                    add(&String::from_utf8_lossy(v));
                    // Also a US date as an ISO date, as ferry would write it.
                    let v = String::from_utf8_lossy(v);
                    let parts: Vec<&str> = v.split('/').collect();
                    if parts.len() == 3 && parts[2].len() == 4 {
                        add(&format!("{}-{:0>2}-{:0>2}", parts[2], parts[0], parts[1]));
                    }
                }
            }
        }
    }
    for e in std::fs::read_dir(d.path("sample-data/inbox")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "hl7") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        for seg in text.split(['\r', '\n']).filter(|s| s.starts_with("PID|") || s.starts_with("MRG|")) {
            let fields: Vec<&str> = seg.split('|').collect();
            let ids = if seg.starts_with("PID|") { [3, 5, 7, 11] } else { [1, 1, 1, 1] };
            for n in ids {
                for rep in fields.get(n).unwrap_or(&"").split('~') {
                    let first = rep.split('^').next().unwrap_or("");
                    add(first);
                    if n == 5 {
                        add(rep.split('^').nth(1).unwrap_or(""));
                    }
                    if n == 7 && first.len() == 8 {
                        add(&format!("{}-{}-{}", &first[..4], &first[4..6], &first[6..]));
                    }
                }
            }
        }
    }
    assert!(out.len() > 1000, "only {} tokens found in sample-data", out.len());
    out
}

/// The tokens that occur in `text` as whole words (case-insensitive).
fn leaks(text: &str, tokens: &BTreeSet<String>) -> Vec<String> {
    let lower = text.to_lowercase();
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    let mut found = Vec::new();
    for t in tokens {
        let mut from = 0;
        while let Some(i) = lower[from..].find(t.as_str()) {
            let at = from + i;
            let before = lower[..at].chars().next_back();
            let after = lower[at + t.len()..].chars().next();
            if !word(before) && !word(after) {
                let line = lower[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = lower[at..].find('\n').map_or(lower.len(), |n| at + n);
                found.push(format!("{t:?} in: {}", &text[line..end]));
                break;
            }
            from = at + t.len();
        }
    }
    found
}

#[test]
fn no_patient_data_in_any_log_line_or_the_email_body() {
    let mut email_bodies = String::new();
    let mut tokens = BTreeSet::new();
    for format in ["text", "json"] {
        let d = Dir::with_project();
        if tokens.is_empty() {
            tokens = phi_tokens(&d);
        }
        let certs = make_certs(&d.path("certs"));
        let server = Smtpd::start(&d.path("smtp"), &certs, smtpd::free_port(), false);
        std::fs::create_dir_all(d.path("outbound")).unwrap();
        let tables = format!(
            "{}\n[[push]]\nfiles = [\"id_updates.csv\"]\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n",
            email_table(server.port, &certs.ca, "starttls")
        );
        d.write("jobs/demo.toml", demo_job("schedule = \"30 2 * * *\"", &tables));
        let mut env = email_env();
        env.push(("FERRY_LOG", "trace"));
        let mut logs = String::new();
        // A run by hand, a scheduled one (first seen, then due), and a check.
        for (args, now) in [
            (vec!["-vv", "--log-format", format, "run", "demo"], "2026-06-01T01:00:00-04:00"),
            (vec!["-vv", "--log-format", format, "run-due"], "2026-06-01T01:00:00-04:00"),
            (vec!["-vv", "--log-format", format, "run-due"], "2026-06-01T02:30:30-04:00"),
            (vec!["-vv", "--log-format", format, "check", "demo"], "2026-06-01T02:31:00-04:00"),
        ] {
            let mut env = env.clone();
            env.push(("FERRY_NOW", now));
            let out = d.ferry_env(&args, &env);
            assert_exit(&out, 0);
            logs.push_str(&stderr(&out));
        }
        let log_lines: Vec<&str> = logs
            .lines()
            .filter(|l| if format == "json" { l.starts_with('{') } else { l.contains(" ferry::") })
            .collect();
        assert!(log_lines.len() >= 12, "too few {format} log lines to prove anything:\n{logs}");
        if format == "json" {
            // Every line, the run's summary and `Reports:` too, is an object.
            for l in logs.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
            }
            assert!(logs.contains("\"message\":\"Reports: "), "{logs}");
        }
        // Debug lines are there, so this is the most verbose level.
        assert!(logs.contains("DEBUG") || logs.contains("TRACE"), "{logs}");
        let found = leaks(&logs, &tokens);
        assert!(found.is_empty(), "patient data in {format} logs:\n{}", found.join("\n"));

        let msgs = server.messages();
        assert_eq!(msgs.len(), 2, "two runs, two messages");
        for m in &msgs {
            for (mime, name, body) in parts(m) {
                if name.is_none() && mime.starts_with("text/") {
                    email_bodies.push_str(&String::from_utf8_lossy(&body));
                    email_bodies.push('\n');
                }
            }
            email_bodies.push_str(&crate::smtpd::header(m, "Subject").unwrap());
            email_bodies.push('\n');
        }
    }
    assert!(email_bodies.contains("Records loaded"), "{email_bodies}");
    let found = leaks(&email_bodies, &tokens);
    assert!(found.is_empty(), "patient data in the email:\n{}", found.join("\n"));
}

#[test]
fn the_leak_search_finds_what_it_should() {
    let tokens: BTreeSet<String> =
        ["gallagher", "1977-09-24", "e10001"].iter().map(|s| s.to_string()).collect();
    assert_eq!(leaks("Loaded file. name=Gallagher", &tokens).len(), 1);
    assert_eq!(leaks("dob 1977-09-24\n", &tokens).len(), 1);
    assert_eq!(leaks("{\"id\":\"E10001\"}", &tokens).len(), 1);
    assert!(leaks("E100012 and xgallagher", &tokens).is_empty());
}

/// The progress bar is drawn on a terminal only: `script` gives ferry a
/// pseudo-terminal; under a pipe (cron) nothing but the summary is written.
#[test]
fn progress_bar_only_on_a_terminal() {
    let d = Dir::with_project();
    let out = d.ferry(&["gen", "--patients", "20000", "--out", "gen"]);
    assert_exit(&out, 0);
    d.write(
        "jobs/big.toml",
        "[source]\ntype = \"local\"\ninbox = \"../gen\"\ninclude = [\"ehr_patients.csv\"]\nmin_age = \"0\"\n\
         after = \"keep\"\n[[inputs]]\nfiles = \"ehr_patients.csv\"\nschema = \"ehr_patients\"\n",
    );
    let piped = d.ferry(&["backfill", "big", "--batch", "1000"]);
    assert_exit(&piped, 0);
    assert!(!stderr(&piped).contains("loading ["), "a bar under a pipe: {}", stderr(&piped));

    let typescript = d.path("typescript");
    let cmd = format!("{} backfill big --batch 1000", env!("CARGO_BIN_EXE_ferry"));
    let status = std::process::Command::new("script")
        .args(["-qec", &cmd])
        .arg(&typescript)
        .current_dir(d.path(""))
        .env("FERRY_HOME", d.path("home2"))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("`script` (util-linux) is missing ({e}): apt-get install bsdutils"));
    assert!(status.success());
    let seen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(seen.contains("loading ["), "no progress bar on a terminal: {seen}");
}
