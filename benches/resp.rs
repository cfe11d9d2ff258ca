//! The RESP reader of the `celery_redis` receiver on a stream of real pub/sub messages (the
//! captured Celery traffic in tests/fixtures/celery-events-redis.jsonl framed as Redis sends
//! it): every frame parsed, as the receiver does for each read.
//!
//! `cargo bench --bench resp`; figures are per stream (Throughput in bytes).

use std::hint::black_box;

use celeriac::redis_broker::resp::{parse, Frame};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The same allocator as the `celeriac` binary (src/main.rs), so these figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/celery-events-redis.jsonl"
);

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// Every captured message as a `pmessage` frame, one after the other.
fn stream() -> (Vec<u8>, usize) {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let (mut out, mut n) = (Vec::new(), 0);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        out.extend_from_slice(b"*4\r\n");
        bulk(&mut out, b"pmessage");
        bulk(&mut out, b"/0.celeryev/*");
        bulk(
            &mut out,
            v["channel"].as_str().unwrap_or_default().as_bytes(),
        );
        bulk(&mut out, v["data"].as_str().unwrap_or_default().as_bytes());
        n += 1;
    }
    (out, n)
}

fn bench(c: &mut Criterion) {
    let (data, frames) = stream();
    let mut g = c.benchmark_group("resp");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("pmessage_stream", |b| {
        b.iter(|| {
            let (mut at, mut payload) = (0, 0);
            while let Ok(Some((f, n))) = parse(black_box(&data[at..]), 4 << 20) {
                if let Frame::Array(items) = &f {
                    if let Some(Frame::Bulk(Some(p))) = items.last() {
                        payload += p.len();
                    }
                }
                at += n;
            }
            assert_eq!(at, data.len(), "{frames} frames");
            black_box(payload)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
