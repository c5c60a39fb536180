//! SSH host keys against an OpenSSH `known_hosts` file: plain and hashed
//! (`|1|`) entries, `[host]:port` for other ports than 22. Strict: an
//! unknown key stops the job unless the caller asked to record it (`ferry
//! check --accept-new-host-key`, OpenSSH's `accept-new`), and a changed key
//! always stops it.

use std::path::Path;

use russh::keys::{self, Algorithm, HashAlg, PublicKey};

/// What the known_hosts file says of a server's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Known,
    /// Unknown, and now recorded in the file.
    Learned {
        fingerprint: String,
    },
    Unknown {
        fingerprint: String,
    },
    /// The file holds other keys for this host: someone may be in the middle.
    Changed {
        fingerprint: String,
        line: usize,
    },
    /// The file marks this key `@revoked`: never trusted, never recorded.
    Revoked {
        fingerprint: String,
        line: usize,
    },
    /// The file could not be read or written.
    Broken {
        why: String,
    },
}

/// "SHA256:..." as `ssh-keygen -lf` prints it.
pub(crate) fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The key algorithms the file records for this host, so the handshake can
/// ask the server for one of those first (as OpenSSH does): a server with
/// an RSA and an ed25519 key, known by its RSA key, is then not mistaken
/// for a changed one.
pub(crate) fn recorded_algorithms(host: &str, port: u16, file: &Path) -> Vec<Algorithm> {
    let mut out: Vec<Algorithm> = Vec::new();
    for (_, key) in keys::known_hosts::known_host_keys_path(host, port, file).unwrap_or_default() {
        let algs = match key.algorithm() {
            // An RSA key signs with SHA-2 these days (OpenSSH 8.8+ refuses SHA-1).
            Algorithm::Rsa { .. } => vec![
                Algorithm::Rsa { hash: Some(keys::HashAlg::Sha512) },
                Algorithm::Rsa { hash: Some(keys::HashAlg::Sha256) },
            ],
            a => vec![a],
        };
        for a in algs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

pub(crate) fn verify(host: &str, port: u16, key: &PublicKey, file: &Path, accept_new: bool) -> Verdict {
    let fingerprint = fingerprint(key);
    if let Some(line) = revoked_at(file, key) {
        return Verdict::Revoked { fingerprint, line };
    }
    let recorded = match keys::known_hosts::known_host_keys_path(host, port, file) {
        Ok(r) => r,
        Err(e) => return Verdict::Broken { why: format!("cannot read {}: {e}", file.display()) },
    };
    if recorded.iter().any(|(_, k)| k.key_data() == key.key_data()) {
        return Verdict::Known;
    }
    if let Some((line, old)) = recorded.first() {
        // Keys of another type count too: we asked for the recorded types
        // first, so a server that offers none of them is not the one we know.
        let line = line_of(file, old).unwrap_or(*line);
        return Verdict::Changed { fingerprint, line };
    }
    if !accept_new {
        return Verdict::Unknown { fingerprint };
    }
    match keys::known_hosts::learn_known_hosts_path(host, port, key, file) {
        Ok(()) => Verdict::Learned { fingerprint },
        Err(e) => Verdict::Broken { why: format!("cannot record the host key in {}: {e}", file.display()) },
    }
}

/// The line of the file that marks `key` `@revoked`, for any host, as
/// OpenSSH reads it (russh's parser passes over marker lines, so such a
/// key would only look unknown, and could be recorded).
fn revoked_at(file: &Path, key: &PublicKey) -> Option<usize> {
    let text = key.to_openssh().ok()?;
    let b64 = text.split(' ').nth(1)?;
    let file = std::fs::read_to_string(file).ok()?;
    file.lines()
        .position(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some("@revoked") && words.any(|w| w == b64)
        })
        .map(|i| i + 1)
}

/// The file's own line number of a recorded key (russh's count skips
/// comment lines).
fn line_of(file: &Path, key: &PublicKey) -> Option<usize> {
    let text = key.to_openssh().ok()?;
    let b64 = text.split(' ').nth(1)?;
    let file = std::fs::read_to_string(file).ok()?;
    file.lines().position(|l| l.split_whitespace().any(|w| w == b64)).map(|i| i + 1)
}

/// The name a known_hosts line carries for this server.
pub(crate) fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHIbZeHqfPbcDjC8BcihUv75nDJZe2RHXyoknq534nvU";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILuSEi0mGbuljdzr+x0z82DCbLrfLKY1RKxle1v9lfeu";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn known_unknown_changed_and_learned() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("# comment\n[sftp.example]:2222 {KEY_A}\n")).unwrap();
        assert_eq!(verify("sftp.example", 2222, &key(KEY_A), &file, false), Verdict::Known);
        // The same host on port 22 is another entry.
        assert!(matches!(verify("sftp.example", 22, &key(KEY_A), &file, false), Verdict::Unknown { .. }));
        match verify("sftp.example", 2222, &key(KEY_B), &file, true) {
            Verdict::Changed { line, fingerprint } => {
                assert_eq!(line, 2);
                assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
            }
            v => panic!("{v:?}"),
        }
        // accept-new records an unknown key, never a changed one.
        assert!(matches!(verify("other", 2222, &key(KEY_B), &file, true), Verdict::Learned { .. }));
        assert_eq!(verify("other", 2222, &key(KEY_B), &file, false), Verdict::Known);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("[other]:2222 ssh-ed25519 "), "{text}");
        // A missing file: every host is unknown.
        let none = dir.path().join("nope");
        assert!(matches!(verify("h", 22, &key(KEY_A), &none, false), Verdict::Unknown { .. }));
    }

    /// A key the file marks `@revoked` is refused for any host, and never
    /// recorded, even when the host is otherwise unknown (as OpenSSH does).
    #[test]
    fn a_revoked_key_is_never_trusted_or_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let text = format!("[sftp.example]:2222 {KEY_A}\n@revoked * {KEY_B}\n");
        std::fs::write(&file, &text).unwrap();
        for accept_new in [false, true] {
            match verify("new.example", 22, &key(KEY_B), &file, accept_new) {
                Verdict::Revoked { line, .. } => assert_eq!(line, 2),
                v => panic!("{v:?}"),
            }
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "nothing recorded");
        assert_eq!(verify("sftp.example", 2222, &key(KEY_A), &file, false), Verdict::Known);
    }
}
