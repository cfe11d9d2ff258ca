//! Sending: each shard's requests, their retries, and the file queue (`storage: file`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::shard::Shard;
use super::wire::encode_request;
use crate::exporters::backoff::Backoff;
use crate::exporters::retry::{pause, Attempts, PrometheusDefaults, RetryConfig};
use crate::exporters::sending_queue::DiskQueue;
use crate::telemetry::{Counter, Gauge, Telemetry, Throttle};

const USER_AGENT: &str = concat!("celeriac/", env!("CARGO_PKG_VERSION"));

/// How much of a rejected request's response body goes into the log.
const ERROR_BODY_LIMIT: usize = 512;

/// A 4xx warning at most this often per shard (the rest go to debug).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// HTTP or HTTPS by the endpoint's scheme.
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

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
pub(super) struct Sender {
    pub(super) id: Arc<str>,
    pub(super) client: Client<Connector, Full<Bytes>>,
    pub(super) uri: Uri,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) auth: Option<HeaderValue>,
    pub(super) timeout: Duration,
    pub(super) retry: RetryConfig<PrometheusDefaults>,
    pub(super) max_samples_per_send: usize,
    pub(super) shutdown: CancellationToken,
    pub(super) sent: Counter,
    pub(super) retries: Counter,
    pub(super) queued: Gauge,
    pub(super) telemetry: Telemetry,
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

    pub(super) async fn run_shard(self: Arc<Self>, shard: Arc<Shard>, index: usize) {
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
    pub(super) async fn run_shard_file(
        self: Arc<Self>,
        shard: Arc<Shard>,
        index: usize,
        disk: DiskQueue,
    ) {
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
        let mut attempts = Attempts::new(&self.retry, Backoff::random_seed());
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
                SendError::Retryable { retry_after, .. } => *retry_after,
                _ => None,
            };
            let Some(delay) = attempts.next_wait(server_delay) else {
                return Err(("retries_exhausted", err));
            };
            if attempt == 0 {
                tracing::warn!(component = %self.id, error = %err, delay = ?delay, "Remote-write request failed, retrying.");
            } else {
                tracing::debug!(component = %self.id, error = %err, attempt, delay = ?delay, "Remote-write request failed again, retrying.");
            }
            self.retries.inc();
            attempt += 1;
            pause(delay, &self.shutdown).await;
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

pub(super) fn dropped_counter(t: &Telemetry, id: &str, reason: &'static str) -> Counter {
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
