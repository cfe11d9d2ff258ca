//! Traces half of `celery_correlate`: spans built per second from the captured lifecycles
//! (17 tasks, 19 attempts, 53 spans per pass), and the OTLP protobuf encode cost per span
//! (prost encode of the `ExportTraceServiceRequest` the `otlp` exporter sends).
//!
//! `cargo bench --bench spans`

use std::hint::black_box;

use celeriac::celery::envelope::decode_envelope;
use celeriac::celery::event::CeleryEvent;
use celeriac::connectors::celery_correlate::{CorrelateConfig, Correlator};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fn events() -> Vec<CeleryEvent> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/celery-events-redis.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut out = Vec::new();
    for l in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if let Some(d) = v["data"].as_str() {
            let _ = decode_envelope(d.as_bytes(), &mut out);
        }
    }
    out
}

fn correlate(events: &[CeleryEvent], spans: bool) -> Correlator {
    let mut c = Correlator::new(CorrelateConfig::default(), false).with_spans(spans);
    for ev in events {
        c.apply(ev, ev.timestamp);
    }
    c
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut probe = correlate(&events, true);
    let spans = probe.take_spans();
    let n = spans.len() as u64;

    let mut g = c.benchmark_group("spans");
    g.throughput(Throughput::Elements(n));
    // A fresh correlator per pass: ended attempts are not replayed.
    g.bench_function("correlate fixture → spans (per span)", |b| {
        b.iter_batched(
            || Correlator::new(CorrelateConfig::default(), false).with_spans(true),
            |mut c| {
                for ev in &events {
                    c.apply(black_box(ev), ev.timestamp);
                }
                black_box(c.take_spans())
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("correlate fixture, spans off (baseline)", |b| {
        b.iter_batched(
            || Correlator::new(CorrelateConfig::default(), false),
            |mut c| {
                for ev in &events {
                    c.apply(black_box(ev), ev.timestamp);
                }
                black_box(c.take_spans())
            },
            BatchSize::SmallInput,
        )
    });
    let req = ExportTraceServiceRequest {
        resource_spans: vec![probe.spans_batch(spans)],
    };
    let bytes = req.encoded_len();
    g.bench_function(format!("OTLP encode ({bytes} B request, per span)"), |b| {
        let mut buf = Vec::with_capacity(bytes);
        b.iter(|| {
            buf.clear();
            black_box(&req).encode(&mut buf).expect("encode");
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
