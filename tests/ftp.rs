//! FTP and explicit FTPS against a real pyftpdlib on loopback: pull with
//! after-actions, a certificate verified through the job's CA file, one
//! refused without it, a pinned self-signed certificate, a wrong password,
//! binary transfers, push through `Transport::put`.

use std::fs;

use crate::servers::{Cert, FTP_PASSWORD, FTP_USER, Ftpd, serve};
use crate::util::{Dir, assert_exit, count, read_csv, stderr, summary};

const CSV: &str = "PatientID,FirstName,LastName,DOB,Gender,Address1,Address2,City,State,Zip,Phone,Email,InsuranceProvider,MemberID,GroupNumber\r\n";

fn patients(n: usize) -> String {
    let mut s = CSV.to_string();
    for i in 0..n {
        s.push_str(&format!("E{i},Ann,Lee{i},01/02/1980,F,1 Main St,,Springfield,IL,62701,,,,,\r\n"));
    }
    s
}

fn job(ftpd: &Ftpd, tls: &str, after: &str) -> String {
    format!(
        r#"
[source]
type = "ftp"
host = "127.0.0.1"
port = {port}
user = "{FTP_USER}"
password_env = "FTP_PW"
{tls}
include = ["*.csv"]
stable_for = "0"
after = "{after}"
retries = 1
retry_wait = "50ms"
timeout = "5s"

[[inputs]]
files = "*.csv"
schema = "ehr_patients"
"#,
        port = ftpd.port,
    )
}

fn setup(ftpd: &Ftpd, tls: &str, after: &str) -> Dir {
    let d = Dir::with_project();
    d.write("jobs/t.toml", job(ftpd, tls, after));
    d
}

fn ferry(d: &Dir, args: &[&str]) -> std::process::Output {
    d.ferry_env(args, &[("FTP_PW", FTP_PASSWORD)])
}

fn statuses(d: &Dir) -> Vec<(String, String)> {
    read_csv(&d.latest_report("t").join("summary.csv"))
        .into_iter()
        .filter(|r| r["metric"] == "status")
        .map(|r| (r["scope"].clone(), r["value"].clone()))
        .collect()
}

#[test]
fn plain_ftp_pull_archives_and_keeps_bytes_exact() {
    let ftpd = Ftpd::start(Cert::None);
    // LF-only line ends: an ASCII-mode transfer would turn them into CRLF.
    let body = patients(3).replace("\r\n", "\n");
    serve(&ftpd.srv(), "a.csv", body.as_bytes());
    let d = setup(&ftpd, "tls = \"none\"", "archive");
    let out = d.ferry_env(&["-q", "run", "t"], &[("FTP_PW", FTP_PASSWORD)]);
    assert_exit(&out, 0);
    assert_eq!(stderr(&out), "", "a run that went well says nothing under cron");
    assert_eq!(count(&summary(&d.latest_report("t")), "file:ehr/a.csv", "accepted"), 3);
    assert!(!ftpd.srv().join("a.csv").exists());
    assert_eq!(fs::read(ftpd.srv().join("archive/a.csv")).unwrap(), body.as_bytes());

    // At the most verbose logging, the password never shows: suppaftp traces
    // each command it sends, PASS too, and a filter naming its module
    // (which wins over a filter of the crate) does not bring it back.
    for filter in [
        "trace",
        "suppaftp=trace,ferry=trace",
        "suppaftp::sync_ftp=trace",
        "ferry=warn,suppaftp::sync_ftp::control=trace",
    ] {
        serve(&ftpd.srv(), "b.csv", body.as_bytes());
        let out = d.ferry_env(&["run", "t"], &[("FTP_PW", FTP_PASSWORD), ("FERRY_LOG", filter)]);
        assert_exit(&out, 0);
        let err = stderr(&out);
        // (suppaftp's control module only traces: it says nothing.)
        let verbose = err.contains("TRACE") || err.contains("DEBUG");
        assert!(verbose || filter.contains("control"), "{filter}: verbose logs expected");
        assert!(!err.contains(FTP_PASSWORD), "{filter}: the password is in the log");
    }
    let received = walk(&d.home().join("received"));
    let copy = received.iter().find(|p| p.ends_with("a.csv")).expect("a local copy");
    assert_eq!(fs::read(copy).unwrap(), body.as_bytes(), "binary transfer, byte for byte");
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(statuses(&d).is_empty());
}

#[test]
fn ftps_verified_by_the_job_ca_file_with_delete() {
    let ftpd = Ftpd::start(Cert::SignedByCa);
    serve(&ftpd.srv(), "a.csv", patients(2).as_bytes());
    let tls = format!("ca_file = \"{}\"", ftpd.ca_pem().display());
    let d = setup(&ftpd, &tls, "delete");
    let out = ferry(&d, &["check", "t"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    for step in ["dns", "tcp", "tls", "login", "list"] {
        assert!(err.contains(&format!("ok    {step}")), "step {step}: {err}");
    }
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(!ftpd.srv().join("a.csv").exists());
    assert!(!ftpd.srv().join("archive").exists());
    assert_eq!(count(&summary(&d.latest_report("t")), "file:ehr/a.csv", "accepted"), 2);
}

#[test]
fn ftps_certificate_not_trusted_stops_the_job_without_retrying() {
    let ftpd = Ftpd::start(Cert::SignedByCa);
    serve(&ftpd.srv(), "a.csv", patients(2).as_bytes());
    let d = setup(&ftpd, "", "archive");
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    assert!(!ftpd.log().contains(&format!("USER '{FTP_USER}' logged in")), "no login to an untrusted server");
    assert!(ftpd.srv().join("a.csv").exists());
}

#[test]
fn ftps_pinned_self_signed_certificate_and_keep() {
    let ftpd = Ftpd::start(Cert::SelfSigned);
    serve(&ftpd.srv(), "a.csv", patients(2).as_bytes());
    let d = setup(&ftpd, &format!("tls_pin_sha256 = \"{}\"", ftpd.cert_sha256()), "keep");
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert!(ftpd.srv().join("a.csv").exists());
    assert_exit(&ferry(&d, &["run", "t"]), 0);
    assert_eq!(statuses(&d), vec![("file:ehr/a.csv".to_string(), "already loaded".to_string())]);
    // Another pin is refused.
    d.write("jobs/t.toml", job(&ftpd, &format!("tls_pin_sha256 = \"{}\"", "ab".repeat(32)), "keep"));
    let out = ferry(&d, &["run", "t"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("does not match the pinned"), "{}", stderr(&out));
}

#[test]
fn ftp_wrong_password_is_a_login_failure() {
    let ftpd = Ftpd::start(Cert::None);
    let d = setup(&ftpd, "tls = \"none\"", "archive");
    let out = d.ferry_env(&["run", "t"], &[("FTP_PW", "wrong")]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("login refused"), "{err}");
    assert!(err.contains("$FTP_PW"), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    assert!(!err.contains("wrong\n") && !err.contains(FTP_PASSWORD));
}

#[test]
fn ftps_put_uploads_under_a_temporary_name_then_renames() {
    use ferry::transport::{self, Endpoint, FtpEndpoint, FtpTls, Limits, Secret};
    let ftpd = Ftpd::start(Cert::SignedByCa);
    // SAFETY of set_var: read back at once on this thread; no other test uses it.
    unsafe { std::env::set_var("FERRY_TEST_FTP_PUT_PW", FTP_PASSWORD) };
    let endpoint = Endpoint::Ftp(FtpEndpoint {
        host: "127.0.0.1".into(),
        port: ftpd.port,
        user: FTP_USER.into(),
        password: Secret::from_env("FERRY_TEST_FTP_PUT_PW").unwrap(),
        tls: FtpTls::Explicit { ca_file: Some(ftpd.ca_pem()), pin_sha256: None },
        folder: ".".into(),
        limits: Limits::remote_default(),
    });
    let mut t = transport::open(&endpoint).unwrap();
    let body = patients(2000).replace("\r\n", "\n");
    let n = t.put("id_updates.csv", &mut body.as_bytes(), body.len() as u64).unwrap();
    assert_eq!(n, body.len() as u64);
    assert_eq!(fs::read(ftpd.srv().join("id_updates.csv")).unwrap(), body.as_bytes());
    assert!(!ftpd.srv().join(".id_updates.csv.part").exists());
    t.put("id_updates.csv", &mut &b"x\n"[..], 2).unwrap();
    assert_eq!(fs::read(ftpd.srv().join("id_updates.csv")).unwrap(), b"x\n");
    let err = t.put("short.csv", &mut &b"abc"[..], 10).unwrap_err();
    assert!(err.to_string().contains("expected 10"), "{err}");
    assert!(!ftpd.srv().join("short.csv").exists() && !ftpd.srv().join(".short.csv.part").exists());
    let names: Vec<String> = t.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["id_updates.csv".to_string()]);
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

/// An archive the server cannot make (a folder whose parent is missing)
/// answers "not found" to the move: the file is still there, so the
/// after-action fails, naming the folder, and the run with it; the next
/// run finds the file in the ledger (never loaded twice) and tries again.
#[test]
fn an_archive_the_server_cannot_make_fails_the_run_and_the_file_stays() {
    let ftpd = Ftpd::start(Cert::None);
    serve(&ftpd.srv(), "a.csv", patients(2).as_bytes());
    let d = Dir::with_project();
    let text = job(&ftpd, "tls = \"none\"", "archive")
        .replace("after = \"archive\"", "after = \"archive\"\narchive_dir = \"no/such/archive\"");
    d.write("jobs/t.toml", text);
    for run in 1..=2 {
        let out = ferry(&d, &["run", "t"]);
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("cannot archive a.csv") && err.contains("no archive folder no/such/archive"),
            "run {run}: {err}"
        );
        assert!(ftpd.srv().join("a.csv").exists(), "run {run}: the file stays");
    }
    let db = rusqlite::Connection::open(d.home().join("ferry.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT state FROM files")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["loaded"], "loaded once, and not marked archived");
}
