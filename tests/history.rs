//! `ferry history` and pruning: runs older than `history.keep` go with their
//! received copies, report folders and archived source files; the ledger
//! still knows their files.

use crate::util::{Dir, assert_exit, demo_job, stderr, stdout};

fn history_json(d: &Dir) -> Vec<serde_json::Value> {
    let out = d.ferry(&["history", "demo", "--json"]);
    assert_exit(&out, 0);
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn history_lists_start_end_outcome_and_counts() {
    let d = Dir::with_project();
    for _ in 0..2 {
        assert_exit(&d.ferry(&["run", "demo"]), 0);
    }
    let out = d.ferry(&["history", "demo"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let head = text.lines().next().unwrap();
    for col in ["RUN", "STARTED", "ENDED", "OUTCOME", "FILES", "RECORDS", "REJECTS", "MATCHES", "CONFLICTS"] {
        assert!(head.contains(col), "{head}");
    }
    assert_eq!(text.lines().count(), 3, "{text}");
    let runs = history_json(&d);
    assert_eq!(runs.len(), 2);
    // Newest first; the first run loaded the files, the second found them in the ledger.
    assert_eq!((runs[0]["id"].as_i64(), runs[1]["id"].as_i64()), (Some(2), Some(1)));
    let first = &runs[1];
    assert_eq!(first["outcome"], "ok");
    assert!(first["finished_at"].as_str().unwrap() >= first["started_at"].as_str().unwrap());
    assert_eq!(first["files"], 4);
    assert!(first["records"].as_u64().unwrap() > 0 && first["rejects"].as_u64().unwrap() > 0);
    assert!(first["matches"].as_u64().unwrap() > 0 && first["conflicts"].as_u64().unwrap() > 0);
    assert_eq!(runs[0]["files"], 0);

    // A retired job (its file gone) still has its history, by name; an
    // unknown name says where its file was looked for.
    std::fs::remove_file(d.path("jobs/demo.toml")).unwrap();
    let out = d.ferry(&["history", "demo"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    assert!(stderr(&out).contains("cannot read job file"), "{}", stderr(&out));
    let out = d.ferry(&["history", "nosuch"]);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("(no ") && stderr(&out).contains("jobs/nosuch.toml either)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn old_runs_are_pruned_with_their_received_copies_reports_and_archived_files() {
    let d = Dir::with_project();
    for e in std::fs::read_dir(d.path("sample-data/inbox")).unwrap() {
        let e = e.unwrap();
        d.write(&format!("inbox/{}", e.file_name().to_string_lossy()), std::fs::read(e.path()).unwrap());
    }
    let job = demo_job("", "[history]\nkeep = \"30d\"\ndelete = [\"received\", \"reports\", \"archived\"]\n")
        .replace("inbox = \"../sample-data/inbox\"", "inbox = \"../inbox\"")
        .replace("after = \"keep\"", "after = \"archive\"");
    d.write("jobs/demo.toml", job);
    let run_at = |now: &str| {
        let out = d.ferry_env(&["run", "demo"], &[("FERRY_NOW", now)]);
        assert_exit(&out, 0);
        out
    };

    run_at("2026-01-01T02:00:00-05:00");
    assert_eq!(std::fs::read_dir(d.path("inbox/archive")).unwrap().count(), 3);
    d.fixture("ehr_small.csv", "inbox/ehr_patients_small.csv");
    run_at("2026-01-21T02:00:00-05:00");
    let before = history_json(&d);
    let report =
        |id: i64| before.iter().find(|r| r["id"] == id).unwrap()["report_dir"].as_str().unwrap().to_string();
    let (report1, report2) = (report(1), report(2));
    assert!(d.home().join("received/demo/run-1").is_dir());
    // Two of the first run's bad HL7 messages: one deleted, one left in ERROR.
    let out = d.ferry(&["queue", "--json"]);
    assert_exit(&out, 0);
    let queued: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    assert!(queued.len() >= 2, "the demo plants bad HL7 messages: {queued:?}");
    let (deleted, kept) = (&queued[0], &queued[1]);
    assert_exit(&d.ferry(&["queue", "delete", deleted]), 0);
    let out = d.ferry(&["queue", "show", deleted]);
    assert!(
        stdout(&out).contains("MSH-3"),
        "until the prune, a deleted message is still shown: {}",
        stdout(&out)
    );

    // 45 days after the first run: it goes, the 25-day-old one stays.
    let out = run_at("2026-02-15T02:00:00-05:00");
    assert!(stderr(&out).contains("Pruned 1 old run(s)"), "{}", stderr(&out));
    let ids: Vec<i64> = history_json(&d).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 2]);
    assert!(!d.home().join("received/demo/run-1").exists());
    assert!(d.home().join("received/demo/run-2").is_dir());
    assert!(!std::path::Path::new(&report1).exists(), "{report1}");
    assert!(std::path::Path::new(&report2).is_dir(), "{report2}");
    let archived: Vec<String> = std::fs::read_dir(d.path("inbox/archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(archived, ["ehr_patients_small.csv"]);
    // The pruned run's deleted message keeps its reason but not its patient
    // data; the one in ERROR keeps both, to be retried.
    let out = d.ferry(&["queue", "show", deleted]);
    assert_exit(&out, 0);
    let shown = stdout(&out);
    assert!(shown.contains("reason:") && shown.contains("its run was pruned"), "{shown}");
    assert!(!shown.contains("MSH-3") && !shown.contains("PID-"), "{shown}");
    let out = d.ferry(&["queue", "show", kept]);
    assert!(stdout(&out).contains("MSH-3"), "{}", stdout(&out));

    // The ledger still knows the pruned run's files: one dropped again is
    // not loaded twice.
    d.write(
        "inbox/ehr_patients_20261120.csv",
        std::fs::read(d.path("sample-data/inbox/ehr_patients_20261120.csv")).unwrap(),
    );
    let out = run_at("2026-02-16T02:00:00-05:00");
    assert!(stderr(&out).contains("ehr_patients_20261120.csv: already loaded"), "{}", stderr(&out));
}

#[test]
fn history_keep_must_be_a_duration() {
    let d = Dir::with_project();
    d.write("jobs/demo.toml", demo_job("", "[history]\nkeep = \"a month\"\n"));
    let out = d.ferry(&["check", "demo"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("history.keep"), "{}", stderr(&out));
}
