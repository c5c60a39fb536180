//! The run's email: composed here, kept in an outbox in the state folder
//! until an SMTP relay has accepted it, sent with lettre over STARTTLS or
//! implicit TLS.
//!
//! The body (plain text and HTML) carries counts and where the report
//! folder is, never a patient: no names, birth dates or IDs, no file
//! details, no error text (which could quote a record). Patient data
//! travels only in the attached zip of the report folder, AES-256 encrypted
//! when the job names a password. `report.html` (counts, and the run's
//! files by name) is attached beside a zip without a password; beside an
//! encrypted one it would show those names in clear, so it is only inside.
//!
//! The outbox is what makes delivery safe: a message is written whole
//! (temporary name, fsync, rename) before any attempt to send it, and
//! removed only after the relay accepted it. A failed attempt leaves it to
//! the next run (or to `run-due`, after a back-off). Messages go oldest
//! first. The one window left: ferry dies after the relay said "250 OK" and
//! before the file is removed; the next attempt sends it again, with the
//! same Message-ID, which mail clients and archives use to fold the two into
//! one. Delivery is at least once, never zero times.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, SmtpTransport, Transport};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::html::esc;
use crate::job::{Email, SmtpSecurity};

/// A zip larger than this is not attached (relays commonly refuse 25 MB
/// and more, and base64 adds a third); the body says where the folder is.
pub const MAX_ZIP_BYTES: usize = 15 * 1024 * 1024;

/// What the email says about a run.
pub struct Facts<'a> {
    pub job: &'a str,
    pub run_id: i64,
    /// ok, failed.
    pub outcome: &'a str,
    /// Local time, as people read it.
    pub started: &'a str,
    pub counts: &'a [(&'static str, u64)],
    /// None when the run failed before writing its reports.
    pub report_dir: Option<&'a Path>,
    /// Lines such as "3 pushed, 1 failed" (no patient data).
    pub notes: &'a [String],
}

/// A composed message, ready for the outbox.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub head: Head,
    pub bytes: Vec<u8>,
}

/// The first line of an outbox file: the SMTP envelope and where the
/// message came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    pub message_id: String,
    pub job: String,
    pub run_id: i64,
    pub from: String,
    pub to: Vec<String>,
    pub created: String,
}

/// Compose the run's message.
pub fn compose(email: &Email, facts: &Facts, now: DateTime<Utc>) -> Result<Outgoing> {
    let from: Mailbox = email.from.parse().with_context(|| format!("email.from {:?}", email.from))?;
    let domain = from.email.domain().to_string();
    let message_id =
        format!("<ferry.{}.run{}.{:016x}@{domain}>", facts.job, facts.run_id, rand::random::<u64>());
    let mut notes: Vec<String> = facts.notes.to_vec();
    let mut attachments: Vec<SinglePart> = Vec::new();
    if let Some(dir) = facts.report_dir.filter(|_| email.attach) {
        match zip_for_mail(email, dir) {
            Ok((bytes, encrypted)) => {
                let name = format!("{}-run{}-reports.zip", facts.job, facts.run_id);
                notes.push(if encrypted {
                    format!("Attached: {name}, AES-256 encrypted with the password agreed for this job.")
                } else {
                    format!("Attached: {name}.")
                });
                attachments.push(Attachment::new(name).body(bytes, ContentType::parse("application/zip")?));
            }
            Err(why) => notes.push(format!("The report files are not attached: {why}.")),
        }
        // The page lists the run's files by name, which may name a patient:
        // beside an encrypted zip (or none, for want of its password), it
        // goes only inside the zip.
        if email.zip_password.is_none()
            && let Ok(page) = fs::read(dir.join("report.html"))
        {
            attachments.push(Attachment::new("report.html".to_string()).body(page, ContentType::TEXT_HTML));
        }
    }
    let subject = format!(
        "{}: run {} {}{}",
        email.subject,
        facts.run_id,
        facts.outcome,
        facts
            .counts
            .iter()
            .take(4)
            .map(|(label, v)| {
                let mut chars = label.chars();
                let first = chars.next().map(|c| c.to_lowercase().to_string()).unwrap_or_default();
                format!(", {v} {first}{}", chars.as_str())
            })
            .collect::<String>()
    );
    let link = facts.report_dir.map(|d| folder_link(email, facts.job, d));
    let text = plain_body(facts, link.as_ref(), &notes);
    let html = html_body(facts, link.as_ref(), &notes);

    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .subject(subject)
        .message_id(Some(message_id.clone()))
        .date(now.into())
        .user_agent(format!("ferry {}", env!("CARGO_PKG_VERSION")));
    for to in &email.to {
        builder = builder.to(to.parse().with_context(|| format!("email.to {to:?}"))?);
    }
    let alternative = MultiPart::alternative_plain_html(text, html);
    let message = if attachments.is_empty() {
        builder.multipart(alternative)?
    } else {
        let mut mixed = MultiPart::mixed().multipart(alternative);
        for a in attachments {
            mixed = mixed.singlepart(a);
        }
        builder.multipart(mixed)?
    };
    let envelope = message.envelope();
    let head = Head {
        message_id,
        job: facts.job.to_string(),
        run_id: facts.run_id,
        from: envelope.from().map(|a| a.to_string()).unwrap_or_default(),
        to: envelope.to().iter().map(|a| a.to_string()).collect(),
        created: crate::store::timestamp(now),
    };
    Ok(Outgoing { head, bytes: message.formatted() })
}

/// The zip of the folder, encrypted when the job says so. Never falls back
/// to an unencrypted zip when the password is missing.
fn zip_for_mail(email: &Email, dir: &Path) -> Result<(Vec<u8>, bool), String> {
    let password = match &email.zip_password {
        Some(secret) => Some(secret.get()?),
        None => None,
    };
    let bytes = super::zip::zip_folder(dir, password.as_deref()).map_err(|e| format!("{e:#}"))?;
    if bytes.len() > MAX_ZIP_BYTES {
        return Err(format!(
            "the zip is {:.1} MB, more than the {} MB ferry attaches; open the report folder",
            bytes.len() as f64 / 1e6,
            MAX_ZIP_BYTES / (1024 * 1024)
        ));
    }
    Ok((bytes, password.is_some()))
}

/// Where readers open the report folder: the job's `report_url`, else the path.
fn folder_link(email: &Email, job: &str, dir: &Path) -> (String, String) {
    let folder = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match &email.report_url {
        Some(base) => {
            let url = format!("{base}/{job}/{folder}/report.html");
            (url.clone(), url)
        }
        None => (dir.display().to_string(), format!("file://{}", dir.display())),
    }
}

fn plain_body(f: &Facts, link: Option<&(String, String)>, notes: &[String]) -> String {
    let mut s = format!("ferry job {}, run {}: {}\nStarted {}\n\n", f.job, f.run_id, f.outcome, f.started);
    let width = f.counts.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, v) in f.counts {
        s.push_str(&format!("  {label:<width$}  {v:>9}\n"));
    }
    s.push('\n');
    match link {
        Some((shown, _)) => s.push_str(&format!("Report folder: {shown}\n")),
        None => s.push_str(&format!(
            "The run failed before its reports were written; `ferry history {}` says why.\n",
            f.job
        )),
    }
    for n in notes {
        s.push_str(n);
        s.push('\n');
    }
    s.push_str("\nThis message holds counts only. Patient details are in the report files.\n");
    s
}

fn html_body(f: &Facts, link: Option<&(String, String)>, notes: &[String]) -> String {
    let mut s = format!(
        "<!DOCTYPE html><html><body style=\"font-family:Arial,sans-serif;color:#1d2330\">\
         <h2 style=\"margin:0\">{} &middot; run {} &middot; {}</h2><p style=\"color:#5c6678\">Started {}</p>\
         <table style=\"border-collapse:collapse\">",
        esc(f.job),
        f.run_id,
        esc(f.outcome),
        esc(f.started)
    );
    for (label, v) in f.counts {
        s.push_str(&format!(
            "<tr><td style=\"padding:3px 16px 3px 0\">{}</td><td style=\"text-align:right\">{v}</td></tr>",
            esc(label)
        ));
    }
    s.push_str("</table>");
    match link {
        Some((shown, href)) => {
            s.push_str(&format!("<p>Report folder: <a href=\"{}\">{}</a></p>", esc(href), esc(shown)))
        }
        None => s.push_str(&format!(
            "<p>The run failed before its reports were written; <code>ferry history {}</code> says why.</p>",
            esc(f.job)
        )),
    }
    for n in notes {
        s.push_str(&format!("<p>{}</p>", esc(n)));
    }
    s.push_str(
        "<p style=\"color:#5c6678;font-size:12px\">This message holds counts only. Patient details are in \
         the report files.</p></body></html>",
    );
    s
}

/// The SMTP connection a job's settings describe. The password is read
/// from its environment variable here and goes nowhere but lettre.
pub fn smtp(email: &Email) -> Result<SmtpTransport> {
    let mut tls = TlsParameters::builder(email.server.clone());
    if let Some(ca) = &email.ca_file {
        let pem = fs::read(ca).with_context(|| format!("cannot read email.ca_file {}", ca.display()))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| anyhow!("email.ca_file {} holds no PEM certificate: {e}", ca.display()))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build().context("cannot set up TLS for email")?;
    let mut builder = SmtpTransport::builder_dangerous(email.server.as_str())
        .port(email.port)
        .timeout(Some(email.timeout))
        .tls(match email.security {
            SmtpSecurity::Starttls => Tls::Required(tls),
            SmtpSecurity::Tls => Tls::Wrapper(tls),
        });
    if let (Some(user), Some(secret)) = (&email.user, &email.password) {
        let password = secret.get().map_err(|e| anyhow!(e))?;
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// `ferry check`: connect, say hello, secure the line and log in.
pub fn check(email: &Email) -> Result<String> {
    let how = match email.security {
        SmtpSecurity::Starttls => "STARTTLS",
        SmtpSecurity::Tls => "TLS",
    };
    let transport = smtp(email)?;
    match transport.test_connection() {
        Ok(true) => Ok(match &email.user {
            Some(user) => {
                format!("{}:{} answers ({how}) and accepts the login of {user}", email.server, email.port)
            }
            None => format!("{}:{} answers ({how}); no login configured", email.server, email.port),
        }),
        Ok(false) => bail!("{}:{} accepted the connection but did not answer NOOP", email.server, email.port),
        Err(e) => Err(explain(email, &e)),
    }
}

/// An SMTP failure in plain words.
fn explain(email: &Email, e: &lettre::transport::smtp::Error) -> anyhow::Error {
    let at = format!("{}:{}", email.server, email.port);
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    let hint = if e.is_tls() || chain.contains("certificate") || chain.contains("tls") {
        " (TLS failed: is the certificate signed by a CA ferry trusts? set email.ca_file for a private CA; \
         is `security` right for this port?)"
    } else if e.status().is_some_and(|c| c.to_string().starts_with("535")) || chain.contains("authentication")
    {
        " (the relay refused the login: check email.user and the password variable)"
    } else if e.is_timeout() {
        " (no answer in time: firewall, or the wrong port?)"
    } else {
        ""
    };
    anyhow!("SMTP {at}: {chain}{hint}")
}

/// Back-off state of a message that could not be sent yet.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Attempts {
    attempts: u32,
    last_error: String,
    /// `run-due` waits until then; `ferry run` tries at once.
    next_try: String,
}

/// A job's outbox: `STATE/outbox/JOB/*.msg`, one file per message (its
/// [`Head`] as a JSON line, then the message), with `*.state` beside a
/// message that failed before.
pub struct Outbox {
    dir: PathBuf,
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct Flushed {
    pub sent: Vec<String>,
    pub waiting: usize,
    /// Why the first message that failed did.
    pub error: Option<String>,
    /// Messages the relay refused for good (a 5xx: a closed mailbox, a
    /// policy), set aside as `NAME.refused` in the outbox, each with why.
    pub refused: Vec<String>,
}

/// The relay refused a message for good: sending it again would be
/// refused again, and would hold back every message after it.
#[derive(Debug, thiserror::Error)]
#[error("refused for good by the relay")]
struct Refused;

impl Outbox {
    pub fn new(state_dir: &Path, job: &str) -> Outbox {
        Outbox { dir: state_dir.join("outbox").join(job) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Put a message in the outbox, durably, and return its file.
    pub fn put(&self, m: &Outgoing) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let stamp = m.head.created.replace([':', '-', '.'], "");
        let name = format!("{stamp}-run{:08}.msg", m.head.run_id);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.part"));
        let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        serde_json::to_writer(&mut f, &m.head)?;
        f.write_all(b"\n")?;
        f.write_all(&m.bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot rename {}", tmp.display()))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// Messages waiting, oldest first.
    pub fn waiting(&self) -> Result<Vec<PathBuf>> {
        if !self.dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut out: Vec<PathBuf> = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "msg"))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Whether the oldest waiting message may be tried at `now`.
    pub fn ready(&self, now: DateTime<Utc>) -> Result<bool> {
        let Some(first) = self.waiting()?.into_iter().next() else { return Ok(false) };
        let state = read_attempts(&first);
        Ok(state.next_try.is_empty() || state.next_try <= crate::store::timestamp(now))
    }

    /// Send what waits, oldest first, over one connection. Stops at the
    /// first failure (the relay is likely down for the rest too) and
    /// records it for the back-off; a message the relay refuses for good
    /// is set aside (`NAME.refused`, kept for a person) and the rest go on.
    pub fn flush(&self, email: &Email, now: DateTime<Utc>) -> Flushed {
        let mut out = Flushed::default();
        let waiting = match self.waiting() {
            Ok(w) => w,
            Err(e) => {
                out.error = Some(format!("{e:#}"));
                return out;
            }
        };
        if waiting.is_empty() {
            return out;
        }
        let transport = match smtp(email) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("{e:#}");
                note_failure(&waiting[0], &why, now);
                out.waiting = waiting.len();
                out.error = Some(why);
                return out;
            }
        };
        for (i, path) in waiting.iter().enumerate() {
            match send_one(&transport, email, path) {
                Ok(id) => {
                    info!(message_id = %id, "Email sent.");
                    // The message counts as sent once its file is gone.
                    if let Err(e) = remove_durably(path) {
                        warn!(error = %format!("{e:#}"), "Sent email could not be removed from the outbox; it may be sent again.");
                    }
                    let _ = fs::remove_file(path.with_extension("state"));
                    out.sent.push(id);
                }
                Err(e) if e.downcast_ref::<Refused>().is_some() => {
                    let why = format!("{e:#}");
                    let aside = path.with_extension("refused");
                    warn!(file = %aside.display(), error = %why, "Email refused for good; set aside, the rest go on.");
                    if let Err(e) = fs::rename(path, &aside) {
                        // It cannot be set aside: it stays first, as before.
                        note_failure(path, &why, now);
                        out.waiting = waiting.len() - i;
                        out.error = Some(format!("{why}; and it cannot be set aside: {e}"));
                        break;
                    }
                    let _ = fs::remove_file(path.with_extension("state"));
                    out.refused.push(format!("{why} (set aside as {})", aside.display()));
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    note_failure(path, &why, now);
                    out.waiting = waiting.len() - i;
                    out.error = Some(why);
                    break;
                }
            }
        }
        out
    }
}

fn send_one(transport: &SmtpTransport, email: &Email, path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let split = bytes.iter().position(|&b| b == b'\n').context("outbox file has no head line")?;
    let head: Head = serde_json::from_slice(&bytes[..split]).context("outbox file has a bad head line")?;
    let body = &bytes[split + 1..];
    let from: Address = head.from.parse().context("bad sender in outbox file")?;
    let to = head.to.iter().map(|a| a.parse::<Address>()).collect::<Result<Vec<_>, _>>()?;
    let envelope = lettre::address::Envelope::new(Some(from), to)?;
    transport.send_raw(&envelope, body).map_err(|e| match e.is_permanent() {
        true => explain(email, &e).context(Refused),
        false => explain(email, &e),
    })?;
    Ok(head.message_id)
}

fn remove_durably(path: &Path) -> Result<()> {
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn read_attempts(msg: &Path) -> Attempts {
    fs::read(msg.with_extension("state"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Count a failed attempt; run-due waits 5 minutes, doubling to an hour.
fn note_failure(msg: &Path, why: &str, now: DateTime<Utc>) {
    let mut a = read_attempts(msg);
    a.attempts += 1;
    a.last_error = why.to_string();
    let minutes = (5i64 << (a.attempts - 1).min(4)).min(60);
    a.next_try = crate::store::timestamp(now + chrono::Duration::minutes(minutes));
    if let Ok(json) = serde_json::to_vec(&a) {
        let _ = fs::write(msg.with_extension("state"), json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::SecretEnv;

    fn settings() -> Email {
        Email {
            to: vec!["manager@practice.example".into(), "it@practice.example".into()],
            from: "ferry@practice.example".into(),
            server: "127.0.0.1".into(),
            port: 9,
            security: SmtpSecurity::Starttls,
            user: None,
            password: None,
            ca_file: None,
            subject: "ferry demo".into(),
            attach: true,
            zip_password: Some(SecretEnv {
                key: "email.zip_password_env",
                var: "FERRY_TEST_UNSET_VAR".into(),
            }),
            report_url: None,
            timeout: std::time::Duration::from_secs(2),
        }
    }

    #[test]
    fn missing_zip_password_means_no_zip_not_a_plain_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("matched.csv"), "ehr_id\r\nE1\r\n").unwrap();
        fs::write(dir.path().join("report.html"), "<html></html>").unwrap();
        let counts = [("Records loaded", 3u64)];
        let facts = Facts {
            job: "demo",
            run_id: 7,
            outcome: "ok",
            started: "2026-06-01 02:30",
            counts: &counts,
            report_dir: Some(dir.path()),
            notes: &[],
        };
        let m = compose(&settings(), &facts, Utc::now()).unwrap();
        let text = String::from_utf8_lossy(&m.bytes);
        assert!(!text.contains("reports.zip\""), "a zip was attached");
        assert!(text.contains("FERRY_TEST_UNSET_VAR"), "the body should say why");
        assert!(!text.contains("filename=\"report.html\""), "its file names go only in an encrypted zip");
        assert_eq!(m.head.to.len(), 2);
        assert!(m.head.message_id.ends_with("@practice.example>"));
        // Where the job asks for no password, the page is attached beside
        // the plain zip.
        let plain = Email { zip_password: None, ..settings() };
        let text = String::from_utf8_lossy(&compose(&plain, &facts, Utc::now()).unwrap().bytes).into_owned();
        assert!(text.contains("filename=\"demo-run7-reports.zip\""), "{text}");
        assert!(text.contains("filename=\"report.html\""), "{text}");
    }

    #[test]
    fn outbox_keeps_a_message_until_sent() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::new(dir.path(), "demo");
        let counts = [("Records loaded", 3u64)];
        let facts = Facts {
            job: "demo",
            run_id: 1,
            outcome: "ok",
            started: "x",
            counts: &counts,
            report_dir: None,
            notes: &[],
        };
        let m = compose(&settings(), &facts, Utc::now()).unwrap();
        outbox.put(&m).unwrap();
        assert_eq!(outbox.waiting().unwrap().len(), 1);
        // Nothing listens on port 9 of loopback: the message stays, with a back-off.
        let now = Utc::now();
        let f = outbox.flush(&settings(), now);
        assert!(f.sent.is_empty() && f.waiting == 1 && f.error.is_some(), "{f:?}");
        assert_eq!(outbox.waiting().unwrap().len(), 1);
        assert!(!outbox.ready(now).unwrap());
        assert!(outbox.ready(now + chrono::Duration::minutes(6)).unwrap());
    }
}
