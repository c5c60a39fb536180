//! Transports: where files come from and go to. One trait, [`Transport`],
//! with one implementation per connectivity method: a local folder (how a
//! practice-hosted SFTP drop folder looks to us), SFTP, and FTP/FTPS.
//! [`open`] turns an [`Endpoint`] (a validated connection setting from a job
//! file) into a transport; [`retry()`] runs one operation under the endpoint's
//! retry policy; [`check`] walks a connection step by step for `ferry check`.
//!
//! A transport moves bytes and names; it never parses a file and never
//! touches the store. The job runner decides what to take and when to remove.

mod endpoint;
mod ftp;
mod known_hosts;
mod local;
mod retry;
mod sftp;

use std::io::{Read, Write};
use std::time::SystemTime;

pub use endpoint::{
    Endpoint, FtpEndpoint, FtpTls, Limits, NOT_AN_ENV_NAME, Secret, SftpEndpoint, SshAuth, Step, check,
    is_env_name, open,
};
pub use ftp::FtpTransport;
pub use local::LocalTransport;
pub use retry::retry;
pub use sftp::SftpTransport;

/// One plain file in a source folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub mtime: SystemTime,
}

impl Entry {
    /// The mtime as the ledger stores it: nanoseconds since the epoch.
    pub fn mtime_key(&self) -> String {
        let d = self.mtime.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        d.as_nanos().to_string()
    }
}

/// What went wrong, in the terms a caller branches on.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The file or folder is not there (someone else took it, or a typo).
    #[error("{what}: not found")]
    NotFound { what: String },
    /// A name that could escape the folder it is written to.
    #[error("refused file name {name:?}: {why}")]
    HostileName { name: String, why: &'static str },
    /// Worth retrying: a dropped connection, a busy server, a timeout.
    ///
    /// The cause is told in the message and is not the error's `source()`:
    /// a chain printed whole (`{:#}`) would say it twice.
    #[error("{what}: {cause}")]
    Temporary { what: String, cause: std::io::Error },
    /// Not worth retrying: permissions, a full disk, bad configuration.
    #[error("{what}: {cause}")]
    Permanent { what: String, cause: std::io::Error },
    /// The server refused the login. Never retried: a locked account must
    /// not be hammered.
    #[error("{what}: login refused: {why}")]
    Auth { what: String, why: String },
    /// The server's identity could not be trusted (unknown or changed SSH
    /// host key, a TLS certificate that does not verify). Never retried.
    #[error("{what}: {why}")]
    Untrusted { what: String, why: String },
    /// The destination of a move already holds a file of that name.
    #[error("{what}: the archive already holds a file of that name")]
    Exists { what: String },
    /// The file changed while it was read (it is still being written):
    /// take it on a later run.
    #[error("{what}: changed while it was read ({why})")]
    Changed { what: String, why: String },
}

impl TransportError {
    pub fn is_temporary(&self) -> bool {
        matches!(self, TransportError::Temporary { .. })
    }

    pub(crate) fn temporary(what: impl Into<String>, why: impl std::fmt::Display) -> TransportError {
        TransportError::Temporary { what: what.into(), cause: std::io::Error::other(why.to_string()) }
    }

    pub(crate) fn permanent(what: impl Into<String>, why: impl std::fmt::Display) -> TransportError {
        TransportError::Permanent { what: what.into(), cause: std::io::Error::other(why.to_string()) }
    }
}

/// A place files are listed, read, renamed and removed.
///
/// The contract every implementation keeps:
/// - `list` returns plain files only (no folders, links or specials) directly
///   in the transport's folder, with names as the server gave them; the
///   caller checks names with [`check_name`] before using them in a path.
/// - `fetch` writes the whole file to `out` and returns the byte count; it
///   never deletes or changes the source. A file that vanished is
///   `NotFound`; a dropped connection is `Temporary` and the caller may retry
///   from scratch (partial output is the caller's to discard).
/// - `rename` moves a file within the transport (for archiving); it fails
///   rather than overwrite an existing target.
/// - `remove` deletes one file; removing a file that is already gone is
///   `NotFound`, which callers treat as done.
/// - `put` uploads `size` bytes from `data` as `name`: first to the
///   temporary name `.NAME.part`, then, once complete and the size checked,
///   renamed to `name`. A reader of the folder never sees a half-written
///   file under its real name. An existing `name` is replaced.
/// - A remote transport connects on first use and again after a dropped
///   connection; a dropped connection, a refused TCP connection or a timeout
///   is `Temporary`, and the caller retries the whole operation with
///   [`retry()`] (a `fetch` or `put` from the start: they never resume half-way).
///   A refused login is `Auth` and an untrusted server `Untrusted`: neither
///   is ever retried.
/// - `fetch` of a file that grows or shrinks while it is read is `Changed`
///   (remote transports read exactly the listed size and check it again).
pub trait Transport {
    /// For messages: "local folder /srv/inbox", "sftp ehr@host:22/outbound".
    fn describe(&self) -> String;
    fn list(&mut self) -> Result<Vec<Entry>, TransportError>;
    fn fetch(&mut self, name: &str, out: &mut dyn Write) -> Result<u64, TransportError>;
    /// Move `from` into folder `to_dir` (made when missing) as `as_name`;
    /// [`TransportError::Exists`] when the folder holds that name already.
    fn rename(&mut self, from: &str, to_dir: &str, as_name: &str) -> Result<(), TransportError>;
    fn remove(&mut self, name: &str) -> Result<(), TransportError>;
    fn put(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<u64, TransportError>;
    /// A hint: these files (from the last `list`) will be fetched next, in
    /// this order. A transport may start downloading the small ones ahead,
    /// several at once on one connection; `fetch` then hands them over.
    fn prefetch(&mut self, _entries: &[Entry]) {}
    /// How operations on this transport are retried.
    fn limits(&self) -> Limits {
        Limits::none()
    }
}

/// `name` with `tag` before its extension ("adt.hl7", "ledger-42" ->
/// "adt.ledger-42.hl7"): the name a file is archived under beside an
/// earlier one of the same name.
pub fn tagged_name(name: &str, tag: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{tag}.{ext}"),
        _ => format!("{name}.{tag}"),
    }
}

/// The temporary name an upload is written under until it is complete.
pub fn part_name(name: &str) -> String {
    format!(".{name}.part")
}

/// The longest file name taken: ferry's temporary `.NAME.part` and its
/// archive names (`NAME.ledger-ID-N.EXT`) add up to about 30 bytes, and a
/// file system allows 255.
pub const MAX_NAME_BYTES: usize = 200;

/// Refuse a name that could land anywhere but inside the folder it is
/// written to: empty, `.`/`..`, any slash or backslash (so no absolute or
/// nested path), NUL or other control characters; and a name that is not
/// UTF-8, which a listing shows with U+FFFD in place of its bytes: no file
/// has that name, so it could never be read.
pub fn check_name(name: &str) -> Result<&str, TransportError> {
    let why = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("a path component, not a file")
    } else if name.contains('/') || name.contains('\\') {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.contains(char::REPLACEMENT_CHARACTER) {
        Some("is not UTF-8 (written in another character set, such as Latin-1?); rename it at the source")
    } else if name.len() > MAX_NAME_BYTES {
        Some(
            "longer than 200 bytes: ferry's own names for it (.NAME.part, NAME.ledger-ID.EXT) would pass a file system's 255",
        )
    } else {
        None
    };
    match why {
        Some(why) => Err(TransportError::HostileName { name: name.to_string(), why }),
        None => Ok(name),
    }
}

/// Files that are never taken: dot-files (editors, uploads in progress,
/// our own temporaries) and `*.part` / `*.tmp` (uploads in progress).
pub fn is_in_progress_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.')
        || lower.ends_with(".part")
        || lower.ends_with(".tmp")
        || lower.ends_with(".filepart")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\0b", "a\nb", "a\x1bb"] {
            assert!(check_name(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["patients.csv", "ADT 2026-11-20.hl7", "ñame.csv", "..hidden"] {
            assert!(check_name(good).is_ok(), "{good:?} should pass");
        }
    }

    #[test]
    fn local_put_lands_whole_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = LocalTransport::new(dir.path());
        let body = b"PatientID,PracticeMRN\r\n1,M1\r\n";
        let n = t.put("id_updates.csv", &mut &body[..], body.len() as u64).unwrap();
        assert_eq!(n, body.len() as u64);
        assert_eq!(std::fs::read(dir.path().join("id_updates.csv")).unwrap(), body);
        assert!(!dir.path().join(part_name("id_updates.csv")).exists());
        // A short read is an error and leaves neither name behind.
        let err = t.put("short.csv", &mut &body[..4], 10).unwrap_err();
        assert!(err.to_string().contains("expected 10"), "{err}");
        assert!(!dir.path().join("short.csv").exists());
        assert!(!dir.path().join(part_name("short.csv")).exists());
        assert!(t.put("../x.csv", &mut &body[..], body.len() as u64).is_err());
    }

    #[test]
    fn in_progress_names() {
        assert!(is_in_progress_name(".x.csv"));
        assert!(is_in_progress_name("x.csv.part"));
        assert!(is_in_progress_name("x.TMP"));
        assert!(!is_in_progress_name("x.csv"));
    }
}
