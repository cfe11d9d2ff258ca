//! What `celeriac_pipeline_latency_seconds` costs per batch: a producer's hand-off to the next
//! stage and the take at the pipeline's end, without a latency histogram (as before it existed)
//! and with one (a clock read and the histogram's handle at the send; a clock read, a bucket
//! search and three atomic adds at the observation), also through a processor's carry; and a
//! receiver's hand-off on a one-worker runtime with and without the yield `celery_redis` makes
//! after each send (so the consumer takes each batch before the next is produced).
//!
//! `cargo bench --bench pipeline_latency`

use std::hint::black_box;
use std::sync::Arc;

use celeriac::component::{GatedSender, Output};
use celeriac::signal::{Carry, Signal, SignalKind};
use celeriac::telemetry::{Counter, Telemetry};
use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn batch() -> Signal {
    Signal::Traces(Arc::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span::default(); 100],
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

/// An output feeding one channel, with the pipeline's histogram or without.
fn output(stamped: bool) -> (Output, async_channel::Receiver<celeriac::signal::Batch>) {
    let (tx, rx) = async_channel::bounded(1024);
    let latency = stamped.then(|| {
        Telemetry::new().histogram(
            "celeriac_pipeline_latency_seconds",
            "Bench.",
            &[("pipeline", "traces")],
        )
    });
    let out = Output::gated(
        vec![(
            SignalKind::Traces,
            vec![GatedSender {
                tx,
                gates: Vec::new(),
                latency,
                encoded: false,
            }],
        )],
        |_| (Counter::default(), Counter::default()),
    );
    (out, rx)
}

fn bench(c: &mut Criterion) {
    let signal = batch();
    let mut g = c.benchmark_group("pipeline_latency");
    for stamped in [false, true] {
        let name = if stamped {
            "hand-off + observe at the end (stamped)"
        } else {
            "hand-off + take at the end (no histogram)"
        };
        g.bench_function(name, |b| {
            let (out, rx) = output(stamped);
            b.iter(|| {
                let _ = out.try_send(signal.clone());
                if let Ok(batch) = rx.try_recv() {
                    if let Some(stamp) = &batch.stamp {
                        stamp.observe(100);
                    }
                    black_box(batch);
                }
            })
        });
    }
    g.bench_function("receiver → processor (carry) → end, stamped", |b| {
        let (out, rx) = output(true);
        let carry = Carry::default();
        let (proc_out, proc_rx) = output(true);
        let proc_out = proc_out.carrying(carry.clone());
        b.iter(|| {
            let _ = out.try_send(signal.clone());
            if let Ok(batch) = rx.try_recv() {
                if let Some(stamp) = &batch.stamp {
                    carry.took(stamp);
                }
                let _ = proc_out.try_send(batch.signal);
            }
            if let Ok(batch) = proc_rx.try_recv() {
                if let Some(stamp) = &batch.stamp {
                    stamp.observe(100);
                }
                black_box(batch);
            }
        })
    });
    g.finish();
}

/// A producer task handing `n` batches to a consumer task on a one-worker runtime, yielding
/// after each send or not; per batch.
fn one_worker(c: &mut Criterion) {
    let signal = batch();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let n = 1000u64;
    let mut g = c.benchmark_group("pipeline_latency one worker");
    g.throughput(criterion::Throughput::Elements(n));
    for yielding in [false, true] {
        let name = if yielding {
            "send_since + yield, consumer takes (per batch)"
        } else {
            "send, consumer takes (per batch)"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (out, rx) = output(true);
                    let consumer = tokio::spawn(async move {
                        while let Ok(batch) = rx.recv().await {
                            if let Some(stamp) = &batch.stamp {
                                stamp.observe(100);
                            }
                            black_box(batch);
                        }
                    });
                    let producer = tokio::spawn({
                        let signal = signal.clone();
                        async move {
                            for _ in 0..n {
                                let since = std::time::Instant::now();
                                let _ = out.send_since(signal.clone(), Some(since)).await;
                                if yielding {
                                    tokio::task::yield_now().await;
                                }
                            }
                        }
                    });
                    let _ = producer.await;
                    let _ = consumer.await;
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, one_worker);
criterion_main!(benches);
