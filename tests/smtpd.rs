//! A real SMTP server for the tests: aiosmtpd (tests/support/smtp_server.py)
//! on a free 127.0.0.1 port, STARTTLS or implicit TLS with a certificate
//! signed by a CA made for the test, AUTH required, messages kept in a
//! Maildir. Stopped by its PID when dropped. `make test` installs what it
//! needs (tests/install-deps.sh); a test never skips for want of it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const USER: &str = "ferry";
pub const PASSWORD: &str = "s3cret-smtp-pw";

/// The venv tests/install-deps.sh makes, with aiosmtpd in it.
pub fn python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import aiosmtpd"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} with aiosmtpd is missing: run ./tests/install-deps.sh (or `make test`), which makes it with \
         `python3 -m venv target/test-venv && target/test-venv/bin/pip install aiosmtpd`",
        py.display()
    );
    py
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A CA made for the test and a server certificate for 127.0.0.1 it signed.
pub struct Certs {
    #[allow(dead_code)]
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| {
            panic!("openssl is missing ({e}): run ./tests/install-deps.sh or `apt-get install openssl`")
        });
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca_args = vec!["req", "-x509", "-days", "30", "-subj", "/CN=ferry test CA"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca_args);
    let mut csr_args = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr_args.extend(ec);
    csr_args.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(&csr_args);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        "server.pem",
        "-extfile",
        "ext.cnf",
    ]);
    Certs { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
}

pub struct Smtpd {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
}

impl Smtpd {
    /// Start the server on `port` and wait until it listens.
    pub fn start(dir: &Path, certs: &Certs, port: u16, implicit_tls: bool) -> Smtpd {
        Smtpd::start_refusing(dir, certs, port, implicit_tls, None)
    }

    /// [`Smtpd::start`], refusing recipient `refuse` for good (550).
    pub fn start_refusing(
        dir: &Path,
        certs: &Certs,
        port: u16,
        implicit_tls: bool,
        refuse: Option<&str>,
    ) -> Smtpd {
        std::fs::create_dir_all(dir).unwrap();
        let maildir = dir.join("maildir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
        let mut cmd = Command::new(python());
        cmd.arg(&script)
            .args(["--port", &port.to_string(), "--user", USER, "--password", PASSWORD])
            .arg("--maildir")
            .arg(&maildir)
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if implicit_tls {
            cmd.arg("--implicit-tls");
        }
        if let Some(addr) = refuse {
            cmd.args(["--reject-rcpt", addr]);
        }
        let mut child = cmd.spawn().expect("start the SMTP server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("the SMTP server did not start ({other:?}): {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        Smtpd { child, port, maildir }
    }

    /// Every message the server accepted, oldest first.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    let t = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                    paths.push((t, e.path()));
                }
            }
        }
        paths.sort();
        paths.into_iter().map(|(_, p)| std::fs::read(p).unwrap()).collect()
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        // By PID, this server only.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One leaf part of a message: (MIME type, file name, decoded body).
pub type Part = (String, Option<String>, Vec<u8>);

/// Every leaf part of a message.
pub fn parts(raw: &[u8]) -> Vec<Part> {
    fn walk(m: &mailparse::ParsedMail, out: &mut Vec<Part>) {
        if m.subparts.is_empty() {
            let name = m.get_content_disposition().params.get("filename").cloned();
            out.push((m.ctype.mimetype.clone(), name, m.get_body_raw().unwrap()));
        }
        for p in &m.subparts {
            walk(p, out);
        }
    }
    let mail = mailparse::parse_mail(raw).unwrap();
    let mut out = Vec::new();
    walk(&mail, &mut out);
    out
}

/// A header of a message.
pub fn header(raw: &[u8], name: &str) -> Option<String> {
    use mailparse::MailHeaderMap;
    mailparse::parse_mail(raw).unwrap().headers.get_first_value(name)
}

/// The [email] table of a job that sends through this server.
pub fn email_table(port: u16, ca: &Path, security: &str) -> String {
    format!(
        r#"
[email]
to = ["manager@practice.example", "him@practice.example"]
from = "ferry@practice.example"
server = "127.0.0.1"
port = {port}
security = "{security}"
user = "{USER}"
password_env = "FERRY_TEST_SMTP_PASSWORD"
ca_file = "{}"
zip_password_env = "FERRY_TEST_ZIP_PASSWORD"
timeout = "10s"
"#,
        ca.display()
    )
}

pub const ZIP_PASSWORD: &str = "zip-pw-for-tests";

/// The environment a job using [`email_table`] needs.
pub fn email_env() -> Vec<(&'static str, &'static str)> {
    vec![("FERRY_TEST_SMTP_PASSWORD", PASSWORD), ("FERRY_TEST_ZIP_PASSWORD", ZIP_PASSWORD)]
}
