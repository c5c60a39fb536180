//! SFTP against a real OpenSSH sshd on loopback: pull with every
//! after-action, password and key logins, known_hosts (unknown, changed,
//! hashed, accept-new), a file still growing, hostile names, a dropped
//! connection and a killed ferry, and push through `Transport::put`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{KEY_PASSPHRASE, KEY_USER, PW_PASSWORD, PW_USER, Sshd, serve};
use crate::util::{Dir, assert_exit, count, read_csv, stderr, stdout, summary};

const CSV: &str = "PatientID,FirstName,LastName,DOB,Gender,Address1,Address2,City,State,Zip,Phone,Email,InsuranceProvider,MemberID,GroupNumber\r\n";

/// A job pulling `*.csv` from the server's folder. `auth` is the login
/// lines; `extra` more source keys.
fn job(sshd: &Sshd, auth: &str, extra: &str) -> String {
    format!(
        r#"
[source]
type = "sftp"
host = "127.0.0.1"
port = {port}
{auth}
known_hosts = "../known_hosts"
folder = "{srv}"
include = ["*.csv"]
stable_for = "0"
retries = 2
retry_wait = "50ms"
connect_timeout = "5s"
timeout = "5s"
{extra}

[[inputs]]
files = "*.csv"
schema = "ehr_patients"
"#,
        port = sshd.port,
        srv = sshd.srv().display(),
    )
}

fn password() -> String {
    format!("user = \"{PW_USER}\"\npassword_env = \"SFTP_PW\"")
}

/// A scratch project that knows the server's host key.
fn setup(sshd: &Sshd, auth: &str, extra: &str) -> Dir {
    let d = Dir::with_project();
    d.write("jobs/t.toml", job(sshd, auth, extra));
    d.write("known_hosts", sshd.known_hosts_line());
    d
}

fn ferry(d: &Dir, args: &[&str]) -> std::process::Output {
    d.ferry_env(args, &[("SFTP_PW", PW_PASSWORD), ("KEY_PASS", KEY_PASSPHRASE)])
}

fn statuses(d: &Dir) -> Vec<(String, String)> {
    read_csv(&d.latest_report("t").join("summary.csv"))
        .into_iter()
        .filter(|r| r["metric"] == "status")
        .map(|r| (r["scope"].clone(), r["value"].clone()))
        .collect()
}

fn patients(ids: std::ops::Range<usize>) -> String {
    let mut s = CSV.to_string();
    for i in ids {
        s.push_str(&format!("E{i},Ann,Lee{i},01/02/1980,F,1 Main St,,Springfield,IL,62701,,,,,\r\n"));
    }
    s
}

/// 32 MiB in three records (one with a huge address): far more than the
/// transport keeps in flight, yet quick to load.
fn big_csv() -> String {
    let mut s = patients(0..2);
    s.push_str("E9,Bo,Big,03/04/1970,M,1 Long Rd,");
    s.push_str(&"x".repeat(32 << 20));
    s.push_str(",Springfield,IL,62701,,,,,\r\n");
    s
}

fn received(d: &Dir) -> Vec<std::path::PathBuf> {
    walk(&d.home().join("received"))
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

#[test]
fn password_pull_archives_on_the_server_after_loading() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..3).as_bytes());
    serve(&sshd.srv(), "notes.txt", b"not a csv");
    let d = setup(&sshd, &password(), "");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    let s = summary(&d.latest_report("t"));
    assert_eq!(count(&s, "file:ehr/a.csv", "read"), 3);
    assert_eq!(count(&s, "file:ehr/a.csv", "accepted"), 3);
    assert!(!sshd.srv().join("a.csv").exists(), "archived away");
    assert_eq!(fs::read(sshd.srv().join("archive/a.csv")).unwrap(), patients(0..3).as_bytes());
    assert!(sshd.srv().join("notes.txt").exists(), "not included, left alone");
    let got = received(&d);
    assert!(
        got.iter().any(|p| p.ends_with("a.csv") && fs::read(p).unwrap() == patients(0..3).as_bytes()),
        "{got:?}"
    );
    // The archive is not read again, and nothing is left to take.
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(statuses(&d).is_empty(), "{:?}", statuses(&d));
    // No password in anything ferry printed.
    assert!(!stderr(&out).contains(PW_PASSWORD));
}

#[test]
fn ed25519_key_with_passphrase_and_delete() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let auth = format!(
        "user = \"{KEY_USER}\"\nkey_file = \"{}\"\npassphrase_env = \"KEY_PASS\"",
        sshd.key("id_ed25519").display()
    );
    let d = setup(&sshd, &auth, "after = \"delete\"");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    assert!(!sshd.srv().join("a.csv").exists());
    assert!(!sshd.srv().join("archive").exists());
    assert_eq!(count(&summary(&d.latest_report("t")), "file:ehr/a.csv", "accepted"), 2);

    // A wrong passphrase is a login failure that names the key file.
    serve(&sshd.srv(), "b.csv", patients(5..6).as_bytes());
    let out = d.ferry_env(&["run", "t"], &[("KEY_PASS", "wrong")]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("id_ed25519"), "{}", stderr(&out));
    assert!(sshd.srv().join("b.csv").exists());
}

#[test]
fn rsa_key_keep_and_the_ledger_stops_a_second_load() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let auth = format!("user = \"{KEY_USER}\"\nkey_file = \"{}\"", sshd.key("id_rsa").display());
    let d = setup(&sshd, &auth, "after = \"keep\"");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    assert!(sshd.srv().join("a.csv").exists());
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "already loaded".to_string())]);
    // OpenSSH accepted an RSA signature: it must have been SHA-2.
    assert!(sshd.log().contains("Accepted publickey for ferrytest-key"), "{}", sshd.log());
}

/// The password's variable unset where ferry is run (a shell that lacks
/// cron's secrets) is not a broken job file: status and history show the
/// job as it is, and a run fails, recorded as failed, naming the variable.
#[test]
fn a_password_variable_unset_here_fails_the_run_not_the_job_file() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let d = setup(&sshd, &password(), "");
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    let out = d.ferry(&["status"]);
    assert_exit(&out, 0);
    let line = stdout(&out).lines().find(|l| l.starts_with("t ")).unwrap_or_default().to_string();
    assert!(line.contains(" ok ") && !line.contains("no job file"), "{line}");
    let out = d.ferry(&["run", "t"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("source.password_env: environment variable SFTP_PW is not set"),
        "{}",
        stderr(&out)
    );
    let history = stdout(&d.ferry(&["history", "t"]));
    assert!(history.lines().nth(1).is_some_and(|l| l.contains("failed")), "{history}");
    let out = d.ferry(&["check", "t"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("SFTP_PW is not set"), "{}", stderr(&out));
}

#[test]
fn wrong_password_fails_at_once_without_retrying() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let d = setup(&sshd, &password(), "");
    // Long waits between retries: a retried login would take seconds.
    let text = fs::read_to_string(d.path("jobs/t.toml"))
        .unwrap()
        .replace("retry_wait = \"50ms\"", "retry_wait = \"5s\"");
    d.write("jobs/t.toml", text);
    let started = Instant::now();
    let out = d.ferry_env(&["run", "t"], &[("SFTP_PW", "not-the-password")]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("login refused"), "{err}");
    assert!(err.contains(PW_USER) && err.contains("$SFTP_PW"), "names the user and the variable: {err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(2500), "not retried: {:?}", started.elapsed());
    assert!(sshd.srv().join("a.csv").exists());
}

#[test]
fn unknown_host_key_stops_the_job_until_check_records_it() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let d = setup(&sshd, &password(), "");
    fs::remove_file(d.path("known_hosts")).unwrap();
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("unknown host key"), "{err}");
    assert!(err.contains(&sshd.fingerprint()), "prints the SHA256 fingerprint {}: {err}", sshd.fingerprint());
    assert!(err.contains("--accept-new-host-key"), "{err}");
    assert!(sshd.srv().join("a.csv").exists());
    assert!(!sshd.log().contains("Accepted password"), "no password was sent to an unknown server");

    // check without the flag fails the same way; with it, records the key.
    let out = ferry(&d, &["check", "t"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("FAIL  host key"), "{}", stderr(&out));
    let out = ferry(&d, &["check", "t", "--accept-new-host-key"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    for step in ["dns", "tcp", "host key", "login", "list"] {
        assert!(err.contains(&format!("ok    {step}")), "step {step}: {err}");
    }
    let kh = fs::read_to_string(d.path("known_hosts")).unwrap();
    assert!(kh.contains(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)), "{kh}");
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(sshd.srv().join("archive/a.csv").exists());
}

#[test]
fn changed_host_key_always_stops_loudly() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let d = setup(&sshd, &password(), "");
    // A key of the same type that is not the server's.
    let other = Sshd::start();
    let forged = other.known_hosts_line().replace(&other.port.to_string(), &sshd.port.to_string());
    d.write("known_hosts", format!("# ours\n{forged}"));
    for args in [&["run", "t"][..], &["check", "t", "--accept-new-host-key"][..]] {
        let out = ferry(&d, args);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(err.contains("HOST KEY CHANGED"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains(&sshd.fingerprint()), "{err}");
    }
    assert_eq!(
        fs::read_to_string(d.path("known_hosts")).unwrap(),
        format!("# ours\n{forged}"),
        "never rewritten"
    );
    assert!(sshd.srv().join("a.csv").exists());
    assert!(!sshd.log().contains("Accepted password"));
}

#[test]
fn hashed_known_hosts_entries_are_understood() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    let d = setup(&sshd, &password(), "");
    let out = Command::new("ssh-keygen").arg("-H").arg("-f").arg(d.path("known_hosts")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kh = fs::read_to_string(d.path("known_hosts")).unwrap();
    assert!(kh.starts_with("|1|") && !kh.contains("127.0.0.1"), "{kh}");
    assert_exit(&ferry(&d, &["run", "t"]), 0);
}

#[test]
fn a_file_still_growing_is_not_taken_until_it_is_stable() {
    let sshd = Sshd::start();
    let path = serve(&sshd.srv(), "grow.csv", patients(0..1).as_bytes());
    let d = setup(&sshd, &password(), "");
    d.write(
        "jobs/t.toml",
        fs::read_to_string(d.path("jobs/t.toml"))
            .unwrap()
            .replace("stable_for = \"0\"", "stable_for = \"1s\""),
    );
    // A writer appends a row every 50 ms for 3 s, as an upload in progress.
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            for i in 1..60 {
                f.write_all(format!("E{i},Ann,Lee{i},01/02/1980,F,,,,,,,,,,\r\n").as_bytes()).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    let st = statuses(&d);
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].1, "waiting", "{st:?}");
    assert!(path.exists());
    assert!(received(&d).iter().all(|p| !p.ends_with("grow.csv")), "nothing of it kept");
    writer.join().unwrap();
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert_eq!(count(&summary(&d.latest_report("t")), "file:ehr/grow.csv", "read"), 60, "the whole file");
}

#[test]
fn hostile_names_are_refused_and_nothing_escapes() {
    let sshd = Sshd::start();
    serve(&sshd.srv(), "ok.csv", patients(0..1).as_bytes());
    serve(&sshd.srv(), "evil\nname.csv", patients(1..2).as_bytes());
    serve(&sshd.srv(), "back\\slash.csv", patients(2..3).as_bytes());
    serve(&sshd.srv(), "esc\x1b[31m.csv", patients(3..4).as_bytes());
    let d = setup(&sshd, &password(), "");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    let st = statuses(&d);
    let refused: Vec<_> = st.iter().filter(|(_, v)| v == "refused").collect();
    assert_eq!(refused.len(), 3, "{st:?}");
    // The names are printed with their control characters escaped, once:
    // a newline would start a line of its own, and ESC reach the terminal.
    let err = stderr(&out);
    assert!(err.contains(r#"refused file name "evil\nname.csv""#), "{err}");
    assert!(err.contains(r#"  ehr evil\nname.csv: refused its name contains a control character"#), "{err}");
    assert!(err.contains(r#"  ehr back\slash.csv: refused its name contains a path separator"#), "{err}");
    assert!(!err.contains('\x1b') && !err.contains("\nname.csv"), "{err}");
    assert!(sshd.srv().join("archive/ok.csv").exists());
    for name in ["evil\nname.csv", "back\\slash.csv", "esc\x1b[31m.csv"] {
        assert!(sshd.srv().join(name).exists(), "{name:?} left on the server");
    }
    let got = received(&d);
    assert_eq!(got.len(), 1, "only ok.csv was written: {got:?}");
}

/// ferry killed (as by `kill -9`) in the middle of a download: the next
/// run takes the file whole and loads it once.
#[test]
fn killed_mid_transfer_then_rerun_loads_once() {
    let sshd = Sshd::start();
    // Over the prefetch size, so it streams in many writes.
    let body = big_csv();
    serve(&sshd.srv(), "big.csv", body.as_bytes());
    let d = setup(&sshd, &password(), "");
    let out = d.ferry_env(&["run", "t"], &[("SFTP_PW", PW_PASSWORD), ("FERRY_FAILPOINT", "fetch-write:3")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("failpoint fetch-write"), "{}", stderr(&out));
    assert!(sshd.srv().join("big.csv").exists(), "untouched on the server");
    // Only a hidden partial copy exists, never one under the real name.
    let got = received(&d);
    assert!(got.iter().all(|p| !p.ends_with("big.csv")), "{got:?}");
    assert!(got.iter().any(|p| p.file_name().unwrap() == ".big.csv.part"), "{got:?}");

    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    let s = summary(&d.latest_report("t"));
    assert_eq!(count(&s, "file:ehr/big.csv", "read"), 3);
    assert_eq!(count(&s, "reconcile", "ehr_patients"), 3);
    assert!(sshd.srv().join("archive/big.csv").exists());
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(statuses(&d).is_empty());
    let history = crate::util::stdout(&ferry(&d, &["history", "t", "--json"]));
    let loaded_runs = history.lines().filter(|l| l.contains("\"files\":1")).count();
    assert_eq!(loaded_runs, 1, "{history}");
}

/// The server drops the connection in the middle of a download: ferry
/// reconnects, starts the file again and finishes the run.
/// `ferry run t` started in the background, to pause at `pausepoint`
/// (`FERRY_PAUSEPOINT`: NAME:N:MILLIS) while the test cuts its connection.
fn run_paused(d: &Dir, pausepoint: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "t"])
        .current_dir(d.path(""))
        .env("FERRY_HOME", d.home())
        .env("SFTP_PW", PW_PASSWORD)
        .env("FERRY_PAUSEPOINT", pausepoint)
        .env_remove("FERRY_FAILPOINT")
        .env_remove("FERRY_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn dropped_connection_mid_transfer_is_retried() {
    let sshd = Sshd::start();
    let body = big_csv();
    serve(&sshd.srv(), "big.csv", body.as_bytes());
    let d = setup(&sshd, &password(), "");
    let child = run_paused(&d, "fetch-write:3:3000");
    // Wait until ferry is paused half-way (its partial copy exists).
    let started = Instant::now();
    let part = loop {
        if let Some(p) = received(&d).into_iter().find(|p| p.file_name().unwrap() == ".big.csv.part")
            && fs::metadata(&p).map(|m| m.len()).unwrap_or(0) > 0
        {
            break p;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "ferry never started the download");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(sshd.kill_sessions() > 0, "a session to kill");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retrying"), "the drop was retried: {err}");
    assert!(!part.exists());
    let s = summary(&d.latest_report("t"));
    assert_eq!(count(&s, "file:ehr/big.csv", "read"), 3);
    assert!(sshd.srv().join("archive/big.csv").exists());
}

#[test]
fn a_delete_the_server_refuses_fails_the_run_saying_why_once() {
    use std::os::unix::fs::PermissionsExt;
    let sshd = Sshd::start();
    serve(&sshd.srv(), "a.csv", patients(0..2).as_bytes());
    // The login may read the folder but not remove what is in it.
    let mode = fs::metadata(sshd.srv()).unwrap().permissions().mode();
    fs::set_permissions(sshd.srv(), fs::Permissions::from_mode(0o555)).unwrap();
    let d = setup(&sshd, &password(), "after = \"delete\"");
    let out = ferry(&d, &["run", "t"]);
    fs::set_permissions(sshd.srv(), fs::Permissions::from_mode(mode)).unwrap();
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("cannot delete a.csv"), "{err}");
    assert_eq!(err.matches("Permission denied").count(), 1, "the cause once: {err}");
    assert!(sshd.srv().join("a.csv").exists());
}

#[test]
fn server_down_fails_clearly_after_the_retries() {
    let mut sshd = Sshd::start();
    let d = setup(&sshd, &password(), "");
    sshd.kill();
    let started = Instant::now();
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", sshd.port)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = ferry(&d, &["check", "t"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("ok    dns") && err.contains("FAIL  tcp"), "{err}");
}

/// `Transport::put` through `transport::open`, as a push to the server:
/// `.NAME.part` then renamed, an existing file replaced, the size checked.
#[test]
fn put_uploads_under_a_temporary_name_then_renames() {
    use ferry::transport::{self, Endpoint, Limits, Secret, SftpEndpoint, SshAuth};
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    fs::write(&kh, sshd.known_hosts_line()).unwrap();
    // SAFETY of set_var: this test reads it back at once on this thread; no
    // other test uses the variable.
    unsafe { std::env::set_var("FERRY_TEST_PUT_PW", PW_PASSWORD) };
    let endpoint = Endpoint::Sftp(SftpEndpoint {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: PW_USER.into(),
        auth: SshAuth::Password(Secret::from_env("FERRY_TEST_PUT_PW").unwrap()),
        known_hosts: kh,
        folder: sshd.srv().display().to_string(),
        limits: Limits::remote_default(),
        parallel: 4,
    });
    let mut t = transport::open(&endpoint).unwrap();
    let body = patients(0..5000);
    let n = t.put("id_updates.csv", &mut body.as_bytes(), body.len() as u64).unwrap();
    assert_eq!(n, body.len() as u64);
    assert_eq!(fs::read(sshd.srv().join("id_updates.csv")).unwrap(), body.as_bytes());
    assert!(!sshd.srv().join(".id_updates.csv.part").exists());
    // Replaced whole.
    t.put("id_updates.csv", &mut &b"x\r\n"[..], 3).unwrap();
    assert_eq!(fs::read(sshd.srv().join("id_updates.csv")).unwrap(), b"x\r\n");
    // A short read is an error and leaves neither name changed.
    let err = t.put("short.csv", &mut &b"abc"[..], 10).unwrap_err();
    assert!(err.to_string().contains("expected 10"), "{err}");
    assert!(!sshd.srv().join("short.csv").exists());
    assert!(!sshd.srv().join(".short.csv.part").exists());
    assert!(t.put("../escape.csv", &mut &b"x"[..], 1).is_err());
    assert!(!sshd.srv().parent().unwrap().join("escape.csv").exists());
    // list sees it, fetch reads it back.
    let names: Vec<String> = t.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["id_updates.csv".to_string()]);
    let mut back = Vec::new();
    t.fetch("id_updates.csv", &mut back).unwrap();
    assert_eq!(back, b"x\r\n");
}

/// `[[outbox]]`: files matching a pattern in a local folder are pushed to
/// the server (`.NAME.part`, then renamed) and moved to `sent/` here;
/// `ferry check` proves write permission with a probe file it removes.
#[test]
fn outbox_pushes_matching_files_and_check_proves_write_permission() {
    let sshd = Sshd::start();
    let d = setup(&sshd, &password(), "");
    let pull = fs::read_to_string(d.path("jobs/t.toml")).unwrap();
    let push = format!(
        r#"
[[outbox]]
folder = "../outbox"
include = ["*.csv"]

[outbox.to]
{}"#,
        writable_destination(&sshd, "in")
    );
    d.write("jobs/t.toml", format!("{pull}{push}"));
    d.write("outbox/updates.csv", patients(0..2));
    d.write("outbox/.half.csv", "in progress");
    d.write("outbox/readme.txt", "not matched");

    let out = ferry(&d, &["check", "t"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("ok    write"), "{}", stderr(&out));
    assert_eq!(fs::read_dir(sshd.srv().join("in")).unwrap().count(), 0, "the probe is removed");

    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("sent updates.csv"), "{}", stderr(&out));
    assert_eq!(fs::read(sshd.srv().join("in/updates.csv")).unwrap(), patients(0..2).as_bytes());
    assert!(!sshd.srv().join("in/.updates.csv.part").exists());
    assert!(d.path("outbox/sent/updates.csv").exists());
    assert!(d.path("outbox/.half.csv").exists() && d.path("outbox/readme.txt").exists());
    assert!(!sshd.srv().join("in/readme.txt").exists());
    // Sent once: the next run has nothing to send.
    let out = ferry(&d, &["run", "t"]);
    assert!(!stderr(&out).contains("sent updates.csv"), "{}", stderr(&out));

    // The same name the next day is sent, and archived beside the first,
    // never left to be sent again.
    d.write("outbox/updates.csv", patients(2..4));
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    assert_eq!(fs::read(sshd.srv().join("in/updates.csv")).unwrap(), patients(2..4).as_bytes());
    assert!(!d.path("outbox/updates.csv").exists());
    let sent: Vec<String> = fs::read_dir(d.path("outbox/sent"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().any(|n| n.starts_with("updates.sent-") && n.ends_with(".csv")), "{sent:?}");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    assert!(!stderr(&out).contains("sent updates.csv"), "{}", stderr(&out));
}

#[test]
fn push_back_sends_the_runs_report_files_over_sftp() {
    let sshd = Sshd::start();
    let d = setup(&sshd, &password(), "");
    let pull = fs::read_to_string(d.path("jobs/t.toml")).unwrap();
    let push = format!(
        r#"
[[push]]
files = ["summary.csv"]
name = "{{job}}_{{stem}}{{ext}}"

[push.to]
{}"#,
        writable_destination(&sshd, "back")
    );
    d.write("jobs/t.toml", format!("{pull}{push}"));
    serve(&sshd.srv(), "patients.csv", patients(0..3).as_bytes());

    let out = ferry(&d, &["check", "t"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("push[0]: summary.csv -> sftp"), "{}", stderr(&out));

    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 0);
    let report = d.latest_report("t");
    assert_eq!(
        fs::read(sshd.srv().join("back/t_summary.csv")).unwrap(),
        fs::read(report.join("summary.csv")).unwrap(),
        "the report file arrives whole"
    );
    assert!(!sshd.srv().join("back/.t_summary.csv.part").exists());
}

#[test]
fn push_back_retries_a_dropped_connection() {
    let sshd = Sshd::start();
    let d = setup(&sshd, &password(), "");
    let pull = fs::read_to_string(d.path("jobs/t.toml")).unwrap();
    let push = format!(
        "[[push]]\nfiles = [\"summary.csv\", \"report.html\"]\nname = \"{{stem}}{{ext}}\"\n[push.to]\n{}",
        writable_destination(&sshd, "back")
    );
    d.write("jobs/t.toml", format!("{pull}{push}"));
    serve(&sshd.srv(), "patients.csv", patients(0..3).as_bytes());
    // ferry pauses in its second put, once it has found the connection
    // open, and the connection is cut there.
    let child = run_paused(&d, "sftp-put:2:3000");
    let started = Instant::now();
    while !sshd.srv().join("back/summary.csv").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "the first file was never pushed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(sshd.kill_sessions() > 0, "a session to kill");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retrying"), "the drop was retried: {err}");
    let report = d.latest_report("t");
    assert_eq!(
        fs::read(sshd.srv().join("back/report.html")).unwrap(),
        fs::read(report.join("report.html")).unwrap(),
        "the second file arrives whole after the drop"
    );
}

/// The body of an SFTP destination table (`[outbox.to]`, `[push.to]`) for
/// the password user, into `folder` under the server's root, which this
/// makes and opens to that user.
fn writable_destination(sshd: &Sshd, folder: &str) -> String {
    let dir = sshd.srv().join(folder);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    format!(
        r#"type = "sftp"
host = "127.0.0.1"
port = {port}
user = "{PW_USER}"
password_env = "SFTP_PW"
known_hosts = "../known_hosts"
folder = "{dir}"
retries = 1
retry_wait = "50ms"
"#,
        port = sshd.port,
        dir = dir.display()
    )
}
