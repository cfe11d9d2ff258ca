//! TLS settings shared by every network component, and the rustls configurations built from them.
//!
//! This module owns the two YAML shapes (`tls:` on a server and `tls:` on a client), reading PEM
//! certificates and keys from disk, and turning them into rustls configurations that always use
//! the `ring` provider (the one tonic already brings, so no process-wide default is needed):
//!
//! ```yaml
//! # a server (OTLP receivers): TLS when cert_file/key_file are set, mTLS with client_ca_file
//! tls:
//!   cert_file: /etc/celeriac/server.pem
//!   key_file: /etc/celeriac/server.key
//!   client_ca_file: /etc/celeriac/clients-ca.pem   # optional: require a client certificate
//!
//! # a client (exporters, rediss://): the system roots plus ca_file, optional client certificate
//! tls:
//!   ca_file: /etc/celeriac/ca.pem
//!   cert_file: /etc/celeriac/client.pem   # with key_file, for backends that require mTLS
//!   key_file: /etc/celeriac/client.key
//! ```
//!
//! [`Acceptor`] wraps accepted TCP streams for the HTTP servers: plain when TLS is off, a rustls
//! server session otherwise, with a handshake deadline so an idle or slow peer cannot hold a task.
//! [`Connector`] does the client side for connections the agent opens itself (`rediss://`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long a client has to finish the TLS handshake after connecting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS configuration could not be built. Names the file and the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{key} {}: {reason}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

impl TlsError {
    /// The setting the error is about (`tls.cert_file`, …), for config diagnostics.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. } | TlsError::Pem { key, .. } => key,
            TlsError::Config(_) => "tls",
        }
    }
}

/// `tls:` of a server. TLS is on when `cert_file` and `key_file` are set.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to; when set, clients without a valid
    /// certificate are refused during the handshake (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTlsConfig {
    /// Checks that the settings go together (both or neither of cert/key; a client CA only
    /// with a server certificate) without touching the files.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Err(("tls.key_file", "is required with tls.cert_file")),
            (None, Some(_)) => return Err(("tls.cert_file", "is required with tls.key_file")),
            _ => {}
        }
        if self.cert_file.is_none() && self.client_ca_file.is_some() {
            return Err((
                "tls.client_ca_file",
                "needs tls.cert_file and tls.key_file (a TLS server)",
            ));
        }
        Ok(())
    }

    /// `true` when the server speaks TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The rustls server configuration, or `None` when TLS is off. `alpn` lists the protocols
    /// the server offers (e.g. `h2` for gRPC), most preferred first.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        self.check()
            .map_err(|(k, m)| TlsError::Config(format!("{k} {m}")))?;
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let chain = read_certs("tls.cert_file", cert)?;
        let key = read_key("tls.key_file", key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca_file {
            Some(ca) => {
                let roots = read_roots("tls.client_ca_file", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::Config(format!("tls.client_ca_file: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("tls.cert_file/tls.key_file: {e}")))?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Some(Arc::new(cfg)))
    }
}

/// `tls:` of a client: the system's roots plus `ca_file`, and a client certificate when the
/// server asks for one.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// Extra CA bundle (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for servers that require mTLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ClientTlsConfig {
    /// Checks that `cert_file` and `key_file` come together.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(("tls.key_file", "is required with tls.cert_file")),
            (None, Some(_)) => Err(("tls.cert_file", "is required with tls.key_file")),
            _ => Ok(()),
        }
    }

    /// `true` when anything is set (so a plaintext endpoint with these settings is a mistake).
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    /// The rustls client configuration: system roots (those that parse) plus `ca_file`, and
    /// the client certificate if set.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
        self.check()
            .map_err(|(k, m)| TlsError::Config(format!("{k} {m}")))?;
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system bundle may hold certificates rustls cannot use; skip those.
            let _ = roots.add(cert);
        }
        if let Some(ca) = &self.ca_file {
            for cert in read_certs("tls.ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    key: "tls.ca_file",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::Config(
                "no trusted CA certificates: the system has none and tls.ca_file is not set".into(),
            ));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut cfg = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    read_certs("tls.cert_file", cert)?,
                    read_key("tls.key_file", key)?,
                )
                .map_err(|e| TlsError::Config(format!("tls.cert_file/tls.key_file: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

/// A client configuration that trusts no one, for HTTP clients whose endpoint is `http://` but
/// whose connector type carries a TLS half anyway (it is never used: any TLS handshake fails).
pub fn untrusting_client_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            key,
            path: path.to_path_buf(),
            reason: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            key,
            path: path.to_path_buf(),
            reason: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_roots(key: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(key, path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            key,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn read_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        key,
        path: path.to_path_buf(),
        reason: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

/// Turns accepted TCP connections into the server's streams: plain, or TLS after a handshake.
#[derive(Clone, Default)]
pub struct Acceptor(Option<tokio_rustls::TlsAcceptor>);

impl Acceptor {
    /// An acceptor for `cfg` (`None` = plaintext).
    pub fn new(cfg: Option<Arc<ServerConfig>>) -> Acceptor {
        Acceptor(cfg.map(tokio_rustls::TlsAcceptor::from))
    }

    /// `true` when connections are TLS.
    pub fn is_tls(&self) -> bool {
        self.0.is_some()
    }

    /// Wraps `stream`; for TLS, completes the handshake (bounded by a deadline). A failed
    /// handshake (wrong protocol, untrusted client certificate, timeout) is an error the
    /// caller logs at debug level and counts: it says nothing about the agent's health.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Conn> {
        let _ = stream.set_nodelay(true);
        match &self.0 {
            None => Ok(Conn::Plain(stream)),
            Some(acceptor) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => Ok(Conn::Tls(Box::new(tls))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    )),
                }
            }
        }
    }
}

/// Connects TCP streams as a TLS client (e.g. to `rediss://`), after the TCP connect.
#[derive(Clone)]
pub struct Connector(tokio_rustls::TlsConnector);

impl Connector {
    pub fn new(cfg: ClientConfig) -> Connector {
        Connector(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    }

    /// The TLS handshake as a client of `host` (a DNS name or an IP address).
    pub async fn connect(&self, host: &str, stream: TcpStream) -> io::Result<Conn> {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
        Ok(Conn::Client(Box::new(self.0.connect(name, stream).await?)))
    }
}

/// A connection, plaintext or TLS (as a server or as a client).
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Conn::Client(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
            Conn::Client(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_settings_must_pair() {
        let c = ServerTlsConfig {
            cert_file: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "tls.key_file");
        let c = ServerTlsConfig {
            client_ca_file: Some("ca".into()),
            ..Default::default()
        };
        assert_eq!(c.check().unwrap_err().0, "tls.client_ca_file");
        assert!(!ServerTlsConfig::default().enabled());
        assert!(ServerTlsConfig::default()
            .server_config(&[])
            .unwrap()
            .is_none());
    }

    #[test]
    fn missing_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = ServerTlsConfig {
            cert_file: Some(dir.path().join("nope.pem")),
            key_file: Some(dir.path().join("nope.key")),
            client_ca_file: None,
        };
        let e = c.server_config(&[]).unwrap_err().to_string();
        assert!(e.contains("tls.cert_file") && e.contains("nope.pem"), "{e}");

        let junk = dir.path().join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let c = ClientTlsConfig {
            ca_file: Some(junk.clone()),
            ..Default::default()
        };
        let e = c.client_config(&[]).unwrap_err().to_string();
        assert!(
            e.contains("tls.ca_file") && e.contains("no CERTIFICATE"),
            "{e}"
        );
    }
}
