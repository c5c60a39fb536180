//! Where a transport connects to, validated: what `job.rs` builds from a
//! job file's `[source]` (or a push destination) and [`open`] turns into a
//! running [`Transport`]. Secrets are looked up when the job is built and
//! held in [`Secret`], whose `Debug` never shows them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{FtpTransport, LocalTransport, SftpTransport, Transport, TransportError};

/// A password or passphrase from an environment variable. `Debug` and
/// `Display` name the variable, never the value.
#[derive(Clone)]
pub struct Secret {
    /// The environment variable it came from, for messages.
    pub env: String,
    value: String,
}

/// Whether `name` can be an environment variable's name as a shell writes
/// it: letters, digits and `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Why a `*_env` setting that is not a variable name is refused. The value
/// is not repeated: it may be the secret itself, put there by mistake.
pub const NOT_AN_ENV_NAME: &str = "must name the environment variable that holds the secret (letters, \
                                   digits and _), not hold the secret; its value is not repeated here";

impl Secret {
    /// Read `env`; an unset or empty variable is an error naming it.
    pub fn from_env(env: &str) -> Result<Secret, String> {
        if !is_env_name(env) {
            return Err(NOT_AN_ENV_NAME.into());
        }
        match std::env::var(env) {
            Ok(v) if !v.is_empty() => Ok(Secret { env: env.to_string(), value: v }),
            Ok(_) => Err(format!("environment variable {env} is empty")),
            Err(_) => Err(format!("environment variable {env} is not set")),
        }
    }

    /// The secret of a variable not set where the job was loaded: the job
    /// notes it missing ([`crate::job::Job::missing`]), so no run uses it.
    pub(crate) fn unset(env: &str) -> Secret {
        Secret { env: env.to_string(), value: String::new() }
    }

    pub(crate) fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(${})", self.env)
    }
}

/// Timeouts and the retry policy of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// DNS, TCP, handshake and login together.
    pub connect_timeout: Duration,
    /// One request on an open connection (a read of one chunk, a rename).
    pub timeout: Duration,
    /// Attempts after the first, for temporary errors only.
    pub retries: u32,
    /// The wait before the first retry; doubled each time (with jitter), at
    /// most [`Limits::MAX_WAIT`].
    pub retry_wait: Duration,
}

impl Limits {
    pub const MAX_WAIT: Duration = Duration::from_secs(120);

    /// The defaults for a remote server: a run from cron can afford to wait
    /// out a short outage (2 + 4 + 8 + 16 + 32 s ~ one minute) before it fails.
    pub fn remote_default() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(60),
            retries: 5,
            retry_wait: Duration::from_secs(2),
        }
    }

    /// A local folder: nothing to wait for.
    pub fn none() -> Limits {
        Limits {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 0,
            retry_wait: Duration::ZERO,
        }
    }
}

/// How to log in over SSH.
#[derive(Debug, Clone)]
pub enum SshAuth {
    Password(Secret),
    /// An OpenSSH (or PKCS#8, PuTTY) private key file, ed25519 or RSA,
    /// with its passphrase when it is encrypted.
    Key {
        file: PathBuf,
        passphrase: Option<Secret>,
    },
}

#[derive(Debug, Clone)]
pub struct SftpEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub auth: SshAuth,
    /// The OpenSSH known_hosts file the server's host key is checked against.
    pub known_hosts: PathBuf,
    /// The remote folder, as the server names it (absolute or relative to
    /// the login folder).
    pub folder: String,
    pub limits: Limits,
    /// Files downloaded at once on the one connection (small files only).
    pub parallel: usize,
}

/// TLS on an FTP control and data connection.
#[derive(Debug, Clone)]
pub enum FtpTls {
    /// Plain FTP: only through a VPN.
    None,
    /// Explicit FTPS (AUTH TLS, then PROT P for data).
    Explicit {
        /// PEM certificates trusted as roots, in addition to the usual
        /// public roots.
        ca_file: Option<PathBuf>,
        /// Accept exactly the server certificate with this SHA-256 (of its
        /// DER bytes) instead of verifying a chain: for partners whose
        /// server has a self-signed certificate.
        pin_sha256: Option<[u8; 32]>,
    },
}

#[derive(Debug, Clone)]
pub struct FtpEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub tls: FtpTls,
    pub folder: String,
    pub limits: Limits,
}

/// A place a job reads files from or writes files to.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Local(PathBuf),
    Sftp(SftpEndpoint),
    Ftp(FtpEndpoint),
}

impl Endpoint {
    pub fn limits(&self) -> Limits {
        match self {
            Endpoint::Local(_) => Limits::none(),
            Endpoint::Sftp(e) => e.limits,
            Endpoint::Ftp(e) => e.limits,
        }
    }

    /// For messages, without connecting.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Local(p) => format!("local folder {}", p.display()),
            Endpoint::Sftp(e) => format!("sftp {}@{}:{} folder {}", e.user, e.host, e.port, e.folder),
            Endpoint::Ftp(e) => {
                let kind = if matches!(e.tls, FtpTls::None) { "ftp" } else { "ftps" };
                format!("{kind} {}@{}:{} folder {}", e.user, e.host, e.port, e.folder)
            }
        }
    }
}

/// A transport for an endpoint. Remote transports connect on first use, so
/// this never fails for a reachable-or-not server: the first operation does.
pub fn open(endpoint: &Endpoint) -> Result<Box<dyn Transport>, TransportError> {
    Ok(match endpoint {
        Endpoint::Local(dir) => Box::new(LocalTransport::new(dir)),
        Endpoint::Sftp(e) => Box::new(SftpTransport::new(e.clone(), false)?),
        Endpoint::Ftp(e) => Box::new(FtpTransport::new(e.clone())),
    })
}

/// One step of `ferry check` against a server: what was tried, and what
/// came of it in plain words.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub result: Result<String, String>,
}

/// Walk a connection step by step (DNS, TCP, host key or TLS, login, list
/// of the folder, and with `write` an upload, rename and removal of a
/// hidden probe file), calling `report` after each. Stops at the first
/// failed step. `accept_new_host_key` records an unknown SSH host key in
/// the known_hosts file (never a changed one). Returns whether all passed.
pub fn check(
    endpoint: &Endpoint,
    write: bool,
    accept_new_host_key: bool,
    report: &mut dyn FnMut(&Step),
) -> bool {
    let mut steps = StepLog { report, ok: true };
    match endpoint {
        Endpoint::Local(dir) => {
            let mut t = LocalTransport::new(dir);
            probe_folder(&mut t, write, &mut steps);
        }
        Endpoint::Sftp(e) => match SftpTransport::new(e.clone(), accept_new_host_key) {
            Ok(mut t) => {
                if t.connect_steps(&mut steps) {
                    probe_folder(&mut t, write, &mut steps);
                }
            }
            Err(err) => steps.fail("setup", err.to_string()),
        },
        Endpoint::Ftp(e) => {
            let mut t = FtpTransport::new(e.clone());
            if t.connect_steps(&mut steps) {
                probe_folder(&mut t, write, &mut steps);
            }
        }
    }
    steps.ok
}

/// Collects step outcomes for [`check`].
pub(crate) struct StepLog<'a> {
    report: &'a mut dyn FnMut(&Step),
    ok: bool,
}

impl StepLog<'_> {
    pub(crate) fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        (self.report)(&Step { name, result: Ok(detail.into()) });
    }

    pub(crate) fn fail(&mut self, name: &'static str, detail: impl Into<String>) {
        self.ok = false;
        (self.report)(&Step { name, result: Err(detail.into()) });
    }
}

fn probe_folder(t: &mut dyn Transport, write: bool, steps: &mut StepLog) {
    match t.list() {
        Ok(entries) => steps.pass("list", format!("{} lists {} file(s)", t.describe(), entries.len())),
        Err(e) => return steps.fail("list", format!("cannot list: {e}")),
    }
    if !write {
        return;
    }
    // A dot-file, so that whoever reads the folder skips it even if we die
    // before removing it.
    let name = format!(".ferry-check-{}", std::process::id());
    let body = b"ferry check: write permission probe\n";
    let written = t.put(&name, &mut &body[..], body.len() as u64).and_then(|_| t.remove(&name));
    match written {
        Ok(()) => steps.pass("write", format!("uploaded, renamed and removed {name}")),
        Err(e) => steps.fail("write", format!("cannot write: {e}")),
    }
}
