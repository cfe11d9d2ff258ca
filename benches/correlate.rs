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

/// The output boundary of `celery_correlate` under leader election, per batch of 100 spans:
/// leading (checks the lease on the monotonic clock, then sends) and standby (drops, counts,
/// keeps for replay), against a bare `Output::send`.
fn gate(c: &mut Criterion) {
    use celeriac::component::Output;
    use celeriac::connectors::celery_correlate::leader::{Gate, LeaseState};
    use celeriac::signal::{Signal, SignalKind};
    use celeriac::telemetry::{Counter, Telemetry};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let batch = Signal::Traces(Arc::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span::default(); 100],
            ..Default::default()
        }],
        ..Default::default()
    }]));
    let (tx, rx) = async_channel::bounded(1 << 20);
    let out = || {
        Output::new(
            vec![(SignalKind::Traces, vec![tx.clone()])],
            Counter::default(),
            Counter::default(),
        )
    };
    let t = Telemetry::new();
    let mut g = c.benchmark_group("leader_gate");
    g.throughput(Throughput::Elements(100));
    let plain = out();
    g.bench_function("Output::send (no gate)", |b| {
        b.iter(|| {
            rt.block_on(plain.send(black_box(batch.clone()))).ok();
            let _ = rx.try_recv();
        })
    });
    let lease = Duration::from_secs(15);
    let leading = Arc::new(LeaseState::new());
    leading.set_valid_until(Some(Instant::now() + Duration::from_secs(3600)));
    let gate_leading = Gate::elected(out(), leading, lease, "bench".into(), &t);
    g.bench_function("Gate::send (leader)", |b| {
        b.iter(|| {
            rt.block_on(gate_leading.send(black_box(batch.clone())));
            let _ = rx.try_recv();
        })
    });
    let gate_standby = Gate::elected(
        out(),
        Arc::new(LeaseState::new()),
        lease,
        "bench".into(),
        &t,
    );
    g.bench_function("Gate::send (standby, kept for replay)", |b| {
        b.iter(|| rt.block_on(gate_standby.send(black_box(batch.clone()))))
    });
    g.finish();
}

criterion_group!(benches, bench, gate);
criterion_main!(benches);
