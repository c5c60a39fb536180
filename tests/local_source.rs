use std::fs;
use std::time::{Duration, SystemTime};

use crate::util::{Dir, assert_exit, count, read_csv, stderr, summary};

fn job(after: &str, min_age: &str) -> String {
    format!(
        r#"
[source]
type = "local"
inbox = "../inbox"
include = ["*.csv"]
exclude = ["*_test.csv"]
min_age = "{min_age}"
after = "{after}"

[[inputs]]
files = "*.csv"
schema = "ehr_patients"
"#
    )
}

fn setup(after: &str, min_age: &str) -> Dir {
    let d = Dir::with_project();
    d.write("jobs/t.toml", job(after, min_age));
    d.fixture("ehr_small.csv", "inbox/a.csv");
    d
}

fn statuses(d: &Dir) -> Vec<(String, String)> {
    read_csv(&d.latest_report("t").join("summary.csv"))
        .into_iter()
        .filter(|r| r["metric"] == "status")
        .map(|r| (r["scope"].clone(), r["value"].clone()))
        .collect()
}

#[test]
fn archive_is_the_default_and_moves_the_file_after_loading() {
    let d = Dir::with_project();
    d.write("jobs/t.toml", job("archive", "0").replace("after = \"archive\"\n", ""));
    d.fixture("ehr_small.csv", "inbox/a.csv");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert!(!d.path("inbox/a.csv").exists());
    assert!(d.path("inbox/archive/a.csv").exists());
    let s = summary(&d.latest_report("t"));
    assert_eq!(count(&s, "file:ehr/a.csv", "read"), 3);
    assert_eq!(count(&s, "file:ehr/a.csv", "accepted"), 2);
    assert_eq!(count(&s, "file:ehr/a.csv", "rejected"), 1);
    // The archive folder is not read again.
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert!(statuses(&d).is_empty(), "{:?}", statuses(&d));
}

/// A name sent again after its first file was archived: the new file is
/// loaded and archived beside the first under a name with its ledger ID,
/// and the run goes on (it stopped, and every file after it, before).
#[test]
fn a_name_sent_again_is_archived_beside_the_first() {
    let d = setup("archive", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let first = fs::read(d.path("inbox/archive/a.csv")).unwrap();
    let again = String::from_utf8(first.clone()).unwrap().replace("1 Main Street", "12 Main Street");
    d.write("inbox/a.csv", &again);
    d.fixture("ehr_small.csv", "inbox/b.csv");
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 0);
    assert_eq!(fs::read(d.path("inbox/archive/a.csv")).unwrap(), first, "the first stays as it was");
    let beside: Vec<String> = fs::read_dir(d.path("inbox/archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("a.ledger-"))
        .collect();
    assert_eq!(beside.len(), 1, "{beside:?}");
    assert!(beside[0].ends_with(".csv"), "{beside:?}");
    assert_eq!(fs::read_to_string(d.path("inbox/archive").join(&beside[0])).unwrap(), again);
    assert!(d.path("inbox/archive/b.csv").exists(), "the file after it went through");
    assert_eq!(
        statuses(&d),
        [("file:ehr/a.csv".into(), "loaded".into()), ("file:ehr/b.csv".into(), "loaded".into())]
    );
}

/// A file ferry archived that is back at the source with the same name,
/// size and mtime (a sender that keeps timestamps: `cp -p`, `rsync -t`) is
/// read and compared by its bytes: other bytes are loaded, not archived
/// unread; the same bytes are the file already loaded.
#[test]
fn a_file_back_with_its_size_and_mtime_is_compared_by_its_bytes() {
    let d = setup("archive", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let archived = d.path("inbox/archive/a.csv");
    let (first, mtime) =
        (fs::read_to_string(&archived).unwrap(), fs::metadata(&archived).unwrap().modified().unwrap());
    let put_back = |text: &str| {
        d.write("inbox/a.csv", text);
        fs::File::options().write(true).open(d.path("inbox/a.csv")).unwrap().set_modified(mtime).unwrap();
    };
    let changed = first.replace("1 Main Street", "9 Main Street");
    assert_ne!(changed, first);
    put_back(&changed);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(statuses(&d), [("file:ehr/a.csv".into(), "loaded".into())]);
    let street: String = rusqlite::Connection::open(d.home().join("ferry.db"))
        .unwrap()
        .query_row("SELECT address1 FROM patients WHERE address1 LIKE '9 Main%'", [], |r| r.get(0))
        .unwrap();
    assert!(street.starts_with("9 Main"), "{street}");

    put_back(&changed);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(statuses(&d), [("file:ehr/a.csv".into(), "already loaded".into())]);
    assert!(!d.path("inbox/a.csv").exists(), "archived: its bytes are in the ledger");
    let mut archived: Vec<String> = fs::read_dir(d.path("inbox/archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    archived.sort();
    assert_eq!(
        archived,
        ["a.csv", "a.ledger-2-2.csv", "a.ledger-2.csv"],
        "each copy kept, none over another"
    );
}

/// The practice roster replaces its side whole: one back to an earlier
/// export's bytes after a later export (a partial export one night, the
/// full one again the next) is loaded again, not passed over as already
/// loaded, also with the earlier file's timestamp kept.
#[test]
fn a_roster_back_to_an_earlier_export_replaces_the_later_one() {
    let d = setup("keep", "0");
    let job = fs::read_to_string(d.path("jobs/t.toml")).unwrap();
    d.write(
        "jobs/t.toml",
        format!("{job}\n[practice]\nfile = \"../roster.csv\"\nschema = \"practice_roster\"\n"),
    );
    let head = "Chart Number,EHR Patient ID,Last Name,First Name,Middle Name,Date of Birth,Sex,Street,Street 2,City,ST,ZIP Code,Home Phone,Cell Phone,E-mail\n";
    let full = format!(
        "{head}100100,E1,Lee,Ann,,1980-01-02,F,2 New St,,Boston,MA,02134,,,\n\
         100200,E2,Ng,Bo,,1970-03-04,M,5 Elm St,,Salem,MA,01970,,,\n"
    );
    let partial = format!("{head}100100,E1,Lee,Ann,,1980-01-02,F,2 New St,,Boston,MA,02134,,,\n");
    let practice = || -> i64 {
        rusqlite::Connection::open(d.home().join("ferry.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM patients WHERE side = 'practice'", [], |r| r.get(0))
            .unwrap()
    };
    let roster_status =
        || statuses(&d).into_iter().find(|(scope, _)| scope.contains("roster.csv")).map(|(_, s)| s);
    let write_roster = |text: &str, mtime: SystemTime| {
        d.write("roster.csv", text);
        fs::File::options().write(true).open(d.path("roster.csv")).unwrap().set_modified(mtime).unwrap();
    };
    d.write("roster.csv", &full);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let first_mtime = fs::metadata(d.path("roster.csv")).unwrap().modified().unwrap();
    assert_eq!(practice(), 2);
    write_roster(&partial, first_mtime + Duration::from_secs(60));
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(practice(), 1);
    // The full export again, with a new timestamp, then the partial one
    // again with the timestamp it had.
    write_roster(&full, first_mtime + Duration::from_secs(120));
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!((practice(), roster_status()), (2, Some("loaded".to_string())));
    write_roster(&partial, first_mtime + Duration::from_secs(60));
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!((practice(), roster_status()), (1, Some("loaded".to_string())));
    // Unchanged since: nothing to do.
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!((practice(), roster_status()), (1, Some("already loaded".to_string())));

    // A broken export (empty, a header alone, every row rejected) would
    // empty the practice side: the run fails and the last good roster stays.
    let bad_dates =
        format!("{head}100100,E1,Lee,Ann,,02.01.1980,F,,,,,,,,\n100200,E2,Ng,Bo,,04.03.1970,M,,,,,,,,\n");
    for (i, broken) in ["", head, &bad_dates].into_iter().enumerate() {
        write_roster(broken, first_mtime + Duration::from_secs(180 + i as u64));
        let out = d.ferry(&["run", "t"]);
        assert_exit(&out, 1);
        assert!(stderr(&out).contains("a snapshot with no record to load"), "{}", stderr(&out));
        assert_eq!((practice(), roster_status()), (1, Some("failed".to_string())));
    }
    write_roster(&full, first_mtime + Duration::from_secs(240));
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!((practice(), roster_status()), (2, Some("loaded".to_string())));
}

/// A roster export that holds far fewer patients than the one before (a
/// report cut short, a filter left on) would drop the rest from the
/// practice side: beyond `max_shrink` (half, by default) the run fails and
/// the last roster stays, until the operator accepts the drop once.
#[test]
fn a_roster_that_drops_most_patients_waits_for_the_operator() {
    let d = setup("keep", "0");
    let job = fs::read_to_string(d.path("jobs/t.toml")).unwrap();
    let with_roster = |extra: &str| {
        format!("{job}\n[practice]\nfile = \"../roster.csv\"\nschema = \"practice_roster\"\n{extra}")
    };
    d.write("jobs/t.toml", with_roster(""));
    let head = "Chart Number,EHR Patient ID,Last Name,First Name,Middle Name,Date of Birth,Sex,Street,Street 2,City,ST,ZIP Code,Home Phone,Cell Phone,E-mail\n";
    let roster = |n: usize| {
        let rows: String = (1..=n)
            .map(|i| {
                format!("{},E{i},Lee{i},Ann,,1980-01-{i:02},F,{i} New St,,Boston,MA,02134,,,\n", 100100 + i)
            })
            .collect();
        d.write("roster.csv", format!("{head}{rows}"));
    };
    let practice = || -> i64 {
        rusqlite::Connection::open(d.home().join("ferry.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM patients WHERE side = 'practice'", [], |r| r.get(0))
            .unwrap()
    };
    roster(10);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(practice(), 10);
    roster(4);
    for _ in 0..2 {
        let out = d.ferry(&["run", "t"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(err.contains("a snapshot of 4 record(s), against 10 stored"), "{err}");
        assert!(err.contains("drop 60% of the practice side, more than max_shrink allows (50%)"), "{err}");
        assert!(err.contains("ferry run t --accept-shrink"), "{err}");
        assert_eq!(practice(), 10, "the last roster stays");
    }
    assert_exit(&d.ferry(&["run", "t", "--accept-shrink"]), 0);
    assert_eq!(practice(), 4);
    // Half or less is an ordinary change.
    roster(2);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(practice(), 2);
    // The share is the job's to set.
    d.write("jobs/t.toml", with_roster("max_shrink = \"100%\"\n"));
    roster(1);
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(practice(), 1);
    for (bad, says) in [
        ("max_shrink = \"half\"\n", "practice.max_shrink: \"half\" is not a share like \"50%\""),
        ("max_shrink = \"150%\"\n", "practice.max_shrink: \"150%\" is not a share"),
    ] {
        d.write("jobs/t.toml", with_roster(bad));
        let out = d.ferry(&["check", "t"]);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    d.write(
        "jobs/t.toml",
        job.replace("schema = \"ehr_patients\"", "schema = \"ehr_patients\"\nmax_shrink = \"10%\""),
    );
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("inputs[0].max_shrink: only a snapshot"), "{}", stderr(&out));
}

/// The same bytes sent again under another name load again (the records
/// are upserted as they are), and the summary says which file they repeat.
#[test]
fn the_same_bytes_under_another_name_are_flagged() {
    let d = setup("archive", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    d.fixture("ehr_small.csv", "inbox/a-resent.csv");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let s = summary(&d.latest_report("t"));
    let detail = &s[&("file:ehr/a-resent.csv".to_string(), "detail".to_string())];
    assert!(detail.starts_with("the same bytes as a.csv, loaded 20"), "{detail}");
    assert_eq!(s[&("file:ehr/a-resent.csv".to_string(), "status".to_string())], "loaded");
    // Other bytes under a third name are not flagged.
    d.write(
        "inbox/c.csv",
        fs::read_to_string(d.path("inbox/archive/a.csv")).unwrap().replace("1 Main", "2 Main"),
    );
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let s = summary(&d.latest_report("t"));
    assert!(!s.contains_key(&("file:ehr/c.csv".to_string(), "detail".to_string())), "{s:?}");
}

#[test]
fn delete_removes_the_file_after_loading() {
    let d = setup("delete", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert!(!d.path("inbox/a.csv").exists());
    assert!(!d.path("inbox/archive").exists());
    // A copy stays in the state folder.
    let received: Vec<_> = walk(&d.home().join("received"));
    assert!(received.iter().any(|p| p.ends_with("a.csv")), "{received:?}");
}

#[test]
fn keep_leaves_the_file_and_the_ledger_stops_a_reload() {
    let d = setup("keep", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert!(d.path("inbox/a.csv").exists());
    // Kept in the load's own commit; a later run, which lists the file
    // again, leaves its ledger row as it is.
    let ledger = || -> (String, String) {
        let db = rusqlite::Connection::open(d.home().join("ferry.db")).unwrap();
        db.query_row("SELECT state, state_at FROM files WHERE name = 'a.csv'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    let first = ledger();
    assert_eq!(first.0, "kept");
    std::thread::sleep(Duration::from_millis(20));
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "already loaded".to_string())]);
    assert_eq!(ledger(), first);
    // Same name, new content: a new file, loaded.
    d.write(
        "inbox/a.csv",
        fs::read(d.path("inbox/a.csv"))
            .unwrap()
            .into_iter()
            .chain(*b"E4,Di,Ro,04/05/1960,F,,,,,,,,,,\r\n")
            .collect::<Vec<u8>>(),
    );
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let s = summary(&d.latest_report("t"));
    assert_eq!(count(&s, "file:ehr/a.csv", "read"), 4);
    assert_eq!(count(&s, "reconcile", "ehr_patients"), 3, "E1, E2 updated in place, E4 added");
}

/// A crash between the ledger commit and the after-action: the next run
/// finishes the archive without loading the file again.
#[test]
fn interrupted_after_action_is_finished_without_a_reload() {
    let d = setup("keep", "0");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    d.write("jobs/t.toml", job("archive", "0"));
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 0);
    assert!(d.path("inbox/archive/a.csv").exists(), "{}", stderr(&out));
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "already loaded".to_string())]);
}

#[test]
fn skips_dot_files_partial_uploads_and_excluded_names() {
    let d = setup("keep", "0");
    for name in [".hidden.csv", "b.csv.part", "c.csv.tmp", "d_test.csv", "notes.txt"] {
        d.fixture("ehr_small.csv", &format!("inbox/{name}"));
    }
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "loaded".to_string())]);
}

#[test]
fn a_file_still_being_written_waits() {
    let d = setup("archive", "1h");
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "waiting".to_string())]);
    assert!(d.path("inbox/a.csv").exists());
    // Once its mtime is old enough it is taken.
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    fs::File::options().write(true).open(d.path("inbox/a.csv")).unwrap().set_modified(old).unwrap();
    assert_exit(&d.ferry(&["run", "t"]), 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "loaded".to_string())]);
}

/// A file whose mtime is ahead of this machine's clock (the writer's clock
/// runs ahead, or it kept a timestamp) has no age to wait for: it is taken
/// when a second listing, `min_age` later, shows it unchanged, as a remote
/// file is. Before, it waited until the clock caught up (days).
#[test]
fn a_file_with_an_mtime_ahead_of_the_clock_is_taken_once_unchanged() {
    let d = setup("archive", "1s");
    let ahead = SystemTime::now() + Duration::from_secs(2 * 24 * 3600);
    fs::File::options().write(true).open(d.path("inbox/a.csv")).unwrap().set_modified(ahead).unwrap();
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "loaded".to_string())]);
    assert!(stderr(&out).contains("ahead of this machine's clock"), "{}", stderr(&out));
}

#[test]
fn hostile_name_is_refused_and_nothing_escapes() {
    let d = setup("archive", "0");
    d.fixture("ehr_small.csv", "inbox/evil\nname.csv");
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 0);
    let st = statuses(&d);
    assert!(st.iter().any(|(s, v)| s.contains("evil") && v == "refused"), "{st:?}");
    assert!(d.path("inbox/evil\nname.csv").exists(), "a refused file is left alone");

    // A name in Latin-1 (a Windows share): refused as such, not "gone".
    use std::os::unix::ffi::OsStrExt;
    let latin1 = d.path("inbox").join(std::ffi::OsStr::from_bytes(b"clinique_\xe9t\xe9.csv"));
    fs::copy(d.path("inbox/archive/a.csv"), &latin1).unwrap();
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let rows = read_csv(&d.latest_report("t").join("summary.csv"));
    let detail: Vec<String> = rows
        .iter()
        .filter(|r| r["scope"].starts_with("file:ehr/clinique_") && r["metric"] == "detail")
        .map(|r| r["value"].clone())
        .collect();
    assert!(
        statuses(&d).iter().any(|(s, v)| s.starts_with("file:ehr/clinique_") && v == "refused"),
        "{:?}",
        statuses(&d)
    );
    assert!(detail.iter().any(|d| d.contains("is not UTF-8")), "{detail:?}");
    assert!(latin1.exists(), "left alone");

    // A name too long for ferry's own names for it is refused, and the
    // other files go on.
    let long = format!("{}.csv", "p".repeat(248));
    fs::copy(d.path("inbox/archive/a.csv"), d.path("inbox").join(&long)).unwrap();
    d.fixture("ehr_small.csv", "inbox/b.csv");
    assert_exit(&d.ferry(&["run", "t"]), 0);
    let st = statuses(&d);
    assert!(st.iter().any(|(s, v)| s.contains("pppp") && v == "refused"), "{st:?}");
    assert!(st.iter().any(|(s, v)| s == "file:ehr/b.csv" && v == "loaded"), "{st:?}");
}

#[test]
fn unreadable_layout_fails_the_run_and_leaves_the_file() {
    let d = setup("archive", "0");
    d.fixture("ehr_bad_header.csv", "inbox/b.csv");
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 1);
    assert!(d.path("inbox/b.csv").exists(), "not archived");
    assert!(d.path("inbox/archive/a.csv").exists(), "the good file still went through");
    let rejects = read_csv(&d.latest_report("t").join("rejects.csv"));
    assert!(
        rejects.iter().any(|r| r["file"] == "b.csv" && r["reason"].contains("header lacks column")),
        "{rejects:?}"
    );
    let hist = d.ferry(&["history", "t"]);
    assert!(crate::util::stdout(&hist).contains("failed"), "{}", crate::util::stdout(&hist));
}

#[test]
fn two_runs_of_one_job_do_not_overlap() {
    let d = setup("keep", "0");
    // Hold the job's lock as a running ferry would.
    let lock_dir = d.home().join("locks");
    fs::create_dir_all(&lock_dir).unwrap();
    let f = fs::File::create(lock_dir.join("t.lock")).unwrap();
    f.lock().unwrap();
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    drop(f);
    assert_exit(&d.ferry(&["run", "t"]), 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A file the source will not give (another account left it unreadable)
/// fails the run and stays at the source, but the files beside it load:
/// before, it stopped every run of the job, and each left ferry's copies
/// of the files fetched before it in `received/`.
#[test]
fn a_file_the_source_will_not_give_stops_only_itself() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = setup("archive", "0");
    d.fixture("ehr_small.csv", "inbox/b.csv");
    let unreadable = d.path("inbox/b.csv");
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads any file: ferry runs as nobody, who owns the rest.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let status = std::process::Command::new("chown").args(["-R", "nobody"]).arg(d.path("")).status();
        assert!(status.unwrap().success());
        std::os::unix::fs::chown(&unreadable, Some(0), None).unwrap();
    }
    let run = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(["run", "t"]).current_dir(d.path("")).env("FERRY_HOME", d.home());
        if root {
            // SAFETY: setgid/setuid are async-signal-safe, as pre_exec requires.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.output().unwrap()
    };
    let out = run();
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("ehr b.csv: failed could not be fetched") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(d.path("inbox/archive/a.csv").exists(), "the file beside it is loaded and archived");
    assert!(unreadable.exists(), "left at the source");
    let mut st = statuses(&d);
    st.sort();
    assert_eq!(st, [("file:ehr/a.csv".into(), "loaded".into()), ("file:ehr/b.csv".into(), "failed".into())]);
    let out = run();
    assert_exit(&out, 1);
    assert_eq!(statuses(&d), [("file:ehr/b.csv".into(), "failed".into())]);
    let mut parts = Vec::new();
    let mut stack = vec![d.home().join("received")];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(dir).unwrap().map(Result::unwrap) {
            match e.file_type().unwrap().is_dir() {
                true => stack.push(e.path()),
                false if e.file_name().to_string_lossy().ends_with(".part") => parts.push(e.path()),
                false => {}
            }
        }
    }
    assert!(parts.is_empty(), "{parts:?}");
}
