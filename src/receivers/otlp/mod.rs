//! `otlp` receiver: OTLP/gRPC on `grpc.endpoint` (TraceService, MetricsService, LogsService) and
//! OTLP/HTTP on `http.endpoint` (`POST /v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON,
//! optionally gzip), so applications point their OTLP exporters at celeriac exactly as at an
//! OpenTelemetry Collector. What arrives is passed on unchanged; a protobuf request bound only
//! for pipelines that forward it (`batch`, `memory_limiter`, `otlp`/`otlphttp` exporters) is not
//! even decoded: its framing is checked and its bytes are passed on ([`Ingest::protobuf`]).
//!
//! Backpressure: a request is handed to the pipeline without waiting; when the pipeline is full
//! the client gets the retryable answer the OTLP spec prescribes (gRPC `UNAVAILABLE`, HTTP 503
//! with `Retry-After`), so it backs off and memory stays bounded. Oversized, corrupt or
//! undecodable payloads get a clear non-retryable error (`RESOURCE_EXHAUSTED`/`INVALID_ARGUMENT`,
//! HTTP 413/400/415) and are counted in `celeriac_receiver_refused_requests_total{reason}`.
//! A signal that no pipeline takes from this receiver is answered `UNIMPLEMENTED` / 404.
//!
//! Settings, in the collector's shape (a protocol is served only when it is listed; a listed
//! protocol with no value takes its defaults):
//! ```yaml
//! otlp:
//!   protocols:
//!     grpc:
//!       endpoint: localhost:4317        # 0.0.0.0:4317 or :4317 to accept other hosts
//!       max_recv_msg_size_mib: 4
//!       tls:                            # optional: serve TLS (see crate::tls)
//!         cert_file: /etc/celeriac/server.pem
//!         key_file: /etc/celeriac/server.key
//!         client_ca_file: /etc/celeriac/clients.pem   # optional: require client certificates
//!       keepalive: { server_parameters: { time: 1m, timeout: 20s } }   # HTTP/2 pings (crate::serve)
//!       max_concurrent_streams: 100     # and read_header_timeout, idle_timeout, max_connections
//!       include_metadata: false
//!     http:
//!       endpoint: localhost:4318
//!       max_request_body_size: 20971520 # bytes, after decompression
//!       traces_url_path: /v1/traces     # metrics_url_path, logs_url_path likewise
//!       cors: { allowed_origins: ["https://*.example.com"], allowed_headers: [x-custom], max_age: 7200 }
//!       tls: { cert_file: …, key_file: …, client_ca_file: … }   # as for grpc
//!       read_header_timeout: 10s        # and idle_timeout, max_connections (crate::serve)
//!   auth:
//!     bearer_token: ${env:OTLP_TOKEN} # optional: require `authorization: Bearer <token>`
//! ```
//! celeriac's older flat shape (`grpc:`/`http:` beside `auth:`, each with `enabled`, both on by
//! default, `max_request_body_size_mib`) is still read, with a deprecation warning at start.
//! `keepalive` and `include_metadata` are read and kept for the shared listener settings; the
//! receiver does not yet act on them.

mod grpc;
mod http;

pub use http::decode_body as decode_http_body;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, ComponentError, Context, Output, Receiver, SendError};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, types::Secret, DecodeError, Value};
use crate::serve::ServerSettings;
use crate::signal::{self, Encoded, Signal, SignalKind, Undecodable};
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
    /// celeriac's flat shape only; under `protocols:` a listed protocol is enabled.
    #[serde(skip_serializing)]
    pub enabled: bool,
    #[serde(with = "types::listen_addr")]
    pub endpoint: SocketAddr,
    pub max_recv_msg_size_mib: usize,
    pub tls: ServerTlsConfig,
    pub include_metadata: bool,
    #[serde(flatten)]
    pub server: ServerSettings,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4317)),
            max_recv_msg_size_mib: 4,
            tls: ServerTlsConfig::default(),
            include_metadata: false,
            server: ServerSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// celeriac's flat shape only; under `protocols:` a listed protocol is enabled.
    #[serde(skip_serializing)]
    pub enabled: bool,
    #[serde(with = "types::listen_addr")]
    pub endpoint: SocketAddr,
    /// Largest body, in bytes, after decompression (the collector's key).
    pub max_request_body_size: usize,
    /// celeriac's older key, in MiB; wins over `max_request_body_size` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_body_size_mib: Option<usize>,
    pub tls: ServerTlsConfig,
    pub cors: http::Cors,
    pub include_metadata: bool,
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    #[serde(flatten)]
    pub server: ServerSettings,
}

impl HttpConfig {
    /// The body limit in bytes.
    pub fn body_limit(&self) -> usize {
        self.max_request_body_size_mib
            .map_or(self.max_request_body_size, |m| m << 20)
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            endpoint: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_body_size: 20 << 20,
            max_request_body_size_mib: None,
            tls: ServerTlsConfig::default(),
            cors: http::Cors::default(),
            include_metadata: false,
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            server: ServerSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    #[serde(deserialize_with = "types::non_empty_secret::deserialize")]
    pub bearer_token: Option<Secret>,
}

/// The receiver's settings, from either shape (see the module docs); written out (by
/// `celeriac components`) in the collector's shape.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RawOtlpConfig")]
pub struct OtlpConfig {
    pub grpc: GrpcConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    /// Read from celeriac's older flat shape (warned about at start).
    pub flat_shape: bool,
}

impl Serialize for OtlpConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Protocols<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            grpc: Option<&'a GrpcConfig>,
            #[serde(skip_serializing_if = "Option::is_none")]
            http: Option<&'a HttpConfig>,
        }
        #[derive(Serialize)]
        struct View<'a> {
            protocols: Protocols<'a>,
            auth: &'a AuthConfig,
        }
        View {
            protocols: Protocols {
                grpc: self.grpc.enabled.then_some(&self.grpc),
                http: self.http.enabled.then_some(&self.http),
            },
            auth: &self.auth,
        }
        .serialize(s)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawOtlpConfig {
    protocols: Option<RawProtocols>,
    grpc: Option<GrpcConfig>,
    http: Option<HttpConfig>,
    auth: AuthConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawProtocols {
    #[serde(deserialize_with = "listed")]
    grpc: Option<GrpcConfig>,
    #[serde(deserialize_with = "listed")]
    http: Option<HttpConfig>,
}

/// A protocol key that is present is listed, even with a null value (its defaults).
fn listed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(|o| Some(o.unwrap_or_default()))
}

impl TryFrom<RawOtlpConfig> for OtlpConfig {
    type Error = String;

    fn try_from(raw: RawOtlpConfig) -> Result<Self, String> {
        let flat = raw.grpc.is_some() || raw.http.is_some();
        let (grpc, http) = match raw.protocols {
            Some(_) if flat => {
                return Err("give `protocols:` (the collector's shape) or celeriac's flat `grpc:`/`http:`, not both".into())
            }
            Some(p) => {
                if p.grpc.is_none() && p.http.is_none() {
                    return Err("protocols: list at least one of grpc and http".into());
                }
                let grpc = p.grpc.unwrap_or(GrpcConfig {
                    enabled: false,
                    ..GrpcConfig::default()
                });
                let http = p.http.unwrap_or(HttpConfig {
                    enabled: false,
                    ..HttpConfig::default()
                });
                (grpc, http)
            }
            None => (raw.grpc.unwrap_or_default(), raw.http.unwrap_or_default()),
        };
        Ok(OtlpConfig {
            grpc,
            http,
            auth: raw.auth,
            flat_shape: flat,
        })
    }
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
    for (prefix, server) in [("grpc", &cfg.grpc.server), ("http", &cfg.http.server)] {
        server
            .check()
            .map_err(|(key, msg)| DecodeError::new(format!("{prefix}.{key}"), msg))?;
    }
    if cfg.grpc.max_recv_msg_size_mib == 0 {
        return Err(DecodeError::new(
            "grpc.max_recv_msg_size_mib",
            "must be at least 1",
        ));
    }
    if cfg.http.body_limit() == 0 {
        return Err(DecodeError::new(
            "http.max_request_body_size",
            "must be at least 1",
        ));
    }
    for (key, path) in [
        ("traces_url_path", &cfg.http.traces_url_path),
        ("metrics_url_path", &cfg.http.metrics_url_path),
        ("logs_url_path", &cfg.http.logs_url_path),
    ] {
        if !path.starts_with('/') {
            return Err(DecodeError::new(
                format!("http.{key}"),
                "must start with `/`",
            ));
        }
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
    /// OTLP/HTTP paths per signal and CORS (`protocols.http`).
    pub routes: http::Routes,
    token: Option<String>,
    telemetry: Telemetry,
    component: Arc<str>,
}

impl Ingest {
    fn new(ctx: &Context, out: Output, token: Option<String>, routes: http::Routes) -> Self {
        // Accepted and refused items are counted per signal by the pipeline runtime
        // (`celeriac_receiver_accepted_items_total`); refused requests are counted here.
        Ingest {
            out,
            routes,
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

    /// A protobuf request body of `kind` as a signal: left in its wire form when every pipeline
    /// this receiver feeds with `kind` takes that and the body's framing is sound, decoded
    /// otherwise (so a malformed body is refused by the decode, as it always was).
    pub fn protobuf(&self, kind: SignalKind, body: Bytes) -> Result<Signal, Undecodable> {
        if self.out.takes_encoded(kind) {
            if let Ok(e) = Encoded::read(kind, body.clone()) {
                return Ok(Signal::Encoded(e));
            }
        }
        signal::decode_request(kind, body)
    }

    /// Hand a batch to the pipeline without waiting; its bytes arrived at `arrived`
    /// (where the pipeline latency starts).
    pub fn push(&self, signal: Signal, arrived: Instant) -> Result<(), Refusal> {
        let kind = signal.kind();
        if !self.out.wants(kind) {
            return Err(Refusal::NoPipeline);
        }
        match self.out.try_send_since(signal, Some(arrived)) {
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
    /// Ready once every listed protocol's port is bound.
    fn reports_ready(&self) -> bool {
        true
    }

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
                http::Routes::new(&self.cfg.http),
            ));
            if self.cfg.flat_shape {
                tracing::warn!(component = %ctx.id, "Deprecated: `grpc:`/`http:` directly under the otlp receiver; write them under `protocols:` as the OpenTelemetry Collector does (only listed protocols are served).");
            }
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
                    self.cfg.grpc.server.clone(),
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
                    self.cfg.http.body_limit(),
                    self.cfg.http.server.clone(),
                    ctx.shutdown.clone(),
                ));
            }
            drop(ingest);
            ctx.ready.set();
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

    fn cfg(yaml: &str) -> Result<OtlpConfig, DecodeError> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        config::decode(&v)
    }

    /// otlpreceiver/config.go: only the listed protocols are served; `grpc:` with no value
    /// takes the defaults (localhost:4317 / localhost:4318).
    #[test]
    fn protocols_shape() {
        let c = cfg("protocols: {grpc: }").unwrap();
        assert!(c.grpc.enabled && !c.http.enabled && !c.flat_shape);
        assert_eq!(c.grpc.endpoint, SocketAddr::from(([127, 0, 0, 1], 4317)));
        let c = cfg("protocols:\n  http:\n").unwrap();
        assert!(!c.grpc.enabled && c.http.enabled);
        assert_eq!(c.http.endpoint, SocketAddr::from(([127, 0, 0, 1], 4318)));
        let c = cfg("protocols:\n  grpc: {endpoint: 0.0.0.0:14317, max_recv_msg_size_mib: 8, include_metadata: true, keepalive: {server_parameters: {time: 2h, timeout: 20s}, enforcement_policy: {min_time: 5m, permit_without_stream: true}}}\n  http: {endpoint: ':14318', max_request_body_size: 1048576, traces_url_path: /t, metrics_url_path: /m, logs_url_path: /l, cors: {allowed_origins: ['http://*'], allowed_headers: [x-a], max_age: 60}}").unwrap();
        assert_eq!(c.grpc.endpoint, SocketAddr::from(([0, 0, 0, 0], 14317)));
        assert_eq!(
            c.grpc.server.keepalive.server_parameters.time,
            std::time::Duration::from_secs(7200)
        );
        assert_eq!(c.http.endpoint, SocketAddr::from(([0, 0, 0, 0], 14318)));
        assert_eq!(c.http.body_limit(), 1 << 20);
        assert_eq!(c.http.traces_url_path, "/t");
        assert_eq!(c.http.cors.allowed_origins, vec!["http://*".to_string()]);
        assert!(build(
            &serde_yaml_ng::from_str("protocols: {http: {traces_url_path: t}}").unwrap()
        )
        .is_err());
        // Every protocol error names its key.
        assert_eq!(
            cfg("protocols: {grpc: {bogus: 1}}").unwrap_err().path,
            "protocols.grpc.bogus"
        );
        assert_eq!(
            cfg("protocols: {thrift: {}}").unwrap_err().path,
            "protocols.thrift"
        );
        assert!(cfg("protocols: {}").is_err());
        assert!(cfg("protocols: {grpc: }\ngrpc: {}").is_err());
    }

    /// celeriac's flat shape is still read: both protocols on by default.
    #[test]
    fn flat_shape_alias() {
        let c = cfg("grpc: {endpoint: 127.0.0.1:9}\nhttp: {max_request_body_size_mib: 2}").unwrap();
        assert!(c.flat_shape && c.grpc.enabled && c.http.enabled);
        assert_eq!(c.http.body_limit(), 2 << 20);
        let c = cfg("{}").unwrap();
        assert!(c.grpc.enabled && c.http.enabled);
        // Written out in the collector's shape, and read back the same.
        let text = serde_yaml_ng::to_string(&OtlpConfig::default()).unwrap();
        assert!(text.starts_with("protocols:\n  grpc:\n"), "{text}");
        let back = cfg(&text).unwrap();
        assert!(back.grpc.enabled && back.http.enabled && !back.flat_shape);
    }
}
