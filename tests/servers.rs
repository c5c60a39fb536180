//! Real servers for the transport tests, each on a free loopback port in a
//! temp folder of its own, stopped by PID when dropped: OpenSSH's sshd
//! (its own config and host key; a password user and a key user) and
//! pyftpdlib (plain FTP, or explicit FTPS with a certificate made here).
//! A missing server program fails the test with how to install it;
//! `make test` runs tests/install-deps.sh first so that never happens.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PW_USER: &str = "ferrytest-pw";
pub const PW_PASSWORD: &str = "ferry-test-pw";
pub const KEY_USER: &str = "ferrytest-key";
pub const KEY_PASSPHRASE: &str = "open sesame";
pub const FTP_USER: &str = "ehr";
pub const FTP_PASSWORD: &str = "ftp-secret";

const INSTALL: &str = "run tests/install-deps.sh (as root), or `make test`, which runs it";

fn need(program: &str) -> PathBuf {
    let p = Path::new(program);
    if p.is_absolute() {
        assert!(p.exists(), "{program} is missing: {INSTALL}");
        return p.to_path_buf();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let c = Path::new(dir).join(program);
        if c.is_file() {
            return c;
        }
    }
    panic!("{program} is missing: {INSTALL}");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A folder the test user of a server may read and write (the servers run
/// the session as another account than the test's).
fn open_dir(p: &Path) {
    fs::create_dir_all(p).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
}

fn stop(child: &mut Child) {
    // By PID, the process we started; never by name.
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Sshd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        let sshd = need("/usr/sbin/sshd");
        let keygen = need("ssh-keygen");
        for user in [PW_USER, KEY_USER] {
            let ok = Command::new("id").arg(user).stdout(Stdio::null()).stderr(Stdio::null()).status();
            assert!(ok.is_ok_and(|s| s.success()), "test account {user} is missing: {INSTALL}");
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        open_dir(&dir.path().join("srv"));
        let host_key = dir.path().join("host_ed25519");
        run(Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "test-host", "-f"])
            .arg(&host_key));
        // Client keys: ed25519 with a passphrase, RSA without.
        let keys = dir.path().join("keys");
        fs::create_dir_all(&keys).unwrap();
        run(Command::new(&keygen)
            .args(["-q", "-t", "ed25519", "-N", KEY_PASSPHRASE, "-C", "ferry-test", "-f"])
            .arg(keys.join("id_ed25519")));
        run(Command::new(&keygen)
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-C", "ferry-test", "-f"])
            .arg(keys.join("id_rsa")));
        let authorized = dir.path().join("authorized");
        fs::create_dir_all(&authorized).unwrap();
        let mut keys_text = fs::read_to_string(keys.join("id_ed25519.pub")).unwrap();
        keys_text.push_str(&fs::read_to_string(keys.join("id_rsa.pub")).unwrap());
        fs::write(authorized.join(KEY_USER), keys_text).unwrap();
        // Readable by the key user's session for the key check.
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(authorized.join(KEY_USER), fs::Permissions::from_mode(0o644)).unwrap();
        // sshd wants its privilege-separation folder (wiped at boot).
        let _ = fs::create_dir_all("/run/sshd");

        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
                     AuthorizedKeysFile {d}/authorized/%u\nStrictModes no\nPasswordAuthentication yes\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n\
                     AllowUsers {PW_USER} {KEY_USER}\nSubsystem sftp internal-sftp\n\
                     MaxStartups 100:30:200\nLogLevel VERBOSE\n",
                    hk = host_key.display(),
                    d = dir.path().display()
                ),
            )
            .unwrap();
            let log = dir.path().join("sshd.log");
            let mut child = Command::new(&sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("start sshd");
            match wait_for_port(&mut child, port, &log) {
                Ok(()) => return Sshd { port, dir, child },
                Err(log) => last = log,
            }
        }
        panic!("sshd did not start: {last}");
    }

    /// The folder the server serves (as the server names it too).
    pub fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join("keys").join(name)
    }

    /// The host's public key line, as `ssh-keyscan` would print it for a
    /// known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        let key = fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        let mut parts = key.split_whitespace();
        format!("[127.0.0.1]:{} {} {}\n", self.port, parts.next().unwrap(), parts.next().unwrap())
    }

    /// `ssh-keygen -lf` of the host key: "SHA256:...".
    pub fn fingerprint(&self) -> String {
        let out = Command::new(need("ssh-keygen"))
            .arg("-lf")
            .arg(self.dir.path().join("host_ed25519.pub"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kill the per-connection processes (the listener stays): what a
    /// dropped connection looks like to the client.
    pub fn kill_sessions(&self) -> usize {
        // Each connection is a privileged process and its unprivileged
        // child, which holds the socket too: kill the whole tree.
        let mut pids = Vec::new();
        let mut todo = children_of(self.child.id());
        while let Some(pid) = todo.pop() {
            todo.extend(children_of(pid));
            pids.push(pid);
        }
        for pid in &pids {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        pids.len()
    }

    /// Stop the listener and every session.
    pub fn kill(&mut self) {
        self.kill_sessions();
        stop(&mut self.child);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// PIDs whose parent is `parent`, from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let mut stat = String::new();
        if fs::File::open(e.path().join("stat")).and_then(|mut f| f.read_to_string(&mut stat)).is_err() {
            continue;
        }
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// pyftpdlib from the test venv.
pub struct Ftpd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// TLS material for an FTPS server: a CA and a leaf it signed (for
/// `ca_file`), or one self-signed certificate (for pinning).
pub enum Cert {
    None,
    SignedByCa,
    SelfSigned,
}

impl Ftpd {
    pub fn start(cert: Cert) -> Ftpd {
        let venv = std::env::var_os("FERRY_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv"));
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "the FTP test server (pyftpdlib in {}) is missing: {INSTALL}",
            venv.display()
        );
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("srv")).unwrap();
        let tls_args = match cert {
            Cert::None => vec![],
            Cert::SignedByCa => {
                make_ca_and_leaf(dir.path());
                tls_args(dir.path())
            }
            Cert::SelfSigned => {
                let openssl = need("openssl");
                run(Command::new(openssl)
                    .current_dir(dir.path())
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-days",
                        "30",
                        "-subj",
                        "/CN=localhost",
                    ])
                    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                    .args(["-keyout", "key.pem", "-out", "cert.pem"]));
                tls_args(dir.path())
            }
        };
        let log = dir.path().join("ftpd.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&python)
                .args(["-m", "pyftpdlib", "-i", "127.0.0.1", "-p", &port.to_string(), "-w", "-d"])
                .arg(dir.path().join("srv"))
                .args(["-u", FTP_USER, "-P", FTP_PASSWORD])
                .args(&tls_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("start pyftpdlib");
            match wait_for_port(&mut child, port, &log) {
                Ok(()) => return Ftpd { port, dir, child },
                Err(log) => last = log,
            }
        }
        panic!("pyftpdlib did not start: {last}");
    }

    pub fn srv(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// The CA certificate (Cert::SignedByCa) or the server's own (SelfSigned).
    pub fn ca_pem(&self) -> PathBuf {
        let ca = self.dir.path().join("ca.pem");
        if ca.exists() { ca } else { self.dir.path().join("cert.pem") }
    }

    /// SHA-256 of the server certificate's DER bytes, as hex.
    pub fn cert_sha256(&self) -> String {
        let out = Command::new(need("openssl"))
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(self.dir.path().join("cert.pem"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("ftpd.log")).unwrap_or_default()
    }
}

impl Drop for Ftpd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn tls_args(dir: &Path) -> Vec<String> {
    vec![
        "--tls".into(),
        "--certfile".into(),
        dir.join("cert.pem").display().to_string(),
        "--keyfile".into(),
        dir.join("key.pem").display().to_string(),
        "--tls-control-required".into(),
        "--tls-data-required".into(),
    ]
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it
/// (rustls refuses a CA certificate used as the server's own).
fn make_ca_and_leaf(dir: &Path) {
    let openssl = need("openssl");
    let sh = |args: &[&str]| run(Command::new(&openssl).current_dir(dir).args(args));
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=ferry test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
}

/// Wait up to 10 s for a server just started to accept connections on
/// `port`. If it exits or stays silent, stop it and return its log.
fn wait_for_port(child: &mut std::process::Child, port: u16, log: &Path) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if child.try_wait().ok().flatten().is_some() || start.elapsed() > Duration::from_secs(10) {
            stop(child);
            return Err(fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Put a file in a server's folder as the server's users will see it.
pub fn serve(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o666)).unwrap();
    p
}
