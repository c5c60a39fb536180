//! Job files: `jobs/*.toml` read in two steps. [`JobFile`] is the TOML as
//! written, with every struct denying unknown keys so that a misspelt key
//! fails `ferry check` instead of being ignored at 03:00. [`JobFile::build`]
//! turns it into a [`Job`]: paths resolved against the job file's folder,
//! schemas loaded, globs compiled. Nothing downstream sees the raw form.
//!
//! Secrets never live in a job file. A job names the environment variable
//! that holds a secret (`password_env = "NAME"`); a key that looks like an
//! inline secret is refused with a message that says so.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use chrono_tz::Tz;

use crate::flatfile::Schema;
use crate::hl7::{Hl7Schema, ProviderKind};
use crate::model::{Field, Side};
use crate::reconcile::matching::{Comparison, FixedWeight, MatchSettings};
use crate::schedule::Schedule;
use crate::store::LoadMode;
use crate::transport::{Endpoint, FtpEndpoint, FtpTls, Limits, Secret, SftpEndpoint, SshAuth};

/// A job or schema file that cannot be used, with every problem found in it.
/// The CLI turns this into exit status 2.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn new(file: &Path, problem: impl Into<String>) -> ConfigError {
        ConfigError { file: file.to_path_buf(), problems: vec![problem.into()] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", self.file.display(), p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The raw file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// Defaults to the file's stem.
    name: Option<String>,
    description: Option<String>,
    /// Where the job's SQLite store, received files and reports live.
    /// Defaults to `$FERRY_HOME`, then `$XDG_STATE_HOME/ferry`, then
    /// `~/.local/state/ferry`.
    state_dir: Option<PathBuf>,
    /// Defaults to `STATE_DIR/reports`.
    reports_dir: Option<PathBuf>,
    /// Where schema names are looked up. Defaults to `../schemas` from the job.
    schemas_dir: Option<PathBuf>,
    /// IANA time zone of times without an offset (HL7 DTMs) and of the
    /// schedule. Defaults to UTC.
    time_zone: Option<String>,
    /// When `ferry run-due` runs the job: five crontab fields or `@daily`,
    /// in `time_zone`. A job without one runs only when asked.
    schedule: Option<String>,
    source: SourceConfig,
    #[serde(default)]
    inputs: Vec<InputConfig>,
    practice: Option<PracticeConfig>,
    #[serde(default)]
    reconcile: ReconcileConfig,
    #[serde(default)]
    hl7: Hl7Config,
    #[serde(default)]
    history: HistoryConfig,
    email: Option<EmailConfig>,
    #[serde(default)]
    push: Vec<PushConfig>,
    /// Local folders whose files are sent to a server each run.
    #[serde(default)]
    outbox: Vec<OutboxConfig>,
}

/// `[history]`: how long runs are kept, and what goes with a pruned run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryConfig {
    /// Runs that started longer ago than this are pruned ("90d"); unset
    /// keeps every run.
    keep: Option<String>,
    /// What is deleted with a pruned run.
    #[serde(default = "default_prune")]
    delete: Vec<PruneWhat>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { keep: None, delete: default_prune() }
    }
}

fn default_prune() -> Vec<PruneWhat> {
    vec![PruneWhat::Received, PruneWhat::Reports]
}

/// Files that can be deleted together with a pruned run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PruneWhat {
    /// ferry's own copies of the files the run took (`received/JOB/run-N`).
    Received,
    /// The run's report folder.
    Reports,
    /// The source files the run moved to the archive folder.
    Archived,
}

/// `[email]`: who gets the run's report, through which SMTP relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailConfig {
    to: Vec<String>,
    from: String,
    /// The relay's host name (as its certificate names it).
    server: String,
    /// Defaults to 587 for STARTTLS, 465 for implicit TLS.
    port: Option<u16>,
    #[serde(default)]
    security: SmtpSecurity,
    user: Option<String>,
    password_env: Option<String>,
    /// PEM file of the CA that signed a relay's private certificate.
    ca_file: Option<PathBuf>,
    /// Start of the subject line; defaults to "ferry JOB".
    subject: Option<String>,
    /// Attach the run's report files as one zip (default) and report.html.
    #[serde(default = "yes")]
    attach: bool,
    /// Encrypt the zip (AES-256) with the password in this variable.
    zip_password_env: Option<String>,
    /// Where readers open report folders, e.g. "https://intranet/ferry/reports":
    /// the body links to URL/JOB/FOLDER. Without it the body gives the path.
    report_url: Option<String>,
    /// Give up on a connection after this long (default 60s).
    timeout: Option<String>,
}

/// How the SMTP connection is secured. There is no plain option: the zip
/// may hold patient data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[[push]]`: report files sent back after the run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushConfig {
    /// Names of files in the run's report folder, e.g. "id_updates.csv".
    files: Vec<String>,
    /// The name at the destination; {stem}, {ext}, {stamp}, {job} and {run}
    /// are filled in. Default "{stem}_{stamp}{ext}", so a file the other side
    /// has not picked up yet is never overwritten.
    name: Option<String>,
    /// Skip a CSV with no rows under its header (default true).
    #[serde(default = "yes")]
    skip_empty: bool,
    to: DestinationConfig,
}

/// `[[outbox]]`: every file matching `include` in a local folder is sent
/// to `to` (uploaded as `.NAME.part`, renamed when whole), then moved to
/// `archive_dir` or deleted here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxConfig {
    folder: PathBuf,
    #[serde(default = "default_include")]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    /// `archive` (default, to FOLDER/sent) or `delete`; `keep` would send
    /// the file again every run.
    #[serde(default)]
    after: AfterAction,
    archive_dir: Option<PathBuf>,
    to: DestinationConfig,
}

/// A place files are sent to: the connection part of a source. Used by
/// `[[outbox]]` (`to = { type = "sftp", ... }`) and open to any other
/// table that pushes files.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum DestinationConfig {
    /// A folder on this machine (such as the pickup folder of an SFTP
    /// server the practice hosts). `dir` is accepted for `folder`.
    Local {
        #[serde(alias = "dir")]
        folder: PathBuf,
    },
    Sftp(RemoteConfig),
    Ftp(RemoteConfig),
}

impl DestinationConfig {
    /// The validated endpoint; `key` names the table in messages
    /// (`"outbox[0].to"`). Keys that only make sense for a source are refused.
    /// A local folder that does not exist is noted in `missing` (see
    /// [`Job::missing`]).
    pub fn build(
        &self,
        base: &Path,
        key: &str,
        problems: &mut Vec<String>,
        missing: &mut Vec<String>,
    ) -> Option<Endpoint> {
        let (r, protocol) = match self {
            DestinationConfig::Local { folder } => {
                let folder = base.join(folder);
                if !folder.is_dir() {
                    missing.push(format!("{key}.folder: folder {} does not exist", folder.display()));
                }
                return Some(Endpoint::Local(folder));
            }
            DestinationConfig::Sftp(r) => (r, Protocol::Sftp),
            DestinationConfig::Ftp(r) => (r, Protocol::Ftp),
        };
        for (set, k) in [
            (r.include.is_some(), "include"),
            (r.exclude.is_some(), "exclude"),
            (r.stable_for.is_some(), "stable_for"),
            (r.after.is_some(), "after"),
            (r.archive_dir.is_some(), "archive_dir"),
        ] {
            if set {
                problems.push(format!("{key}.{k}: only for a [source], not a destination"));
            }
        }
        r.build_endpoint(protocol, base, key, problems, missing)
    }
}

/// Settings for HL7 inputs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hl7Config {
    /// Which provider ID to keep: `npi` (default) or `ehr`.
    #[serde(default)]
    provider_id: ProviderKind,
}

/// Where the EHR's files come from. One variant per transport.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A folder on this machine: the practice-hosted SFTP server's drop folder.
    Local(LocalConfig),
    /// An SFTP server we log in to (the EHR's, or one the practice hosts).
    Sftp(RemoteConfig),
    /// An FTP server, with explicit TLS unless `tls = "none"`.
    Ftp(RemoteConfig),
}

/// A local source folder.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Never set: the enum's tag, which a job file's second reading (see
    /// `source_error`) meets as a key.
    #[serde(rename = "type", default)]
    _type: Option<String>,
    inbox: PathBuf,
    #[serde(default = "default_include")]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    /// How long a file's size and mtime must have been unchanged.
    #[serde(default = "default_min_age")]
    min_age: String,
    #[serde(default)]
    after: AfterAction,
    /// For `after = "archive"`; defaults to `INBOX/archive`.
    archive_dir: Option<PathBuf>,
}

/// A remote server: the connection, and for a source what to take from its
/// folder. One struct for SFTP and FTP so the job file reads the same for
/// both; keys that belong to the other protocol are refused when built.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// As in [`LocalConfig`].
    #[serde(rename = "type", default)]
    _type: Option<String>,
    host: String,
    /// Default 22 (SFTP) or 21 (FTP).
    port: Option<u16>,
    user: String,
    /// The environment variable holding the password.
    password_env: Option<String>,
    /// SFTP: an OpenSSH private key file (ed25519 or RSA) instead of a password.
    key_file: Option<PathBuf>,
    /// SFTP: the environment variable holding the key file's passphrase.
    passphrase_env: Option<String>,
    /// SFTP: OpenSSH known_hosts file; default `~/.ssh/known_hosts`.
    known_hosts: Option<PathBuf>,
    /// FTP: `explicit` (default: AUTH TLS) or `none` (plain FTP, only inside a VPN).
    tls: Option<FtpTlsMode>,
    /// FTP: PEM file of extra trusted root certificates.
    ca_file: Option<PathBuf>,
    /// FTP: accept exactly the server certificate with this SHA-256 (hex)
    /// instead of verifying its chain; for self-signed partner servers.
    tls_pin_sha256: Option<String>,
    /// The remote folder; default the login folder.
    folder: Option<String>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    /// A file is taken only if its size and mtime are the same in two
    /// listings this far apart (default 5s).
    stable_for: Option<String>,
    after: Option<AfterAction>,
    /// Remote folder for `after = "archive"`; relative to `folder`;
    /// default `archive`.
    archive_dir: Option<String>,
    /// DNS, TCP, handshake and login (default 20s).
    connect_timeout: Option<String>,
    /// Each request on an open connection (default 60s).
    timeout: Option<String>,
    /// Retries of a failed connection or transfer (default 5).
    retries: Option<u32>,
    /// The first wait before a retry, doubled each time with jitter (default 2s).
    retry_wait: Option<String>,
    /// SFTP: small files downloaded at once (default 16).
    parallel: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FtpTlsMode {
    Explicit,
    None,
}

fn default_include() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_min_age() -> String {
    "30s".to_string()
}

impl SourceConfig {
    /// The validated source, or `None` with the problems noted.
    fn build(self, base: &Path, problems: &mut Vec<String>, missing: &mut Vec<String>) -> Option<Source> {
        match self {
            SourceConfig::Local(LocalConfig {
                inbox, include, exclude, min_age, after, archive_dir, ..
            }) => {
                let inbox = base.join(inbox);
                if !inbox.is_dir() {
                    missing.push(format!("source.inbox: folder {} does not exist", inbox.display()));
                }
                let filter = NameFilter::new(&include, &exclude)
                    .map_err(|e| problems.push(format!("source.{e}")))
                    .ok();
                let min_age =
                    parse_duration(&min_age).map_err(|e| problems.push(format!("source.min_age: {e}"))).ok();
                archive_only(after, archive_dir.is_some(), problems);
                let archive_dir = archive_dir.map(|d| base.join(d)).unwrap_or_else(|| inbox.join("archive"));
                Some(Source {
                    endpoint: Endpoint::Local(inbox),
                    filter: filter?,
                    settle: Settle::MinAge(min_age?),
                    after,
                    archive_dir: archive_dir.display().to_string(),
                })
            }
            SourceConfig::Sftp(r) => r.build_source(Protocol::Sftp, base, problems, missing),
            SourceConfig::Ftp(r) => r.build_source(Protocol::Ftp, base, problems, missing),
        }
    }
}

/// `source.archive_dir` with another `after`: the files would not go
/// where the operator looks for them (a job that deletes them).
fn archive_only(after: AfterAction, archive_dir: bool, problems: &mut Vec<String>) {
    if archive_dir && after != AfterAction::Archive {
        let after = match after {
            AfterAction::Archive => "archive",
            AfterAction::Delete => "delete",
            AfterAction::Keep => "keep",
        };
        problems
            .push(format!("source.archive_dir: only used with after = \"archive\", and after is {after:?}"));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Sftp,
    Ftp,
}

impl RemoteConfig {
    fn build_source(
        self,
        protocol: Protocol,
        base: &Path,
        problems: &mut Vec<String>,
        missing: &mut Vec<String>,
    ) -> Option<Source> {
        let before = problems.len();
        let filter = NameFilter::new(
            self.include.as_deref().unwrap_or(&default_include()),
            self.exclude.as_deref().unwrap_or_default(),
        )
        .map_err(|e| problems.push(format!("source.{e}")))
        .ok();
        let stable_for = parse_duration(self.stable_for.as_deref().unwrap_or("5s"))
            .map_err(|e| problems.push(format!("source.stable_for: {e}")))
            .ok();
        let after = self.after.unwrap_or_default();
        archive_only(after, self.archive_dir.is_some(), problems);
        let archive_dir = self.archive_dir.clone().unwrap_or_else(|| "archive".to_string());
        let endpoint = self.build_endpoint(protocol, base, "source", problems, missing);
        if problems.len() > before {
            return None;
        }
        Some(Source {
            endpoint: endpoint?,
            filter: filter?,
            settle: Settle::StableFor(stable_for?),
            after,
            archive_dir,
        })
    }

    /// The connection alone (for a source, or a destination files are
    /// pushed to). `key` names the table in messages. A secret's variable
    /// that is not set here is noted in `missing`, as a folder not mounted
    /// is: the job file is sound, and the shell `status` or `queue` is run
    /// from need not hold the secrets cron's does (see [`Job::missing`]).
    fn build_endpoint(
        &self,
        protocol: Protocol,
        base: &Path,
        key: &str,
        problems: &mut Vec<String>,
        missing: &mut Vec<String>,
    ) -> Option<Endpoint> {
        let before = problems.len();
        let mut problem = |k: &str, msg: String| problems.push(format!("{key}.{k}: {msg}"));
        let only = |set: bool, k: &str, which: &str, problem: &mut dyn FnMut(&str, String)| {
            if set {
                problem(k, format!("only for type = \"{which}\""));
            }
        };
        let duration =
            |v: &Option<String>, default: Duration, k: &str, problem: &mut dyn FnMut(&str, String)| match v
                .as_deref()
                .map(parse_duration)
            {
                None => default,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    problem(k, e);
                    default
                }
            };
        let d = Limits::remote_default();
        let limits = Limits {
            connect_timeout: duration(
                &self.connect_timeout,
                d.connect_timeout,
                "connect_timeout",
                &mut problem,
            ),
            timeout: duration(&self.timeout, d.timeout, "timeout", &mut problem),
            retries: self.retries.unwrap_or(d.retries),
            retry_wait: duration(&self.retry_wait, d.retry_wait, "retry_wait", &mut problem),
        };
        if limits.connect_timeout.is_zero() || limits.timeout.is_zero() {
            problem("timeout", "timeouts must be longer than 0".into());
        }
        if self.host.trim().is_empty() {
            problem("host", "must name the server".into());
        }
        if self.user.trim().is_empty() {
            problem("user", "must name the login".into());
        }
        let mut secret = |env: &Option<String>, k: &str, problem: &mut dyn FnMut(&str, String)| {
            env.as_deref().and_then(|e| match Secret::from_env(e) {
                Ok(secret) => Some(secret),
                Err(m) if crate::transport::is_env_name(e) => {
                    missing.push(format!("{key}.{k}: {m}"));
                    Some(Secret::unset(e))
                }
                Err(m) => {
                    problem(k, m);
                    None
                }
            })
        };
        let folder = self.folder.clone().unwrap_or_else(|| ".".to_string());
        let endpoint = match protocol {
            Protocol::Sftp => {
                only(self.tls.is_some(), "tls", "ftp", &mut problem);
                only(self.ca_file.is_some(), "ca_file", "ftp", &mut problem);
                only(self.tls_pin_sha256.is_some(), "tls_pin_sha256", "ftp", &mut problem);
                let auth = match (&self.password_env, &self.key_file) {
                    (Some(_), Some(_)) => {
                        problem("key_file", "give password_env or key_file, not both".into());
                        None
                    }
                    (None, None) => {
                        problem("password_env", "give password_env or key_file to log in with".into());
                        None
                    }
                    (Some(_), None) => {
                        only(
                            self.passphrase_env.is_some(),
                            "passphrase_env",
                            "sftp with key_file",
                            &mut problem,
                        );
                        secret(&self.password_env, "password_env", &mut problem).map(SshAuth::Password)
                    }
                    (None, Some(file)) => {
                        let file = base.join(file);
                        if !file.is_file() {
                            problem("key_file", format!("{} does not exist", file.display()));
                        }
                        let passphrase = secret(&self.passphrase_env, "passphrase_env", &mut problem);
                        Some(SshAuth::Key { file, passphrase })
                    }
                };
                let known_hosts = match &self.known_hosts {
                    Some(p) => base.join(p),
                    None => {
                        let home =
                            std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                        home.join(".ssh/known_hosts")
                    }
                };
                let parallel = self.parallel.unwrap_or(16);
                if !(1..=64).contains(&parallel) {
                    problem("parallel", format!("{parallel} must be between 1 and 64"));
                }
                auth.map(|auth| {
                    Endpoint::Sftp(SftpEndpoint {
                        host: self.host.clone(),
                        port: self.port.unwrap_or(22),
                        user: self.user.clone(),
                        auth,
                        known_hosts,
                        folder,
                        limits,
                        parallel,
                    })
                })
            }
            Protocol::Ftp => {
                only(self.key_file.is_some(), "key_file", "sftp", &mut problem);
                only(self.passphrase_env.is_some(), "passphrase_env", "sftp", &mut problem);
                only(self.known_hosts.is_some(), "known_hosts", "sftp", &mut problem);
                only(self.parallel.is_some(), "parallel", "sftp", &mut problem);
                let password = match &self.password_env {
                    None => {
                        problem("password_env", "FTP needs a password: name its environment variable".into());
                        None
                    }
                    Some(_) => secret(&self.password_env, "password_env", &mut problem),
                };
                let tls = match self.tls.unwrap_or(FtpTlsMode::Explicit) {
                    FtpTlsMode::None => {
                        only(self.ca_file.is_some(), "ca_file", "ftp with tls = \"explicit\"", &mut problem);
                        only(
                            self.tls_pin_sha256.is_some(),
                            "tls_pin_sha256",
                            "ftp with tls = \"explicit\"",
                            &mut problem,
                        );
                        FtpTls::None
                    }
                    FtpTlsMode::Explicit => {
                        let ca_file = self.ca_file.as_ref().map(|p| base.join(p));
                        if let Some(p) = &ca_file
                            && !p.is_file()
                        {
                            problem("ca_file", format!("{} does not exist", p.display()));
                        }
                        let pin_sha256 = self
                            .tls_pin_sha256
                            .as_deref()
                            .and_then(|h| parse_sha256(h).map_err(|m| problem("tls_pin_sha256", m)).ok());
                        FtpTls::Explicit { ca_file, pin_sha256 }
                    }
                };
                password.map(|password| {
                    Endpoint::Ftp(FtpEndpoint {
                        host: self.host.clone(),
                        port: self.port.unwrap_or(21),
                        user: self.user.clone(),
                        password,
                        tls,
                        folder,
                        limits,
                    })
                })
            }
        };
        if problems.len() > before { None } else { endpoint }
    }
}

/// 64 hex digits, colons allowed, as `openssl x509 -noout -fingerprint
/// -sha256` prints them (its `sha256 Fingerprint=` before them too).
fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let digits = text.rsplit_once('=').map_or(text, |(_, after)| after).trim();
    let hex: String = digits.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{text:?} is not a SHA-256 (64 hex digits)"));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// What happens to a source file once it is on local disk and in the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterAction {
    /// Move it to the archive folder.
    #[default]
    Archive,
    /// Remove it.
    Delete,
    /// Leave it; the ledger stops it being loaded again.
    Keep,
}

impl AfterAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AfterAction::Archive => "archive",
            AfterAction::Delete => "delete",
            AfterAction::Keep => "keep",
        }
    }

    /// The ledger state of a file whose after-action is done.
    pub fn done_state(self) -> &'static str {
        match self {
            AfterAction::Archive => "archived",
            AfterAction::Delete => "deleted",
            AfterAction::Keep => "kept",
        }
    }

    /// The ledger state a load leaves its file in: `loaded` until the
    /// after-action is done, and `kept` at once for a file left where it
    /// is, as nothing is left to do at the source (one commit per file,
    /// not two).
    pub fn loaded_state(self) -> &'static str {
        match self {
            AfterAction::Keep => "kept",
            AfterAction::Archive | AfterAction::Delete => "loaded",
        }
    }
}

/// How files taken from the source are read: the first input whose `files`
/// pattern matches a file's name reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputConfig {
    files: String,
    schema: String,
    #[serde(default = "default_input_side")]
    side: Side,
    /// `upsert` (default: each file adds and updates records) or `replace`
    /// (each file is a complete snapshot of its side).
    load: Option<LoadMode>,
    /// With `load = "replace"`: the most of its side's stored records a
    /// snapshot may drop ("50%" by default; "100%" turns the check off).
    max_shrink: Option<String>,
}

fn default_input_side() -> Side {
    Side::Ehr
}

/// The practice system's own roster: one export file, read whole each time
/// it changes (a snapshot that replaces the previous one).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PracticeConfig {
    file: PathBuf,
    schema: String,
    /// The most of the stored roster a new export may drop ("50%" by
    /// default; "100%" turns the check off).
    max_shrink: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileConfig {
    /// Keys trusted for linking, tried in order.
    keys: Option<Vec<LinkKey>>,
    #[serde(default)]
    leading_zeros: LeadingZeros,
    /// Fields compared on linked pairs.
    compare: Option<Vec<Field>>,
    #[serde(default)]
    matching: MatchingConfig,
}

/// `[reconcile.matching]`: demographic matching of records no ID links.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchingConfig {
    #[serde(default = "yes")]
    enabled: bool,
    /// Match probability at or above which a pair is linked.
    link_at: Option<f64>,
    /// Match probability at or above which a pair is listed for review.
    review_at: Option<f64>,
    /// Blocks with more candidate pairs than this are skipped.
    max_block: Option<usize>,
    /// m and u values fixed instead of estimated.
    #[serde(default)]
    fixed: Vec<FixedWeightConfig>,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        MatchingConfig { enabled: true, link_at: None, review_at: None, max_block: None, fixed: Vec::new() }
    }
}

fn yes() -> bool {
    true
}

/// One `[[reconcile.matching.fixed]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedWeightConfig {
    comparison: Comparison,
    /// A level name of the comparison, such as `exact` or `nickname`.
    level: String,
    m: Option<f64>,
    u: Option<f64>,
}

impl MatchingConfig {
    fn settings(self, problems: &mut Vec<String>) -> Option<MatchSettings> {
        // Checked with matching off too: a bad value would wait for the
        // day it is turned on.
        let enabled = self.enabled;
        let mut s = MatchSettings::default();
        let mut probability = |name: &str, v: Option<f64>, slot: &mut f64| {
            if let Some(v) = v {
                if v > 0.0 && v < 1.0 {
                    *slot = v;
                } else {
                    problems.push(format!(
                        "reconcile.matching.{name}: {v} must be a probability between 0 and 1"
                    ));
                }
            }
        };
        probability("link_at", self.link_at, &mut s.link_at);
        probability("review_at", self.review_at, &mut s.review_at);
        if s.review_at > s.link_at {
            problems.push(format!(
                "reconcile.matching: review_at ({}) must not be above link_at ({})",
                s.review_at, s.link_at
            ));
        }
        if let Some(n) = self.max_block {
            s.max_block = n;
        }
        for f in self.fixed {
            let levels = f.comparison.levels();
            let Some(level) = levels.iter().position(|l| *l == f.level) else {
                problems.push(format!(
                    "reconcile.matching.fixed: {} has no level {:?}; its levels are {}",
                    f.comparison.as_str(),
                    f.level,
                    levels.join(", ")
                ));
                continue;
            };
            for (name, v) in [("m", f.m), ("u", f.u)] {
                if v.is_some_and(|v| !(v > 0.0 && v < 1.0)) {
                    problems.push(format!(
                        "reconcile.matching.fixed: {} {} {name} must be between 0 and 1",
                        f.comparison.as_str(),
                        f.level
                    ));
                }
            }
            s.fixed.push(FixedWeight { comparison: f.comparison, level, m: f.m, u: f.u });
        }
        enabled.then_some(s)
    }
}

/// An external ID that links an EHR patient to a practice patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKey {
    /// The practice MRN the EHR carries (custom field) = the practice's own key.
    PracticeMrn,
    /// The EHR patient ID the practice carries = the EHR's own key.
    EhrId,
}

impl LinkKey {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKey::PracticeMrn => "practice_mrn",
            LinkKey::EhrId => "ehr_id",
        }
    }

    /// The side whose records carry this key as a foreign ID.
    pub fn carrier(self) -> Side {
        match self {
            LinkKey::PracticeMrn => Side::Ehr,
            LinkKey::EhrId => Side::Practice,
        }
    }
}

/// Whether leading zeros in IDs are significant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadingZeros {
    /// "000123" and "123" are different IDs; a pair that differs only in
    /// leading zeros is reported as a clash and never linked.
    #[default]
    Exact,
    /// "000123" and "123" are the same ID (the practice system drops or pads
    /// zeros); two records whose IDs collide this way are a clash.
    Ignore,
}

// ---------------------------------------------------------------------------
// The validated job.

/// A local folder whose files are sent each run.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub folder: PathBuf,
    pub filter: NameFilter,
    pub after: AfterAction,
    pub archive_dir: PathBuf,
    pub to: Endpoint,
}

#[derive(Debug)]
pub struct Job {
    pub name: String,
    pub description: Option<String>,
    pub file: PathBuf,
    pub state_dir: PathBuf,
    pub reports_dir: PathBuf,
    pub source: Source,
    pub inputs: Vec<Input>,
    pub practice: Option<Practice>,
    pub reconcile: Reconcile,
    pub time_zone: Tz,
    pub provider: ProviderKind,
    pub schedule: Option<Schedule>,
    pub history: History,
    pub email: Option<Email>,
    pub push: Vec<Push>,
    pub outbox: Vec<Outbox>,
    /// Local folders and files the job names that do not exist now, each
    /// with its key: not a fault of the job file (a share not mounted, a
    /// roster not yet exported), so the job loads, `ferry check` reports
    /// them, and a run fails (exit 1, recorded, its notice sent).
    pub missing: Vec<String>,
}

/// How long runs are kept and what goes with them.
#[derive(Debug, Clone)]
pub struct History {
    pub keep: Option<Duration>,
    pub delete: Vec<PruneWhat>,
}

/// A secret named by the environment variable that holds it. Only the
/// name is kept; the value is read when it is used and never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    /// For messages: "email.password_env".
    pub key: &'static str,
    pub var: String,
}

impl SecretEnv {
    pub fn get(&self) -> Result<String, String> {
        match std::env::var(&self.var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{} names the environment variable {}, which is not set", self.key, self.var)),
        }
    }
}

/// Validated `[email]` settings.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<String>,
    pub from: String,
    pub server: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub user: Option<String>,
    pub password: Option<SecretEnv>,
    pub ca_file: Option<PathBuf>,
    pub subject: String,
    pub attach: bool,
    pub zip_password: Option<SecretEnv>,
    pub report_url: Option<String>,
    pub timeout: Duration,
}

/// Validated `[[push]]` entry.
#[derive(Debug, Clone)]
pub struct Push {
    pub files: Vec<String>,
    pub name: String,
    pub skip_empty: bool,
    pub to: Endpoint,
}

/// Where the job takes files from, and what it does with them there.
#[derive(Debug, Clone)]
pub struct Source {
    pub endpoint: Endpoint,
    pub filter: NameFilter,
    pub settle: Settle,
    pub after: AfterAction,
    /// For `after = "archive"`: a local path, or a remote folder (relative
    /// to the source folder unless absolute).
    pub archive_dir: String,
}

/// How ferry tells a file is complete before it takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Local: the mtime is at least this old.
    MinAge(Duration),
    /// Remote: size and mtime the same in two listings this far apart
    /// (remote clocks cannot be trusted for an age).
    StableFor(Duration),
}

/// Include/exclude globs over file names.
#[derive(Debug, Clone)]
pub struct NameFilter {
    include: GlobSet,
    exclude: GlobSet,
}

impl NameFilter {
    pub fn new(include: &[String], exclude: &[String]) -> Result<NameFilter, String> {
        if include.is_empty() {
            return Err("include: an empty list takes no file; leave include out to take every file".into());
        }
        Ok(NameFilter { include: globs(include, "include")?, exclude: globs(exclude, "exclude")? })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.include.is_match(name) && !self.exclude.is_match(name)
    }
}

fn globs(patterns: &[String], key: &str) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        if p.contains('/') {
            return Err(format!(
                "{key}[{i}]: {p:?} holds a '/': patterns are matched to file names, not paths"
            ));
        }
        let g = Glob::new(p).map_err(|e| format!("{key}[{i}]: bad pattern {p:?}: {}", e.kind()))?;
        b.add(g);
    }
    b.build().map_err(|e| format!("{key}: {e}"))
}

/// How an input file is read: a flat-file layout or an HL7 mapping.
#[derive(Debug, Clone)]
pub enum InputSchema {
    Flat(Schema),
    Hl7(Hl7Schema),
}

impl InputSchema {
    pub fn name(&self) -> &str {
        match self {
            InputSchema::Flat(s) => &s.name,
            InputSchema::Hl7(s) => &s.name,
        }
    }

    fn check_side(&self, side: Side) -> Result<(), String> {
        match (self, side) {
            (InputSchema::Flat(s), _) => s.check_side(side),
            (InputSchema::Hl7(_), Side::Ehr) => Ok(()),
            (InputSchema::Hl7(s), Side::Practice) => {
                Err(format!("schema {:?} is an HL7 interface, which is the EHR side", s.name))
            }
        }
    }
}

#[derive(Debug)]
pub struct Input {
    pub files: NameFilter,
    pub pattern: String,
    pub schema: InputSchema,
    pub side: Side,
    pub load: LoadMode,
    /// The share of its side's stored records a snapshot may drop (see
    /// [`DEFAULT_MAX_SHRINK`]).
    pub max_shrink: f64,
}

#[derive(Debug)]
pub struct Practice {
    pub file: PathBuf,
    /// Always a flat-file schema.
    pub schema: InputSchema,
    /// The share of the stored roster a new export may drop.
    pub max_shrink: f64,
}

/// A snapshot (`load = "replace"`, the practice roster) holding fewer than
/// half the records stored from the last one is taken for a partial export
/// (a report cut short, a filter left on), not loaded: it would drop the
/// rest from its side, and their patients would turn up in the reports as
/// missing or unmatched. `max_shrink` sets the share per input.
pub const DEFAULT_MAX_SHRINK: f64 = 0.5;

/// `max_shrink`: "N%" with N from 0 to 100.
fn parse_share(s: &str) -> Result<f64, String> {
    let share = s
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| (0.0..=100.0).contains(n))
        .ok_or_else(|| format!("{s:?} is not a share like \"50%\" (from \"0%\" to \"100%\")"))?;
    Ok(share / 100.0)
}

#[derive(Debug, Clone)]
pub struct Reconcile {
    pub keys: Vec<LinkKey>,
    pub leading_zeros: LeadingZeros,
    pub compare: Vec<Field>,
    /// Demographic matching; `None` when the job turns it off.
    pub matching: Option<MatchSettings>,
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            keys: vec![LinkKey::PracticeMrn, LinkKey::EhrId],
            leading_zeros: LeadingZeros::Exact,
            compare: DEFAULT_COMPARE.to_vec(),
            matching: Some(MatchSettings::default()),
        }
    }
}

/// Fields compared on linked pairs unless the job lists its own.
pub const DEFAULT_COMPARE: [Field; 11] = [
    Field::FirstName,
    Field::LastName,
    Field::BirthDate,
    Field::Sex,
    Field::Address1,
    Field::Address2,
    Field::City,
    Field::State,
    Field::Zip,
    Field::PhoneHome,
    Field::Email,
];

/// Keys that look like a secret written into the file.
const SECRET_KEYS: [&str; 6] = ["password", "passphrase", "secret", "token", "api_key", "private_key"];

impl Job {
    /// Read and validate a job file. `name_or_path` is a path, or a name
    /// looked up as `jobs/NAME.toml` in the current folder.
    pub fn load(name_or_path: &str) -> Result<Job, ConfigError> {
        let path = resolve_job_path(name_or_path);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let tried = match path.components().count() == 1 && path.extension().is_none() {
                // A bare name: say where it was looked for.
                true => format!(" (no {} either)", jobs_dir().join(format!("{name_or_path}.toml")).display()),
                false => String::new(),
            };
            ConfigError::new(&path, format!("cannot read job file: {e}{tried}"))
        })?;
        JobFile::parse(&path, &text)?.build(&path)
    }

    /// The SQLite store of this job.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("ferry.db")
    }

    /// The input that reads a taken file, by its name.
    pub fn input_for(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.files.matches(name))
    }
}

static JOBS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Set once at start-up from `--jobs-dir` / `$FERRY_JOBS_DIR`.
pub fn set_jobs_dir(dir: PathBuf) {
    let _ = JOBS_DIR.set(dir);
}

/// The folder job names are looked up in and `run-due` runs: `jobs/` in
/// the current folder unless set.
pub fn jobs_dir() -> PathBuf {
    JOBS_DIR.get().cloned().unwrap_or_else(|| PathBuf::from("jobs"))
}

/// `JOBS_DIR/NAME.toml` for a bare name, else the path as given.
pub fn resolve_job_path(name_or_path: &str) -> PathBuf {
    let p = Path::new(name_or_path);
    if p.components().count() == 1 && p.extension().is_none() {
        let candidate = jobs_dir().join(format!("{name_or_path}.toml"));
        if candidate.exists() {
            return candidate;
        }
    }
    p.to_path_buf()
}

impl JobFile {
    pub fn parse(path: &Path, text: &str) -> Result<JobFile, ConfigError> {
        let value: toml::Table = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let mut problems = Vec::new();
        find_inline_secrets(&value, "", &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { file: path.to_path_buf(), problems });
        }
        if !value.contains_key("source") {
            let why = "[source]: missing: the table that says where the files come from (type = \"local\", \
                       \"sftp\" or \"ftp\")";
            return Err(ConfigError::new(path, why));
        }
        toml::from_str(text)
            .map_err(|e| source_error(path, text, &value).unwrap_or_else(|| toml_error(path, text, &e)))
    }

    pub fn build(self, path: &Path) -> Result<Job, ConfigError> {
        // Absolute, so that paths mean the same from any working folder and
        // a transport can join them onto its own root safely.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let (mut problems, mut missing) = (Vec::new(), Vec::new());

        let name = match self.name {
            Some(n) => n,
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            problems.push(format!(
                "name: {name:?} must be letters, digits, '-' or '_' (it names folders and locks)"
            ));
        }

        let state_dir = match self.state_dir {
            Some(d) => base.join(d),
            None => default_state_dir(),
        };
        let reports_dir = self.reports_dir.map(|d| base.join(d)).unwrap_or_else(|| state_dir.join("reports"));
        let schemas_dir = self.schemas_dir.map(|d| base.join(d)).unwrap_or_else(|| base.join("../schemas"));

        let source = self.source.build(&base, &mut problems, &mut missing);

        let mut outbox = Vec::new();
        for (i, o) in self.outbox.into_iter().enumerate() {
            let key = format!("outbox[{i}]");
            let folder = base.join(&o.folder);
            if !folder.is_dir() {
                missing.push(format!("{key}.folder: folder {} does not exist", folder.display()));
            }
            if o.after == AfterAction::Keep {
                problems.push(format!(
                    "{key}.after: \"keep\" would send every file again each run; use \"archive\" or \"delete\""
                ));
            }
            let filter =
                NameFilter::new(&o.include, &o.exclude).map_err(|e| problems.push(format!("{key}.{e}"))).ok();
            let to = o.to.build(&base, &format!("{key}.to"), &mut problems, &mut missing);
            let archive_dir = o.archive_dir.map(|d| base.join(d)).unwrap_or_else(|| folder.join("sent"));
            if let (Some(filter), Some(to)) = (filter, to) {
                outbox.push(Outbox { folder, filter, after: o.after, archive_dir, to });
            }
        }

        let mut inputs = Vec::new();
        if self.inputs.is_empty() {
            problems.push("inputs: the job reads no files; add an [[inputs]] table".to_string());
        }
        for (i, input) in self.inputs.into_iter().enumerate() {
            let files = NameFilter::new(std::slice::from_ref(&input.files), &[])
                .map_err(|e| problems.push(format!("inputs[{i}].files: {e}")))
                .ok();
            let schema = load_schema(&base, &schemas_dir, &input.schema)
                .and_then(|s| s.check_side(input.side).map(|()| s))
                .map_err(|e| problems.push(format!("inputs[{i}].schema: {e}")))
                .ok();
            let load = input.load.unwrap_or(LoadMode::Upsert);
            let max_shrink = match (&input.max_shrink, load) {
                (None, _) => DEFAULT_MAX_SHRINK,
                (Some(_), LoadMode::Upsert) => {
                    problems.push(format!(
                        "inputs[{i}].max_shrink: only a snapshot (load = \"replace\") can drop records"
                    ));
                    DEFAULT_MAX_SHRINK
                }
                (Some(share), LoadMode::Replace) => parse_share(share)
                    .map_err(|e| problems.push(format!("inputs[{i}].max_shrink: {e}")))
                    .unwrap_or(DEFAULT_MAX_SHRINK),
            };
            if let (Some(files), Some(schema)) = (files, schema) {
                inputs.push(Input {
                    files,
                    pattern: input.files,
                    schema,
                    side: input.side,
                    load,
                    max_shrink,
                });
            }
        }

        // The EHR's provider IDs are told apart by the EHR's assigning
        // authority (XCN.9), as its patient IDs are in PID-3.
        if self.hl7.provider_id == ProviderKind::Ehr {
            for input in &inputs {
                if let InputSchema::Hl7(h) = &input.schema
                    && h.ehr_id.authority.is_none()
                {
                    problems.push(format!(
                        "hl7.provider_id: \"ehr\" keeps the provider ID under the EHR's assigning authority \
                         (XCN.9), and schema {:?} names none in ids.ehr_id: give it the authority, or keep \
                         the NPI (\"npi\")",
                        h.name
                    ));
                }
            }
        }

        let practice = self.practice.and_then(|p| {
            let file = base.join(&p.file);
            if !file.is_file() {
                missing.push(format!("practice.file: {} does not exist", file.display()));
            }
            let schema = load_schema(&base, &schemas_dir, &p.schema)
                .and_then(|s| match s {
                    InputSchema::Flat(f) => f.check_side(Side::Practice).map(|()| InputSchema::Flat(f)),
                    InputSchema::Hl7(h) => {
                        Err(format!("schema {:?} is HL7; the roster is a flat file", h.name))
                    }
                })
                .map_err(|e| problems.push(format!("practice.schema: {e}")))
                .ok();
            let max_shrink = match &p.max_shrink {
                None => DEFAULT_MAX_SHRINK,
                Some(share) => parse_share(share)
                    .map_err(|e| problems.push(format!("practice.max_shrink: {e}")))
                    .unwrap_or(DEFAULT_MAX_SHRINK),
            };
            Some(Practice { file, schema: schema?, max_shrink })
        });

        let time_zone = match self.time_zone.as_deref() {
            None => Tz::UTC,
            Some(z) => z.parse::<Tz>().unwrap_or_else(|_| {
                problems
                    .push(format!("time_zone: {z:?} is not an IANA time zone such as \"America/New_York\""));
                Tz::UTC
            }),
        };

        let mut reconcile = Reconcile { leading_zeros: self.reconcile.leading_zeros, ..Reconcile::default() };
        if let Some(keys) = self.reconcile.keys {
            if keys.is_empty() {
                problems.push("reconcile.keys: list at least one key (practice_mrn, ehr_id)".to_string());
            }
            reconcile.keys = keys;
        }
        if let Some(compare) = self.reconcile.compare {
            reconcile.compare = compare;
        }
        reconcile.matching = self.reconcile.matching.settings(&mut problems);

        let schedule = self
            .schedule
            .as_deref()
            .and_then(|text| Schedule::parse(text).map_err(|e| problems.push(format!("schedule: {e}"))).ok())
            .filter(|s| {
                // "0 3 30 2 *" (30 February) parses, and the job would never run.
                let fires = s.next_after(crate::clock::now(), time_zone).is_some();
                if !fires {
                    problems.push(format!("schedule: {:?} never fires (a day no month has?)", s.as_str()));
                }
                fires
            });
        let history = History {
            keep: self.history.keep.as_deref().and_then(|k| {
                parse_duration(k).map_err(|e| problems.push(format!("history.keep: {e}"))).ok().filter(|d| {
                    let ok = !d.is_zero();
                    if !ok {
                        problems.push("history.keep: 0 would prune every run as it ends".into());
                    }
                    ok
                })
            }),
            delete: self.history.delete,
        };
        let email = self.email.and_then(|e| e.build(&base, &name, &mut problems));
        let push = self
            .push
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.build(i, &base, &mut problems, &mut missing))
            .collect();

        match source {
            Some(source) if problems.is_empty() => Ok(Job {
                name,
                description: self.description,
                file: path.to_path_buf(),
                state_dir,
                reports_dir,
                source,
                inputs,
                practice,
                reconcile,
                time_zone,
                provider: self.hl7.provider_id,
                schedule,
                history,
                email,
                push,
                outbox,
                missing,
            }),
            _ => Err(ConfigError { file: path.to_path_buf(), problems }),
        }
    }
}

impl EmailConfig {
    fn build(self, base: &Path, job: &str, problems: &mut Vec<String>) -> Option<Email> {
        let before = problems.len();
        if self.to.is_empty() {
            problems.push("email.to: list at least one address".into());
        }
        for (i, a) in self.to.iter().enumerate() {
            if let Err(e) = a.parse::<lettre::message::Mailbox>() {
                problems.push(format!("email.to[{i}]: {a:?} is not an email address ({e})"));
            }
        }
        if let Err(e) = self.from.parse::<lettre::message::Mailbox>() {
            problems.push(format!("email.from: {:?} is not an email address ({e})", self.from));
        }
        if self.server.trim().is_empty() {
            problems.push("email.server: name the SMTP relay".into());
        }
        let secret = |key: &'static str, var: Option<String>, problems: &mut Vec<String>| {
            var.and_then(|var| {
                if !crate::transport::is_env_name(&var) {
                    problems.push(format!("{key} {}", crate::transport::NOT_AN_ENV_NAME));
                    None
                } else {
                    Some(SecretEnv { key, var })
                }
            })
        };
        let password = secret("email.password_env", self.password_env, problems);
        let zip_password = secret("email.zip_password_env", self.zip_password_env, problems);
        if self.user.is_some() != password.is_some() {
            problems.push("email: user and password_env go together (AUTH needs both)".into());
        }
        let ca_file = self.ca_file.map(|f| base.join(f));
        if let Some(f) = &ca_file
            && !f.is_file()
        {
            problems.push(format!("email.ca_file: {} does not exist", f.display()));
        }
        let timeout = match self.timeout.as_deref().map(parse_duration) {
            None => Duration::from_secs(60),
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                problems.push("email.timeout: must be more than 0".into());
                Duration::from_secs(60)
            }
            Some(Err(e)) => {
                problems.push(format!("email.timeout: {e}"));
                Duration::from_secs(60)
            }
        };
        if problems.len() > before {
            return None;
        }
        let port = self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
        });
        Some(Email {
            to: self.to,
            from: self.from,
            server: self.server,
            port,
            security: self.security,
            user: self.user,
            password,
            ca_file,
            subject: self.subject.unwrap_or_else(|| format!("ferry {job}")),
            attach: self.attach,
            zip_password,
            report_url: self.report_url.map(|u| u.trim_end_matches('/').to_string()),
            timeout,
        })
    }
}

/// Placeholders a push name may use.
const PUSH_NAME_KEYS: [&str; 5] = ["stem", "ext", "stamp", "job", "run"];

impl PushConfig {
    fn build(
        self,
        i: usize,
        base: &Path,
        problems: &mut Vec<String>,
        missing: &mut Vec<String>,
    ) -> Option<Push> {
        let before = problems.len();
        if self.files.is_empty() {
            problems.push(format!("push[{i}].files: list at least one report file, e.g. \"id_updates.csv\""));
        }
        for (j, f) in self.files.iter().enumerate() {
            if !crate::report::OUTPUTS.iter().any(|(name, _)| name == f) {
                let names: Vec<&str> = crate::report::OUTPUTS.iter().map(|(n, _)| *n).collect();
                problems.push(format!(
                    "push[{i}].files[{j}]: {f:?} is not a report file; one of {}",
                    names.join(", ")
                ));
            }
        }
        let name = self.name.unwrap_or_else(|| "{stem}_{stamp}{ext}".to_string());
        let mut rest = name.as_str();
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else {
                problems.push(format!("push[{i}].name: {name:?} has an unclosed '{{'"));
                break;
            };
            let key = &rest[open + 1..open + close];
            if !PUSH_NAME_KEYS.contains(&key) {
                problems.push(format!(
                    "push[{i}].name: {{{key}}} is not one of {{stem}}, {{ext}}, {{stamp}}, {{job}}, {{run}}"
                ));
            }
            rest = &rest[open + close + 1..];
        }
        // What the name says itself (the filled-in parts are plain names):
        // every push would be refused at the destination.
        if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
            problems.push(format!(
                "push[{i}].name: {name:?} holds a path separator or a control character: a name at the \
                 destination is a plain file name; the folder is the destination's to set"
            ));
        }
        let to = self.to.build(base, &format!("push[{i}].to"), problems, missing);
        let to = to?;
        (problems.len() == before).then_some(Push {
            files: self.files,
            name,
            skip_empty: self.skip_empty,
            to,
        })
    }
}

/// A schema by name (`schemas_dir/NAME.toml`) or by a path relative to the job file.
fn load_schema(base: &Path, dir: &Path, name: &str) -> Result<InputSchema, String> {
    let path = schema_path(base, dir, name);
    if !path.is_file() {
        return Err(format!("schema {name:?}: file {} does not exist", path.display()));
    }
    load_schema_file(&path).map_err(|e| format!("schema {name:?}: {e}"))
}

/// Where a schema reference points: a path (it ends in `.toml` or has a
/// slash) relative to `base`, else `dir/NAME.toml`.
pub fn schema_path(base: &Path, dir: &Path, name: &str) -> PathBuf {
    if name.ends_with(".toml") || name.contains('/') {
        base.join(name)
    } else {
        dir.join(format!("{name}.toml"))
    }
}

/// A schema file of either kind, told apart by its `format`.
pub fn load_schema_file(path: &Path) -> Result<InputSchema, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let is_hl7 = toml::from_str::<toml::Table>(&text)
        .ok()
        .is_some_and(|t| t.get("format").and_then(|f| f.as_str()) == Some("hl7"));
    if is_hl7 {
        Hl7Schema::parse(path, &text).map(InputSchema::Hl7)
    } else {
        Schema::parse(path, &text).map(InputSchema::Flat)
    }
}

/// `$FERRY_HOME`, else `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`.
pub fn default_state_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("FERRY_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("ferry");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/ferry")
}

/// "90s", "5m", "2h", "1d", "500ms" or "0".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like \"30s\", \"5m\", \"2h\""))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

/// The job file's error inside `[source]`, by key and line: read as the
/// tagged enum it is, serde buffers the table and tells only the table
/// (`line 5, in [source]: unknown variant`), so it is read again as the
/// variant its `type` names. None when that finds nothing wrong (the
/// error is elsewhere).
fn source_error(path: &Path, text: &str, value: &toml::Table) -> Option<ConfigError> {
    #[derive(Deserialize)]
    struct Probe<T> {
        // Read for its errors only.
        #[allow(dead_code)]
        source: T,
    }
    let kind = value.get("source")?.get("type")?.as_str()?;
    let err = match kind {
        "local" => toml::from_str::<Probe<LocalConfig>>(text).err()?,
        "sftp" | "ftp" => toml::from_str::<Probe<RemoteConfig>>(text).err()?,
        _ => return None,
    };
    Some(toml_error(path, text, &err))
}

fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    ConfigError::new(path, format!("{}{}", toml_location(text, refine_span(text, e)), e.message()))
}

/// serde reports an unknown key inside a tagged table (the source) at the
/// table's header; point at the key's own line instead.
fn refine_span(text: &str, e: &toml::de::Error) -> Option<std::ops::Range<usize>> {
    let span = e.span()?;
    let unknown = e.message().strip_prefix("unknown field `").and_then(|m| m.split('`').next());
    if let Some(key) = unknown {
        let mut offset = span.start;
        for (i, line) in text[span.start.min(text.len())..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') {
                break;
            }
            if t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
                return Some(offset + line.len() - t.len()..offset + line.len());
            }
            offset += line.len();
        }
    }
    Some(span)
}

/// "line 7, key source.inbox: " for the span of a TOML error. toml's own
/// message names an unknown key but not the key of a value of the wrong
/// type, so the key is read back from the line the span points into.
pub(crate) fn toml_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let header = line.trim();
    if header.starts_with('[') {
        // serde buffers a tagged table (the source), which loses the span
        // of the key inside it: name the table at least.
        return format!("line {line_no}, in {header}: ");
    }
    let Some((key, _)) = line.split_once('=') else { return format!("line {line_no}: ") };
    let key = key.trim().trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(t) => format!("line {line_no}, key {t}.{key}: "),
        None => format!("line {line_no}, key {key}: "),
    }
}

fn find_inline_secrets(table: &toml::Table, prefix: &str, problems: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if SECRET_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "{path}: secrets do not belong in job files; put it in an environment variable \
                 and name that variable with `{key}_env`"
            ));
        }
        match value {
            toml::Value::Table(t) => find_inline_secrets(t, &path, problems),
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        find_inline_secrets(t, &format!("{path}[{i}]"), problems);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobFile, ConfigError> {
        JobFile::parse(Path::new("jobs/t.toml"), text)
    }

    #[test]
    fn misspelt_key_names_the_key() {
        let err = parse("[source]\ntype = \"local\"\ninbx = \"in\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3, key source.inbx: unknown field `inbx`"), "{msg}");
        assert!(msg.contains("jobs/t.toml"), "{msg}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = parse("[source]\ntype = \"local\"\ninbox = 3\n").unwrap_err();
        assert!(err.to_string().contains("line 3, key source.inbox: invalid type"), "{err}");
        let err = parse("[source]\ntype = \"local\"\ninbox = \"x\"\n[[inputs]]\nfiles = 7\n").unwrap_err();
        assert!(err.to_string().contains("line 5, key inputs.files: invalid type"), "{err}");
    }

    #[test]
    fn inline_password_is_refused() {
        let err = parse("[source]\ntype = \"local\"\ninbox = \"x\"\npassword = \"hunter2\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("source.password"), "{msg}");
        assert!(msg.contains("password_env"), "{msg}");
        assert!(!msg.contains("hunter2"), "the secret must not be echoed: {msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    fn build_source(text: &str) -> Result<Job, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let job = format!("{text}\n[[inputs]]\nfiles = \"*.csv\"\nschema = \"x.toml\"\n");
        parse(&job)?.build(&path)
    }

    #[test]
    fn remote_source_keys_are_checked_per_protocol() {
        let err = build_source(
            "[source]\ntype = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"FERRY_TEST_UNSET_VAR\"\n\
             key_file = \"id\"\nknown_hosts = \"kh\"\ntls_pin_sha256 = \"xyz\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("source.key_file: only for type = \"sftp\""), "{err}");
        assert!(err.contains("source.known_hosts: only for type = \"sftp\""), "{err}");
        // Not a fault of the file: a variable unset here is noted missing.
        assert!(!err.contains("FERRY_TEST_UNSET_VAR"), "{err}");
        assert!(err.contains("source.tls_pin_sha256"), "{err}");
        // A password pasted where its variable's name belongs is refused
        // without being repeated.
        let err = build_source(
            "[source]\ntype = \"ftp\"\nhost = \"h\"\nuser = \"u\"\npassword_env = \"hunter2!\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must name the environment variable"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = build_source("[source]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\ntls = \"none\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.tls: only for type = \"ftp\""), "{err}");
        assert!(err.contains("give password_env or key_file"), "{err}");
        let err =
            build_source("[source]\ntype = \"sftp\"\nhost = \"h\"\nuser = \"u\"\npasword_env = \"X\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `pasword_env`"), "{err}");
    }

    #[test]
    fn ehr_provider_ids_need_the_ehrs_authority() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("in")).unwrap();
        let schema = |ids: &str| format!("format = \"hl7\"\n[ids.ehr_id]\n{ids}\n");
        std::fs::write(dir.path().join("by_type.toml"), schema("type = \"PI\"")).unwrap();
        std::fs::write(dir.path().join("by_authority.toml"), schema("authority = \"ATHENA\"")).unwrap();
        let build = |schema: &str, provider: &str| {
            let text = format!(
                "[source]\ntype = \"local\"\ninbox = \"in\"\n[hl7]\nprovider_id = \"{provider}\"\n\
                 [[inputs]]\nfiles = \"*.hl7\"\nschema = \"{schema}\"\n"
            );
            parse(&text).unwrap().build(&dir.path().join("t.toml"))
        };
        let err = build("by_type.toml", "ehr").unwrap_err().to_string();
        assert!(
            err.contains("hl7.provider_id: \"ehr\" keeps the provider ID under the EHR's assigning"),
            "{err}"
        );
        assert!(build("by_type.toml", "npi").is_ok());
        assert!(build("by_authority.toml", "ehr").is_ok());
    }

    #[test]
    fn sha256_pins() {
        let hex = "3F:A2".to_string() + &":00".repeat(30);
        assert_eq!(parse_sha256(&hex).unwrap()[..2], [0x3f, 0xa2]);
        assert!(parse_sha256("abc").is_err());
        // The whole line openssl prints.
        let line = format!("sha256 Fingerprint={}", hex.to_uppercase());
        assert_eq!(parse_sha256(&line).unwrap(), parse_sha256(&hex).unwrap());
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn filter_include_exclude() {
        let f = NameFilter::new(&["*.csv".into()], &["*_test.csv".into()]).unwrap();
        assert!(f.matches("a.csv"));
        assert!(!f.matches("a_test.csv"));
        assert!(!f.matches("a.hl7"));
        assert!(NameFilter::new(&["[abc".into()], &[]).is_err());
    }
}
