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
//!   prometheus_remote_write:          # or the collector's name, prometheusremotewrite
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
//!     namespace: ""                 # the collector's: `ns_` before every metric name
//!     add_metric_suffixes: true      # false: no `_total` on counters
//!     target_info: { enabled: false } # only false: no target_info series
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
//!       multiplier: 2
//!       randomization_factor: 0.5
//! ```
//!
//! The parts: `config.rs` (the settings), `series.rs` (OTLP → samples per shard, timestamp order,
//! staleness; no I/O), `wire.rs` (the request encoding), `shard.rs` (each shard's bounded queue)
//! and `sender.rs` (requests, retries, the file queue). This file builds the exporter and runs it.

mod config;
mod sender;
mod series;
mod shard;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use crate::component::{BoxRun, ComponentError, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{DecodeError, Value};
use crate::exporters::prom;
use crate::exporters::sending_queue::{self, DiskQueue, FileQueue};
use crate::signal::{Signal, SignalKind};

pub use config::{BasicAuth, QueueConfig, RemoteWriteConfig};
pub use sender::parse_retry_after;
pub use series::{is_stale_marker, shard_of, Queued, SeriesTable, TableStats, STALE_NAN_BITS};
pub use wire::encode_request;

use sender::{dropped_counter, Sender};
use shard::Shard;

pub const REGISTRATION: Registration = Registration {
    type_name: "prometheus_remote_write",
    factory: Factory::Exporter {
        accepts: &[SignalKind::Metrics],
        build,
    },
    defaults: crate::component::defaults::<RemoteWriteConfig>,
};

/// The reserved headers users cannot set.
const RESERVED_HEADERS: [&str; 4] = [
    "content-encoding",
    "content-type",
    "user-agent",
    "x-prometheus-remote-write-version",
];

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    // `tls.insecure` (the collector's configtls key): for an HTTP client the URL scheme decides,
    // so it must agree with the endpoint.
    let mut v = v.clone();
    let insecure = match v
        .get_mut("tls")
        .and_then(Value::as_mapping_mut)
        .and_then(|m| m.remove("insecure"))
    {
        None => None,
        Some(Value::Bool(b)) => Some(b),
        Some(_) => return Err(DecodeError::new("tls.insecure", "expected true or false")),
    };
    let cfg: RemoteWriteConfig = crate::config::decode(&v)?;
    if cfg.target_info.enabled {
        return Err(DecodeError::new(
            "target_info.enabled",
            "celeriac does not write target_info; set false (resource_to_telemetry_conversion puts resource attributes on every series)",
        ));
    }
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
    if https && insecure == Some(true) {
        return Err(DecodeError::new(
            "tls.insecure",
            "contradicts an https:// endpoint (use http:// for plaintext)",
        ));
    }
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
    cfg.retry_on_failure.check_factors()?;
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
            )
            .with_names(&cfg.namespace, cfg.add_metric_suffixes);
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
mod tests;
