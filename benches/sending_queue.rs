//! The file sending queue: what one batch costs on its way through disk (append, read back,
//! acknowledge), with the segment-close fsyncs that `max_size_mib` implies, on the machine's
//! temporary directory.
//!
//! `cargo bench --bench sending_queue`

use std::hint::black_box;

use celeriac::exporters::sending_queue::FileQueue;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("file_queue");
    for (size, max_mib) in [(4 << 10, 256u64), (64 << 10, 256), (4 << 10, 8)] {
        let record = vec![0x5au8; size];
        let dir = tempfile::tempdir().unwrap();
        let (mut q, _) = FileQueue::open(dir.path(), max_mib << 20).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(
            format!("push_pop_ack/{}KiB/max_{max_mib}MiB", size >> 10),
            |b| {
                b.iter(|| {
                    q.push(black_box(&record), 100).unwrap();
                    let p = q.pop().unwrap().unwrap();
                    q.ack(p.ticket).unwrap();
                    black_box(p.payload.len())
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
