//! OTLP load generator and counting sink for `scripts/bench-e2e otlp`.
//!
//! * `otlp-load send --target 127.0.0.1:4317 --protocol grpc|http --signal traces|metrics|logs
//!   --items 100 --connections 4 --seconds 10 [--gzip] [--rate N]` sends one pre-encoded request
//!   (built once, compressed once) over and over on several connections and prints what it sent
//!   and what was refused, as one JSON line. Nothing is encoded per request, so the generator's
//!   ceiling (printed by running it straight against the sink) is far above any agent's. With
//!   `--stamp` (traces, no gzip) each request's first span starts at the moment it is sent: the
//!   8 bytes of that fixed64 field are written into a copy of the request, nothing re-encoded.
//! * `otlp-load sink --listen 127.0.0.1:0 --port-file F` accepts OTLP/gRPC exports of all three
//!   signals over HTTP/2, counts the items in each (a full protobuf decode, as a real backend pays)
//!   and serves the counts as JSON at `GET /count` on a second port (HTTP/1.1); the port file gets
//!   both ports, `"<grpc> <count>"`. A span that started in the last minute is a stamped one: its
//!   age on arrival is the end-to-end latency (generator → agent → sink), reported as
//!   `e2e_ms` percentiles.
//!
//! Standalone on purpose: it uses only hyper and the OTLP types, not celeriac's code, so a change
//! to the agent cannot change the load.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum SignalArg {
    Traces,
    Metrics,
    Logs,
}

impl SignalArg {
    fn parse(s: &str) -> Result<Self, BoxError> {
        Ok(match s {
            "traces" => Self::Traces,
            "metrics" => Self::Metrics,
            "logs" => Self::Logs,
            _ => return Err(format!("--signal {s}: expected traces, metrics or logs").into()),
        })
    }
    fn grpc_path(self) -> &'static str {
        match self {
            Self::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Self::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Self::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "/v1/traces",
            Self::Metrics => "/v1/metrics",
            Self::Logs => "/v1/logs",
        }
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", "shop-worker"),
            kv("host.name", "host1"),
            kv("telemetry.sdk.language", "python"),
            kv("telemetry.sdk.name", "opentelemetry"),
        ],
        ..Default::default()
    })
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: "opentelemetry.instrumentation.celery".into(),
        version: "0.59b0".into(),
        ..Default::default()
    })
}

/// The first span's start time in a `--stamp` request, overwritten at each send.
const STAMP_MARK: u64 = 0x5a5a_5a5a_5a5a_5a5a;

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The request body to send now: `body`, or with `--stamp` a copy whose stamped span starts now.
fn fresh(body: &Bytes, stamp_at: Option<usize>) -> Bytes {
    match stamp_at {
        None => body.clone(),
        Some(at) => {
            let mut b = body.to_vec();
            b[at..at + 8].copy_from_slice(&unix_nanos().to_le_bytes());
            b.into()
        }
    }
}

/// One request of `items` spans / data points / log records, shaped like what
/// opentelemetry-instrumentation-celery and the Python SDK send.
fn request(signal: SignalArg, items: u64, stamp: bool) -> Vec<u8> {
    let t0 = 1_795_606_961_000_000_000u64;
    match signal {
        SignalArg::Traces => {
            let spans = (0..items)
                .map(|i| Span {
                    trace_id: (u128::from(i) + 1).to_be_bytes().to_vec(),
                    span_id: (i + 1).to_be_bytes().to_vec(),
                    parent_span_id: (i + 1_000_000).to_be_bytes().to_vec(),
                    name: "run/shop.charge_card".into(),
                    kind: 5,
                    start_time_unix_nano: if stamp && i == 0 { STAMP_MARK } else { t0 + i },
                    end_time_unix_nano: t0 + 20_000_000 + i,
                    attributes: vec![
                        kv("celery.action", "run"),
                        kv("celery.task_name", "shop.charge_card"),
                        kv(
                            "messaging.message.id",
                            "d1ec4bb6-d942-4613-b166-064acf3a9861",
                        ),
                        kv("celery.state", "SUCCESS"),
                        kv("celery.hostname", "w1@host1"),
                    ],
                    ..Default::default()
                })
                .collect();
            ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: resource(),
                    scope_spans: vec![ScopeSpans {
                        scope: scope(),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        SignalArg::Metrics => {
            let metrics = (0..items)
                .map(|i| Metric {
                    name: format!("evaluation_tasks_{}", i % 50),
                    unit: "1".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("status", "ok"), kv("queue", "celery")],
                            start_time_unix_nano: t0,
                            time_unix_nano: t0 + i,
                            value: Some(number_data_point::Value::AsInt(i as i64)),
                            ..Default::default()
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                })
                .collect();
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: resource(),
                    scope_metrics: vec![ScopeMetrics {
                        scope: scope(),
                        metrics,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
        SignalArg::Logs => {
            let log_records = (0..items)
                .map(|i| LogRecord {
                    time_unix_nano: t0 + i,
                    observed_time_unix_nano: t0 + i,
                    severity_number: 9,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            "task.started evaluation of model 42 on shard 7".into(),
                        )),
                    }),
                    attributes: vec![
                        kv("task_id", "d1ec4bb6-d942-4613-b166-064acf3a9861"),
                        kv("logger", "shop.tasks"),
                    ],
                    trace_id: (u128::from(i) + 1).to_be_bytes().to_vec(),
                    span_id: (i + 1).to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect();
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: resource(),
                    scope_logs: vec![ScopeLogs {
                        scope: scope(),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<&str> {
        let flag = format!("--{name}");
        let prefix = format!("--{name}=");
        let mut it = self.0.iter();
        while let Some(a) = it.next() {
            if *a == flag {
                return it.next().map(String::as_str);
            }
            if let Some(v) = a.strip_prefix(&prefix) {
                return Some(v);
            }
        }
        None
    }
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| *a == format!("--{name}"))
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, BoxError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v}: not a number").into()),
        }
    }
}

#[derive(Default)]
struct SendStats {
    requests_ok: AtomicU64,
    requests_refused: AtomicU64,
    errors: AtomicU64,
    latency_us_sum: AtomicU64,
}

/// How one request ended.
enum Outcome {
    Ok,
    Refused,
    /// Counted as an error; the connection goes on.
    Error,
    /// Counted as an error; this task stops (the connection is gone).
    Broken,
}

/// One sending task's loop: requests one after the other until the deadline, every `interval`
/// when a rate is set, each counted with its latency.
#[derive(Clone)]
struct Pace {
    deadline: Instant,
    interval: Option<Duration>,
    stats: Arc<SendStats>,
}

impl Pace {
    async fn run<F, Fut>(self, mut request: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let stats = &self.stats;
        let mut next = Instant::now();
        while Instant::now() < self.deadline {
            if let Some(iv) = self.interval {
                tokio::time::sleep_until(next.into()).await;
                next += iv;
            }
            let call = request();
            let t = Instant::now();
            let counter = match call.await {
                Outcome::Ok => &stats.requests_ok,
                Outcome::Refused => &stats.requests_refused,
                Outcome::Error => &stats.errors,
                Outcome::Broken => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            stats
                .latency_us_sum
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }
}

async fn send(args: Args) -> Result<(), BoxError> {
    let target: SocketAddr = args.get("target").unwrap_or("127.0.0.1:4317").parse()?;
    let grpc = match args.get("protocol").unwrap_or("grpc") {
        "grpc" => true,
        "http" => false,
        p => return Err(format!("--protocol {p}: expected grpc or http").into()),
    };
    let signal = SignalArg::parse(args.get("signal").unwrap_or("traces"))?;
    let items: u64 = args.num("items", 100)?;
    let connections: usize = args.num("connections", 4)?;
    let seconds: f64 = args.num("seconds", 10.0)?;
    let rate: f64 = args.num("rate", 0.0)?; // requests/s over all connections; 0 = as fast as possible
    let in_flight: usize = args.num("in-flight", 4)?; // concurrent requests per connection
    let use_gzip = args.has("gzip");
    let stamp = args.has("stamp");
    if stamp && (use_gzip || signal != SignalArg::Traces) {
        return Err("--stamp: traces without --gzip only".into());
    }

    let raw = request(signal, items, stamp);
    let payload = if use_gzip { gzip(&raw) } else { raw.clone() };
    let body: Bytes = if grpc {
        let mut framed = Vec::with_capacity(payload.len() + 5);
        framed.push(u8::from(use_gzip));
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(&payload);
        framed.into()
    } else {
        payload.into()
    };
    let mark = STAMP_MARK.to_le_bytes();
    let stamp_at = stamp
        .then(|| body.windows(8).position(|w| w == mark))
        .flatten();

    let stats = Arc::new(SendStats::default());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let per_task_interval = if rate > 0.0 {
        Some(Duration::from_secs_f64(
            (connections * in_flight) as f64 / rate,
        ))
    } else {
        None
    };
    let pace = Pace {
        deadline,
        interval: per_task_interval,
        stats: stats.clone(),
    };
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(stream);
        if grpc {
            let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .handshake::<_, Full<Bytes>>(io)
                .await?;
            tokio::spawn(conn);
            for _ in 0..in_flight {
                let (sender, body) = (sender.clone(), body.clone());
                tasks.push(tokio::spawn(pace.clone().run(move || {
                    let mut sender = sender.clone();
                    let mut req = Request::post(format!("http://{target}{}", signal.grpc_path()))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers");
                    if use_gzip {
                        req = req.header("grpc-encoding", "gzip");
                    }
                    let req = req.body(Full::new(fresh(&body, stamp_at)));
                    async move {
                        let Ok(req) = req else {
                            return Outcome::Broken;
                        };
                        let Ok(resp) = sender.send_request(req).await else {
                            return Outcome::Broken;
                        };
                        let ok_status = resp.status().is_success();
                        let grpc_status = resp
                            .headers()
                            .get("grpc-status")
                            .map(|v| v.as_bytes().to_vec());
                        let Ok(collected) = resp.into_body().collect().await else {
                            return Outcome::Error;
                        };
                        let status = grpc_status.or_else(|| {
                            collected
                                .trailers()
                                .and_then(|t| t.get("grpc-status"))
                                .map(|v| v.as_bytes().to_vec())
                        });
                        if ok_status && status.as_deref() == Some(b"0") {
                            Outcome::Ok
                        } else {
                            Outcome::Refused
                        }
                    }
                })));
            }
        } else {
            // HTTP/1.1: one request at a time per connection, so `in_flight` connections each.
            drop(io);
            for _ in 0..in_flight {
                let stream = tokio::net::TcpStream::connect(target).await?;
                stream.set_nodelay(true)?;
                let (sender, conn) =
                    hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                        .await?;
                tokio::spawn(conn);
                let sender = Arc::new(tokio::sync::Mutex::new(sender));
                let body = body.clone();
                tasks.push(tokio::spawn(pace.clone().run(move || {
                    let sender = sender.clone();
                    let mut req = Request::post(signal.http_path())
                        .header("host", target.to_string())
                        .header("content-type", "application/x-protobuf");
                    if use_gzip {
                        req = req.header("content-encoding", "gzip");
                    }
                    let req = req.body(Full::new(fresh(&body, stamp_at)));
                    async move {
                        let Ok(req) = req else {
                            return Outcome::Broken;
                        };
                        let Ok(resp) = sender.lock().await.send_request(req).await else {
                            return Outcome::Broken;
                        };
                        let ok = resp.status().is_success();
                        if resp.into_body().collect().await.is_err() {
                            return Outcome::Broken;
                        }
                        if ok {
                            Outcome::Ok
                        } else {
                            Outcome::Refused
                        }
                    }
                })));
            }
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = stats.requests_ok.load(Ordering::Relaxed);
    let refused = stats.requests_refused.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let lat = stats.latency_us_sum.load(Ordering::Relaxed);
    println!(
        "{{\"requests_ok\":{ok},\"requests_refused\":{refused},\"errors\":{errors},\"items_ok\":{},\"items_per_request\":{items},\"request_bytes\":{},\"wire_bytes\":{},\"seconds\":{elapsed:.3},\"items_per_second\":{:.0},\"mean_latency_ms\":{:.3}}}",
        ok * items,
        raw.len(),
        body.len(),
        (ok * items) as f64 / elapsed,
        if ok + refused > 0 { lat as f64 / 1000.0 / (ok + refused) as f64 } else { 0.0 },
    );
    Ok(())
}

#[derive(Default)]
struct SinkCounts {
    /// Ages on arrival of stamped spans, in microseconds.
    e2e_us: std::sync::Mutex<Vec<u64>>,
    spans: AtomicU64,
    data_points: AtomicU64,
    log_records: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
}

fn count_request(path: &str, msg: &[u8], counts: &SinkCounts) -> Result<(), prost::DecodeError> {
    if path.ends_with("TraceService/Export") {
        let req = ExportTraceServiceRequest::decode(msg)?;
        let spans = || {
            req.resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
        };
        let now = unix_nanos();
        let ages: Vec<u64> = spans()
            .filter(|s| {
                s.start_time_unix_nano <= now && now - s.start_time_unix_nano < 60_000_000_000
            })
            .map(|s| (now - s.start_time_unix_nano) / 1000)
            .collect();
        if !ages.is_empty() {
            counts
                .e2e_us
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ages);
        }
        let n = spans().count();
        counts.spans.fetch_add(n as u64, Ordering::Relaxed);
    } else if path.ends_with("MetricsService/Export") {
        let req = ExportMetricsServiceRequest::decode(msg)?;
        let n: usize = req
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(metric::Data::Gauge(g)) => g.data_points.len(),
                Some(metric::Data::Sum(s)) => s.data_points.len(),
                Some(metric::Data::Histogram(h)) => h.data_points.len(),
                Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(metric::Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        counts.data_points.fetch_add(n as u64, Ordering::Relaxed);
    } else {
        let req = ExportLogsServiceRequest::decode(msg)?;
        let n: usize = req
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        counts.log_records.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(())
}

async fn sink_handle(
    req: Request<Incoming>,
    counts: Arc<SinkCounts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/count" {
        let mut ages = counts
            .e2e_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ages.sort_unstable();
        let pct = |q: f64| {
            ages.get(((ages.len() as f64 * q) as usize).min(ages.len().saturating_sub(1)))
                .map_or(0.0, |us| *us as f64 / 1000.0)
        };
        let body = format!(
            "{{\"e2e_ms\":{{\"n\":{},\"p50\":{:.3},\"p99\":{:.3},\"max\":{:.3}}},\"spans\":{},\"data_points\":{},\"log_records\":{},\"requests\":{},\"bad_requests\":{}}}",
            ages.len(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
            counts.spans.load(Ordering::Relaxed),
            counts.data_points.load(Ordering::Relaxed),
            counts.log_records.load(Ordering::Relaxed),
            counts.requests.load(Ordering::Relaxed),
            counts.bad_requests.load(Ordering::Relaxed),
        );
        return Ok(Response::new(Full::new(body.into())));
    }
    let gzip_in = req
        .headers()
        .get("grpc-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let grpc_error = |code: &'static str| {
        Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    };
    let mut body = match req.into_body().collect().await {
        Ok(b) => b.aggregate(),
        Err(_) => return Ok(grpc_error("13")),
    };
    counts.requests.fetch_add(1, Ordering::Relaxed);
    // One gRPC message per request (what OTLP exporters send).
    if body.remaining() < 5 {
        counts.bad_requests.fetch_add(1, Ordering::Relaxed);
        return Ok(grpc_error("3"));
    }
    let compressed = body.get_u8() == 1;
    let len = body.get_u32() as usize;
    let msg = body.copy_to_bytes(body.remaining().min(len));
    let msg: Vec<u8> = if compressed && gzip_in {
        let mut out = Vec::new();
        let mut d = flate2::read::GzDecoder::new(&msg[..]);
        if std::io::Read::read_to_end(&mut d, &mut out).is_err() {
            counts.bad_requests.fetch_add(1, Ordering::Relaxed);
            return Ok(grpc_error("3"));
        }
        out
    } else {
        msg.to_vec()
    };
    if count_request(&path, &msg, &counts).is_err() {
        counts.bad_requests.fetch_add(1, Ordering::Relaxed);
        return Ok(grpc_error("3"));
    }
    // An empty Export*ServiceResponse: a zero-length message.
    Ok(Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "0")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap_or_default())
}

async fn sink(args: Args) -> Result<(), BoxError> {
    let listen: SocketAddr = args.get("listen").unwrap_or("127.0.0.1:0").parse()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // The counts on HTTP/1.1 (for scripts), the exports on HTTP/2 (gRPC).
    let count_listener = tokio::net::TcpListener::bind((listen.ip(), 0)).await?;
    let count_addr = count_listener.local_addr()?;
    if let Some(f) = args.get("port-file") {
        let tmp = format!("{f}.tmp");
        std::fs::write(&tmp, format!("{} {}", addr.port(), count_addr.port()))?;
        std::fs::rename(&tmp, f)?;
    }
    eprintln!("otlp-load sink: gRPC on {addr}, GET /count on {count_addr}");
    let counts = Arc::new(SinkCounts::default());
    let c = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = count_listener.accept().await {
            let counts = c.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| sink_handle(req, counts.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| sink_handle(req, counts.clone()));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() -> Result<(), BoxError> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((mode, rest)) = argv.split_first() else {
        return Err("usage: otlp-load send|sink [--flags] (see the file's doc)".into());
    };
    let threads: usize = Args(rest.to_vec()).num("threads", 1)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let args = Args(rest.to_vec());
    match mode.as_str() {
        "send" => rt.block_on(send(args)),
        "sink" => rt.block_on(sink(args)),
        m => Err(format!("unknown mode {m}: expected send or sink").into()),
    }
}
