//! Remote-write hot path: one celery_correlate metrics batch (50 task names × 4 hosts, every
//! per-state counter, failures with 2 exception classes, both histograms with celery-exporter's
//! 14 buckets, 4 workers' gauges) converted to samples, encoded as `WriteRequest`s of
//! `max_samples_per_send` (2000) and snappy-compressed. Throughput is in samples.
//!
//! `cargo bench --bench remote_write`

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use celeriac::connectors::celery_correlate::metrics::{to_otlp, Count, TaskMetrics, WorkerRow};
use celeriac::connectors::celery_correlate::CorrelateConfig;
use celeriac::exporters::prometheus_remote_write::{encode_request, Queued, SeriesTable};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SHARDS: usize = 5;
const MAX_SAMPLES_PER_SEND: usize = 2000;

fn batch(ts_s: f64) -> opentelemetry_proto::tonic::metrics::v1::ResourceMetrics {
    let cfg = CorrelateConfig::default();
    let mut m = TaskMetrics::new(cfg.runtime_buckets, cfg.queue_wait_buckets, 10_000);
    let mut workers: Vec<WorkerRow> = Vec::new();
    for h in 0..4 {
        let host = m.intern(&format!("worker-{h}.example.internal"));
        workers.push((host.clone(), true, 3, 0));
        for t in 0..50 {
            let name = m.intern(&format!("shop.tasks.task_number_{t}"));
            let queue = m.intern("celery");
            let l = m.labels(name, host.clone(), queue);
            for c in Count::ALL {
                if c != Count::Failed {
                    m.inc(c, &l, None);
                }
            }
            for exc in ["ValueError", "TimeoutError"] {
                let e = m.intern(exc);
                m.inc(Count::Failed, &l, Some(e));
            }
            m.observe_runtime(&l, 0.01 * t as f64);
            m.observe_queue_wait(&l, 0.1 * h as f64);
        }
    }
    let now_ns = (ts_s * 1e9) as u64;
    to_otlp(&m, &workers, "celery", now_ns - 1_000_000_000, now_ns)
}

fn bench(c: &mut Criterion) {
    // Points without a timestamp are stamped with `now_ms`, which grows every iteration, so
    // every iteration yields fresh samples for the same series (the steady state).
    let mut rm = batch(1_764_000_000.0);
    for sm in &mut rm.scope_metrics {
        for m in &mut sm.metrics {
            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
            match m.data.as_mut() {
                Some(Data::Sum(s)) => s.data_points.iter_mut().for_each(|p| p.time_unix_nano = 0),
                Some(Data::Gauge(g)) => g.data_points.iter_mut().for_each(|p| p.time_unix_nano = 0),
                Some(Data::Histogram(h)) => {
                    h.data_points.iter_mut().for_each(|p| p.time_unix_nano = 0)
                }
                _ => {}
            }
        }
    }
    let rm = vec![rm];
    let mut table = SeriesTable::new(&BTreeMap::new(), false, SHARDS, Duration::from_secs(3600));
    let mut out: Vec<Vec<Queued>> = vec![Vec::new(); SHARDS];
    table.apply(&rm, 1, Instant::now(), &mut out);
    let samples: usize = out.iter().map(Vec::len).sum();
    eprintln!("one batch: {samples} samples, {} series", table.len());

    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(samples as u64));
    g.bench_function("convert+encode+snappy (celery batch)", |b| {
        let mut encoder = snap::raw::Encoder::new();
        let mut buf = Vec::new();
        let mut shards: Vec<Vec<Queued>> = vec![Vec::new(); SHARDS];
        let mut now_ms = 1i64;
        b.iter(|| {
            now_ms += 1;
            table.apply(black_box(&rm), now_ms, Instant::now(), &mut shards);
            let mut bytes = 0;
            for shard in shards.iter_mut() {
                for chunk in shard.chunks(MAX_SAMPLES_PER_SEND) {
                    encode_request(chunk, &mut buf);
                    bytes += encoder.compress_vec(&buf).expect("compress").len();
                }
                shard.clear();
            }
            black_box(bytes)
        })
    });
    g.bench_function("encode+snappy only (celery batch)", |b| {
        let mut encoder = snap::raw::Encoder::new();
        let mut buf = Vec::new();
        b.iter(|| {
            let mut bytes = 0;
            for shard in out.iter() {
                for chunk in shard.chunks(MAX_SAMPLES_PER_SEND) {
                    encode_request(black_box(chunk), &mut buf);
                    bytes += encoder.compress_vec(&buf).expect("compress").len();
                }
            }
            black_box(bytes)
        })
    });
    g.finish();

    // Bytes on the wire for one batch.
    let mut encoder = snap::raw::Encoder::new();
    let (mut raw, mut wire) = (0, 0);
    let mut buf = Vec::new();
    for shard in &out {
        for chunk in shard.chunks(MAX_SAMPLES_PER_SEND) {
            encode_request(chunk, &mut buf);
            raw += buf.len();
            wire += encoder.compress_vec(&buf).expect("compress").len();
        }
    }
    eprintln!("one batch: {raw} bytes protobuf, {wire} bytes snappy");
}

criterion_group!(benches, bench);
criterion_main!(benches);
