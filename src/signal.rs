//! The data that flows between components.
//!
//! A [`Signal`] is one batch of one kind behind an `Arc`, so fanning a batch out to several
//! exporters clones a pointer, never the data. Traces, metrics and logs are the OTLP protobuf
//! types, so OTLP received is OTLP sent with no conversion; Celery events are decoded once into
//! [`CeleryEvent`]s by the receiver.
//!
//! A batch an OTLP receiver only forwards stays in its wire form, [`Signal::Encoded`]: the
//! request's `Resource*` entries as received, with the item count read from the wire. The
//! runtime lets a receiver produce it only for pipelines whose every component takes it
//! (`batch`, `memory_limiter`, the `otlp`/`otlphttp` exporters); [`Signal::typed`] decodes it for any other use.
//!
//! Channels between components carry a [`Batch`]: the signal and its [`Stamp`], the moment its
//! oldest item entered the pipeline, which the pipeline's last stage turns into an observation of
//! `celeriac_pipeline_latency_seconds{pipeline}`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::{metric, ResourceMetrics};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::celery::event::CeleryEvent;
use crate::telemetry::Histogram;

/// The signal a pipeline carries (the part of a pipeline id before `/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    Traces,
    Metrics,
    Logs,
    Celery,
}

impl SignalKind {
    pub const ALL: [SignalKind; 4] = [
        SignalKind::Traces,
        SignalKind::Metrics,
        SignalKind::Logs,
        SignalKind::Celery,
    ];

    pub fn parse(s: &str) -> Option<SignalKind> {
        match s {
            "traces" => Some(SignalKind::Traces),
            "metrics" => Some(SignalKind::Metrics),
            "logs" => Some(SignalKind::Logs),
            "celery" => Some(SignalKind::Celery),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Traces => "traces",
            SignalKind::Metrics => "metrics",
            SignalKind::Logs => "logs",
            SignalKind::Celery => "celery",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch of one signal.
#[derive(Debug, Clone)]
pub enum Signal {
    Traces(Arc<Vec<ResourceSpans>>),
    Metrics(Arc<Vec<ResourceMetrics>>),
    Logs(Arc<Vec<ResourceLogs>>),
    Celery(Arc<Vec<CeleryEvent>>),
    /// Traces, metrics or logs as the body of their OTLP export request, not decoded.
    Encoded(Encoded),
}

/// One batch as the body of its `Export*ServiceRequest`. The request message has one repeated
/// field (`resource_spans`, `resource_metrics`, `resource_logs`, all field 1), so the body is
/// its `Resource*` entries, each written as field 1, and two bodies concatenated are the body of
/// the batch holding both.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub kind: SignalKind,
    /// Spans, data points or log records in the batch.
    pub items: u64,
    pub body: Body,
}

/// A request body held as the pieces it was received in: in order, their bytes are the body.
/// A batch of forwarded requests appends their pieces instead of copying them into one buffer;
/// the exporter writes them into its frame, the one copy they need on the way out.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Body {
    /// Bytes in the body.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// One body holding `bodies` one after another. Their pieces are shared, not copied, except
    /// runs of pieces under [`Body::SMALL`] bytes, copied into one buffer: a small piece may be a
    /// slice of a much larger receive buffer (tonic's is 8 KiB at least), which holding it would
    /// keep alive until the batch is sent.
    pub fn join(bodies: impl IntoIterator<Item = Body>) -> Body {
        let pieces: Vec<Bytes> = bodies.into_iter().flat_map(|b| b.pieces).collect();
        let small = pieces
            .iter()
            .filter(|p| p.len() < Body::SMALL)
            .map(Bytes::len);
        let mut run = bytes::BytesMut::with_capacity(small.sum());
        let mut out = Body {
            pieces: Vec::with_capacity(pieces.len()),
            len: 0,
        };
        for p in pieces {
            out.len += p.len();
            if p.len() < Body::SMALL {
                run.extend_from_slice(&p);
                continue;
            }
            if !run.is_empty() {
                out.pieces.push(run.split().freeze());
            }
            out.pieces.push(p);
        }
        if !run.is_empty() {
            out.pieces.push(run.freeze());
        }
        out
    }

    /// Pieces under this many bytes are copied together when bodies are joined.
    pub const SMALL: usize = 8 << 10;

    /// The body in one buffer: its piece when it has one, else a copy of them all.
    pub fn contiguous(&self) -> Bytes {
        match &self.pieces[..] {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut buf = bytes::BytesMut::with_capacity(self.len);
                many.iter().for_each(|p| buf.extend_from_slice(p));
                buf.freeze()
            }
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        let len = b.len();
        Body {
            pieces: if len == 0 { Vec::new() } else { vec![b] },
            len,
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Bytes::from(v).into()
    }
}

/// Bodies are equal when their bytes are, however they are split into pieces.
impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.len == other.len && self.contiguous() == other.contiguous()
    }
}

/// Why a request body is not taken in its wire form (its typed decode then decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a well-framed OTLP request body")]
pub struct NotWellFramed;

/// Why an [`Encoded`] batch has no typed form.
#[derive(Debug, thiserror::Error)]
pub enum Undecodable {
    #[error("invalid OTLP protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("Celery events have no OTLP form")]
    Celery,
}

impl Encoded {
    /// A request body as it came off the wire, its items counted by walking the protobuf
    /// framing down to the items (`Resource*` → `Scope*` → spans / log records / metrics →
    /// data points) without building any typed data. Refused unless every field on that walk
    /// is well formed, every length stays within its message, and the top level holds only
    /// field-1 entries; the contents of the items themselves are not checked (the receiving
    /// backend decodes them).
    pub fn read(kind: SignalKind, body: Bytes) -> Result<Encoded, NotWellFramed> {
        const TRACES: &[&[u32]] = &[&[1], &[2], &[2]];
        const LOGS: &[&[u32]] = &[&[1], &[2], &[2]];
        // Metric.data: gauge 5, sum 7, histogram 9, exponential_histogram 10, summary 11;
        // each holds its data points as field 1.
        const METRICS: &[&[u32]] = &[&[1], &[2], &[2], &[5, 7, 9, 10, 11], &[1]];
        let path = match kind {
            SignalKind::Traces => TRACES,
            SignalKind::Logs => LOGS,
            SignalKind::Metrics => METRICS,
            SignalKind::Celery => return Err(NotWellFramed),
        };
        let items = count(&body, path, true)?;
        Ok(Encoded {
            kind,
            items,
            body: body.into(),
        })
    }

    /// The typed batch.
    pub fn decode(&self) -> Result<Signal, Undecodable> {
        decode_request(self.kind, self.body.contiguous())
    }
}

/// The typed batch of an OTLP export request body of `kind`.
pub fn decode_request(kind: SignalKind, body: Bytes) -> Result<Signal, Undecodable> {
    Ok(match kind {
        SignalKind::Traces => Signal::Traces(Arc::new(
            ExportTraceServiceRequest::decode(body)?.resource_spans,
        )),
        SignalKind::Metrics => Signal::Metrics(Arc::new(
            ExportMetricsServiceRequest::decode(body)?.resource_metrics,
        )),
        SignalKind::Logs => Signal::Logs(Arc::new(
            ExportLogsServiceRequest::decode(body)?.resource_logs,
        )),
        SignalKind::Celery => return Err(Undecodable::Celery),
    })
}

/// Entries at the end of `path` inside `buf`: each level names the length-delimited fields to
/// descend into, the last the fields to count. Every other field is skipped by its wire type;
/// with `top`, only the fields of the first level are allowed.
fn count(mut buf: &[u8], path: &[&[u32]], top: bool) -> Result<u64, NotWellFramed> {
    use prost::encoding::{decode_varint, WireType};
    let Some((fields, rest)) = path.split_first() else {
        return Ok(0);
    };
    let mut n = 0;
    while buf.has_remaining() {
        let key = decode_varint(&mut buf).map_err(|_| NotWellFramed)?;
        let field = (key >> 3) as u32;
        let wire = WireType::try_from(key & 7).map_err(|_| NotWellFramed)?;
        let ours = fields.contains(&field);
        // Field 0 does not exist; only our fields at the top; ours are messages.
        if field == 0 || (top && !ours) || (ours && wire != WireType::LengthDelimited) {
            return Err(NotWellFramed);
        }
        match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|_| NotWellFramed)?;
            }
            WireType::SixtyFourBit if buf.len() >= 8 => buf.advance(8),
            WireType::ThirtyTwoBit if buf.len() >= 4 => buf.advance(4),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|_| NotWellFramed)?;
                if len > buf.len() as u64 {
                    return Err(NotWellFramed);
                }
                let (inner, after) = buf.split_at(len as usize);
                if ours {
                    n += if rest.is_empty() {
                        1
                    } else {
                        count(inner, rest, false)?
                    };
                }
                buf = after;
            }
            _ => return Err(NotWellFramed),
        }
    }
    Ok(n)
}

impl Signal {
    /// The typed form of this batch: an [`Signal::Encoded`] one decoded, any other as it is.
    pub fn typed(self) -> Result<Signal, Undecodable> {
        match self {
            Signal::Encoded(e) => e.decode(),
            other => Ok(other),
        }
    }

    pub fn kind(&self) -> SignalKind {
        match self {
            Signal::Encoded(e) => e.kind,
            Signal::Traces(_) => SignalKind::Traces,
            Signal::Metrics(_) => SignalKind::Metrics,
            Signal::Logs(_) => SignalKind::Logs,
            Signal::Celery(_) => SignalKind::Celery,
        }
    }

    /// Items in the batch: spans, metric data points, log records or Celery events.
    pub fn item_count(&self) -> usize {
        match self {
            Signal::Traces(rs) => rs
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len())
                .sum(),
            Signal::Metrics(rm) => rm
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| data_point_count(m.data.as_ref()))
                .sum(),
            Signal::Logs(rl) => rl
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum(),
            Signal::Celery(ev) => ev.len(),
            Signal::Encoded(e) => e.items as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Signal::Traces(v) => v.is_empty(),
            Signal::Metrics(v) => v.is_empty(),
            Signal::Logs(v) => v.is_empty(),
            Signal::Celery(v) => v.is_empty(),
            Signal::Encoded(e) => e.body.is_empty(),
        }
    }
}

pub(crate) fn data_point_count(data: Option<&metric::Data>) -> usize {
    match data {
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

/// Take the vector out of an `Arc`, cloning only when another holder still shares it.
pub fn unshare<T: Clone>(v: Arc<Vec<T>>) -> Vec<T> {
    Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone())
}

/// What a channel between two components carries: a signal and, inside a running pipeline, when
/// it entered it. A bare signal (a component driven by hand, in tests and benches) has no stamp.
#[derive(Debug, Clone)]
pub struct Batch {
    pub signal: Signal,
    pub stamp: Option<Stamp>,
}

impl std::ops::Deref for Batch {
    type Target = Signal;
    fn deref(&self) -> &Signal {
        &self.signal
    }
}

impl From<Signal> for Batch {
    fn from(signal: Signal) -> Batch {
        Batch {
            signal,
            stamp: None,
        }
    }
}

/// When a batch's oldest item entered its pipeline (the receiver had its bytes, or a connector
/// produced it), and that pipeline's latency histogram. Only the runtime makes one.
#[derive(Debug, Clone)]
pub struct Stamp {
    since: Instant,
    latency: Histogram,
}

impl Stamp {
    pub(crate) fn new(since: Instant, latency: Histogram) -> Stamp {
        Stamp { since, latency }
    }

    /// The batch of `items` leaves the pipeline now: an exporter hands it to the network, or a
    /// connector or pull exporter takes it. Each item is given the age of the batch's oldest.
    pub fn observe(&self, items: u64) {
        self.latency.observe(self.since.elapsed(), items);
    }
}

/// A processor's link between what it takes and what it gives: the stamp of the oldest batch
/// taken since its last send, handed to the batches it sends next. (A batch split into several
/// sends gives each part the same stamp.)
#[derive(Debug, Clone, Default)]
pub struct Carry(Arc<Mutex<CarryInner>>);

#[derive(Debug, Default)]
struct CarryInner {
    oldest: Option<Instant>,
    last: Option<Instant>,
}

impl Carry {
    /// A batch with this stamp was taken.
    pub fn took(&self, stamp: &Stamp) {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        c.oldest.get_or_insert(stamp.since);
    }

    /// The entry time to give the batch being sent.
    pub fn giving(&self) -> Option<Instant> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since = c.oldest.take().or(c.last);
        c.last = since;
        since
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    use super::*;

    /// A request of `resources` resources, each with two scopes of `spans` spans.
    pub(crate) fn traces(resources: usize, spans: usize) -> ExportTraceServiceRequest {
        let scope = ScopeSpans {
            spans: vec![
                Span {
                    name: "s".into(),
                    trace_id: vec![7; 16],
                    ..Default::default()
                };
                spans
            ],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![scope.clone(), scope],
                    schema_url: "u".into(),
                    ..Default::default()
                };
                resources
            ],
        }
    }

    #[test]
    fn reads_item_counts_from_the_wire() {
        let req = traces(3, 4);
        let e = Encoded::read(SignalKind::Traces, req.encode_to_vec().into()).unwrap();
        assert_eq!(e.items, 24);
        let Signal::Traces(back) = e.decode().unwrap() else {
            panic!("not traces")
        };
        assert_eq!(*back, req.resource_spans);

        let points = |n| vec![NumberDataPoint::default(); n];
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        Metric {
                            name: "g".into(),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: points(2),
                            })),
                            ..Default::default()
                        },
                        Metric {
                            name: "s".into(),
                            data: Some(metric::Data::Sum(Sum {
                                data_points: points(3),
                                is_monotonic: true,
                                aggregation_temporality: 2,
                            })),
                            ..Default::default()
                        },
                        Metric::default(),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let typed = Signal::Metrics(Arc::new(metrics.resource_metrics.clone()));
        let e = Encoded::read(SignalKind::Metrics, metrics.encode_to_vec().into()).unwrap();
        assert_eq!((e.items, typed.item_count()), (5, 5));
        assert_eq!(
            Encoded::read(SignalKind::Logs, Bytes::new()).unwrap().items,
            0
        );
    }

    /// Joined bodies are the bodies' bytes in order; pieces of `SMALL` bytes or more are shared
    /// (the same buffer), runs of smaller ones copied into one piece.
    #[test]
    fn joined_bodies_share_large_pieces_and_copy_small_runs() {
        let big = |b: u8| Bytes::from(vec![b; Body::SMALL]);
        let small = |b: u8| Bytes::from(vec![b; 10]);
        let parts = [small(1), small(2), big(3), small(4), big(5), Bytes::new()];
        let joined = Body::join(parts.iter().cloned().map(Body::from));
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        assert_eq!(joined.len(), whole.len());
        assert_eq!(&joined.contiguous()[..], &whole[..]);
        let lens: Vec<usize> = joined.pieces().iter().map(Bytes::len).collect();
        assert_eq!(lens, vec![20, Body::SMALL, 10, Body::SMALL]);
        assert_eq!(joined.pieces()[1].as_ptr(), parts[2].as_ptr());
        assert_eq!(joined.pieces()[3].as_ptr(), parts[4].as_ptr());
        assert!(Body::join([]).is_empty());
        assert_eq!(joined, Body::from(whole));
    }

    #[test]
    fn refuses_bodies_that_are_not_well_framed() {
        let good = traces(1, 2).encode_to_vec();
        let bad: [&[u8]; 6] = [
            b"this is not protobuf",
            &good[..good.len() - 1],
            // Field 2 at the top level.
            &[0x12, 0x00],
            // Field 1 as a varint.
            &[0x08, 0x01],
            // A scope_spans entry claiming more bytes than its resource holds.
            &[0x0a, 0x02, 0x12, 0x05],
            // Wire type 7.
            &[0x0a, 0x01, 0x0f],
        ];
        for b in bad {
            let r = Encoded::read(SignalKind::Traces, Bytes::copy_from_slice(b));
            assert_eq!(r.err(), Some(NotWellFramed), "{b:?}");
        }
        assert!(Encoded::read(SignalKind::Celery, Bytes::new()).is_err());
    }
}
