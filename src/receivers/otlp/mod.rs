//! `otlp` receiver: OTLP/gRPC on `grpc.endpoint` (TraceService, MetricsService, LogsService) and
//! OTLP/HTTP on `http.endpoint` (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON,
//! optionally gzip), so applications point their OTLP exporters at celeriac exactly as at an
//! OpenTelemetry Collector. What arrives is passed on unchanged.
//!
//! Backpressure: a request is handed to the pipeline without waiting; when the pipeline is full
//! the client gets the retryable answer the OTLP spec prescribes (gRPC `UNAVAILABLE`, HTTP 503
//! with `Retry-After`), so it backs off and memory stays bounded. Oversized, corrupt or
//! undecodable payloads get a clear non-retryable error (`RESOURCE_EXHAUSTED`/`INVALID_ARGUMENT`,
//! HTTP 413/400/415) and are counted in `celeriac_receiver_refused_requests_total{reason}`.
//! A signal that no pipeline takes from this receiver is answered `UNIMPLEMENTED` / 404.
//!
//! Settings:
//! ```yaml
//! otlp:
//!   grpc:
//!     enabled: true
//!     endpoint: 127.0.0.1:4317        # 0.0.0.0:4317 to accept other hosts
//!     max_recv_msg_size_mib: 4
//!     tls:                            # optional: serve TLS (see crate::tls)
//!       cert_file: /etc/celeriac/server.pem
//!       key_file: /etc/celeriac/server.key
//!       client_ca_file: /etc/celeriac/clients.pem   # optional: require client certificates
//!   http:
//!     enabled: true
//!     endpoint: 127.0.0.1:4318
//!     max_request_body_size_mib: 20   # after decompression
//!     tls: { cert_file: …, key_file: …, client_ca_file: … }   # as for grpc
//!   auth:
//!     bearer_token: ${env:OTLP_TOKEN} # optional: require `authorization: Bearer <token>`
//! ```

mod grpc;
mod http;

pub use http::decode_body as decode_http_body;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, ComponentError, Context, Output, Receiver, SendError};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, types::Secret, DecodeError, Value};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Telemetry;
use crate::tls::{Acceptor, ServerTlsConfig};

pub const REGISTRATION: Registration = Registration {
    type_name: "otlp",
    factory: Factory::Receiver {
        produces: &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<OtlpConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    pub enabled: bool,
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    pub max_recv_msg_size_mib: usize,
    pub tls: ServerTlsConfig,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4317)),
            max_recv_msg_size_mib: 4,
            tls: ServerTlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    #[serde(with = "types::addr")]
    pub endpoint: SocketAddr,
    pub max_request_body_size_mib: usize,
    pub tls: ServerTlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_body_size_mib: 20,
            tls: ServerTlsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(deserialize_with = "types::non_empty_secret::deserialize")]
    pub bearer_token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
}

fn build(v: &Value) -> BuildResult<dyn Receiver> {
    let cfg: OtlpConfig = config::decode(v)?;
    if !cfg.grpc.enabled && !cfg.http.enabled {
        return Err(DecodeError::new("", "enable at least one of grpc and http"));
    }
    if cfg.grpc.enabled && cfg.http.enabled && cfg.grpc.endpoint == cfg.http.endpoint {
        return Err(DecodeError::new(
            "http.endpoint",
            "grpc and http cannot share an address",
        ));
    }
    for (prefix, tls) in [("grpc", &cfg.grpc.tls), ("http", &cfg.http.tls)] {
        tls.check()
            .map_err(|(key, msg)| DecodeError::new(format!("{prefix}.{key}"), msg))?;
    }
    if cfg.grpc.max_recv_msg_size_mib == 0 {
        return Err(DecodeError::new(
            "grpc.max_recv_msg_size_mib",
            "must be at least 1",
        ));
    }
    if cfg.http.max_request_body_size_mib == 0 {
        return Err(DecodeError::new(
            "http.max_request_body_size_mib",
            "must be at least 1",
        ));
    }
    // Read certificates and keys now: a bad file fails `validate` and startup, not a handshake.
    let acceptor = |prefix: &str, tls: &ServerTlsConfig, alpn: &[&[u8]]| {
        tls.server_config(alpn)
            .map(Acceptor::new)
            .map_err(|e| DecodeError::new(format!("{prefix}.{}", e.key()), e.to_string()))
    };
    let grpc_tls = acceptor("grpc", &cfg.grpc.tls, &[b"h2"])?;
    let http_tls = acceptor("http", &cfg.http.tls, &[b"http/1.1"])?;
    Ok(Box::new(OtlpReceiver {
        cfg,
        grpc_tls,
        http_tls,
    }))
}

pub struct OtlpReceiver {
    cfg: OtlpConfig,
    grpc_tls: Acceptor,
    http_tls: Acceptor,
}

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No pipeline takes this signal from this receiver.
    NoPipeline,
    /// The pipeline is full: retry later.
    Full,
    /// A memory_limiter refuses data: retry later.
    MemoryLimit,
    /// Shutting down.
    Closed,
}

/// What the gRPC and HTTP front ends share: the pipeline output, auth and counters.
pub struct Ingest {
    out: Output,
    token: Option<String>,
    telemetry: Telemetry,
    component: Arc<str>,
}

impl Ingest {
    fn new(ctx: &Context, out: Output, token: Option<String>) -> Self {
        // Accepted and refused items are counted per signal by the pipeline runtime
        // (`celeriac_receiver_accepted_items_total`); refused requests are counted here.
        Ingest {
            out,
            token,
            telemetry: ctx.telemetry.clone(),
            component: ctx.id.clone(),
        }
    }

    /// Count a refused request under `reason`.
    pub fn refuse(&self, protocol: &'static str, reason: &'static str) {
        self.telemetry
            .counter(
                "celeriac_receiver_refused_requests_total",
                "Requests a receiver refused, by reason.",
                &[
                    ("component", &self.component),
                    ("protocol", protocol),
                    ("reason", reason),
                ],
            )
            .inc();
    }

    /// `true` when the presented `authorization` header value is acceptable.
    pub fn authorized(&self, header: Option<&[u8]>) -> bool {
        self.token
            .as_deref()
            .is_none_or(|token| crate::telemetry::bearer_matches(header, token))
    }

    pub fn wants(&self, kind: SignalKind) -> bool {
        self.out.wants(kind)
    }

    /// A memory_limiter refuses `kind` now: the request may be turned away before decoding.
    pub fn refusing(&self, kind: SignalKind) -> bool {
        self.out.refusing(kind)
    }

    /// Hand a decoded batch to the pipeline without waiting.
    pub fn push(&self, signal: Signal) -> Result<(), Refusal> {
        let kind = signal.kind();
        if !self.out.wants(kind) {
            return Err(Refusal::NoPipeline);
        }
        match self.out.try_send(signal) {
            Ok(()) => Ok(()),
            Err(SendError::Full) => Err(Refusal::Full),
            Err(SendError::Refused) => Err(Refusal::MemoryLimit),
            Err(SendError::Closed) => Err(Refusal::Closed),
        }
    }
}

/// Completes the TLS handshake of an accepted connection (a no-op for plaintext). A failed
/// handshake is counted as a refused request (`reason="tls_handshake"`) and logged at debug
/// level: scanners and misconfigured clients must not flood the agent's log.
async fn handshake(
    tls: &Acceptor,
    stream: tokio::net::TcpStream,
    ingest: &Ingest,
    protocol: &'static str,
) -> Option<crate::tls::Conn> {
    match tls.accept(stream).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            ingest.refuse(protocol, "tls_handshake");
            tracing::debug!(component = %ingest.component, protocol, error = %e, "TLS handshake failed.");
            None
        }
    }
}

impl Receiver for OtlpReceiver {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun {
        Box::pin(async move {
            let ingest = Arc::new(Ingest::new(
                &ctx,
                out,
                self.cfg
                    .auth
                    .bearer_token
                    .as_ref()
                    .map(|t| t.expose().to_owned()),
            ));
            let mut servers = tokio::task::JoinSet::new();
            if self.cfg.grpc.enabled {
                let addr = self.cfg.grpc.endpoint;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ComponentError::Bind { addr, source })?;
                let tls = self.grpc_tls.is_tls();
                tracing::info!(component = %ctx.id, %addr, tls, "OTLP/gRPC listening.");
                servers.spawn(grpc::serve(
                    listener,
                    self.grpc_tls.clone(),
                    ingest.clone(),
                    self.cfg.grpc.max_recv_msg_size_mib << 20,
                    ctx.shutdown.clone(),
                ));
            }
            if self.cfg.http.enabled {
                let addr = self.cfg.http.endpoint;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ComponentError::Bind { addr, source })?;
                let tls = self.http_tls.is_tls();
                tracing::info!(component = %ctx.id, %addr, tls, "OTLP/HTTP listening.");
                servers.spawn(http::serve(
                    listener,
                    self.http_tls.clone(),
                    ingest.clone(),
                    self.cfg.http.max_request_body_size_mib << 20,
                    ctx.shutdown.clone(),
                ));
            }
            drop(ingest);
            while servers.join_next().await.is_some() {}
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks() {
        assert!(build(&Value::Null).is_ok());
        let v: Value =
            serde_yaml_ng::from_str("grpc: {enabled: false}\nhttp: {enabled: false}").unwrap();
        assert!(build(&v).is_err());
        let v: Value =
            serde_yaml_ng::from_str("grpc: {endpoint: 127.0.0.1:9}\nhttp: {endpoint: 127.0.0.1:9}")
                .unwrap();
        assert_eq!(build(&v).err().unwrap().path, "http.endpoint");
        let v: Value = serde_yaml_ng::from_str("auth: {bearer_token: s3cret}").unwrap();
        let cfg: OtlpConfig = config::decode(&v).unwrap();
        assert!(!format!("{cfg:?}").contains("s3cret"));
    }
}
