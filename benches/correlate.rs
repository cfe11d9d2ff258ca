//! Hot path of the Celery pipeline: envelope decode + correlation, per event, over the real
//! captured traffic (83 event envelopes, 88 events: 17 tasks' full lifecycles and heartbeats).
//!
//! `cargo bench --bench correlate`

use std::hint::black_box;

use celeriac::celery::envelope::decode_envelope;
use celeriac::celery::event::CeleryEvent;
use celeriac::connectors::celery_correlate::{CorrelateConfig, Correlator};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The same allocator as the `celeriac` binary (src/main.rs), so these figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn envelopes() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/celery-events-redis.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let ch = v["channel"].as_str()?;
            if !ch.contains("celeryev") {
                return None;
            }
            v["data"].as_str().map(|d| d.as_bytes().to_vec())
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let envs = envelopes();
    let mut events: Vec<CeleryEvent> = Vec::new();
    for e in &envs {
        let _ = decode_envelope(e, &mut events);
    }
    let n = events.len() as u64;

    let mut g = c.benchmark_group("celery");
    g.throughput(Throughput::Elements(n));
    for logs in [false, true] {
        let name = if logs {
            "decode+correlate (metrics+logs)"
        } else {
            "decode+correlate (metrics)"
        };
        g.bench_function(name, |b| {
            let mut corr = Correlator::new(CorrelateConfig::default(), logs);
            let mut buf = Vec::with_capacity(64);
            b.iter(|| {
                for e in &envs {
                    buf.clear();
                    let _ = decode_envelope(black_box(e), &mut buf);
                    for ev in &buf {
                        corr.apply(ev, ev.timestamp);
                    }
                }
                black_box(corr.take_logs());
            })
        });
    }
    g.bench_function("correlate only (metrics)", |b| {
        let mut corr = Correlator::new(CorrelateConfig::default(), false);
        b.iter(|| {
            for ev in &events {
                corr.apply(black_box(ev), ev.timestamp);
            }
        })
    });
    g.finish();

    c.bench_function("celery/metrics batch (17 tasks, 1 worker)", |b| {
        let mut corr = Correlator::new(CorrelateConfig::default(), false);
        for ev in &events {
            corr.apply(ev, ev.timestamp);
        }
        b.iter(|| black_box(corr.metrics_batch(0.0)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
