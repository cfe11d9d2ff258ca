//! `otlp` exporter: traces, metrics and logs to an OTLP/gRPC endpoint (a Collector, Tempo, …).
//!
//! This module owns the exporter's settings, its sending queue and its senders; the retry rules
//! and backoff are in [`retry`]. Batches are sent as they arrive, each encoded once as its OTLP
//! export request ([`wire`]: retries and the file queue reuse the same bytes), through a queue
//! bounded by `sending_queue.queue_size` in the unit of `sending_queue.sizer` (batches by
//! default, or items, or bytes: [`sizer`]) drained by `num_consumers` concurrent senders. A full
//! queue makes the exporter stop reading its input, which slows its pipelines down
//! (backpressure), never drops; only a batch larger than the whole queue is dropped
//! (`reason="queue_full"`).
//!
//! With `sending_queue.storage: file` the queue is a [`FileQueue`] in
//! `<directory>/<component>` instead: every batch is appended (encoded as its OTLP export
//! request) as it arrives, senders take batches in order and acknowledge each once it is
//! delivered or dropped, so batches survive an outage of any length up to `max_size_mib`, a
//! crash and a restart (at-least-once: a batch in flight at a crash is sent again). A full file
//! queue drops its oldest batches (`reason="queue_full"`) instead of holding the pipeline back;
//! at shutdown a batch that still fails stays on disk. With `num_consumers: 1` batches are
//! delivered in the order they arrived; with more, in-order dispatch but concurrent delivery.
//!
//! Failures: retryable codes (see [`retry`]) are retried with jittered exponential backoff until
//! `max_elapsed_time`; anything else is dropped and counted in
//! `celeriac_exporter_dropped_items_total{component, reason}` with reason `permanent`,
//! `retries_exhausted`, `retry_disabled`, `shutdown` or `partial_success` (items the server
//! rejected in an otherwise successful reply, which is never retried), and with the file queue
//! `queue_full`, `queue_error` (the batch could not be written) and `corrupt` (a torn tail cut
//! off at start). Warnings are logged at
//! most every 10 s per kind. Header values are never logged (they usually carry tokens).
//!
//! Shutdown: when the input closes the queue is drained. Once the agent is shutting down, a
//! sender in a backoff wait stops waiting, tries once more, and drops the batch (reason
//! `shutdown`) only if that last try fails too, so the agent's deadline is kept.
//!
//! Settings:
//! ```yaml
//! otlp:
//!   endpoint: https://otel.example.com:4317  # http:// = plaintext; host:port = TLS unless tls.insecure
//!   compression: gzip           # gzip | none
//!   headers: { authorization: "Bearer ${env:TOKEN}" }
//!   timeout: 5s                 # per export call (and per connection attempt)
//!   tls:
//!     insecure: false           # true: plaintext for a host:port endpoint
//!     ca_file: /etc/ssl/my-ca.pem  # trusted in addition to the system roots
//!   retry_on_failure:
//!     enabled: true
//!     initial_interval: 5s
//!     max_interval: 30s
//!     max_elapsed_time: 5m      # 0 = retry forever
//!     multiplier: 1.5
//!     randomization_factor: 0.5
//!   sending_queue:
//!     enabled: true             # false: one batch in flight, no queue
//!     sizer: requests           # what queue_size counts: requests (batches) | items | bytes
//!     queue_size: 1000          # memory storage: held at most, waiting or being exported
//!     num_consumers: 10         # concurrent export calls
//!     storage: memory           # or file, or a file_storage extension's id (the collector's way)
//!     directory: /var/lib/celeriac/queue   # required with file
//!     max_size_mib: 256         # file storage: oldest batches dropped beyond this
//! ```

pub mod http;
pub mod retry;
pub mod sizer;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::component::{BoxRun, ComponentError, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, DecodeError, Value};
use crate::exporters::retry::{pause, Attempts};
use crate::exporters::sending_queue::{self, DiskQueue, FileQueue, Storage};
use crate::signal::{Batch, SignalKind};
use crate::telemetry::{Counter, Gauge, Throttle};
use retry::{RetryConfig, Verdict};
use sizer::Sizer;
use wire::{Encoded, PartialSuccess, RawCodec};

pub const REGISTRATION: Registration = Registration {
    type_name: "otlp",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Traces, SignalKind::Metrics, SignalKind::Logs],
        build,
    },
    defaults: crate::component::defaults::<OtlpConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

impl QueueConfig {
    /// The queue actually run: `enabled: false` is one batch at a time, in memory.
    pub fn effective(&self) -> QueueConfig {
        if self.enabled {
            return self.clone();
        }
        QueueConfig {
            enabled: false,
            sizer: Sizer::Requests,
            queue_size: 1,
            num_consumers: 1,
            storage: Storage::Memory,
            directory: None,
            max_size_mib: self.max_size_mib,
        }
    }

    /// The checks both OTLP exporters make (the collector's `queuebatch.Config.Validate`, and
    /// what celeriac's file queue cannot do).
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.queue_size == 0 {
            return Err(DecodeError::new(
                "sending_queue.queue_size",
                "must be at least 1",
            ));
        }
        if self.queue_size > Semaphore::MAX_PERMITS {
            return Err(DecodeError::new(
                "sending_queue.queue_size",
                format!("must be at most {}", Semaphore::MAX_PERMITS),
            ));
        }
        if self.num_consumers == 0 {
            return Err(DecodeError::new(
                "sending_queue.num_consumers",
                "must be at least 1",
            ));
        }
        if self.enabled && self.storage == Storage::File && self.sizer != Sizer::Requests {
            return Err(DecodeError::new(
                "sending_queue.sizer",
                format!(
                    "`{}` bounds the in-memory queue; a file queue (`storage`) is bounded by max_size_mib, so leave sizer at `requests`",
                    self.sizer
                ),
            ));
        }
        Ok(())
    }
}

/// Header name → value. `Debug` shows names only: values carry credentials.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Headers(pub BTreeMap<String, String>);

/// Written out (by `celeriac components`) with every value redacted, like its `Debug`.
impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.keys().map(|k| (k, "<redacted>")))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for servers that require mTLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the server certificate is checked against, instead of the endpoint's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name_override: Option<String>,
    /// The collector's "do not check the server certificate"; refused when true (see build).
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The collector's switch: `false` sends each batch before taking the next (one batch in
    /// flight, no queue).
    pub enabled: bool,
    /// What `queue_size` counts: batches (`requests`), `items` or `bytes` (see [`sizer`]).
    pub sizer: Sizer,
    /// What the in-memory queue holds at most (`storage: memory`), waiting or being exported,
    /// in the unit of `sizer`.
    pub queue_size: usize,
    pub num_consumers: usize,
    pub storage: Storage,
    /// Base directory of the file queue; this exporter's queue is a subdirectory named after it.
    pub directory: Option<PathBuf>,
    /// Size of the file queue; the oldest batches are dropped beyond it.
    pub max_size_mib: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            sizer: Sizer::Requests,
            queue_size: 1000,
            num_consumers: 10,
            storage: Storage::Memory,
            directory: None,
            max_size_mib: sending_queue::DEFAULT_MAX_SIZE_MIB,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    pub endpoint: String,
    pub compression: Compression,
    pub headers: Headers,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    pub tls: TlsConfig,
    pub retry_on_failure: RetryConfig,
    pub sending_queue: QueueConfig,
    /// The collector's gRPC load-balancing policy (`pick_first`, `round_robin`); accepted,
    /// celeriac keeps one connection to the endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balancer_name: Option<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://127.0.0.1:4317".into(),
            compression: Compression::Gzip,
            headers: Headers::default(),
            timeout: Duration::from_secs(5),
            tls: TlsConfig::default(),
            retry_on_failure: RetryConfig::default(),
            sending_queue: QueueConfig::default(),
            balancer_name: None,
        }
    }
}

pub(crate) type Metadata = Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>;

/// The endpoint as a URI with scheme, and whether it uses TLS.
fn resolve_endpoint(cfg: &OtlpConfig) -> Result<(String, bool), DecodeError> {
    let e = cfg.endpoint.trim();
    let (uri, tls) = if e.starts_with("http://") {
        (e.to_string(), false)
    } else if e.starts_with("https://") {
        if cfg.tls.insecure {
            return Err(DecodeError::new(
                "tls.insecure",
                "contradicts an https:// endpoint (use http:// for plaintext)",
            ));
        }
        (e.to_string(), true)
    } else if e.contains("://") {
        return Err(DecodeError::new(
            "endpoint",
            "scheme must be http:// or https:// (or none: host:port)",
        ));
    } else if cfg.tls.insecure {
        (format!("http://{e}"), false)
    } else {
        (format!("https://{e}"), true)
    };
    let parsed = Endpoint::from_shared(uri.clone()).map_err(|_| {
        DecodeError::new(
            "endpoint",
            format!("invalid endpoint `{e}`: expected e.g. http://127.0.0.1:4317"),
        )
    })?;
    if parsed.uri().host().is_none_or(str::is_empty) {
        return Err(DecodeError::new("endpoint", "has no host"));
    }
    if !tls && cfg.tls.ca_file.is_some() {
        return Err(DecodeError::new("tls.ca_file", "needs a TLS endpoint"));
    }
    match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(_), None) => {
            return Err(DecodeError::new(
                "tls.key_file",
                "is required with tls.cert_file",
            ))
        }
        (None, Some(_)) => {
            return Err(DecodeError::new(
                "tls.cert_file",
                "is required with tls.key_file",
            ))
        }
        (Some(_), Some(_)) if !tls => {
            return Err(DecodeError::new("tls.cert_file", "needs a TLS endpoint"))
        }
        _ => {}
    }
    if cfg.tls.insecure_skip_verify {
        return Err(DecodeError::new(
            "tls.insecure_skip_verify",
            "celeriac always verifies the server certificate: trust its CA with tls.ca_file (and tls.server_name_override for a name mismatch)",
        ));
    }
    Ok((uri, tls))
}

fn metadata(h: &Headers) -> Result<Metadata, DecodeError> {
    let mut out = Vec::with_capacity(h.0.len());
    for (k, v) in &h.0 {
        let key = MetadataKey::<Ascii>::from_bytes(k.to_ascii_lowercase().as_bytes())
            .ok()
            .filter(|k| !k.as_str().ends_with("-bin"))
            .ok_or_else(|| DecodeError::new(format!("headers.{k}"), "invalid header name"))?;
        // The value is never quoted back: it may be a credential.
        let value = MetadataValue::<Ascii>::try_from(v.as_str()).map_err(|_| {
            DecodeError::new(
                format!("headers.{k}"),
                "invalid header value (visible ASCII only)",
            )
        })?;
        out.push((key, value));
    }
    Ok(out)
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: OtlpConfig = config::decode(v)?;
    let (uri, tls) = resolve_endpoint(&cfg)?;
    let metadata = metadata(&cfg.headers)?;
    if cfg.timeout.is_zero() {
        return Err(DecodeError::new("timeout", "must be greater than 0"));
    }
    let q = &cfg.sending_queue;
    q.check()?;
    let r = &cfg.retry_on_failure;
    if r.enabled && (r.initial_interval.is_zero() || r.max_interval < r.initial_interval) {
        return Err(DecodeError::new(
            "retry_on_failure",
            "initial_interval must be > 0 and max_interval ≥ initial_interval",
        ));
    }
    r.check_factors()?;
    let file_queue =
        sending_queue::file_settings(q.storage, q.directory.as_deref(), q.max_size_mib)?
            .filter(|_| q.enabled);
    Ok(Box::new(OtlpExporter {
        cfg,
        uri,
        tls,
        metadata,
        file_queue,
    }))
}

pub struct OtlpExporter {
    cfg: OtlpConfig,
    uri: String,
    tls: bool,
    metadata: Metadata,
    /// Base directory and size limit of the file queue (`storage: file`).
    file_queue: Option<(PathBuf, u64)>,
}

impl OtlpExporter {
    /// A lazily connecting channel (reconnects by itself after the server comes back).
    fn channel(&self) -> Result<Channel, ComponentError> {
        let bad = |e: &dyn fmt::Display| {
            ComponentError::Other(format!("otlp endpoint {}: {e}", self.uri))
        };
        let mut ep = Endpoint::from_shared(self.uri.clone())
            .map_err(|e| bad(&e))?
            .timeout(self.cfg.timeout)
            .connect_timeout(self.cfg.timeout);
        if self.tls {
            let mut t = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &self.cfg.tls.ca_file {
                let pem = std::fs::read(ca).map_err(|e| {
                    ComponentError::Other(format!("cannot read tls.ca_file {}: {e}", ca.display()))
                })?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&self.cfg.tls.cert_file, &self.cfg.tls.key_file) {
                let read = |p: &PathBuf, k: &str| {
                    std::fs::read(p).map_err(|e| {
                        ComponentError::Other(format!("cannot read tls.{k} {}: {e}", p.display()))
                    })
                };
                t = t.identity(tonic::transport::Identity::from_pem(
                    read(cert, "cert_file")?,
                    read(key, "key_file")?,
                ));
            }
            if let Some(name) = &self.cfg.tls.server_name_override {
                t = t.domain_name(name.clone());
            }
            ep = ep.tls_config(t).map_err(|e| bad(&e))?;
        }
        Ok(ep.connect_lazy())
    }
}

/// A [`Throttle`] shared by the sender tasks.
struct Every(Mutex<Throttle>);

impl Every {
    fn new(period: Duration) -> Self {
        Every(Mutex::new(Throttle::new(period)))
    }
    /// `Some(held back since the last one)` when a warning may be logged now.
    fn ready(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).ready()
    }
}

struct Dropped {
    queue_full: Counter,
    queue_error: Counter,
    corrupt: Counter,
    permanent: Counter,
    retries_exhausted: Counter,
    retry_disabled: Counter,
    shutdown: Counter,
    partial_success: Counter,
}

/// How batches travel: OTLP/gRPC (this module) or OTLP/HTTP ([`http`]).
pub(crate) enum Transport {
    Grpc {
        channel: Channel,
        gzip: bool,
        metadata: Metadata,
    },
    Http(Box<http::HttpSender>),
}

/// A failed export call: what to do about it, and what to log.
#[derive(Debug)]
pub(crate) struct Failure {
    pub verdict: Verdict,
    /// `Unavailable`, `HTTP 503`, ...
    pub code: String,
    pub message: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        Failure {
            verdict: retry::classify(&s),
            code: format!("{:?}", s.code()),
            message: s.message().to_string(),
        }
    }
}

/// What every sender shares.
struct Shared {
    id: Arc<str>,
    transport: Transport,
    timeout: Duration,
    retry: RetryConfig,
    shutdown: CancellationToken,
    sent: Counter,
    retries: Counter,
    dropped: Dropped,
    warn_failure: Every,
    warn_partial: Every,
    warn_full: Every,
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Delivered, or dropped and counted: the batch is done with.
    Done,
    /// Still failing at shutdown; left in the file queue.
    Kept,
}

/// `(rejected items, message)` of a reply; `(0, "")` is a full success.
pub(crate) type Reply = (i64, String);

impl Shared {
    fn request<T>(&self, msg: T, metadata: &Metadata) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        for (k, v) in metadata {
            r.metadata_mut().insert(k.clone(), v.clone());
        }
        r
    }

    async fn call(&self, batch: &Encoded) -> Result<Reply, Failure> {
        match &self.transport {
            Transport::Grpc {
                channel,
                gzip,
                metadata,
            } => Ok(self.call_grpc(batch, channel, *gzip, metadata).await?),
            Transport::Http(h) => h.call(batch).await,
        }
    }

    /// One export call with the batch's pre-encoded request (see [`wire`]).
    async fn call_grpc(
        &self,
        batch: &Encoded,
        channel: &Channel,
        gzip: bool,
        metadata: &Metadata,
    ) -> Result<Reply, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        if gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(batch.path());
        let req = self.request(batch.body.clone(), metadata);
        Ok(match batch.kind {
            SignalKind::Traces => grpc
                .unary(req, path, RawCodec::<ExportTraceServiceResponse>::default())
                .await?
                .into_inner()
                .rejected(),
            SignalKind::Metrics => grpc
                .unary(
                    req,
                    path,
                    RawCodec::<ExportMetricsServiceResponse>::default(),
                )
                .await?
                .into_inner()
                .rejected(),
            SignalKind::Logs => grpc
                .unary(req, path, RawCodec::<ExportLogsServiceResponse>::default())
                .await?
                .into_inner()
                .rejected(),
            // Not accepted by the factory; nothing to send.
            SignalKind::Celery => (0, String::new()),
        })
    }

    /// Export one batch: retry what may be retried, count what is given up. With `keep`, a
    /// batch that still fails once shutdown has begun is not dropped but reported as
    /// [`Outcome::Kept`] (it stays in the file queue for the next start).
    async fn export(&self, batch: &Encoded, seed: u64, keep: bool) -> Outcome {
        let n = batch.items;
        let kind = batch.kind;
        let mut attempts = Attempts::new(&self.retry, seed);
        let mut last_try = false;
        loop {
            let failure = match self.call(batch).await {
                Ok((rejected, msg)) => {
                    let rejected = u64::try_from(rejected).unwrap_or(0).min(n);
                    self.sent.add(n - rejected);
                    self.dropped.partial_success.add(rejected);
                    if rejected > 0 || !msg.is_empty() {
                        if let Some(held) = self.warn_partial.ready() {
                            tracing::warn!(component = %self.id, signal = %kind, rejected, message = %msg, suppressed = held, "The OTLP endpoint accepted a batch only partly.");
                        }
                    }
                    return Outcome::Done;
                }
                Err(f) => f,
            };
            let reason = match failure.verdict {
                Verdict::Permanent => Some(&self.dropped.permanent),
                Verdict::Retry(_) if !self.retry.enabled => Some(&self.dropped.retry_disabled),
                Verdict::Retry(_) if last_try && keep => return Outcome::Kept,
                Verdict::Retry(_) if last_try => Some(&self.dropped.shutdown),
                Verdict::Retry(server) => match attempts.next_wait(server) {
                    None => Some(&self.dropped.retries_exhausted),
                    Some(wait) => {
                        if let Some(held) = self.warn_failure.ready() {
                            tracing::warn!(component = %self.id, signal = %kind, code = %failure.code, error = %failure.message, retry_in = ?wait, suppressed = held, "OTLP export failed; retrying.");
                        }
                        self.retries.inc();
                        last_try = !pause(wait, &self.shutdown).await;
                        None
                    }
                },
            };
            if let Some(counter) = reason {
                counter.add(n);
                if let Some(held) = self.warn_failure.ready() {
                    tracing::warn!(component = %self.id, signal = %kind, items = n, code = %failure.code, error = %failure.message, suppressed = held, "OTLP export failed; batch dropped.");
                }
                return Outcome::Done;
            }
        }
    }
}

/// `storage: memory`: batches wait in a queue bounded by `queue_size` in the unit of `sizer`
/// (batches, items or bytes; see [`sizer`]). As in the collector, a batch holds its share of
/// the bound from the moment it is queued until it is delivered or dropped, so the bound covers
/// the batches being exported too. A full queue holds the input back (backpressure, not loss);
/// a batch larger than the whole queue can never fit and is dropped (`reason="queue_full"`).
async fn run_memory_queue(
    ctx: &Context,
    input: &Input,
    shared: &Arc<Shared>,
    q: &QueueConfig,
    queued: &Gauge,
    seed: u64,
) {
    let capacity = q.queue_size;
    let room = Arc::new(Semaphore::new(capacity));
    {
        let (t, label) = (&ctx.telemetry, [("component", &*ctx.id)]);
        let weak = Arc::downgrade(&room);
        t.observe(
            "celeriac_exporter_sending_queue_size",
            "What an exporter's sending queue holds (waiting and being exported), in the unit of its sending_queue.sizer.",
            &label,
            move || weak.upgrade().map_or(0, |r| (capacity - r.available_permits()) as i64),
        );
        t.observe(
            "celeriac_exporter_sending_queue_capacity",
            "sending_queue.queue_size, in the unit of sending_queue.sizer.",
            &label,
            move || capacity as i64,
        );
    }
    let (tx, rx) = async_channel::unbounded::<(Batch, OwnedSemaphorePermit)>();
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..q.num_consumers {
        let (rx, shared) = (rx.clone(), shared.clone());
        let mut seed = seed ^ ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        senders.spawn(async move {
            while let Ok((batch, share)) = rx.recv().await {
                seed = seed.rotate_left(7).wrapping_add(0x9e37_79b9_7f4a_7c15);
                // Encoded once here, in the sender, so encoding runs on `num_consumers` tasks.
                if let Some(encoded) = Encoded::of(&batch.signal) {
                    drop(batch.signal);
                    // Its pipelines end here: the bytes go to the network.
                    if let Some(stamp) = batch.stamp {
                        stamp.observe(encoded.items);
                    }
                    shared.export(&encoded, seed, false).await;
                }
                // Delivered or dropped: its room in the queue is free again.
                drop(share);
            }
        });
    }
    drop(rx);
    while let Some(batch) = input.recv_batch().await {
        let size = q.sizer.size_of(&batch.signal).max(1);
        let Some(share) = u32::try_from(size).ok().filter(|_| size <= capacity as u64) else {
            let items = batch.signal.item_count() as u64;
            shared.dropped.queue_full.add(items);
            if let Some(held) = shared.warn_full.ready() {
                tracing::warn!(component = %ctx.id, items, size, sizer = %q.sizer, queue_size = capacity, suppressed = held, "A batch larger than the whole sending queue cannot be queued; dropped. Raise sending_queue.queue_size or lower the batch processor's send_batch_max_size.");
            }
            continue;
        };
        // Waits while the queue is full: backpressure, not loss.
        let Ok(share) = room.clone().acquire_many_owned(share).await else {
            break;
        };
        if tx.send((batch, share)).await.is_err() {
            break;
        }
        queued.set(tx.len() as i64);
    }
    drop(tx);
    while let Some(res) = senders.join_next().await {
        if let Err(e) = res {
            tracing::error!(component = %ctx.id, error = %e, "An OTLP sender task failed.");
        }
    }
}

/// `storage: file`: every batch is appended to the file queue as it arrives (a full queue drops
/// its oldest batches, counted as `queue_full`); senders take batches in order and acknowledge
/// each once delivered or dropped. At shutdown a batch that still fails stays on disk.
async fn run_file_queue(
    ctx: &Context,
    input: &Input,
    shared: &Arc<Shared>,
    disk: DiskQueue,
    q: &QueueConfig,
    queued: &Gauge,
    seed: u64,
) {
    let mut senders = tokio::task::JoinSet::new();
    for i in 0..q.num_consumers {
        let (disk, shared, queued) = (disk.clone(), shared.clone(), queued.clone());
        let mut seed = seed ^ ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        senders.spawn(async move {
            loop {
                let popped = match disk.pop().await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(component = %shared.id, error = %e, "Cannot read the sending queue; this sender stops.");
                        break;
                    }
                };
                queued.add(-1);
                seed = seed.rotate_left(7).wrapping_add(0x9e37_79b9_7f4a_7c15);
                match Encoded::from_record(&popped.payload, u64::from(popped.items)) {
                    Some(batch) => {
                        if shared.export(&batch, seed, true).await == Outcome::Kept {
                            tracing::info!(component = %shared.id, "Backend still failing at shutdown; the batch stays queued on disk for the next start.");
                            break;
                        }
                    }
                    None => {
                        shared.dropped.corrupt.add(popped.items as u64);
                        tracing::warn!(component = %shared.id, items = popped.items, "Dropping an undecodable batch from the sending queue.");
                    }
                }
                if let Err(e) = disk.ack(popped.ticket).await {
                    tracing::error!(component = %shared.id, error = %e, "Cannot record progress in the sending queue; this sender stops.");
                    break;
                }
            }
        });
    }
    let mut warned_io = false;
    while let Some(batch) = input.recv_batch().await {
        let Some(encoded) = Encoded::of(&batch.signal) else {
            continue;
        };
        drop(batch.signal);
        let items = encoded.items as u32;
        let record = encoded.record();
        match disk.push(record, items).await {
            Ok(evicted) => {
                // Its pipelines end here: the bytes are on disk, sent from there.
                if let Some(stamp) = &batch.stamp {
                    stamp.observe(encoded.items);
                }
                queued.add(1 - evicted.records as i64);
                if evicted.records > 0 {
                    shared.dropped.queue_full.add(evicted.items);
                    if let Some(held) = shared.warn_full.ready() {
                        tracing::warn!(component = %ctx.id, batches = evicted.records, items = evicted.items, suppressed = held, "Sending queue full: dropped its oldest batches.");
                    }
                }
            }
            Err(e) => {
                shared.dropped.queue_error.add(items as u64);
                if !warned_io {
                    warned_io = true;
                    tracing::error!(component = %ctx.id, error = %e, "Cannot append to the sending queue; batch dropped.");
                }
            }
        }
    }
    disk.close();
    while let Some(res) = senders.join_next().await {
        if let Err(e) = res {
            tracing::error!(component = %ctx.id, error = %e, "An OTLP sender task failed.");
        }
    }
}

impl Exporter for OtlpExporter {
    /// Batches are sent as their encoded request body, so one still in its wire form is sent
    /// as it is.
    fn takes_encoded(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let transport = Transport::Grpc {
                channel: self.channel()?,
                gzip: self.cfg.compression == Compression::Gzip,
                metadata: self.metadata,
            };
            run_queued(
                ctx,
                input,
                transport,
                Queued {
                    timeout: self.cfg.timeout,
                    retry: self.cfg.retry_on_failure,
                    queue: self.cfg.sending_queue.effective(),
                    file_queue: self.file_queue,
                },
            )
            .await
        })
    }
}

/// The settings of [`run_queued`]: retries and the sending queue.
pub(crate) struct Queued {
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub queue: QueueConfig,
    /// Base directory and size limit of the file queue, if the queue is on disk.
    pub file_queue: Option<(PathBuf, u64)>,
}

/// Run an OTLP exporter: take batches from `input` into the sending queue (memory or file),
/// export them over `transport` with retries, count what is delivered and dropped.
pub(crate) async fn run_queued(
    ctx: Context,
    input: Input,
    transport: Transport,
    settings: Queued,
) -> Result<(), ComponentError> {
    {
        let t = &ctx.telemetry;
        let label = [("component", &*ctx.id)];
        let drop_counter = |reason: &str| {
            t.counter(
                "celeriac_exporter_dropped_items_total",
                "Items an exporter dropped, by reason.",
                &[("component", &*ctx.id), ("reason", reason)],
            )
        };
        let shared = Arc::new(Shared {
            id: ctx.id.clone(),
            transport,
            timeout: settings.timeout,
            retry: settings.retry.clone(),
            shutdown: ctx.shutdown.clone(),
            sent: t.counter(
                "celeriac_exporter_sent_items_total",
                "Items an exporter delivered.",
                &label,
            ),
            retries: t.counter(
                "celeriac_exporter_retries_total",
                "Export calls retried after a retryable failure.",
                &label,
            ),
            dropped: Dropped {
                queue_full: drop_counter("queue_full"),
                queue_error: drop_counter("queue_error"),
                corrupt: drop_counter("corrupt"),
                permanent: drop_counter("permanent"),
                retries_exhausted: drop_counter("retries_exhausted"),
                retry_disabled: drop_counter("retry_disabled"),
                shutdown: drop_counter("shutdown"),
                partial_success: drop_counter("partial_success"),
            },
            warn_failure: Every::new(Duration::from_secs(10)),
            warn_partial: Every::new(Duration::from_secs(10)),
            warn_full: Every::new(Duration::from_secs(10)),
        });
        let queued = t.gauge(
            "celeriac_exporter_queue_batches",
            "Batches waiting in an exporter's sending queue.",
            &label,
        );
        let q = &settings.queue;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        match &settings.file_queue {
            None => run_memory_queue(&ctx, &input, &shared, q, &queued, seed).await,
            Some((base, max_bytes)) => {
                let dir = sending_queue::component_dir(base, &ctx.id);
                let (fq, report) = {
                    let dir = dir.clone();
                    let max = *max_bytes;
                    tokio::task::spawn_blocking(move || FileQueue::open(&dir, max))
                        .await
                        .map_err(|e| ComponentError::Other(e.to_string()))?
                        .map_err(|e| ComponentError::Other(e.to_string()))?
                };
                if report.truncated_bytes > 0 {
                    shared.dropped.corrupt.add(report.truncated_items);
                    tracing::warn!(component = %ctx.id, dir = %dir.display(), bytes = report.truncated_bytes, items = report.truncated_items, "Cut a torn or corrupt tail off the sending queue.");
                }
                if report.records > 0 {
                    tracing::info!(component = %ctx.id, dir = %dir.display(), batches = report.records, items = report.items, "Replaying batches queued by a previous run.");
                }
                queued.set(report.records as i64);
                run_file_queue(&ctx, &input, &shared, DiskQueue::new(fq), q, &queued, seed).await;
            }
        }
        queued.set(0);
        tracing::debug!(component = %ctx.id, "OTLP exporter flushed.");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Signal;
    use crate::telemetry::Telemetry;
    use std::time::Instant;

    fn cfg(yaml: &str) -> Result<Box<dyn Exporter>, DecodeError> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        build(&v)
    }

    /// configtls ClientConfig keys (config/configtls/configtls.go) and configgrpc's
    /// balancer_name.
    #[test]
    fn collector_tls_keys() {
        let cfg = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        assert_eq!(cfg("{endpoint: 'x:1', tls: {server_name_override: a.example, ca_file: /tmp/ca.pem}, balancer_name: round_robin}"), None);
        assert_eq!(
            cfg("{endpoint: 'x:1', tls: {cert_file: /c}}").as_deref(),
            Some("tls.key_file")
        );
        assert_eq!(
            cfg("{endpoint: 'x:1', tls: {key_file: /k}}").as_deref(),
            Some("tls.cert_file")
        );
        assert_eq!(
            cfg("{endpoint: 'http://x:1', tls: {cert_file: /c, key_file: /k}}").as_deref(),
            Some("tls.cert_file")
        );
        assert_eq!(
            cfg("{endpoint: 'x:1', tls: {insecure_skip_verify: true}}").as_deref(),
            Some("tls.insecure_skip_verify")
        );
        // The collector's otlp_grpc name of this exporter, with the k8s example's settings.
        assert_eq!(cfg("{endpoint: 'otel-collector.default:4317', tls: {insecure: true}, sending_queue: {num_consumers: 4, queue_size: 100}, retry_on_failure: {enabled: true}}"), None);
    }

    #[test]
    fn endpoints_and_tls() {
        let c = OtlpConfig::default();
        assert_eq!(
            resolve_endpoint(&c).unwrap(),
            ("http://127.0.0.1:4317".into(), false)
        );
        let c = OtlpConfig {
            endpoint: "tempo:4317".into(),
            ..OtlpConfig::default()
        };
        assert_eq!(
            resolve_endpoint(&c).unwrap(),
            ("https://tempo:4317".into(), true)
        );
        let c = OtlpConfig {
            endpoint: "tempo:4317".into(),
            tls: TlsConfig {
                insecure: true,
                ..TlsConfig::default()
            },
            ..OtlpConfig::default()
        };
        assert!(!resolve_endpoint(&c).unwrap().1);
        assert_eq!(cfg("endpoint: ftp://x:1").err().unwrap().path, "endpoint");
        assert_eq!(
            cfg("{endpoint: 'https://x:1', tls: {insecure: true}}")
                .err()
                .unwrap()
                .path,
            "tls.insecure"
        );
        assert_eq!(
            cfg("{endpoint: 'http://x:1', tls: {ca_file: /tmp/ca.pem}}")
                .err()
                .unwrap()
                .path,
            "tls.ca_file"
        );
        assert!(
            cfg("{compression: none, sending_queue: {queue_size: 5, num_consumers: 2}}").is_ok()
        );
        assert_eq!(
            cfg("compression: brotli").err().unwrap().path,
            "compression"
        );
        assert_eq!(cfg("bogus: 1").err().unwrap().path, "bogus");
    }

    #[test]
    fn header_values_are_never_echoed() {
        let err = cfg("headers: { authorization: \"Bearer s3cret\\n\" }")
            .err()
            .unwrap();
        assert_eq!(err.path, "headers.authorization");
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        let c: OtlpConfig =
            config::decode(&serde_yaml_ng::from_str("headers: { x-token: s3cret }").unwrap())
                .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(metadata(&c.headers).unwrap().len(), 1);
    }

    fn exporter(yaml: &str) -> Box<dyn Exporter> {
        cfg(yaml).unwrap()
    }

    /// An endpoint nobody listens on: retryable (UNAVAILABLE) failures.
    fn dead_endpoint() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    fn span_batch() -> Signal {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        Signal::Traces(Arc::new(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(), Span::default()],
                ..Default::default()
            }],
            ..Default::default()
        }]))
    }

    async fn run_one(yaml: &str, cancel_after: Option<Duration>) -> (Telemetry, Duration) {
        let telemetry = Telemetry::new();
        let shutdown = CancellationToken::new();
        let ctx = Context {
            id: Arc::from("exporter/otlp"),
            shutdown: shutdown.clone(),
            telemetry: telemetry.clone(),
            ready: Default::default(),
        };
        let (tx, rx) = async_channel::bounded(4);
        let input = Input::new(rx, Counter::default());
        tx.send(span_batch().into()).await.unwrap();
        drop(tx);
        if let Some(after) = cancel_after {
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                shutdown.cancel();
            });
        }
        let t0 = Instant::now();
        exporter(yaml).run(ctx, input).await.unwrap();
        (telemetry, t0.elapsed())
    }

    fn dropped(t: &Telemetry, reason: &str) -> u64 {
        t.counter(
            "celeriac_exporter_dropped_items_total",
            "",
            &[("component", "exporter/otlp"), ("reason", reason)],
        )
        .get()
    }

    #[tokio::test]
    async fn unreachable_endpoint_exhausts_retries_and_counts() {
        let yaml = format!(
            "{{endpoint: '{}', timeout: 1s, retry_on_failure: {{initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 300ms}}}}",
            dead_endpoint()
        );
        let (t, took) = run_one(&yaml, None).await;
        assert_eq!(dropped(&t, "retries_exhausted"), 2);
        assert!(took < Duration::from_secs(5), "{took:?}");
        let retries = t
            .counter(
                "celeriac_exporter_retries_total",
                "",
                &[("component", "exporter/otlp")],
            )
            .get();
        assert!(retries >= 2, "{retries}");
    }

    #[tokio::test]
    async fn shutdown_cuts_a_backoff_wait_short_after_one_last_try() {
        let yaml = format!(
            "{{endpoint: '{}', timeout: 1s, retry_on_failure: {{initial_interval: 30s, max_interval: 30s, max_elapsed_time: 0s}}}}",
            dead_endpoint()
        );
        let (t, took) = run_one(&yaml, Some(Duration::from_millis(300))).await;
        assert_eq!(dropped(&t, "shutdown"), 2);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn file_storage_keeps_a_failing_batch_on_disk_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "{{endpoint: '{}', timeout: 1s, retry_on_failure: {{initial_interval: 30s, max_interval: 30s, max_elapsed_time: 0s}}, sending_queue: {{storage: file, directory: '{}'}}}}",
            dead_endpoint(),
            dir.path().display()
        );
        let (t, took) = run_one(&yaml, Some(Duration::from_millis(300))).await;
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(dropped(&t, "shutdown"), 0);
        let (_, report) = FileQueue::open(&dir.path().join("otlp"), 1 << 20).unwrap();
        assert_eq!((report.records, report.items), (1, 2));
    }

    #[tokio::test]
    async fn retry_disabled_drops_at_once() {
        let yaml = format!(
            "{{endpoint: '{}', retry_on_failure: {{enabled: false}}}}",
            dead_endpoint()
        );
        let (t, _) = run_one(&yaml, None).await;
        assert_eq!(dropped(&t, "retry_disabled"), 2);
    }
}
