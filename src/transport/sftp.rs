//! SFTP over SSH (russh + russh-sftp): the EHR's server that we log in to,
//! or the practice's own. A tokio runtime lives inside the transport so the
//! [`Transport`] trait stays synchronous for the job runner.
//!
//! Speed comes from three things (see ../shared/CRATES.md): a no-delay
//! socket, reads of exactly the listed size (no probing for the end of the
//! file), and several small files downloading at once on the one session
//! ([`Transport::prefetch`]); a large file keeps many reads in flight.
//!
//! Safety: the host key is checked against known_hosts before any secret
//! is sent (see `known_hosts.rs`); an upload is written as `.NAME.part`,
//! fsynced on the server where it supports `fsync@openssh.com`, its size
//! checked, then renamed over `NAME`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use russh::client;
use russh::keys::{self, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::endpoint::StepLog;
use super::known_hosts::{self, Verdict};
use super::{Entry, Limits, SftpEndpoint, SshAuth, Transport, TransportError};

/// Files up to this size are downloaded ahead, several at once.
const PREFETCH_MAX: u64 = 4 << 20;
/// Reads (or writes) in flight on one large file.
const DEPTH: usize = 64;
/// OpenSSH's sftp-server caps a read at 256 KiB less 1 KiB.
const CHUNK: u64 = 255 * 1024;
/// Writes: OpenSSH accepts up to 256 KiB a packet.
const WRITE_CHUNK: usize = 128 * 1024;
/// The largest SSH packet the server may send us (see `connect_within`).
const MAX_PACKET: u32 = 128 * 1024;

pub struct SftpTransport {
    cfg: SftpEndpoint,
    accept_new_host_key: bool,
    rt: tokio::runtime::Runtime,
    conn: Option<Conn>,
    /// Sizes from the last `list`, so a fetch reads exactly that much.
    listed: HashMap<String, u64>,
    /// Files to fetch next, in order; the first `parallel` are downloading.
    ahead: VecDeque<(String, u64)>,
    inflight: VecDeque<(String, Download)>,
}

/// A small file downloading ahead into memory.
type Download = JoinHandle<Result<Vec<u8>, TransportError>>;

struct Conn {
    ssh: client::Handle<Client>,
    sftp: Arc<RawSftpSession>,
    read_len: u64,
    write_len: usize,
    posix_rename: bool,
    fsync: bool,
}

impl SftpTransport {
    /// No connection yet: the first operation connects.
    pub fn new(cfg: SftpEndpoint, accept_new_host_key: bool) -> Result<SftpTransport, TransportError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ferry-sftp")
            .enable_all()
            .build()
            .map_err(|e| TransportError::Permanent {
                what: "sftp: cannot start a runtime".into(),
                cause: e,
            })?;
        Ok(SftpTransport {
            cfg,
            accept_new_host_key,
            rt,
            conn: None,
            listed: HashMap::new(),
            ahead: VecDeque::new(),
            inflight: VecDeque::new(),
        })
    }

    fn server(&self) -> String {
        format!("sftp {}@{}:{}", self.cfg.user, self.cfg.host, self.cfg.port)
    }

    fn path(&self, name: &str) -> String {
        join(&self.cfg.folder, name)
    }

    /// Connect (for `ferry check`), reporting each step.
    pub(crate) fn connect_steps(&mut self, steps: &mut StepLog) -> bool {
        let cfg = self.cfg.clone();
        let accept = self.accept_new_host_key;
        match self.rt.block_on(connect(&cfg, accept, Some(steps))) {
            Ok(conn) => {
                self.conn = Some(conn);
                true
            }
            Err(_) => false,
        }
    }

    /// The open session, connecting first if there is none.
    fn session(&mut self) -> Result<Arc<RawSftpSession>, TransportError> {
        if self.conn.as_ref().is_some_and(|c| c.ssh.is_closed()) {
            self.drop_connection();
        }
        if self.conn.is_none() {
            let conn = self.rt.block_on(connect(&self.cfg, self.accept_new_host_key, None))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_ref().map(|c| c.sftp.clone()).expect("connected"))
    }

    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("connected")
    }

    /// After a temporary error the session is suspect: drop it (and any
    /// downloads ahead on it); the next operation connects again.
    fn settle<T>(&mut self, r: Result<T, TransportError>) -> Result<T, TransportError> {
        if let Err(e) = &r
            && e.is_temporary()
        {
            debug!(server = %self.server(), error = %e, "Dropping the SFTP connection after an error.");
            self.drop_connection();
        }
        r
    }

    fn drop_connection(&mut self) {
        for (_, h) in self.inflight.drain(..) {
            h.abort();
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.sftp.close_session();
            // The session task ends when the handle is dropped.
            drop(conn);
        }
    }

    /// Start downloads ahead until `parallel` are in flight.
    fn top_up(&mut self) {
        let Some(conn) = self.conn.as_ref() else { return };
        while self.inflight.len() < self.cfg.parallel.max(1) {
            let Some((name, size)) = self.ahead.pop_front() else { break };
            let sftp = conn.sftp.clone();
            let path = join(&self.cfg.folder, &name);
            let read_len = conn.read_len;
            let h = self.rt.spawn(async move {
                let mut buf = Vec::with_capacity(size as usize);
                download(&sftp, &path, size, read_len, &mut buf).await?;
                Ok(buf)
            });
            self.inflight.push_back((name, h));
        }
    }

    fn fetch_ahead(&mut self, name: &str, out: &mut dyn Write) -> Option<Result<u64, TransportError>> {
        // The caller fetches in the order it announced; anything before
        // `name` was skipped.
        if !self.inflight.iter().any(|(n, _)| n == name) && !self.ahead.iter().any(|(n, _)| n == name) {
            return None;
        }
        while self.inflight.front().is_some_and(|(n, _)| n != name) {
            if let Some((_, h)) = self.inflight.pop_front() {
                h.abort();
            }
        }
        if self.inflight.is_empty() {
            while self.ahead.front().is_some_and(|(n, _)| n != name) {
                self.ahead.pop_front();
            }
            if let Err(e) = self.session() {
                return Some(Err(e));
            }
            self.top_up();
        }
        let (_, h) = self.inflight.pop_front()?;
        self.top_up();
        let what = format!("{} {}", self.server(), self.path(name));
        let r = match self.rt.block_on(h) {
            Ok(Ok(buf)) => out
                .write_all(&buf)
                .map(|()| buf.len() as u64)
                .map_err(|e| TransportError::Permanent { what: format!("{what}: local write"), cause: e }),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(TransportError::temporary(what, format!("download task failed: {e}"))),
        };
        Some(self.settle(r))
    }
}

impl Drop for SftpTransport {
    fn drop(&mut self) {
        for (_, h) in self.inflight.drain(..) {
            h.abort();
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.sftp.close_session();
            let _ = self.rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(2),
                    conn.ssh.disconnect(russh::Disconnect::ByApplication, "", "en"),
                )
                .await
            });
        }
    }
}

impl Transport for SftpTransport {
    fn describe(&self) -> String {
        format!("{} folder {}", self.server(), self.cfg.folder)
    }

    fn limits(&self) -> Limits {
        self.cfg.limits
    }

    fn list(&mut self) -> Result<Vec<Entry>, TransportError> {
        let sftp = self.session()?;
        let folder = self.cfg.folder.clone();
        let what = format!("{} folder {folder}", self.server());
        let r = self.rt.block_on(async {
            let handle = sftp.opendir(folder.clone()).await.map_err(|e| classify(&what, e))?.handle;
            let mut out = Vec::new();
            let listed = loop {
                match sftp.readdir(handle.clone()).await {
                    Ok(names) => {
                        for f in names.files {
                            if !f.attrs.file_type().is_file() {
                                continue;
                            }
                            let mtime = f.attrs.mtime.map_or(SystemTime::UNIX_EPOCH, |s| {
                                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(s))
                            });
                            out.push(Entry { name: f.filename, size: f.attrs.size.unwrap_or(0), mtime });
                        }
                    }
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                    Err(e) => break Err(classify(&what, e)),
                }
            };
            let _ = sftp.close(handle).await;
            listed.map(|()| out)
        });
        let mut entries = self.settle(r)?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.listed = entries.iter().map(|e| (e.name.clone(), e.size)).collect();
        Ok(entries)
    }

    fn prefetch(&mut self, entries: &[Entry]) {
        for (_, h) in self.inflight.drain(..) {
            h.abort();
        }
        self.ahead = entries
            .iter()
            .filter(|e| e.size <= PREFETCH_MAX && super::check_name(&e.name).is_ok())
            .map(|e| (e.name.clone(), e.size))
            .collect();
    }

    fn fetch(&mut self, name: &str, out: &mut dyn Write) -> Result<u64, TransportError> {
        super::check_name(name)?;
        if let Some(r) = self.fetch_ahead(name, out) {
            return r;
        }
        let sftp = self.session()?;
        let path = self.path(name);
        let what = format!("{} {path}", self.server());
        let read_len = self.conn().read_len;
        let size = self.listed.get(name).copied();
        let r = self.rt.block_on(async {
            let size = match size {
                Some(s) => s,
                None => {
                    sftp.stat(path.clone()).await.map_err(|e| classify(&what, e))?.attrs.size.unwrap_or(0)
                }
            };
            download(&sftp, &path, size, read_len, out).await.map(|()| size)
        });
        self.settle(r)
    }

    fn rename(&mut self, from: &str, to_dir: &str, as_name: &str) -> Result<(), TransportError> {
        super::check_name(from)?;
        super::check_name(as_name)?;
        let sftp = self.session()?;
        let src = self.path(from);
        let dir = if to_dir.starts_with('/') { to_dir.to_string() } else { self.path(to_dir) };
        let dest = join(&dir, as_name);
        let what = format!("{} {src} -> {dest}", self.server());
        let r = self.rt.block_on(async {
            // The archive folder may not exist yet; a failure here shows up
            // as the rename's own error.
            if sftp.stat(dir.clone()).await.is_err() {
                let _ = sftp.mkdir(dir.clone(), FileAttributes::empty()).await;
            }
            if sftp.lstat(dest.clone()).await.is_ok() {
                return Err(TransportError::Exists { what: what.clone() });
            }
            sftp.rename(src.clone(), dest.clone()).await.map(|_| ()).map_err(|e| classify(&what, e))
        });
        self.settle(r)
    }

    fn remove(&mut self, name: &str) -> Result<(), TransportError> {
        super::check_name(name)?;
        let sftp = self.session()?;
        let path = self.path(name);
        let what = format!("{} {path}", self.server());
        let r = self
            .rt
            .block_on(async { sftp.remove(path.clone()).await.map(|_| ()).map_err(|e| classify(&what, e)) });
        self.settle(r)
    }

    fn put(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<u64, TransportError> {
        super::check_name(name)?;
        let sftp = self.session()?;
        let (write_len, posix_rename, fsync) = {
            let c = self.conn();
            (c.write_len, c.posix_rename, c.fsync)
        };
        let part = self.path(&super::part_name(name));
        let dest = self.path(name);
        let what = format!("{} {dest}", self.server());
        // Tests cut the connection here, after it was found open.
        crate::store::pausepoint("sftp-put");
        let r = self.rt.block_on(async {
            let written = upload(&sftp, &part, data, write_len, fsync, &what).await;
            let written = match written {
                Ok(n) if n == size => n,
                Ok(n) => {
                    let _ = sftp.remove(part.clone()).await;
                    return Err(TransportError::temporary(
                        &what,
                        format!("wrote {n} bytes, expected {size}"),
                    ));
                }
                Err(e) => {
                    let _ = sftp.remove(part.clone()).await;
                    return Err(e);
                }
            };
            let on_server = sftp.stat(part.clone()).await.map_err(|e| classify(&what, e))?.attrs.size;
            if on_server != Some(size) {
                let _ = sftp.remove(part.clone()).await;
                return Err(TransportError::temporary(
                    &what,
                    format!("the server holds {on_server:?} bytes of {size} after the upload"),
                ));
            }
            if posix_rename {
                // Atomic replace: readers see the old file or the new one.
                let mut body = Vec::new();
                ssh_string(&mut body, &part);
                ssh_string(&mut body, &dest);
                sftp.extended("posix-rename@openssh.com", body).await.map_err(|e| classify(&what, e))?;
            } else {
                match sftp.remove(dest.clone()).await {
                    Ok(_) => {}
                    Err(SftpError::Status(s)) if s.status_code == StatusCode::NoSuchFile => {}
                    Err(e) => return Err(classify(&what, e)),
                }
                sftp.rename(part.clone(), dest.clone()).await.map_err(|e| classify(&what, e))?;
            }
            Ok(written)
        });
        self.settle(r)
    }
}

/// `folder/name`, as SFTP paths go (always `/`).
fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() || folder == "." {
        name.to_string()
    } else if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

fn ssh_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// An SFTP error in the terms callers branch on. A lost session or a
/// timeout is temporary; what the server refused is not.
fn classify(what: &str, e: SftpError) -> TransportError {
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => TransportError::NotFound { what: what.to_string() },
            StatusCode::NoConnection | StatusCode::ConnectionLost => {
                TransportError::temporary(what, status_text(&s))
            }
            _ => TransportError::permanent(what, status_text(&s)),
        },
        SftpError::Timeout => TransportError::temporary(what, "no answer from the server in time"),
        SftpError::IO(m) => TransportError::temporary(what, m),
        SftpError::UnexpectedBehavior(m) => TransportError::temporary(what, m),
        e => TransportError::permanent(what, e),
    }
}

/// A status the server sent: its code's name, then the server's own words
/// where they add something (OpenSSH's sftp-server repeats the name).
fn status_text(s: &russh_sftp::protocol::Status) -> String {
    let code = s.status_code.to_string();
    let message = s.error_message.trim();
    if message.is_empty() || message.eq_ignore_ascii_case(&code) {
        code
    } else {
        format!("{code}: {message}")
    }
}

/// Read exactly `size` bytes of `path` into `out`, many reads in flight,
/// then check the size again: a file that grew or shrank meanwhile is
/// `Changed`, never taken half-written.
async fn download(
    sftp: &RawSftpSession,
    path: &str,
    size: u64,
    read_len: u64,
    out: &mut (impl Write + ?Sized),
) -> Result<(), TransportError> {
    let what = path.to_string();
    let handle = sftp
        .open(path, OpenFlags::READ, FileAttributes::empty())
        .await
        .map_err(|e| classify(&what, e))?
        .handle;
    let r = read_exactly(sftp, &handle, size, read_len, out, &what).await;
    let after = match &r {
        Ok(()) => Some(sftp.fstat(handle.clone()).await.map_err(|e| classify(&what, e))),
        Err(_) => None,
    };
    let _ = sftp.close(handle).await;
    r?;
    match after {
        Some(Ok(a)) if a.attrs.size == Some(size) => Ok(()),
        Some(Ok(a)) => Err(TransportError::Changed {
            what,
            why: format!("listed with {size} bytes, now {} bytes", a.attrs.size.unwrap_or(0)),
        }),
        Some(Err(e)) => Err(e),
        None => Ok(()),
    }
}

async fn read_exactly(
    sftp: &RawSftpSession,
    handle: &str,
    size: u64,
    read_len: u64,
    out: &mut (impl Write + ?Sized),
    what: &str,
) -> Result<(), TransportError> {
    let mut next = 0u64;
    let mut pending = FuturesOrdered::new();
    let request = |offset: u64| {
        let len = read_len.min(size - offset) as u32;
        async move { (offset, len, sftp.read(handle, offset, len).await) }
    };
    while next < size && pending.len() < DEPTH {
        pending.push_back(request(next));
        next += read_len.min(size - next);
    }
    while let Some((offset, len, result)) = pending.next().await {
        let mut data = match result {
            Ok(d) => d.data,
            Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                return Err(TransportError::Changed {
                    what: what.to_string(),
                    why: format!("listed with {size} bytes, ended at {offset}"),
                });
            }
            Err(e) => return Err(classify(what, e)),
        };
        // A short read (allowed by the protocol): fetch the rest of this
        // chunk before going on, so the output stays in order.
        while (data.len() as u64) < u64::from(len) {
            let at = offset + data.len() as u64;
            let rest = len - data.len() as u32;
            match sftp.read(handle, at, rest).await {
                Ok(more) if !more.data.is_empty() => data.extend_from_slice(&more.data),
                Ok(_) | Err(SftpError::Status(_)) => {
                    return Err(TransportError::Changed {
                        what: what.to_string(),
                        why: format!("listed with {size} bytes, ended at {at}"),
                    });
                }
                Err(e) => return Err(classify(what, e)),
            }
        }
        out.write_all(&data)
            .map_err(|e| TransportError::Permanent { what: format!("{what}: local write"), cause: e })?;
        if next < size {
            pending.push_back(request(next));
            next += read_len.min(size - next);
        }
    }
    Ok(())
}

/// Write all of `data` to `path` (created or truncated), many writes in
/// flight, fsync where the server can, close and check the close.
async fn upload(
    sftp: &RawSftpSession,
    path: &str,
    data: &mut dyn Read,
    write_len: usize,
    fsync: bool,
    what: &str,
) -> Result<u64, TransportError> {
    let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
    let handle = sftp.open(path, flags, FileAttributes::empty()).await.map_err(|e| classify(what, e))?.handle;
    let mut offset = 0u64;
    let mut pending = FuturesUnordered::new();
    let result: Result<(), TransportError> = async {
        loop {
            let mut buf = vec![0u8; write_len];
            let n = read_full(data, &mut buf)
                .map_err(|e| TransportError::Permanent { what: format!("{what}: local read"), cause: e })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let at = offset;
            offset += n as u64;
            pending.push(sftp.write(handle.as_str(), at, buf));
            while pending.len() >= DEPTH {
                if let Some(r) = pending.next().await {
                    r.map_err(|e| classify(what, e))?;
                }
            }
        }
        while let Some(r) = pending.next().await {
            r.map_err(|e| classify(what, e))?;
        }
        if fsync {
            let mut body = Vec::new();
            ssh_string(&mut body, &handle);
            sftp.extended("fsync@openssh.com", body).await.map_err(|e| classify(what, e))?;
        }
        Ok(())
    }
    .await;
    drop(pending);
    let closed = sftp.close(handle.as_str()).await.map_err(|e| classify(what, e));
    result?;
    closed?;
    Ok(offset)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The russh client side: checks the host key against known_hosts and
/// leaves the verdict for the caller to explain.
struct Client {
    host: String,
    port: u16,
    known_hosts: std::path::PathBuf,
    accept_new: bool,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                known_hosts::verify(&self.host, self.port, key, &self.known_hosts, self.accept_new)
            }
            PublicKeyOrCertificate::Certificate(_) => Verdict::Broken {
                why: "the server presented a host certificate; ferry checks plain host keys only".into(),
            },
        };
        let trusted = matches!(verdict, Verdict::Known | Verdict::Learned { .. });
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        Ok(trusted)
    }
}

/// DNS, TCP, handshake with the host key check, login, the SFTP
/// subsystem: all within the connect timeout. With `steps`, each step is
/// reported as it passes or fails (for `ferry check`).
async fn connect(
    cfg: &SftpEndpoint,
    accept_new: bool,
    mut steps: Option<&mut StepLog<'_>>,
) -> Result<Conn, TransportError> {
    let server = format!("sftp {}@{}:{}", cfg.user, cfg.host, cfg.port);
    let mut report = |name: &'static str, r: Result<String, String>| {
        if let Some(s) = steps.as_deref_mut() {
            match r {
                Ok(d) => s.pass(name, d),
                Err(d) => s.fail(name, d),
            }
        }
    };
    let limit = cfg.limits.connect_timeout;
    let attempt = connect_within(cfg, accept_new, &server, &mut report);
    match tokio::time::timeout(limit, attempt).await {
        Ok(r) => r,
        Err(_) => {
            let e =
                TransportError::temporary(&server, format!("no connection within {}s", limit.as_secs_f32()));
            report("connect", Err(e.to_string()));
            Err(e)
        }
    }
}

async fn connect_within(
    cfg: &SftpEndpoint,
    accept_new: bool,
    server: &str,
    report: &mut dyn FnMut(&'static str, Result<String, String>),
) -> Result<Conn, TransportError> {
    let fail = |report: &mut dyn FnMut(&'static str, Result<String, String>), step, e: TransportError| {
        report(step, Err(e.to_string()));
        e
    };
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((cfg.host.as_str(), cfg.port)).await
    {
        Ok(a) => a.collect(),
        Err(e) => {
            let e = TransportError::temporary(server, format!("cannot resolve host name {}: {e}", cfg.host));
            return Err(fail(report, "dns", e));
        }
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    report("dns", Ok(format!("{} resolves to {}", cfg.host, shown.join(", "))));

    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => {
                stream = Some((s, *addr));
                break;
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    let Some((stream, addr)) = stream else {
        let why = last.unwrap_or_else(|| "no address".into());
        return Err(fail(report, "tcp", TransportError::temporary(server, format!("cannot connect: {why}"))));
    };
    // Nagle's algorithm holds back the small SFTP requests: +30-40% on loopback.
    let _ = stream.set_nodelay(true);
    report("tcp", Ok(format!("connected to {addr}")));

    let mut preferred = russh::Preferred::default();
    let recorded = known_hosts::recorded_algorithms(&cfg.host, cfg.port, &cfg.known_hosts);
    if !recorded.is_empty() {
        let mut algs = recorded;
        for a in russh::Preferred::DEFAULT.key.iter() {
            if !algs.contains(a) {
                algs.push(a.clone());
            }
        }
        preferred.key = Cow::Owned(algs);
    }
    // AES-GCM first: with AES-NI (ring) it runs well ahead of the
    // software ChaCha20-Poly1305 that is russh's (and OpenSSH's) first pick.
    let mut ciphers = vec![russh::cipher::AES_256_GCM];
    ciphers.extend(
        russh::Preferred::DEFAULT.cipher.iter().copied().filter(|c| *c != russh::cipher::AES_256_GCM),
    );
    preferred.cipher = Cow::Owned(ciphers);
    let config = Arc::new(client::Config {
        nodelay: true,
        preferred,
        window_size: 16 << 20,
        // The largest SSH packet we accept. sshd sends the channel's data
        // in packets of at most this size: at russh's 32 KiB a 1 GiB pull
        // cost sshd about 2.2 s of CPU, at 128 KiB about 1.8 s, and the
        // pull ran ~13% faster (transfer bench). russh logs (at `log`'s
        // error level, target russh::client, not shown by ferry's default
        // filter) that a size over 65,535 is larger than a TCP packet; SSH
        // itself allows it, and OpenSSH accepts up to 256 KiB.
        maximum_packet_size: MAX_PACKET,
        keepalive_interval: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        host: cfg.host.clone(),
        port: cfg.port,
        known_hosts: cfg.known_hosts.clone(),
        accept_new,
        verdict: verdict.clone(),
    };
    let handshake = client::connect_stream(config, stream, handler).await;
    let verdict = verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
    let known_hosts = cfg.known_hosts.display();
    let pattern = known_hosts::host_pattern(&cfg.host, cfg.port);
    let untrusted = |why: String| TransportError::Untrusted { what: server.to_string(), why };
    let mut ssh = match (handshake, verdict) {
        (Ok(h), Some(Verdict::Known)) => {
            report("host key", Ok(format!("matches {known_hosts}")));
            h
        }
        (Ok(h), Some(Verdict::Learned { fingerprint })) => {
            info!(server, fingerprint = %fingerprint, "Recorded a new host key.");
            report("host key", Ok(format!("new key {fingerprint} recorded in {known_hosts} as {pattern}")));
            h
        }
        (_, Some(Verdict::Unknown { fingerprint })) => {
            let e = untrusted(format!(
                "unknown host key {fingerprint} (not in {known_hosts}); check the fingerprint with the \
                 server's owner, then record it with `ferry check JOB --accept-new-host-key`"
            ));
            return Err(fail(report, "host key", e));
        }
        (_, Some(Verdict::Changed { fingerprint, line })) => {
            let e = untrusted(format!(
                "HOST KEY CHANGED: the server now presents {fingerprint}, which does not match line {line} of \
                 {known_hosts}. Someone may be intercepting the connection. Do not go on until the server's \
                 owner confirms a new key; then replace that line"
            ));
            return Err(fail(report, "host key", e));
        }
        (_, Some(Verdict::Revoked { fingerprint, line })) => {
            let e = untrusted(format!(
                "REVOKED HOST KEY: the server presents {fingerprint}, which line {line} of {known_hosts} marks \
                 @revoked. It is never trusted; do not go on until the server's owner replaces it"
            ));
            return Err(fail(report, "host key", e));
        }
        (_, Some(Verdict::Broken { why })) => return Err(fail(report, "host key", untrusted(why))),
        (Err(e), None) => {
            let e = TransportError::temporary(server, format!("SSH handshake failed: {e}"));
            return Err(fail(report, "host key", e));
        }
        (Ok(_), None) => {
            return Err(fail(
                report,
                "host key",
                untrusted("the server's host key was never checked".into()),
            ));
        }
        (Err(e), Some(_)) => {
            let e = TransportError::temporary(
                server,
                format!("SSH handshake failed after the host key check: {e}"),
            );
            return Err(fail(report, "host key", e));
        }
    };

    let login = match &cfg.auth {
        SshAuth::Password(secret) => ssh.authenticate_password(cfg.user.clone(), secret.expose()).await,
        SshAuth::Key { file, passphrase } => {
            let key = keys::load_secret_key(file, passphrase.as_ref().map(|p| p.expose())).map_err(|e| {
                let hint = if passphrase.is_some() { " (is the passphrase right?)" } else { "" };
                fail(
                    report,
                    "login",
                    TransportError::Auth {
                        what: server.to_string(),
                        why: format!("cannot read key file {}: {e}{hint}", file.display()),
                    },
                )
            })?;
            let hash = if key.algorithm().is_rsa() {
                ssh.best_supported_rsa_hash().await.ok().flatten().flatten()
            } else {
                None
            };
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
            ssh.authenticate_publickey(cfg.user.clone(), key).await
        }
    };
    let how = match &cfg.auth {
        SshAuth::Password(s) => format!("password from ${}", s.env),
        SshAuth::Key { file, .. } => format!("key {}", file.display()),
    };
    match login {
        Ok(r) if r.success() => report("login", Ok(format!("logged in as {} with {how}", cfg.user))),
        Ok(_) => {
            let e = TransportError::Auth {
                what: server.to_string(),
                why: format!("the server refused user {} with {how}", cfg.user),
            };
            return Err(fail(report, "login", e));
        }
        Err(e) => {
            return Err(fail(
                report,
                "login",
                TransportError::temporary(server, format!("login failed: {e}")),
            ));
        }
    }

    let sftp = async {
        let channel = ssh.channel_open_session().await?;
        channel.request_subsystem(true, "sftp").await?;
        Ok::<_, russh::Error>(channel)
    }
    .await
    .map_err(|e| TransportError::temporary(server, format!("cannot start SFTP: {e}")))
    .map_err(|e| fail(report, "sftp", e))?;
    let sftp_cfg = russh_sftp::client::Config {
        request_timeout_secs: cfg.limits.timeout.as_secs().max(1),
        ..Default::default()
    };
    let mut session = RawSftpSession::new_with_config(sftp.into_stream(), sftp_cfg);
    let version = session.init().await.map_err(|e| fail(report, "sftp", classify(server, e)))?;
    let has = |name: &str| version.extensions.contains_key(name);
    let (mut read_len, mut write_len) = (CHUNK, WRITE_CHUNK);
    if has(russh_sftp::extensions::LIMITS)
        && let Ok(l) = session.limits().await
    {
        if l.max_read_len > 0 {
            read_len = read_len.min(l.max_read_len);
        }
        if l.max_write_len > 0 {
            write_len = write_len.min(l.max_write_len as usize);
        }
        session.set_limits(russh_sftp::client::rawsession::Limits::from(l));
    }
    debug!(server, read_len, write_len, "SFTP session open.");
    Ok(Conn {
        ssh,
        sftp: Arc::new(session),
        read_len,
        write_len,
        posix_rename: has("posix-rename@openssh.com"),
        fsync: has(russh_sftp::extensions::FSYNC),
    })
}
