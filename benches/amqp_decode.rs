//! AMQP body decode throughput on real captured RabbitMQ messages
//! (tests/fixtures/celery-events-amqp.jsonl): the hot path of the `celery_amqp` receiver, i.e.
//! `decode_bare` on the message body with its properties (no kombu envelope, no base64).
//!
//! `cargo bench --bench amqp_decode`; figures are per message.

use std::hint::black_box;

use celeriac::celery::envelope::{decode_bare, BareMeta};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The same allocator as the `celeriac` binary (src/main.rs), so these figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/celery-events-amqp.jsonl"
);

/// `(body, hostname header)` of the first fixture message with routing key `key` (for
/// `task.multi`: the first whose list holds two or more events).
fn message(key: &str) -> (Vec<u8>, String) {
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        if v["exchange"] != "celeryev" || v["routing_key"] != key {
            continue;
        }
        let body = v["body"].as_str().unwrap_or_default().as_bytes().to_vec();
        let host = v["headers"]["hostname"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut out = Vec::new();
        let n = decode_bare(&body, &meta(&host), &mut out)
            .expect("decodes")
            .appended;
        if key != "task.multi" || n >= 2 {
            return (body, host);
        }
    }
    panic!("no message with routing key {key}");
}

fn meta(host: &str) -> BareMeta<'_> {
    BareMeta {
        content_type: Some(b"application/json"),
        content_encoding: Some(b"utf-8"),
        compression: None,
        hostname: Some(host),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("amqp_decode");
    for (name, key) in [
        ("task_multi", "task.multi"),
        ("task_sent", "task.sent"),
        ("heartbeat", "worker.heartbeat"),
    ] {
        let (body, host) = message(key);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let mut out = Vec::with_capacity(4);
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                let r = decode_bare(black_box(&body), &meta(&host), &mut out);
                black_box(&r);
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
