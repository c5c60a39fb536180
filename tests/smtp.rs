//! Email against a real SMTP server (aiosmtpd, STARTTLS or implicit TLS,
//! AUTH required), with the test's own CA given to ferry as `ca_file`.

use std::io::{Cursor, Read};

use crate::smtpd::{self, Smtpd, email_env, email_table, header, make_certs, parts};
use crate::util::{Dir, assert_exit, demo_job, stderr};

fn job_with_email(d: &Dir, port: u16, security: &str) {
    let certs_dir = d.path("certs");
    d.write("jobs/demo.toml", demo_job("", &email_table(port, &certs_dir.join("ca.pem"), security)));
}

#[test]
fn email_arrives_over_starttls_with_auth_and_the_encrypted_report_zip() {
    let d = Dir::with_project();
    let certs = make_certs(&d.path("certs"));
    let server = Smtpd::start(&d.path("smtp"), &certs, smtpd::free_port(), false);
    job_with_email(&d, server.port, "starttls");

    let out = d.ferry_env(&["run", "demo"], &email_env());
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("Email sent (1 message(s))"), "{}", stderr(&out));
    let msgs = server.messages();
    assert_eq!(msgs.len(), 1, "one message");
    let raw = &msgs[0];

    // Both recipients in the envelope, as the server saw it.
    let rcpt = header(raw, "X-RcptTo").unwrap();
    assert!(rcpt.contains("manager@practice.example") && rcpt.contains("him@practice.example"), "{rcpt}");
    let subject = header(raw, "Subject").unwrap();
    assert!(subject.starts_with("ferry demo: run 1 ok"), "{subject}");
    assert!(header(raw, "Message-ID").unwrap().contains("@practice.example>"));

    let parts = parts(raw);
    let text = parts.iter().find(|p| p.0 == "text/plain").expect("a plain-text body");
    let text = String::from_utf8_lossy(&text.2);
    let report = d.latest_report("demo");
    assert!(text.contains(&format!("Report folder: {}", report.display())), "{text}");
    assert!(text.contains("Records loaded"), "{text}");
    assert!(parts.iter().any(|p| p.0 == "text/html" && p.1.is_none()), "an HTML body");

    // The zip holds every report file, report.html too, byte for byte,
    // behind the job's password; the page, which names the run's files,
    // is not beside it in clear.
    assert!(!parts.iter().any(|p| p.1.as_deref() == Some("report.html")), "report.html in clear");
    let zip = parts.iter().find(|p| p.1.as_deref() == Some("demo-run1-reports.zip")).expect("the zip");
    assert_eq!(zip.0, "application/zip");
    let mut archive = zip::ZipArchive::new(Cursor::new(zip.2.clone())).unwrap();
    let mut names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    let mut expected: Vec<String> = std::fs::read_dir(&report)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(archive.by_name("matched.csv").is_err(), "the zip must be encrypted");
    for name in &expected {
        let mut bytes = Vec::new();
        archive
            .by_name_decrypt(name, smtpd::ZIP_PASSWORD.as_bytes())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, std::fs::read(report.join(name)).unwrap(), "{name}");
    }
    // Nothing left waiting.
    assert_eq!(std::fs::read_dir(d.home().join("outbox/demo")).unwrap().count(), 0);
}

#[test]
fn email_over_implicit_tls() {
    let d = Dir::with_project();
    let certs = make_certs(&d.path("certs"));
    let server = Smtpd::start(&d.path("smtp"), &certs, smtpd::free_port(), true);
    job_with_email(&d, server.port, "tls");
    let out = d.ferry_env(&["run", "demo"], &email_env());
    assert_exit(&out, 0);
    assert_eq!(server.messages().len(), 1, "{}", stderr(&out));
}

/// The relay is down for the first run: the message waits in the outbox,
/// the run still succeeds, and once the relay is back each message arrives
/// exactly once, the older first.
#[test]
fn server_down_then_up_sends_each_message_exactly_once() {
    let d = Dir::with_project();
    let certs = make_certs(&d.path("certs"));
    let port = smtpd::free_port();
    job_with_email(&d, port, "starttls");

    let out = d.ferry_env(&["run", "demo"], &email_env());
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("wait in the outbox"), "{}", stderr(&out));
    let waiting: Vec<_> = std::fs::read_dir(d.home().join("outbox/demo"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "msg"))
        .collect();
    assert_eq!(waiting.len(), 1);
    let status = d.ferry(&["status"]);
    assert!(crate::util::stdout(&status).contains("1 waiting"), "{}", crate::util::stdout(&status));

    // Back up: run-due (the job has no schedule) sends what waits, once the
    // back-off has passed.
    let server = Smtpd::start(&d.path("smtp"), &certs, port, false);
    let soon = chrono::Utc::now() + chrono::Duration::minutes(1);
    let mut env = email_env();
    let soon_text = soon.to_rfc3339();
    env.push(("FERRY_NOW", &soon_text));
    let out = d.ferry_env(&["run-due"], &env);
    assert_exit(&out, 0);
    assert_eq!(server.messages().len(), 0, "still in back-off: {}", stderr(&out));
    let later = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    env.pop();
    env.push(("FERRY_NOW", &later));
    let out = d.ferry_env(&["run-due"], &env);
    assert_exit(&out, 0);
    assert_eq!(server.messages().len(), 1, "sent after the back-off: {}", stderr(&out));

    // Two more runs: one new message each, the first never again.
    for _ in 0..2 {
        let out = d.ferry_env(&["run", "demo"], &email_env());
        assert_exit(&out, 0);
    }
    let msgs = server.messages();
    let subjects: Vec<String> = msgs.iter().map(|m| header(m, "Subject").unwrap()).collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    for (i, s) in subjects.iter().enumerate() {
        assert!(s.starts_with(&format!("ferry demo: run {} ", i + 1)), "{subjects:?}");
    }
    let ids: std::collections::HashSet<String> =
        msgs.iter().map(|m| header(m, "Message-ID").unwrap()).collect();
    assert_eq!(ids.len(), 3, "every message once");
    assert_eq!(std::fs::read_dir(d.home().join("outbox/demo")).unwrap().count(), 0);
}

#[test]
fn check_says_whether_the_server_answers_and_accepts_the_login() {
    let d = Dir::with_project();
    let certs = make_certs(&d.path("certs"));
    let port = smtpd::free_port();
    job_with_email(&d, port, "starttls");

    // Down.
    let out = d.ferry_env(&["check", "demo"], &email_env());
    assert_exit(&out, 1);
    assert!(stderr(&out).contains(&format!("SMTP 127.0.0.1:{port}")), "{}", stderr(&out));

    let _server = Smtpd::start(&d.path("smtp"), &certs, port, false);
    let out = d.ferry_env(&["check", "demo"], &email_env());
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("answers (STARTTLS) and accepts the login of ferry"), "{}", stderr(&out));

    // A wrong password is refused, in words.
    let out = d.ferry_env(
        &["check", "demo"],
        &[("FERRY_TEST_SMTP_PASSWORD", "wrong"), ("FERRY_TEST_ZIP_PASSWORD", smtpd::ZIP_PASSWORD)],
    );
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("refused the login"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("wrong"), "the password must not be echoed: {}", stderr(&out));

    // The password variable unset.
    let out = d.ferry_env(&["check", "demo"], &[("FERRY_TEST_ZIP_PASSWORD", smtpd::ZIP_PASSWORD)]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("FERRY_TEST_SMTP_PASSWORD, which is not set"), "{}", stderr(&out));

    // Without the private CA the certificate is not trusted.
    let text = std::fs::read_to_string(d.path("jobs/demo.toml")).unwrap();
    let ca_line = text.lines().find(|l| l.starts_with("ca_file")).unwrap().to_string();
    d.write("jobs/demo.toml", text.replace(&ca_line, ""));
    let out = d.ferry_env(&["check", "demo"], &email_env());
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("TLS failed"), "{}", stderr(&out));
}

/// A message the relay refuses for good (a closed mailbox: 550) is set
/// aside, said so, and never holds back the messages after it, which go
/// once the job no longer names the address.
#[test]
fn a_message_refused_for_good_is_set_aside_and_the_rest_go() {
    let d = Dir::with_project();
    let certs = make_certs(&d.path("certs"));
    let port = smtpd::free_port();
    job_with_email(&d, port, "starttls");
    let server = Smtpd::start_refusing(&d.path("smtp"), &certs, port, false, Some("him@practice.example"));
    let out = d.ferry_env(&["run", "demo"], &email_env());
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert!(err.contains("refused for good") && err.contains("set aside"), "{err}");
    let outbox = d.home().join("outbox/demo");
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    };
    assert!(names().iter().all(|n| n.ends_with(".refused")) && names().len() == 1, "{:?}", names());

    // The address is taken out of the job: the next run's message goes.
    let job = std::fs::read_to_string(d.path("jobs/demo.toml")).unwrap();
    d.write("jobs/demo.toml", job.replace(", \"him@practice.example\"", ""));
    let out = d.ferry_env(&["run", "demo"], &email_env());
    assert_exit(&out, 0);
    let subjects: Vec<String> = server.messages().iter().map(|m| header(m, "Subject").unwrap()).collect();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(subjects[0].starts_with("ferry demo: run 2 "), "{subjects:?}");
    assert_eq!(names().len(), 1, "only the refused one stays: {:?}", names());
}
