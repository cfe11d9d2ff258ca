//! `batch` processor: groups items into larger batches, flushing at `send_batch_size` items or
//! after `timeout`, whichever comes first, and flushing what it holds when its input closes.
//! With `send_batch_max_size` (the collector's key) no batch sent holds more items than that:
//! larger ones are split (between resources for OTLP data, so one resource with more items than
//! the maximum still goes whole; between events for Celery). Batches in their wire form
//! ([`Signal::Encoded`], requests an `otlp` receiver forwards undecoded) are concatenated as
//! bytes, which is the encoding of the batch holding all their entries; a split falls between
//! those requests, and the rare request alone over the maximum is decoded and split between
//! resources as above. `metadata_keys` (batching per
//! client metadata) is accepted only empty: celeriac does not carry request metadata.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::component::{BoxRun, Context, Input, Output, Processor};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, types, Value};
use crate::signal::{unshare, Encoded, Signal, SignalKind};
use std::sync::Arc;

pub const REGISTRATION: Registration = Registration {
    type_name: "batch",
    factory: Factory::Processor {
        signals: &SignalKind::ALL,
        build,
    },
    defaults: crate::component::defaults::<BatchConfig>,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Flush once this many items (spans, data points, log records, events) are held.
    pub send_batch_size: usize,
    /// Flush at most this long after the first item of a batch arrived.
    #[serde(with = "types::duration")]
    pub timeout: Duration,
    /// Upper bound of the items in one batch sent; 0: no bound.
    pub send_batch_max_size: usize,
    /// The collector's per-metadata batching; only `[]` is accepted.
    pub metadata_keys: Vec<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
            send_batch_max_size: 0,
            metadata_keys: Vec::new(),
        }
    }
}

fn build(v: &Value) -> BuildResult<dyn Processor> {
    let cfg: BatchConfig = config::decode(v)?;
    if cfg.send_batch_size == 0 {
        return Err(config::DecodeError::new(
            "send_batch_size",
            "must be at least 1",
        ));
    }
    if cfg.send_batch_max_size != 0 && cfg.send_batch_max_size < cfg.send_batch_size {
        return Err(config::DecodeError::new(
            "send_batch_max_size",
            "must be 0 or at least send_batch_size",
        ));
    }
    if !cfg.metadata_keys.is_empty() {
        return Err(config::DecodeError::new(
            "metadata_keys",
            "celeriac does not carry client metadata (include_metadata), so it cannot batch by it; remove metadata_keys",
        ));
    }
    Ok(Box::new(BatchProcessor { cfg }))
}

pub struct BatchProcessor {
    cfg: BatchConfig,
}

/// The batch being built; one pipeline carries one signal, so only one vector is ever in use.
#[derive(Default)]
struct Pending {
    traces: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
    metrics: Vec<opentelemetry_proto::tonic::metrics::v1::ResourceMetrics>,
    logs: Vec<opentelemetry_proto::tonic::logs::v1::ResourceLogs>,
    celery: Vec<crate::celery::event::CeleryEvent>,
    /// Requests still in their wire form, concatenated when sent.
    encoded: Vec<Encoded>,
    items: usize,
}

/// `v` in runs of at most `max` items each (one item over `max` makes a run of its own).
fn chunks<T>(v: Vec<T>, max: usize, count: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let (mut cur, mut n) = (Vec::new(), 0);
    for x in v {
        let c = count(&x);
        if !cur.is_empty() && n + c > max {
            out.push(std::mem::take(&mut cur));
            n = 0;
        }
        n += c;
        cur.push(x);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// One wire-form batch holding every entry of `parts` (all of one signal), `None` if empty.
fn concat(mut parts: Vec<Encoded>) -> Option<Signal> {
    if parts.len() <= 1 {
        return parts.pop().map(Signal::Encoded);
    }
    let mut body = bytes::BytesMut::with_capacity(parts.iter().map(|p| p.body.len()).sum());
    parts.iter().for_each(|p| body.extend_from_slice(&p.body));
    Some(Signal::Encoded(Encoded {
        kind: parts[0].kind,
        items: parts.iter().map(|p| p.items).sum(),
        body: body.freeze(),
    }))
}

impl Pending {
    fn push(&mut self, s: Signal) {
        self.items += s.item_count();
        match s {
            Signal::Traces(v) => self.traces.extend(unshare(v)),
            Signal::Metrics(v) => self.metrics.extend(unshare(v)),
            Signal::Logs(v) => self.logs.extend(unshare(v)),
            Signal::Celery(v) => self.celery.extend(unshare(v)),
            Signal::Encoded(e) => self.encoded.push(e),
        }
    }

    /// Everything held, in batches of at most `max` items (0: one batch per signal).
    fn take_split(&mut self, max: usize) -> Vec<Signal> {
        let encoded = std::mem::take(&mut self.encoded);
        let mut all = self.take();
        if max == 0 {
            all.extend(concat(encoded));
            return all;
        }
        for run in chunks(encoded, max, |e| e.items as usize) {
            match &run[..] {
                // Alone over the maximum: decoded, to be split between resources below.
                [one] if one.items as usize > max => match one.decode() {
                    Ok(typed) => all.push(typed),
                    Err(e) => {
                        tracing::warn!(error = %e, "An undecodable OTLP request over send_batch_max_size goes unsplit.");
                        all.extend(concat(run));
                    }
                },
                _ => all.extend(concat(run)),
            }
        }
        let mut out = Vec::new();
        for s in all {
            if s.item_count() <= max {
                out.push(s);
                continue;
            }
            match s {
                Signal::Traces(v) => out.extend(
                    chunks(unshare(v), max, |r| {
                        r.scope_spans.iter().map(|s| s.spans.len()).sum()
                    })
                    .into_iter()
                    .map(|c| Signal::Traces(Arc::new(c))),
                ),
                Signal::Metrics(v) => out.extend(
                    chunks(unshare(v), max, |r| {
                        r.scope_metrics
                            .iter()
                            .flat_map(|s| &s.metrics)
                            .map(|m| crate::signal::data_point_count(m.data.as_ref()))
                            .sum()
                    })
                    .into_iter()
                    .map(|c| Signal::Metrics(Arc::new(c))),
                ),
                Signal::Logs(v) => out.extend(
                    chunks(unshare(v), max, |r| {
                        r.scope_logs.iter().map(|s| s.log_records.len()).sum()
                    })
                    .into_iter()
                    .map(|c| Signal::Logs(Arc::new(c))),
                ),
                Signal::Celery(v) => out.extend(
                    chunks(unshare(v), max, |_| 1)
                        .into_iter()
                        .map(|c| Signal::Celery(Arc::new(c))),
                ),
                // Undecodable, so it cannot be split.
                Signal::Encoded(e) => out.push(Signal::Encoded(e)),
            }
        }
        out
    }

    fn take(&mut self) -> Vec<Signal> {
        self.items = 0;
        let mut out = Vec::new();
        if !self.traces.is_empty() {
            out.push(Signal::Traces(Arc::new(std::mem::take(&mut self.traces))));
        }
        if !self.metrics.is_empty() {
            out.push(Signal::Metrics(Arc::new(std::mem::take(&mut self.metrics))));
        }
        if !self.logs.is_empty() {
            out.push(Signal::Logs(Arc::new(std::mem::take(&mut self.logs))));
        }
        if !self.celery.is_empty() {
            out.push(Signal::Celery(Arc::new(std::mem::take(&mut self.celery))));
        }
        out
    }
}

impl Processor for BatchProcessor {
    /// Wire-form batches are concatenated (see [`Pending`]).
    fn takes_encoded(&self) -> bool {
        true
    }

    fn run(self: Box<Self>, _ctx: Context, input: Input, out: Output) -> BoxRun {
        Box::pin(async move {
            let mut pending = Pending::default();
            let mut deadline: Option<Instant> = None;
            loop {
                let next = match deadline {
                    Some(d) => tokio::select! {
                        s = input.recv() => s.map(Some),
                        _ = tokio::time::sleep_until(d) => Some(None),
                    },
                    None => input.recv().await.map(Some),
                };
                match next {
                    // Input closed: flush and stop.
                    None => break,
                    // Timer fired.
                    Some(None) => {
                        deadline = None;
                        for s in pending.take_split(self.cfg.send_batch_max_size) {
                            let _ = out.send(s).await;
                        }
                    }
                    Some(Some(s)) => {
                        pending.push(s);
                        if pending.items >= self.cfg.send_batch_size {
                            deadline = None;
                            for s in pending.take_split(self.cfg.send_batch_max_size) {
                                let _ = out.send(s).await;
                            }
                        } else if deadline.is_none() {
                            deadline = Some(Instant::now() + self.cfg.timeout);
                        }
                    }
                }
            }
            for s in pending.take_split(self.cfg.send_batch_max_size) {
                let _ = out.send(s).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Batch;
    use crate::telemetry::{Counter, Telemetry};
    use tokio_util::sync::CancellationToken;

    fn events(n: usize) -> Signal {
        Signal::Celery(Arc::new(vec![Default::default(); n]))
    }

    async fn harness(
        cfg: BatchConfig,
    ) -> (
        async_channel::Sender<Batch>,
        async_channel::Receiver<Batch>,
        tokio::task::JoinHandle<()>,
    ) {
        let (in_tx, in_rx) = async_channel::bounded(16);
        let (out_tx, out_rx) = async_channel::bounded(16);
        let ctx = Context {
            id: "processor/batch".into(),
            shutdown: CancellationToken::new(),
            telemetry: Telemetry::new(),
            ready: Default::default(),
        };
        let out = Output::new(
            vec![(SignalKind::Celery, vec![out_tx])],
            Counter::default(),
            Counter::default(),
        );
        let p = Box::new(BatchProcessor { cfg });
        let h = tokio::spawn(async move {
            let _ = p.run(ctx, Input::new(in_rx, Counter::default()), out).await;
        });
        (in_tx, out_rx, h)
    }

    #[tokio::test]
    async fn flushes_on_size() {
        let (tx, rx, _h) = harness(BatchConfig {
            send_batch_size: 5,
            timeout: Duration::from_secs(3600),
            ..BatchConfig::default()
        })
        .await;
        for _ in 0..3 {
            tx.send(events(2).into()).await.unwrap();
        }
        let b = rx.recv().await.unwrap();
        assert_eq!(b.item_count(), 6);
    }

    /// batchprocessor (config.go, splitting in batch_processor.go): no batch sent exceeds
    /// send_batch_max_size; metadata_keys only empty.
    #[tokio::test]
    async fn splits_at_max_size() {
        let (tx, rx, _h) = harness(BatchConfig {
            send_batch_size: 5,
            send_batch_max_size: 5,
            timeout: Duration::from_secs(3600),
            ..BatchConfig::default()
        })
        .await;
        tx.send(events(12).into()).await.unwrap();
        let mut sizes = Vec::new();
        for _ in 0..3 {
            sizes.push(rx.recv().await.unwrap().item_count());
        }
        assert_eq!(sizes, vec![5, 5, 2]);
        let bad = |y: &str| {
            build(&serde_yaml_ng::from_str(y).unwrap())
                .err()
                .map(|e| e.path)
        };
        assert_eq!(
            bad("{send_batch_size: 10, send_batch_max_size: 5}").as_deref(),
            Some("send_batch_max_size")
        );
        assert_eq!(
            bad("{metadata_keys: [tenant]}").as_deref(),
            Some("metadata_keys")
        );
        assert_eq!(
            bad("{send_batch_size: 10, send_batch_max_size: 20, metadata_keys: []}"),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_on_timeout() {
        let (tx, rx, _h) = harness(BatchConfig {
            send_batch_size: 100,
            timeout: Duration::from_millis(200),
            ..BatchConfig::default()
        })
        .await;
        tx.send(events(3).into()).await.unwrap();
        let b = tokio::time::timeout(Duration::from_secs(1), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.item_count(), 3);
    }

    #[tokio::test]
    async fn flushes_when_input_closes() {
        let (tx, rx, h) = harness(BatchConfig {
            send_batch_size: 100,
            timeout: Duration::from_secs(3600),
            ..BatchConfig::default()
        })
        .await;
        tx.send(events(4).into()).await.unwrap();
        drop(tx);
        h.await.unwrap();
        assert_eq!(rx.recv().await.unwrap().item_count(), 4);
        assert!(rx.recv().await.is_err(), "output closes after the flush");
    }

    fn encoded(resources: usize, spans: usize) -> Encoded {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span::default(); spans],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                resources
            ],
        };
        Encoded::read(SignalKind::Traces, req.encode_to_vec().into()).unwrap()
    }

    fn resources(s: &Signal) -> Vec<usize> {
        let Ok(Signal::Traces(rs)) = s.clone().typed() else {
            panic!("not traces")
        };
        rs.iter()
            .map(|r| r.scope_spans.iter().map(|s| s.spans.len()).sum())
            .collect()
    }

    /// Wire-form requests are concatenated as bytes: the result decodes to every resource of
    /// every request, in order.
    #[test]
    fn concatenates_encoded_requests() {
        let mut p = Pending::default();
        p.push(Signal::Encoded(encoded(2, 3)));
        p.push(Signal::Encoded(encoded(1, 4)));
        assert_eq!(p.items, 10);
        let out = p.take_split(0);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0], Signal::Encoded(_)));
        assert_eq!(out[0].item_count(), 10);
        assert_eq!(resources(&out[0]), vec![3, 3, 4]);
        assert!(p.take_split(0).is_empty());
    }

    /// With send_batch_max_size, a split falls between requests; a request alone over the
    /// maximum is decoded and split between its resources.
    #[test]
    fn splits_encoded_between_requests() {
        let mut p = Pending::default();
        for (r, s) in [(1, 2), (1, 2), (1, 3), (3, 2)] {
            p.push(Signal::Encoded(encoded(r, s)));
        }
        let out = p.take_split(5);
        let shapes: Vec<_> = out.iter().map(resources).collect();
        assert_eq!(shapes, vec![vec![2, 2], vec![3], vec![2, 2], vec![2]]);
        assert!(matches!(out[0], Signal::Encoded(_)));
        assert!(matches!(out[2], Signal::Traces(_)));
    }
}
