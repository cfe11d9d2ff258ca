//! OTLP ingest: what the `otlp` receiver does per request once the bytes are in: protobuf decode
//! of an `ExportTraceServiceRequest` (the raw decode cost every OTLP server pays) and the
//! hand-off of the decoded spans to the pipeline channel an exporter reads from; and what it does
//! instead for a request it only forwards: the framing walk that counts the spans
//! (`Encoded::read`, no decode); and what `batch` does with 82 such requests (a batch of 8200
//! spans): joining their bodies as pieces ([`Body::join`]) against copying them into one buffer
//! (what it did before).
//!
//! `cargo bench --bench otlp_ingest`

use std::hint::black_box;
use std::sync::Arc;

use celeriac::component::Output;
use celeriac::otlp::str_kv as kv;
use celeriac::signal::{Body, Encoded, Signal, SignalKind};
use celeriac::telemetry::Counter;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// 100 spans shaped like opentelemetry-instrumentation-celery's `run/<task>` spans.
fn request() -> Vec<u8> {
    let spans = (0..100u64)
        .map(|i| Span {
            trace_id: (i as u128 + 1).to_be_bytes().to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: (i + 1000).to_be_bytes().to_vec(),
            name: "run/shop.charge_card".into(),
            kind: 5,
            start_time_unix_nano: 1_795_606_961_000_000_000 + i,
            end_time_unix_nano: 1_795_606_961_020_000_000 + i,
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
            resource: None,
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn bench(c: &mut Criterion) {
    let body = request();
    let mut g = c.benchmark_group("otlp_ingest");
    g.throughput(Throughput::Elements(100));
    g.bench_function("protobuf decode (100 spans)", |b| {
        b.iter(|| black_box(ExportTraceServiceRequest::decode(black_box(body.as_slice())).ok()))
    });
    g.bench_function(
        "decode + hand-off to the exporter channel (100 spans)",
        |b| {
            let (tx, rx) = async_channel::bounded(1024);
            let out = Output::new(
                vec![(SignalKind::Traces, vec![tx])],
                Counter::default(),
                Counter::default(),
            );
            b.iter(|| {
                let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap_or_default();
                let _ = out.try_send(Signal::Traces(Arc::new(req.resource_spans)));
                black_box(rx.try_recv().ok());
            })
        },
    );
    let bytes = bytes::Bytes::from(body.clone());
    g.bench_function("wire walk of a forwarded request (100 spans)", |b| {
        b.iter(|| black_box(Encoded::read(SignalKind::Traces, black_box(bytes.clone())).ok()))
    });
    g.throughput(Throughput::Elements(8200));
    let requests: Vec<Body> = (0..82)
        .map(|_| Body::from(bytes::Bytes::from(body.clone())))
        .collect();
    g.bench_function("batch of 82 forwarded requests: join as pieces", |b| {
        b.iter(|| black_box(Body::join(black_box(requests.iter().cloned())).len()))
    });
    g.bench_function(
        "batch of 82 forwarded requests: copy into one buffer",
        |b| {
            b.iter(|| {
                let mut buf = bytes::BytesMut::with_capacity(requests.iter().map(Body::len).sum());
                for r in black_box(&requests) {
                    r.pieces().iter().for_each(|p| buf.extend_from_slice(p));
                }
                black_box(buf.freeze().len())
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
