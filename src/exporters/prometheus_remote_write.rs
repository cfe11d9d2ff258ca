//! `prometheus_remote_write` exporter: pushes metrics to a Prometheus remote-write 1.0 endpoint
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos receive, VictoriaMetrics).
//!
//! Metrics become series by the rules shared with the scrape exporter ([`crate::exporters::prom`]:
//! `_total` on monotonic sums, `_bucket{le}` incl. `+Inf` / `_sum` / `_count` for histograms,
//! sanitized, sorted, unique labels). Unlike a scrape, nobody adds `job` and `instance`: they come
//! from the resource (`service.name`, prefixed with `service.namespace/` when set, and
//! `service.instance.id`); the other resource attributes become labels only with
//! `resource_to_telemetry_conversion`. `external_labels` are added to every series that does not
//! already have the label.
//!
//! Each request is a protobuf [`WriteRequest`](crate::prompb::WriteRequest), snappy-compressed in
//! the block format, `POST`ed with `Content-Encoding: snappy`, `Content-Type:
//! application/x-protobuf`, `X-Prometheus-Remote-Write-Version: 0.1.0` and `User-Agent:
//! celeriac/<version>` (these four cannot be overridden by `headers`).
//!
//! Delivery:
//! * series are spread over `remote_write_queue.num_consumers` shards by a hash of their labels,
//!   so one series always goes through the same shard; each shard has a FIFO queue of at most
//!   `remote_write_queue.queue_size` samples and one sender sending at most
//!   `max_samples_per_send` samples per request, one request at a time. Samples of a series are
//!   therefore always sent in timestamp order; a sample not newer than the last one taken for its
//!   series is skipped (an older one is counted as dropped, `reason="out_of_order"`);
//! * a full queue drops its oldest samples (`reason="queue_full"`): the input is cumulative, so the
//!   newest values supersede them, and a remote endpoint that is down never stalls the pipeline;
//! * 5xx, 429, timeouts and connection errors are retried with jittered exponential backoff
//!   (`retry_on_failure`), waiting at least what a `Retry-After` header asks; a request still
//!   failing after `max_elapsed_time` is dropped (`reason="retries_exhausted"`);
//! * any other status (4xx: the endpoint will never accept that request) drops the request at
//!   once, with a warning at most every 10 s per shard, counted as `reason="rejected"`;
//! * during shutdown waits are cut short: a failing request gets no further retry
//!   (`reason="shutdown"`);
//! * with `sending_queue.storage: file`, each shard's requests are appended to a file queue
//!   ([`crate::exporters::sending_queue`], `<directory>/<component>/shard-<i>`, an equal part of
//!   `max_size_mib` each) as soon as they are made, and sent from it in order: they survive an
//!   endpoint outage longer than the memory queue holds, and a crash or restart of the agent.
//!   A full file queue drops its oldest requests (`reason="queue_full"`); a request still
//!   failing at shutdown stays on disk instead of being dropped. Keep `num_consumers` when
//!   requests are queued: the shard directories beyond it are not replayed (a warning says so).
//!
//! Staleness: a series not seen in the input for `stale_after` (celery_correlate stops emitting a
//! forgotten worker's series; an app stops exporting) gets one staleness marker (the NaN with bits
//! `0x7ff0000000000002`) and is forgotten. A point flagged `NO_RECORDED_VALUE` ends its series
//! with a marker at once.
//!
//! Counters: `celeriac_exporter_sent_items_total` (samples accepted by the endpoint),
//! `celeriac_exporter_dropped_items_total{reason}` (points for `unsupported` and `invalid`, samples
//! otherwise), `celeriac_exporter_retries_total`, and the gauge `celeriac_exporter_queue_items`.
//!
//! # Configuration
//!
//! ```yaml
//! exporters:
//!   prometheus_remote_write:
//!     endpoint: http://127.0.0.1:9090/api/v1/write   # or https://
//!     tls:                           # https only; the system's roots are always trusted
//!       ca_file: /etc/celeriac/ca.pem
//!       cert_file: /etc/celeriac/client.pem  # with key_file: client certificate (mTLS)
//!       key_file: /etc/celeriac/client.key
//!     timeout: 5s                    # per request
//!     headers: { X-Scope-OrgID: team-a }
//!     external_labels: { cluster: eu-1 }
//!     resource_to_telemetry_conversion: false       # or { enabled: true }
//!     max_samples_per_send: 2000
//!     stale_after: 2m                # a series unseen this long gets a staleness marker
//!     basic_auth: { username: u, password: "${env:RW_PASSWORD}" }   # or:
//!     bearer_token: "${env:RW_TOKEN}"                              # (never logged)
//!     remote_write_queue:
//!       queue_size: 10000            # samples held per shard
//!       num_consumers: 5             # shards = concurrent senders
//!     sending_queue:
//!       storage: memory              # or file
//!       directory: /var/lib/celeriac/queue   # required with file
//!       max_size_mib: 256            # file queue size, all shards together
//!     retry_on_failure:
//!       enabled: true
//!       initial_interval: 50ms
//!       max_interval: 5s
//!       max_elapsed_time: 5m         # 0 = retry forever
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, message, WireType};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::component::{BoxRun, ComponentError, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, types::Secret, DecodeError, Value};
use crate::exporters::backoff::Backoff;
use crate::exporters::prom::{self, for_each_series, Converter, ResourceLabels};
use crate::exporters::sending_queue::{self, DiskQueue, FileQueue, StorageConfig};
use crate::prompb::{Label, Sample};
use crate::signal::{Signal, SignalKind};
use crate::telemetry::{Counter, Gauge, Telemetry, Throttle};
use crate::tls::ClientTlsConfig;

pub const REGISTRATION: Registration = Registration {
    type_name: "prometheus_remote_write",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<RemoteWriteConfig>,
};

/// Prometheus' staleness marker (`value.StaleNaN`), a signalling NaN used for nothing else.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The reserved headers users cannot set.
const RESERVED_HEADERS: [&str; 4] = [
    "content-encoding",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
];

const USER_AGENT: &str = concat!("celeriac/", env!("CARGO_PKG_VERSION"));

/// How much of a rejected request's response body goes into the log.
const ERROR_BODY_LIMIT: usize = 512;

/// A 4xx warning at most this often per shard (the rest go to debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Samples each shard holds before dropping its oldest.
    pub queue_size: usize,
    /// Shards: concurrent senders.
    pub num_consumers: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 10_000,
            num_consumers: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "types::duration")]
    pub initial_interval: Duration,
    #[serde(with = "types::duration")]
    pub max_interval: Duration,
    /// Give a request up after this long; zero retries forever.
    #[serde(with = "types::duration")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(50),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteConfig {
    pub endpoint: String,
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    pub headers: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "prom::bool_or_enabled")]
    pub resource_to_telemetry_conversion: bool,
    pub max_samples_per_send: usize,
    #[serde(with = "types::duration")]
    pub stale_after: Duration,
    pub basic_auth: Option<BasicAuth>,
    pub bearer_token: Option<Secret>,
    pub tls: ClientTlsConfig,
    pub remote_write_queue: QueueConfig,
    /// Where requests wait for the endpoint: memory (default) or files that survive a restart.
    pub sending_queue: StorageConfig,
    pub retry_on_failure: RetryConfig,
}

impl Default for RemoteWriteConfig {
    fn default() -> Self {
        RemoteWriteConfig {
            endpoint: "http://127.0.0.1:9090/api/v1/write".into(),
            timeout: Duration::from_secs(5),
            headers: BTreeMap::new(),
            external_labels: BTreeMap::new(),
            resource_to_telemetry_conversion: false,
            max_samples_per_send: 2000,
            stale_after: Duration::from_secs(120),
            basic_auth: None,
            bearer_token: None,
            tls: ClientTlsConfig::default(),
            remote_write_queue: QueueConfig::default(),
            sending_queue: StorageConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: RemoteWriteConfig = config::decode(v)?;
    let uri: Uri = cfg
        .endpoint
        .parse()
        .map_err(|e| DecodeError::new("endpoint", format!("not a URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(DecodeError::new(
                "endpoint",
                "expected an http:// or https:// URL, e.g. http://127.0.0.1:9090/api/v1/write",
            ))
        }
    };
    if !https && cfg.tls.is_set() {
        return Err(DecodeError::new(
            "tls",
            "TLS settings need an https:// endpoint",
        ));
    }
    // Read the certificates now, so a missing or malformed file fails `validate` and startup.
    let tls = if https {
        Some(
            cfg.tls
                .client_config(&[])
                .map_err(|e| DecodeError::new(e.key(), e.to_string()))?,
        )
    } else {
        None
    };
    if uri.host().is_none_or(str::is_empty) {
        return Err(DecodeError::new("endpoint", "the URL has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(DecodeError::new(
            "endpoint",
            "put credentials in basic_auth or bearer_token, not in the URL",
        ));
    }
    let positive = |key: &str, d: Duration| {
        if d.is_zero() {
            Err(DecodeError::new(key, "must be greater than 0"))
        } else {
            Ok(())
        }
    };
    positive("timeout", cfg.timeout)?;
    positive("stale_after", cfg.stale_after)?;
    positive(
        "retry_on_failure.initial_interval",
        cfg.retry_on_failure.initial_interval,
    )?;
    if cfg.retry_on_failure.max_interval < cfg.retry_on_failure.initial_interval {
        return Err(DecodeError::new(
            "retry_on_failure.max_interval",
            "must be at least initial_interval",
        ));
    }
    if cfg.max_samples_per_send == 0 {
        return Err(DecodeError::new(
            "max_samples_per_send",
            "must be at least 1",
        ));
    }
    if cfg.remote_write_queue.num_consumers == 0 || cfg.remote_write_queue.num_consumers > 256 {
        return Err(DecodeError::new(
            "remote_write_queue.num_consumers",
            "must be between 1 and 256",
        ));
    }
    if cfg.remote_write_queue.queue_size < cfg.max_samples_per_send {
        return Err(DecodeError::new(
            "remote_write_queue.queue_size",
            "must be at least max_samples_per_send",
        ));
    }
    prom::check_label_names("external_labels", &cfg.external_labels)?;
    if cfg.basic_auth.is_some() && cfg.bearer_token.is_some() {
        return Err(DecodeError::new(
            "bearer_token",
            "set either basic_auth or bearer_token, not both",
        ));
    }
    let mut headers = Vec::new();
    for (k, v) in &cfg.headers {
        let key = format!("headers.{k}");
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| DecodeError::new(&key, "not a valid header name"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(DecodeError::new(
                &key,
                "this header is set by the remote-write protocol and cannot be overridden",
            ));
        }
        let mut value = HeaderValue::from_str(v)
            .map_err(|_| DecodeError::new(&key, "not a valid header value"))?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    let auth = auth_header(&cfg);
    if auth.is_some() {
        headers.retain(|(n, _)| n != hyper::header::AUTHORIZATION);
    }
    let sq = &cfg.sending_queue;
    let file_queue =
        sending_queue::file_settings(sq.storage, sq.directory.as_deref(), sq.max_size_mib)?;
    Ok(Box::new(RemoteWriteExporter {
        cfg,
        uri,
        headers,
        auth,
        tls,
        file_queue,
    }))
}

fn auth_header(cfg: &RemoteWriteConfig) -> Option<HeaderValue> {
    use base64::Engine as _;
    let raw = match (&cfg.basic_auth, &cfg.bearer_token) {
        (Some(b), _) => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                b.username,
                b.password.expose()
            ))
        ),
        (None, Some(t)) => format!("Bearer {}", t.expose()),
        (None, None) => return None,
    };
    let mut v = HeaderValue::from_str(&raw).ok()?;
    v.set_sensitive(true);
    Some(v)
}

pub struct RemoteWriteExporter {
    cfg: RemoteWriteConfig,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<HeaderValue>,
    /// `Some` for an https endpoint.
    tls: Option<rustls::ClientConfig>,
    /// Base directory and total size of the file queue (`sending_queue.storage: file`).
    file_queue: Option<(PathBuf, u64)>,
}

/// HTTP or HTTPS by the endpoint's scheme.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

// ---------------------------------------------------------------------------------------------
// Series table: OTLP → samples per shard, timestamp order, staleness. No I/O.

/// One sample waiting in a shard queue, with the labels of its series.
pub type Queued = (Arc<[Label]>, Sample);

struct SeriesState {
    labels: Arc<[Label]>,
    /// Timestamp (ms) of the last sample taken for this series.
    last_ts: i64,
    last_seen: Instant,
    shard: usize,
}

/// What the table dropped or skipped, cumulative.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    /// Points of unsupported types or temporalities.
    pub unsupported: u64,
    /// Points of metrics whose name sanitizes to nothing.
    pub invalid: u64,
    /// Samples older than the last one taken for their series.
    pub out_of_order: u64,
    /// Staleness markers produced.
    pub stale_markers: u64,
}

/// Every series seen recently: assigns each sample to its shard, keeps each series' samples in
/// timestamp order, and produces staleness markers.
pub struct SeriesTable {
    converter: Converter,
    series: HashMap<Arc<[Label]>, SeriesState>,
    shards: usize,
    stale_after: Duration,
    pub stats: TableStats,
}

/// The shard of a series: a fixed hash of its labels, so the same on every run.
pub fn shard_of(labels: &[Label], shards: usize) -> usize {
    // `DefaultHasher::new()` has fixed keys: the same shard on every run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in labels {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    (h.finish() % shards.max(1) as u64) as usize
}

/// `true` for Prometheus' staleness marker.
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

impl SeriesTable {
    pub fn new(
        external_labels: &BTreeMap<String, String>,
        resource_to_telemetry_conversion: bool,
        shards: usize,
        stale_after: Duration,
    ) -> Self {
        let resource = if resource_to_telemetry_conversion {
            ResourceLabels::All
        } else {
            ResourceLabels::JobInstance
        };
        SeriesTable {
            converter: Converter::new(external_labels, resource),
            series: HashMap::new(),
            shards: shards.max(1),
            stale_after,
            stats: TableStats::default(),
        }
    }

    /// Series currently tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Convert one batch; samples are appended to `out[shard]` (`out.len()` = shards). `now_ms`
    /// stamps points without a timestamp and staleness markers.
    pub fn apply(
        &mut self,
        batch: &[ResourceMetrics],
        now_ms: i64,
        now: Instant,
        out: &mut [Vec<Queued>],
    ) {
        let mut stats = self.stats;
        let mut name = String::new();
        let conv = self.converter.convert(batch, |p| {
            let ts = match p.time_unix_nano {
                0 => now_ms,
                t => (t / 1_000_000) as i64,
            };
            for_each_series(&p.sample, |suffix, extra, v| {
                name.clear();
                name.push_str(p.meta.name);
                name.push_str(suffix);
                let mut labels = Vec::with_capacity(p.labels.len() + 2);
                labels.push(Label {
                    name: "__name__".into(),
                    value: name.clone(),
                });
                labels.extend(p.labels.iter().map(|(k, v)| Label {
                    name: k.clone(),
                    value: v.clone(),
                }));
                if let Some((k, v)) = extra {
                    labels.push(Label {
                        name: k.into(),
                        value: v.into(),
                    });
                }
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                labels.dedup_by(|a, b| a.name == b.name);
                if p.no_recorded_value {
                    if let Some(s) = self.series.remove(&labels[..]) {
                        stats.stale_markers += 1;
                        let ts = ts.max(s.last_ts + 1);
                        out[s.shard].push((s.labels, stale_sample(ts)));
                    }
                    return;
                }
                // A real NaN must never look like a staleness marker.
                let v = if is_stale_marker(v) { f64::NAN } else { v };
                let sample = Sample {
                    value: v,
                    timestamp: ts,
                };
                match self.series.get_mut(&labels[..]) {
                    Some(s) => {
                        s.last_seen = now;
                        if ts <= s.last_ts {
                            if ts < s.last_ts {
                                stats.out_of_order += 1;
                            }
                            return;
                        }
                        s.last_ts = ts;
                        out[s.shard].push((s.labels.clone(), sample));
                    }
                    None => {
                        let shard = shard_of(&labels, self.shards);
                        let labels: Arc<[Label]> = labels.into();
                        out[shard].push((labels.clone(), sample));
                        self.series.insert(
                            labels.clone(),
                            SeriesState {
                                labels,
                                last_ts: ts,
                                last_seen: now,
                                shard,
                            },
                        );
                    }
                }
            });
        });
        stats.unsupported += conv.unsupported;
        stats.invalid += conv.invalid;
        self.stats = stats;
        self.expire(now_ms, now, out);
    }

    /// Staleness markers for series not seen for `stale_after`; they are forgotten.
    pub fn expire(&mut self, now_ms: i64, now: Instant, out: &mut [Vec<Queued>]) {
        let stale_after = self.stale_after;
        let mut markers = 0;
        self.series.retain(|_, s| {
            if now.saturating_duration_since(s.last_seen) < stale_after {
                return true;
            }
            markers += 1;
            let ts = now_ms.max(s.last_ts.saturating_add(1));
            out[s.shard].push((s.labels.clone(), stale_sample(ts)));
            false
        });
        self.stats.stale_markers += markers;
    }
}

fn stale_sample(timestamp: i64) -> Sample {
    Sample {
        value: f64::from_bits(STALE_NAN_BITS),
        timestamp,
    }
}

/// Encode a `WriteRequest` with one `TimeSeries` per queued sample, straight from the queue
/// (no copies of the labels). Equal to encoding the [`crate::prompb::WriteRequest`] built from
/// the same samples.
pub fn encode_request(samples: &[Queued], buf: &mut Vec<u8>) {
    buf.clear();
    for (labels, sample) in samples {
        let len = labels
            .iter()
            .map(|l| message::encoded_len(1, l))
            .sum::<usize>()
            + message::encoded_len(2, sample);
        buf.reserve(len + 1 + encoded_len_varint(len as u64));
        encode_key(1, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        for l in labels.iter() {
            message::encode(1, l, buf);
        }
        message::encode(2, sample, buf);
    }
}

// ---------------------------------------------------------------------------------------------
// Shards and senders

struct ShardQueue {
    samples: VecDeque<Queued>,
    closed: bool,
}

struct Shard {
    queue: Mutex<ShardQueue>,
    notify: Notify,
}

impl Shard {
    fn new() -> Self {
        Shard {
            queue: Mutex::new(ShardQueue {
                samples: VecDeque::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Append, dropping the oldest beyond `cap`; returns how many were dropped.
    fn push(&self, items: &mut Vec<Queued>, cap: usize) -> usize {
        if items.is_empty() {
            return 0;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.samples.extend(items.drain(..));
        let over = q.samples.len().saturating_sub(cap);
        q.samples.drain(..over);
        drop(q);
        self.notify.notify_one();
        over
    }

    fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.notify.notify_one();
    }

    /// Up to `max` samples, waiting for some; `None` once closed and drained.
    async fn take(&self, max: usize) -> Option<Vec<Queued>> {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.samples.is_empty() {
                    let n = q.samples.len().min(max);
                    return Some(q.samples.drain(..n).collect());
                }
                if q.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("HTTP {status}: {body}")]
    Retryable {
        status: StatusCode,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("HTTP {status}: {body}")]
    Rejected { status: StatusCode, body: String },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("{}", error_chain(.0))]
    Connection(#[from] hyper_util::client::legacy::Error),
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// What every shard's sender shares.
struct Sender {
    id: Arc<str>,
    client: Client<Connector, Full<Bytes>>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<HeaderValue>,
    timeout: Duration,
    retry: RetryConfig,
    max_samples_per_send: usize,
    shutdown: CancellationToken,
    sent: Counter,
    retries: Counter,
    queued: Gauge,
    telemetry: Telemetry,
}

impl Sender {
    fn dropped(&self, reason: &'static str) -> Counter {
        dropped_counter(&self.telemetry, &self.id, reason)
    }

    /// Take up to `max_samples_per_send` samples and make a request body of them; `None` once
    /// the shard is closed and drained.
    async fn next_body(
        &self,
        shard: &Shard,
        buf: &mut Vec<u8>,
        encoder: &mut snap::raw::Encoder,
    ) -> Option<(Bytes, u64)> {
        loop {
            let samples = shard.take(self.max_samples_per_send).await?;
            let n = samples.len() as u64;
            self.queued.add(-(n as i64));
            encode_request(&samples, buf);
            drop(samples);
            match encoder.compress_vec(buf) {
                Ok(b) => return Some((Bytes::from(b), n)),
                Err(e) => {
                    tracing::error!(component = %self.id, error = %e, "Cannot compress a remote-write request, dropping it.");
                    self.dropped("invalid").add(n);
                }
            }
        }
    }

    /// Count and log a request given up.
    fn give_up(
        &self,
        index: usize,
        n: u64,
        reason: &'static str,
        e: &SendError,
        warn: &mut Throttle,
    ) {
        self.dropped(reason).add(n);
        if let Some(suppressed) = warn.ready() {
            tracing::warn!(component = %self.id, shard = index, samples = n, reason, error = %e, suppressed, "Remote-write request dropped.");
        } else {
            tracing::debug!(component = %self.id, shard = index, samples = n, reason, error = %e, "Remote-write request dropped.");
        }
    }

    async fn run_shard(self: Arc<Self>, shard: Arc<Shard>, index: usize) {
        let mut buf = Vec::new();
        let mut encoder = snap::raw::Encoder::new();
        let mut warn = Throttle::new(WARN_EVERY);
        while let Some((body, n)) = self.next_body(&shard, &mut buf, &mut encoder).await {
            match self.send_with_retry(body).await {
                Ok(()) => self.sent.add(n),
                Err((reason, e)) => self.give_up(index, n, reason, &e, &mut warn),
            }
        }
    }

    /// `storage: file`: request bodies go through the shard's file queue. One task appends
    /// (a full queue drops its oldest requests, `queue_full`), one sends in order and
    /// acknowledges; a request still failing at shutdown stays on disk for the next start.
    async fn run_shard_file(self: Arc<Self>, shard: Arc<Shard>, index: usize, disk: DiskQueue) {
        // In a JoinSet so the sender ends with this task, even when it is aborted.
        let mut sender = JoinSet::new();
        {
            let (this, disk) = (self.clone(), disk.clone());
            sender.spawn(async move {
                let mut warn = Throttle::new(WARN_EVERY);
                loop {
                    let p = match disk.pop().await {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(component = %this.id, shard = index, error = %e, "Cannot read the sending queue; this shard stops sending.");
                            break;
                        }
                    };
                    let n = p.items as u64;
                    this.queued.add(-(n as i64));
                    match this.send_with_retry(Bytes::from(p.payload)).await {
                        Ok(()) => this.sent.add(n),
                        Err(("shutdown", _)) => {
                            tracing::info!(component = %this.id, shard = index, "Endpoint still failing at shutdown; the request stays queued on disk for the next start.");
                            break;
                        }
                        Err((reason, e)) => this.give_up(index, n, reason, &e, &mut warn),
                    }
                    if let Err(e) = disk.ack(p.ticket).await {
                        tracing::error!(component = %this.id, shard = index, error = %e, "Cannot record progress in the sending queue; this shard stops sending.");
                        break;
                    }
                }
            });
        }
        let mut buf = Vec::new();
        let mut encoder = snap::raw::Encoder::new();
        let mut warned = false;
        while let Some((body, n)) = self.next_body(&shard, &mut buf, &mut encoder).await {
            match disk.push(body.to_vec(), n as u32).await {
                Ok(evicted) => {
                    self.queued.add(n as i64 - evicted.items as i64);
                    self.dropped("queue_full").add(evicted.items);
                    if evicted.records > 0 && !warned {
                        warned = true;
                        tracing::warn!(component = %self.id, shard = index, samples = evicted.items, "Sending queue full: dropped its oldest requests.");
                    }
                }
                Err(e) => {
                    self.dropped("queue_error").add(n);
                    tracing::error!(component = %self.id, shard = index, error = %e, "Cannot append to the sending queue; request dropped.");
                }
            }
        }
        disk.close();
        if let Some(Err(e)) = sender.join_next().await {
            tracing::error!(component = %self.id, shard = index, error = %e, "A remote-write sender failed.");
        }
    }

    /// Send one request until it succeeds, is rejected, or retries run out.
    async fn send_with_retry(&self, body: Bytes) -> Result<(), (&'static str, SendError)> {
        let start = Instant::now();
        let mut backoff = Backoff::new(
            self.retry.initial_interval,
            self.retry.max_interval,
            2.0,
            0.5,
            Backoff::random_seed(),
        );
        let mut attempt = 0u32;
        loop {
            let err = match self.post(body.clone(), attempt).await {
                Ok(()) => return Ok(()),
                Err(e @ (SendError::Rejected { .. } | SendError::Request(_))) => {
                    return Err(("rejected", e))
                }
                Err(e) => e,
            };
            if !self.retry.enabled {
                return Err(("retries_exhausted", err));
            }
            if self.shutdown.is_cancelled() {
                return Err(("shutdown", err));
            }
            let server_delay = match &err {
                SendError::Retryable { retry_after, .. } => retry_after.unwrap_or_default(),
                _ => Duration::ZERO,
            };
            let delay = backoff.next_delay().max(server_delay);
            let max_elapsed = self.retry.max_elapsed_time;
            if !max_elapsed.is_zero() && start.elapsed() + delay > max_elapsed {
                return Err(("retries_exhausted", err));
            }
            if attempt == 0 {
                tracing::warn!(component = %self.id, error = %err, delay = ?delay, "Remote-write request failed, retrying.");
            } else {
                tracing::debug!(component = %self.id, error = %err, attempt, delay = ?delay, "Remote-write request failed again, retrying.");
            }
            self.retries.inc();
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    async fn post(&self, body: Bytes, attempt: u32) -> Result<(), SendError> {
        let mut req = Request::post(self.uri.clone());
        if let Some(h) = req.headers_mut() {
            for (k, v) in &self.headers {
                h.insert(k.clone(), v.clone());
            }
            if let Some(a) = &self.auth {
                h.insert(hyper::header::AUTHORIZATION, a.clone());
            }
            if attempt > 0 {
                h.insert("retry-attempt", HeaderValue::from(attempt));
            }
        }
        let req = req
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .body(Full::new(body))?;
        let exchange = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            // Read (a bounded part of) the body so the connection can be reused.
            let text = match Limited::new(resp.into_body(), 64 * 1024).collect().await {
                Ok(b) => {
                    let b = b.to_bytes();
                    String::from_utf8_lossy(&b[..b.len().min(ERROR_BODY_LIMIT)])
                        .trim()
                        .to_string()
                }
                Err(_) => String::new(),
            };
            Ok::<_, SendError>((status, retry_after, text))
        };
        let (status, retry_after, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(self.timeout))??;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::Retryable {
                status,
                body,
                retry_after,
            })
        } else {
            Err(SendError::Rejected { status, body })
        }
    }
}

/// An error and its sources: `client error (Connect): tcp connect error: Connection refused`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn dropped_counter(t: &Telemetry, id: &str, reason: &'static str) -> Counter {
    t.counter(
        "celeriac_exporter_dropped_items_total",
        "Items an exporter dropped, by reason.",
        &[("component", id), ("reason", reason)],
    )
}

/// `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// `shard-N` directories with N ≥ `shards` that still hold segment files.
fn leftover_shards(dir: &std::path::Path, shards: usize) -> Option<Vec<String>> {
    let mut extra: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("shard-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= shards)
                && std::fs::read_dir(e.path()).is_ok_and(|mut d| {
                    d.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().ends_with(".seg")))
                })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    extra.sort();
    (!extra.is_empty()).then_some(extra)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Exporter for RemoteWriteExporter {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            let cfg = &self.cfg;
            let n_shards = cfg.remote_write_queue.num_consumers;
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(cfg.timeout));
            connector.enforce_http(false);
            let builder = hyper_rustls::HttpsConnectorBuilder::new();
            let connector = match self.tls.clone() {
                Some(tls) => builder.with_tls_config(tls).https_only(),
                // Plain http: the TLS half is never used, but the type is the same.
                None => builder
                    .with_tls_config(crate::tls::untrusting_client_config())
                    .https_or_http(),
            }
            .enable_http1()
            .wrap_connector(connector);
            let t = &ctx.telemetry;
            let label = [("component", &*ctx.id)];
            let sender = Arc::new(Sender {
                id: ctx.id.clone(),
                client: Client::builder(TokioExecutor::new()).build(connector),
                uri: self.uri.clone(),
                headers: self.headers.clone(),
                auth: self.auth.clone(),
                timeout: cfg.timeout,
                retry: cfg.retry_on_failure.clone(),
                max_samples_per_send: cfg.max_samples_per_send,
                shutdown: ctx.shutdown.clone(),
                sent: t.counter(
                    "celeriac_exporter_sent_items_total",
                    "Items an exporter delivered.",
                    &label,
                ),
                retries: t.counter(
                    "celeriac_exporter_retries_total",
                    "Export requests retried after a retryable failure.",
                    &label,
                ),
                queued: t.gauge(
                    "celeriac_exporter_queue_items",
                    "Items waiting in an exporter's queue.",
                    &label,
                ),
                telemetry: t.clone(),
            });
            let shards: Vec<Arc<Shard>> = (0..n_shards).map(|_| Arc::new(Shard::new())).collect();
            let mut senders = JoinSet::new();
            match &self.file_queue {
                None => {
                    for (i, shard) in shards.iter().enumerate() {
                        senders.spawn(sender.clone().run_shard(shard.clone(), i));
                    }
                }
                Some((base, max_bytes)) => {
                    // Each shard has its own queue (a series' samples stay in order) and an
                    // equal part of max_size_mib.
                    let dir = sending_queue::component_dir(base, &ctx.id);
                    let per_shard = (*max_bytes / n_shards as u64).max(1 << 20);
                    for (i, shard) in shards.iter().enumerate() {
                        let shard_dir = dir.join(format!("shard-{i}"));
                        let opened = {
                            let shard_dir = shard_dir.clone();
                            tokio::task::spawn_blocking(move || {
                                FileQueue::open(&shard_dir, per_shard)
                            })
                            .await
                            .map_err(|e| ComponentError::Other(e.to_string()))?
                        };
                        let (fq, report) =
                            opened.map_err(|e| ComponentError::Other(e.to_string()))?;
                        if report.truncated_bytes > 0 {
                            dropped_counter(t, &ctx.id, "corrupt").add(report.truncated_items);
                            tracing::warn!(component = %ctx.id, dir = %shard_dir.display(), bytes = report.truncated_bytes, samples = report.truncated_items, "Cut a torn or corrupt tail off the sending queue.");
                        }
                        if report.records > 0 {
                            tracing::info!(component = %ctx.id, dir = %shard_dir.display(), requests = report.records, samples = report.items, "Replaying requests queued by a previous run.");
                        }
                        sender.queued.add(report.items as i64);
                        senders.spawn(sender.clone().run_shard_file(
                            shard.clone(),
                            i,
                            DiskQueue::new(fq),
                        ));
                    }
                    if let Some(extra) = leftover_shards(&dir, n_shards) {
                        tracing::warn!(component = %ctx.id, dir = %dir.display(), shards = ?extra, "Queued requests of shards beyond remote_write_queue.num_consumers are not replayed; restore the previous num_consumers to send them.");
                    }
                }
            }
            tracing::info!(component = %ctx.id, endpoint = %self.uri, shards = n_shards, "Sending metrics with Prometheus remote write.");

            let mut table = SeriesTable::new(
                &cfg.external_labels,
                cfg.resource_to_telemetry_conversion,
                n_shards,
                cfg.stale_after,
            );
            let mut out: Vec<Vec<Queued>> = (0..n_shards).map(|_| Vec::new()).collect();
            let mut reported = TableStats::default();
            let queue_full = dropped_counter(t, &ctx.id, "queue_full");
            // Senders look these up when they drop (rare); register them at 0 now.
            for reason in ["rejected", "retries_exhausted", "shutdown"] {
                dropped_counter(t, &ctx.id, reason);
            }
            let counters = [
                dropped_counter(t, &ctx.id, "unsupported"),
                dropped_counter(t, &ctx.id, "invalid"),
                dropped_counter(t, &ctx.id, "out_of_order"),
            ];
            let tick_every =
                (cfg.stale_after / 2).clamp(Duration::from_millis(50), Duration::from_secs(5));
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    batch = input.recv() => match batch {
                        Some(Signal::Metrics(rm)) => table.apply(&rm, now_ms(), Instant::now(), &mut out),
                        Some(_) => continue,
                        None => break,
                    },
                    _ = tick.tick() => table.expire(now_ms(), Instant::now(), &mut out),
                }
                for (shard, items) in shards.iter().zip(out.iter_mut()) {
                    let n = items.len();
                    let over = shard.push(items, cfg.remote_write_queue.queue_size);
                    sender.queued.add(n as i64 - over as i64);
                    queue_full.add(over as u64);
                }
                let s = table.stats;
                counters[0].add(s.unsupported - reported.unsupported);
                counters[1].add(s.invalid - reported.invalid);
                counters[2].add(s.out_of_order - reported.out_of_order);
                reported = s;
            }
            // Input closed: the senders drain their queues and stop.
            for shard in &shards {
                shard.close();
            }
            while senders.join_next().await.is_some() {}
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::{TimeSeries, WriteRequest};
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality,
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ScopeMetrics, Sum, Summary,
        SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn s(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn num(attrs: Vec<KeyValue>, v: f64, t_ms: u64) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            time_unix_nano: t_ms * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn metric(name: &str, data: metric::Data) -> Metric {
        Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn counter(name: &str, pts: Vec<NumberDataPoint>) -> Metric {
        metric(
            name,
            metric::Data::Sum(Sum {
                data_points: pts,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        )
    }

    fn batch(metrics: Vec<Metric>) -> Vec<ResourceMetrics> {
        vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", "celery"),
                    s("service.instance.id", "agent-1"),
                    s("host.name", "h1"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    fn table(shards: usize) -> SeriesTable {
        let ext: BTreeMap<String, String> = [("cluster".to_string(), "eu".to_string())].into();
        SeriesTable::new(&ext, false, shards, Duration::from_secs(60))
    }

    /// Run one batch; every sample as `name{k=v,...} value @ts`, sorted by shard then order.
    fn run(t: &mut SeriesTable, b: &[ResourceMetrics], now_ms: i64, now: Instant) -> Vec<Queued> {
        let mut out = vec![Vec::new(); t.shards];
        t.apply(b, now_ms, now, &mut out);
        out.into_iter().flatten().collect()
    }

    fn render(q: &Queued) -> String {
        let labels: Vec<String> =
            q.0.iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
        format!("{} {} @{}", labels.join(","), q.1.value, q.1.timestamp)
    }

    fn rendered(mut v: Vec<Queued>) -> Vec<String> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.iter().map(render).collect()
    }

    #[test]
    fn counters_gauges_and_sums() {
        let mut t = table(1);
        let b = batch(vec![
            counter(
                "celery_task_succeeded",
                vec![num(vec![s("name", "add"), s("hostname", "w1")], 3.0, 1000)],
            ),
            metric(
                "celery.queue-length",
                metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        attributes: vec![s("queue_name", "celery")],
                        time_unix_nano: 1_000_000_000,
                        value: Some(number_data_point::Value::AsInt(7)),
                        ..Default::default()
                    }],
                }),
            ),
            metric(
                "active",
                metric::Data::Sum(Sum {
                    data_points: vec![num(vec![], -2.0, 1000)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: false,
                }),
            ),
        ]);
        let got = rendered(run(&mut t, &b, 5000, Instant::now()));
        assert_eq!(
            got,
            [
                "__name__=active,cluster=eu,instance=agent-1,job=celery -2 @1000",
                "__name__=celery_queue_length,cluster=eu,instance=agent-1,job=celery,queue_name=celery 7 @1000",
                "__name__=celery_task_succeeded_total,cluster=eu,hostname=w1,instance=agent-1,job=celery,name=add 3 @1000",
            ]
        );
    }

    #[test]
    fn histograms_and_summaries() {
        let mut t = table(1);
        let b = batch(vec![
            metric(
                "celery_task_runtime",
                metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: vec![s("name", "add")],
                        time_unix_nano: 2_000_000_000,
                        count: 6,
                        sum: Some(4.25),
                        bucket_counts: vec![1, 2, 3],
                        explicit_bounds: vec![0.005, 1.0],
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            ),
            metric(
                "rpc",
                metric::Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        time_unix_nano: 2_000_000_000,
                        count: 10,
                        sum: 12.5,
                        quantile_values: vec![ValueAtQuantile {
                            quantile: 0.5,
                            value: 1.0,
                        }],
                        ..Default::default()
                    }],
                }),
            ),
        ]);
        let got = rendered(run(&mut t, &b, 5000, Instant::now()));
        let base = "cluster=eu,instance=agent-1,job=celery";
        assert_eq!(
            got,
            [
                format!("__name__=celery_task_runtime_bucket,{base},le=+Inf,name=add 6 @2000"),
                format!("__name__=celery_task_runtime_bucket,{base},le=0.005,name=add 1 @2000"),
                format!("__name__=celery_task_runtime_bucket,{base},le=1,name=add 3 @2000"),
                format!("__name__=celery_task_runtime_count,{base},name=add 6 @2000"),
                format!("__name__=celery_task_runtime_sum,{base},name=add 4.25 @2000"),
                format!("__name__=rpc,{base},quantile=0.5 1 @2000"),
                format!("__name__=rpc_count,{base} 10 @2000"),
                format!("__name__=rpc_sum,{base} 12.5 @2000"),
            ]
        );
    }

    #[test]
    fn labels_are_sorted_and_unique() {
        let mut t = SeriesTable::new(&BTreeMap::new(), true, 1, Duration::from_secs(60));
        let b = batch(vec![counter(
            "x",
            vec![num(
                vec![
                    s("Zeta", "1"),
                    s("a.b", "dot"),
                    s("a-b", "dash"),
                    s("__name__", "evil"),
                    s("job", "override"),
                ],
                1.0,
                1000,
            )],
        )]);
        let got = run(&mut t, &b, 5000, Instant::now());
        let names: Vec<&str> = got[0].0.iter().map(|l| l.name.as_str()).collect();
        // Byte order: upper case before `_` before lower case.
        assert_eq!(
            names,
            ["Zeta", "__name__", "a_b", "host_name", "instance", "job"]
        );
        assert_eq!(got[0].0[1].value, "x_total");
        assert_eq!(got[0].0[2].value, "dash;dot");
        assert_eq!(got[0].0[5].value, "override");
    }

    #[test]
    fn samples_of_a_series_stay_in_one_shard_in_timestamp_order() {
        let shards = 4;
        let mut t = table(shards);
        let now = Instant::now();
        let mut per_series: HashMap<Arc<[Label]>, (usize, Vec<i64>)> = HashMap::new();
        let names: Vec<String> = (0..50).map(|i| format!("task{i}")).collect();
        let mut record = |t: &mut SeriesTable, ts_ms: u64| {
            let b = batch(vec![counter(
                "c",
                names
                    .iter()
                    .map(|n| num(vec![s("name", n)], ts_ms as f64, ts_ms))
                    .collect(),
            )]);
            let mut out = vec![Vec::new(); shards];
            t.apply(&b, 0, now, &mut out);
            for (i, shard) in out.into_iter().enumerate() {
                for (labels, sample) in shard {
                    assert_eq!(i, shard_of(&labels, shards));
                    let e = per_series.entry(labels).or_insert((i, Vec::new()));
                    assert_eq!(e.0, i, "a series moved shards");
                    e.1.push(sample.timestamp);
                }
            }
        };
        for ts in [1000, 2000, 1500, 2000, 3000] {
            record(&mut t, ts);
        }
        assert_eq!(per_series.len(), 50);
        let used: std::collections::HashSet<usize> = per_series.values().map(|v| v.0).collect();
        assert!(used.len() > 1, "50 series should use several shards");
        for (_, ts) in per_series.values() {
            // 1500 is older than 2000 (dropped); the second 2000 is a duplicate (skipped).
            assert_eq!(ts, &vec![1000, 2000, 3000]);
        }
        assert_eq!(t.stats.out_of_order, 50);
    }

    #[test]
    fn staleness_markers() {
        let mut t = SeriesTable::new(&BTreeMap::new(), false, 2, Duration::from_secs(10));
        let t0 = Instant::now();
        let two = |ts: u64, hosts: &[&str]| {
            batch(vec![metric(
                "celery_worker_up",
                metric::Data::Gauge(Gauge {
                    data_points: hosts
                        .iter()
                        .map(|h| num(vec![s("hostname", h)], 1.0, ts))
                        .collect(),
                }),
            )])
        };
        assert_eq!(run(&mut t, &two(1000, &["a", "b"]), 1000, t0).len(), 2);
        // `b` disappears; it is stale only once unseen for stale_after.
        let got = run(
            &mut t,
            &two(2000, &["a"]),
            2000,
            t0 + Duration::from_secs(5),
        );
        assert_eq!(got.len(), 1);
        let got = run(
            &mut t,
            &two(12_000, &["a"]),
            12_000,
            t0 + Duration::from_secs(11),
        );
        assert_eq!(got.len(), 2);
        let marker = got
            .iter()
            .find(|q| q.0.iter().any(|l| l.value == "b"))
            .expect("marker for b");
        assert_eq!(marker.1.value.to_bits(), STALE_NAN_BITS);
        assert_eq!(marker.1.timestamp, 12_000);
        assert!(is_stale_marker(marker.1.value));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats.stale_markers, 1);
        // The input stops altogether: the timer's expire() ends `a` too, after its last sample.
        let mut out = vec![Vec::new(); 2];
        t.expire(5, t0 + Duration::from_secs(30), &mut out);
        let all: Vec<Queued> = out.into_iter().flatten().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.value.to_bits(), STALE_NAN_BITS);
        assert_eq!(all[0].1.timestamp, 12_001);
        assert!(t.is_empty());
    }

    #[test]
    fn no_recorded_value_ends_the_series_and_real_nans_stay_real() {
        let mut t = table(1);
        let t0 = Instant::now();
        let g = |flags: u32, v: f64, ts: u64| {
            let mut p = num(vec![], v, ts);
            p.flags = flags;
            batch(vec![metric(
                "g",
                metric::Data::Gauge(Gauge {
                    data_points: vec![p],
                }),
            )])
        };
        let got = run(&mut t, &g(0, f64::from_bits(STALE_NAN_BITS), 1000), 0, t0);
        assert!(got[0].1.value.is_nan());
        assert!(!is_stale_marker(got[0].1.value));
        let got = run(&mut t, &g(prom::NO_RECORDED_VALUE, 0.0, 2000), 0, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.value.to_bits(), STALE_NAN_BITS);
        assert_eq!(got[0].1.timestamp, 2000);
        assert!(t.is_empty());
    }

    #[test]
    fn unsupported_points_are_counted() {
        let mut t = table(1);
        let b = batch(vec![metric(
            "d",
            metric::Data::Sum(Sum {
                data_points: vec![num(vec![], 1.0, 1), num(vec![], 2.0, 1)],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            }),
        )]);
        assert!(run(&mut t, &b, 0, Instant::now()).is_empty());
        assert_eq!(t.stats.unsupported, 2);
    }

    #[test]
    fn direct_encoding_equals_the_message_and_survives_snappy() {
        let mut t = table(1);
        let b = batch(vec![
            counter("a", vec![num(vec![s("name", "x")], 1.5, 1000)]),
            counter("b", vec![num(vec![], 0.0, 1000)]),
        ]);
        let q = run(&mut t, &b, 0, Instant::now());
        let mut buf = Vec::new();
        encode_request(&q, &mut buf);
        let want = WriteRequest {
            timeseries: q
                .iter()
                .map(|(l, s)| TimeSeries {
                    labels: l.to_vec(),
                    samples: vec![*s],
                    ..Default::default()
                })
                .collect(),
            metadata: vec![],
        };
        assert_eq!(buf, want.encode_to_vec());
        let compressed = snap::raw::Encoder::new().compress_vec(&buf).unwrap();
        // Block format: starts with the varint of the uncompressed length, no stream header.
        assert_ne!(compressed[0], 0xff);
        let back = snap::raw::Decoder::new()
            .decompress_vec(&compressed)
            .unwrap();
        assert_eq!(WriteRequest::decode(&back[..]).unwrap(), want);
    }

    #[tokio::test]
    async fn full_queue_drops_oldest() {
        let shard = Shard::new();
        let item = |ts: i64| -> Queued {
            (
                Arc::from(vec![]),
                Sample {
                    value: 0.0,
                    timestamp: ts,
                },
            )
        };
        let mut v: Vec<Queued> = (0..5).map(item).collect();
        assert_eq!(shard.push(&mut v, 3), 2);
        assert!(v.is_empty());
        let got = shard.take(2).await.unwrap();
        assert_eq!(
            got.iter().map(|q| q.1.timestamp).collect::<Vec<_>>(),
            [2, 3]
        );
        shard.close();
        assert_eq!(shard.take(10).await.unwrap().len(), 1);
        assert!(shard.take(10).await.is_none());
    }

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn config() {
        let v: Value = serde_yaml_ng::from_str(
            "endpoint: http://prom:9090/api/v1/write\ntimeout: 2s\nheaders: {X-Scope-OrgID: t}\nexternal_labels: {cluster: eu}\nresource_to_telemetry_conversion: {enabled: true}\nmax_samples_per_send: 500\nstale_after: 30s\nbasic_auth: {username: u, password: p}\nremote_write_queue: {queue_size: 1000, num_consumers: 2}\nretry_on_failure: {enabled: false, initial_interval: 10ms, max_interval: 1s, max_elapsed_time: 0s}\n",
        )
        .unwrap();
        let cfg: RemoteWriteConfig = config::decode(&v).unwrap();
        assert_eq!(cfg.max_samples_per_send, 500);
        assert_eq!(cfg.remote_write_queue.num_consumers, 2);
        assert!(!cfg.retry_on_failure.enabled);
        // Credentials never show in debug output (and so in logs).
        assert!(!format!("{cfg:?}").contains("password: \"p\""));
        assert!(format!("{cfg:?}").contains("<redacted>"));
        assert_eq!(auth_header(&cfg).unwrap().to_str().unwrap(), "Basic dTpw");
        assert!(build(&v).is_ok());
        assert!(build(&Value::Null).is_ok());
        let bad = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        assert_eq!(
            bad("endpoint: ftp://x/api/v1/write").as_deref(),
            Some("endpoint")
        );
        assert_eq!(
            bad("endpoint: http://x/api/v1/write\ntls: {ca_file: /x.pem}").as_deref(),
            Some("tls")
        );
        assert_eq!(
            bad("endpoint: https://x/api/v1/write\ntls: {ca_file: /nonexistent.pem}").as_deref(),
            Some("tls.ca_file")
        );
        assert_eq!(bad("endpoint: 'not a url'").as_deref(), Some("endpoint"));
        assert_eq!(
            bad("endpoint: http://u:p@x/api/v1/write").as_deref(),
            Some("endpoint")
        );
        assert_eq!(
            bad("headers: {Content-Type: text/plain}").as_deref(),
            Some("headers.Content-Type")
        );
        assert_eq!(
            bad("external_labels: {__x: y}").as_deref(),
            Some("external_labels.__x")
        );
        assert_eq!(
            bad("max_samples_per_send: 0").as_deref(),
            Some("max_samples_per_send")
        );
        assert_eq!(
            bad("bearer_token: t\nbasic_auth: {username: u}").as_deref(),
            Some("bearer_token")
        );
        assert_eq!(
            bad("remote_write_queue: {num_consumers: 0}").as_deref(),
            Some("remote_write_queue.num_consumers")
        );
        assert_eq!(bad("stale_after: 0s").as_deref(), Some("stale_after"));
        assert_eq!(bad("nope: 1").as_deref(), Some("nope"));
    }
}
