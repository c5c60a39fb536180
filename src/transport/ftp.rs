//! FTP and explicit FTPS (suppaftp over rustls with ring): the old way in,
//! through a site-to-site VPN. Passive mode; binary type set before every
//! transfer (suppaftp's default ASCII rewrites line ends); the server's
//! certificate is verified against the public roots plus the job's
//! `ca_file`, or pinned by SHA-256 when the job says so.
//!
//! FTPS is pinned to TLS 1.2: vsftpd's default `require_ssl_reuse=YES`
//! wants the data connection to resume the control connection's TLS
//! session, which works with TLS 1.2 session IDs and fails under TLS 1.3
//! (`522 ... session reuse required`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use suppaftp::list::ListParser;
use suppaftp::types::FileType;
use suppaftp::{FtpError, RustlsConnector, RustlsFtpStream};
use tracing::{debug, warn};

use super::endpoint::StepLog;
use super::{Entry, FtpEndpoint, FtpTls, Limits, Transport, TransportError};

pub struct FtpTransport {
    cfg: FtpEndpoint,
    conn: Option<RustlsFtpStream>,
    /// Sizes from the last `list`: a download of another size is `Changed`.
    listed: std::collections::HashMap<String, u64>,
}

impl FtpTransport {
    pub fn new(cfg: FtpEndpoint) -> FtpTransport {
        FtpTransport { cfg, conn: None, listed: Default::default() }
    }

    fn server(&self) -> String {
        let kind = if matches!(self.cfg.tls, FtpTls::None) { "ftp" } else { "ftps" };
        format!("{kind} {}@{}:{}", self.cfg.user, self.cfg.host, self.cfg.port)
    }

    pub(crate) fn connect_steps(&mut self, steps: &mut StepLog) -> bool {
        match connect(&self.cfg, &self.server(), Some(steps)) {
            Ok(c) => {
                self.conn = Some(c);
                true
            }
            Err(_) => false,
        }
    }

    /// Run `op` on the connection (connecting first if needed); after a
    /// temporary error the connection is dropped, to be made again.
    fn with<T>(
        &mut self,
        what: &str,
        op: impl FnOnce(&mut RustlsFtpStream) -> Result<T, FtpError>,
    ) -> Result<T, TransportError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.cfg, &self.server(), None)?);
        }
        let conn = self.conn.as_mut().expect("connected");
        let r = op(conn).map_err(|e| classify(what, e));
        if let Err(e) = &r
            && e.is_temporary()
        {
            debug!(server = %self.server(), error = %e, "Dropping the FTP connection after an error.");
            self.conn = None;
        }
        r
    }

    fn what(&self, name: &str) -> String {
        format!("{} {}", self.server(), join(&self.cfg.folder, name))
    }
}

impl Drop for FtpTransport {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = c.quit();
        }
    }
}

impl Transport for FtpTransport {
    fn describe(&self) -> String {
        format!("{} folder {}", self.server(), self.cfg.folder)
    }

    fn limits(&self) -> Limits {
        self.cfg.limits
    }

    fn list(&mut self) -> Result<Vec<Entry>, TransportError> {
        let what = self.describe();
        let mut entries = self.with(&what, |c| {
            // MLSD says what is a file and its exact size; LIST (parsed as
            // `ls -l` output) is the fallback for servers without it.
            let files = match c.mlsd(None) {
                Ok(lines) => lines.iter().filter_map(|l| ListParser::parse_mlsd(l).ok()).collect::<Vec<_>>(),
                Err(FtpError::UnexpectedResponse(r)) if r.status.code() / 100 == 5 => {
                    c.list(None)?.iter().filter_map(|l| ListParser::parse_posix(l).ok()).collect()
                }
                Err(e) => return Err(e),
            };
            Ok(files
                .into_iter()
                .filter(|f| f.is_file())
                .map(|f| Entry { name: f.name().to_string(), size: f.size() as u64, mtime: f.modified() })
                .collect::<Vec<_>>())
        })?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        self.listed = entries.iter().map(|e| (e.name.clone(), e.size)).collect();
        Ok(entries)
    }

    fn fetch(&mut self, name: &str, out: &mut dyn Write) -> Result<u64, TransportError> {
        super::check_name(name)?;
        let what = self.what(name);
        let n = self.with(&what, |c| {
            c.transfer_type(FileType::Binary)?;
            c.retr(name, |r| io::copy(r, out).map_err(FtpError::ConnectionError))
        })?;
        match self.listed.get(name) {
            Some(&size) if size != n => Err(TransportError::Changed {
                what,
                why: format!("listed with {size} bytes, read {n} bytes"),
            }),
            _ => Ok(n),
        }
    }

    fn rename(&mut self, from: &str, to_dir: &str, as_name: &str) -> Result<(), TransportError> {
        super::check_name(from)?;
        super::check_name(as_name)?;
        let dest = join(to_dir, as_name);
        let what = format!("{} -> {dest}", self.what(from));
        let taken = self.with(&what, |c| {
            // Missing archive folder: made here; any other failure shows up
            // as the rename's own error.
            let _ = c.mkdir(to_dir);
            Ok(c.transfer_type(FileType::Binary).and_then(|()| c.size(&dest)).is_ok())
        })?;
        if taken {
            return Err(TransportError::Exists { what });
        }
        self.with(&what, |c| c.rename(from, dest.as_str()))
    }

    fn remove(&mut self, name: &str) -> Result<(), TransportError> {
        super::check_name(name)?;
        let what = self.what(name);
        self.with(&what, |c| c.rm(name))
    }

    fn put(&mut self, name: &str, data: &mut dyn Read, size: u64) -> Result<u64, TransportError> {
        super::check_name(name)?;
        let part = super::part_name(name);
        let what = self.what(name);
        let written = self.with(&what, |c| {
            c.transfer_type(FileType::Binary)?;
            let mut up = c.put_with_stream(part.as_str())?;
            let n = io::copy(data, &mut up).map_err(FtpError::ConnectionError)?;
            up.finish()?;
            Ok(n)
        });
        let discard = |t: &mut FtpTransport| {
            let _ = t.with(&what, |c| c.rm(part.as_str()));
        };
        let written = match written {
            Ok(n) if n == size => n,
            Ok(n) => {
                discard(self);
                return Err(TransportError::temporary(&what, format!("wrote {n} bytes, expected {size}")));
            }
            Err(e) => {
                discard(self);
                return Err(e);
            }
        };
        let on_server = self.with(&what, |c| {
            c.transfer_type(FileType::Binary)?;
            c.size(part.as_str())
        })?;
        if on_server as u64 != size {
            discard(self);
            return Err(TransportError::temporary(
                &what,
                format!("the server holds {on_server} bytes of {size} after the upload"),
            ));
        }
        self.with(&what, |c| match c.rename(part.as_str(), name) {
            Ok(()) => Ok(()),
            // Some servers will not rename over an existing file.
            Err(_) => {
                c.rm(name)?;
                c.rename(part.as_str(), name)
            }
        })?;
        Ok(written)
    }
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() || folder == "." {
        name.to_string()
    } else if folder.ends_with('/') {
        format!("{folder}{name}")
    } else {
        format!("{folder}/{name}")
    }
}

/// An FTP error in the terms callers branch on: 4xx replies and dropped
/// connections are temporary, 530 is a refused login, 550 a missing file,
/// a TLS failure to verify the server is untrusted.
fn classify(what: &str, e: FtpError) -> TransportError {
    match e {
        FtpError::ConnectionError(source) => {
            // rustls reports a certificate it cannot trust as an I/O error.
            let tls = source.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
            match tls {
                Some(e @ (rustls::Error::InvalidCertificate(_) | rustls::Error::General(_))) => {
                    TransportError::Untrusted { what: what.to_string(), why: format!("TLS: {e}") }
                }
                _ => TransportError::Temporary { what: what.to_string(), cause: source },
            }
        }
        FtpError::SecureError(m) => {
            let lower = m.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("cert") {
                TransportError::Untrusted { what: what.to_string(), why: format!("TLS: {m}") }
            } else {
                TransportError::temporary(what, format!("TLS: {m}"))
            }
        }
        FtpError::UnexpectedResponse(r) => {
            let code = r.status.code();
            let text = String::from_utf8_lossy(&r.body).trim().to_string();
            match code {
                530 => TransportError::Auth { what: what.to_string(), why: text },
                550 => TransportError::NotFound { what: format!("{what} ({text})") },
                400..=499 => TransportError::temporary(what, text),
                _ => TransportError::permanent(what, text),
            }
        }
        FtpError::DataConnectionAlreadyOpen => {
            TransportError::temporary(what, "a data connection is still open")
        }
        e => TransportError::permanent(what, e),
    }
}

/// DNS, TCP, AUTH TLS (FTPS), login and the change to the job's folder,
/// with the connect timeout on each socket step and the operation timeout
/// on every read and write after.
fn connect(
    cfg: &FtpEndpoint,
    server: &str,
    mut steps: Option<&mut StepLog>,
) -> Result<RustlsFtpStream, TransportError> {
    let mut report = |name: &'static str, r: Result<String, String>| {
        if let Some(s) = steps.as_deref_mut() {
            match r {
                Ok(d) => s.pass(name, d),
                Err(d) => s.fail(name, d),
            }
        }
    };
    let fail = |report: &mut dyn FnMut(&'static str, Result<String, String>),
                step: &'static str,
                e: TransportError| {
        report(step, Err(e.to_string()));
        e
    };
    let addrs: Vec<SocketAddr> = match (cfg.host.as_str(), cfg.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(fail(
                &mut report,
                "dns",
                TransportError::temporary(server, format!("cannot resolve host name {}: {e}", cfg.host)),
            ));
        }
    };
    let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    report("dns", Ok(format!("{} resolves to {}", cfg.host, shown.join(", "))));
    let mut last = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, cfg.limits.connect_timeout) {
            Ok(s) => {
                stream = Some((s, *addr));
                break;
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    let Some((stream, addr)) = stream else {
        let why = last.unwrap_or_else(|| "no address".into());
        return Err(fail(
            &mut report,
            "tcp",
            TransportError::temporary(server, format!("cannot connect: {why}")),
        ));
    };
    let timeout = Some(cfg.limits.timeout);
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let _ = stream.set_nodelay(true);
    report("tcp", Ok(format!("connected to {addr}")));

    let op_timeout = cfg.limits.timeout;
    let connect_timeout = cfg.limits.connect_timeout;
    let mut ftp = RustlsFtpStream::connect_with_stream(stream)
        .map_err(|e| fail(&mut report, "tcp", classify(server, e)))?
        .passive_stream_builder(move |addr| {
            let s = TcpStream::connect_timeout(&addr, connect_timeout).map_err(FtpError::ConnectionError)?;
            let _ = s.set_read_timeout(Some(op_timeout));
            let _ = s.set_write_timeout(Some(op_timeout));
            Ok(s)
        });
    if let FtpTls::Explicit { ca_file, pin_sha256 } = &cfg.tls {
        let tls = tls_config(ca_file.as_deref(), *pin_sha256).map_err(|e| {
            fail(&mut report, "tls", TransportError::Untrusted { what: server.to_string(), why: e })
        })?;
        ftp = ftp
            .into_secure(RustlsConnector::from(Arc::new(tls)), &cfg.host)
            .map_err(|e| fail(&mut report, "tls", classify(server, e)))?;
        let how = match (pin_sha256, ca_file) {
            (Some(_), _) => "certificate matches the pinned SHA-256".to_string(),
            (None, Some(ca)) => format!("certificate verified (roots include {})", ca.display()),
            (None, None) => "certificate verified against the public roots".to_string(),
        };
        report("tls", Ok(format!("TLS 1.2, {how}")));
    }
    ftp.login(cfg.user.as_str(), cfg.password.expose()).map_err(|e| {
        let e = match classify(server, e) {
            TransportError::Auth { what, why } => TransportError::Auth {
                what,
                why: format!("user {} with the password from ${}: {why}", cfg.user, cfg.password.env),
            },
            e => e,
        };
        fail(&mut report, "login", e)
    })?;
    report("login", Ok(format!("logged in as {} with the password from ${}", cfg.user, cfg.password.env)));
    if !cfg.folder.is_empty() && cfg.folder != "." {
        ftp.cwd(cfg.folder.as_str()).map_err(|e| {
            let e = match classify(server, e) {
                TransportError::NotFound { what } => {
                    TransportError::permanent(what, format!("cannot change to folder {}", cfg.folder))
                }
                e => e,
            };
            fail(&mut report, "list", e)
        })?;
    }
    Ok(ftp)
}

/// TLS 1.2 with the ring provider; roots from webpki-roots plus `ca_file`,
/// or a verifier that accepts exactly the pinned certificate.
fn tls_config(ca_file: Option<&std::path::Path>, pin: Option<[u8; 32]>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?;
    if let Some(pin) = pin {
        warn!(
            "FTPS certificate pinned by SHA-256: the chain is not verified, only that exact certificate is accepted."
        );
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
        let mut n = 0;
        for c in certs {
            let c = c.map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("ca_file {} holds no PEM certificate", ca.display()));
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accept exactly one certificate, by the SHA-256 of its DER bytes; the
/// handshake signatures are still checked, so the server must hold its key.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate SHA-256 {} does not match the pinned tls_pin_sha256",
                hex(&got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
