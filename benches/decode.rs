//! Envelope decode throughput on real captured envelopes (tests/fixtures/celery-events-redis.jsonl).
//!
//! `cargo bench --bench decode`; figures are per envelope.

use std::hint::black_box;

use celeriac::celery::envelope::decode_envelope;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The same allocator as the `celeriac` binary (src/main.rs), so these figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/celery-events-redis.jsonl"
);

/// The `data` payload of the first fixture line published on a channel ending with `suffix`
/// (for `task.multi`: the first whose list holds two events).
fn envelope(suffix: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        let channel = v["channel"].as_str().unwrap_or_default();
        let data = v["data"].as_str().unwrap_or_default().as_bytes().to_vec();
        if !channel.ends_with(suffix) {
            continue;
        }
        let mut out = Vec::new();
        let n = decode_envelope(&data, &mut out).expect("decodes").appended;
        if suffix != "task.multi" || n == 2 {
            return data;
        }
    }
    panic!("no envelope on *{suffix}");
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, suffix) in [
        ("task_multi", "task.multi"),
        ("task_sent", "task.sent"),
        ("heartbeat", "worker.heartbeat"),
    ] {
        let data = envelope(suffix);
        g.throughput(Throughput::Bytes(data.len() as u64));
        let mut out = Vec::with_capacity(4);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let r = decode_envelope(black_box(&data), &mut out);
                black_box(&r);
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
