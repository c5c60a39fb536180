//! Push-back: report files sent to the job's destination after the run,
//! whole (uploaded under a temporary name, renamed when complete).

use crate::util::{Dir, assert_exit, demo_job, stderr, stdout};

#[test]
fn id_updates_are_pushed_whole_to_a_local_folder() {
    let d = Dir::with_project();
    std::fs::create_dir_all(d.path("outbound")).unwrap();
    d.write(
        "jobs/demo.toml",
        demo_job("", "[[push]]\nfiles = [\"id_updates.csv\", \"merges.csv\"]\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n"),
    );
    let out = d.ferry_env(&["run", "demo"], &[("FERRY_NOW", "2026-12-01T02:30:00-05:00")]);
    assert_exit(&out, 0);
    let names: Vec<String> = std::fs::read_dir(d.path("outbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The stamp is the run's start in local time; merges.csv has rows too.
    assert_eq!(names.len(), 2, "{names:?}");
    let pushed = names.iter().find(|n| n.starts_with("id_updates_")).expect("id_updates pushed");
    assert!(pushed.ends_with(".csv") && !names.iter().any(|n| n.ends_with(".part")), "{names:?}");
    let report = d.latest_report("demo");
    assert_eq!(
        std::fs::read(d.path("outbound").join(pushed)).unwrap(),
        std::fs::read(report.join("id_updates.csv")).unwrap()
    );
    assert!(stderr(&out).contains(&format!("Pushed id_updates.csv as {pushed}")), "{}", stderr(&out));

    // A second run in the same second pushes under its own names: the
    // first files, not yet picked up, are never overwritten.
    let out = d.ferry_env(&["run", "demo"], &[("FERRY_NOW", "2026-12-01T02:30:00-05:00")]);
    assert_exit(&out, 0);
    let mut names: Vec<String> = std::fs::read_dir(d.path("outbound"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(pushed) && names.contains(&pushed.replace(".csv", "-2.csv")), "{names:?}");
}

#[test]
fn a_push_that_fails_fails_the_run() {
    let d = Dir::with_project();
    // A folder squats on the file's name at the destination.
    std::fs::create_dir_all(d.path("outbound/id_updates.csv/x")).unwrap();
    d.write(
        "jobs/demo.toml",
        demo_job(
            "",
            "[[push]]\nfiles = [\"id_updates.csv\"]\nname = \"{stem}{ext}\"\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n",
        ),
    );
    let out = d.ferry(&["run", "demo"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("PUSH FAILED id_updates.csv"), "{}", stderr(&out));
    let out = d.ferry(&["history", "demo"]);
    assert!(stdout(&out).contains("could not be pushed back"), "{}", stdout(&out));
    // Nothing under the real name but the squatter.
    assert!(d.path("outbound/id_updates.csv/x").is_dir());
}

#[test]
fn push_names_a_report_file() {
    let d = Dir::with_project();
    std::fs::create_dir_all(d.path("outbound")).unwrap();
    d.write(
        "jobs/demo.toml",
        demo_job(
            "",
            "[[push]]\nfiles = [\"../etc/passwd\"]\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n",
        ),
    );
    let out = d.ferry(&["check", "demo"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("push[0].files[0]") && stderr(&out).contains("not a report file"));
    // A name at the destination that every push would be refused: check
    // says so, not the first run at 03:00.
    for name in ["../{stem}_{stamp}{ext}", "sub\\\\{stem}{ext}"] {
        d.write(
            "jobs/demo.toml",
            demo_job(
                "",
                &format!(
                    "[[push]]\nfiles = [\"id_updates.csv\"]\nname = \"{name}\"\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n"
                ),
            ),
        );
        let out = d.ferry(&["check", "demo"]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("push[0].name:") && stderr(&out).contains("path separator"),
            "{}",
            stderr(&out)
        );
    }
}

/// What ferry keeps (the store, received copies, reports) is closed to
/// other users whatever the umask, as it holds patient data; a file pushed
/// to a local pickup folder, for another system's user, keeps the modes the
/// umask gives.
#[test]
fn what_ferry_keeps_is_closed_to_other_users_and_a_push_is_not() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = Dir::with_project();
    std::fs::create_dir_all(d.path("outbound")).unwrap();
    d.write(
        "jobs/demo.toml",
        demo_job(
            "",
            "[[push]]\nfiles = [\"id_updates.csv\"]\n[push.to]\ntype = \"local\"\ndir = \"../outbound\"\n",
        ),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(["-q", "run", "demo"]).current_dir(d.path("")).env("FERRY_HOME", d.home());
    // SAFETY: umask is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_exit(&out, 0);
    let mut seen = 0;
    let mut stack = vec![d.home()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o007, 0, "{} is open to others: {mode:o}", e.path().display());
            seen += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(seen > 10, "the store, received copies and reports: {seen}");
    let pushed = std::fs::read_dir(d.path("outbound")).unwrap().next().unwrap().unwrap();
    assert_eq!(pushed.metadata().unwrap().permissions().mode() & 0o777, 0o644);
}
