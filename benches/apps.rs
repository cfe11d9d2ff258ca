//! Hot paths of the application-telemetry receivers (issue 20):
//!
//! * `scrape_parse`: one prometheus_client-style page (counters with `_created`, histograms,
//!   gauges; 2,000 series) parsed and converted to OTLP, in samples/s;
//! * `filelog`: structlog JSON lines read from a file and run through `json_parser` (timestamp
//!   and severity), in lines/s — beside `raw_read`, the same file read and split into lines
//!   only (the floor any tailer pays);
//! * `logs_join`: celery_correlate putting 1,000 task log records on their task's trace.
//!
//! `cargo bench --bench apps -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use celeriac::connectors::celery_correlate::logjoin::{Link, LogJoin};
use celeriac::receivers::filelog::{to_logs, Op, OpFailures, OperatorConfig, TailSettings, Tailer};
use celeriac::receivers::prometheus::{convert, parse};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn page() -> (String, usize) {
    let mut s = String::new();
    let mut n = 0;
    for f in 0..20 {
        s.push_str(&format!(
            "# HELP app_tasks_{f}_total Tasks.\n# TYPE app_tasks_{f}_total counter\n"
        ));
        for l in 0..50 {
            s.push_str(&format!(
                "app_tasks_{f}_total{{status=\"s{l}\",queue=\"q{}\"}} {}.0\n",
                l % 5,
                l * 7
            ));
            n += 1;
        }
        s.push_str(&format!("# TYPE app_tasks_{f}_created gauge\n"));
        for l in 0..50 {
            s.push_str(&format!(
                "app_tasks_{f}_created{{status=\"s{l}\",queue=\"q{}\"}} 1.765e+09\n",
                l % 5
            ));
            n += 1;
        }
    }
    for h in 0..10 {
        s.push_str(&format!("# TYPE app_duration_{h}_seconds histogram\n"));
        for l in 0..10 {
            for le in ["0.01", "0.05", "0.1", "0.5", "1.0", "+Inf"] {
                s.push_str(&format!(
                    "app_duration_{h}_seconds_bucket{{task=\"t{l}\",le=\"{le}\"}} 4.0\n"
                ));
                n += 1;
            }
            s.push_str(&format!("app_duration_{h}_seconds_count{{task=\"t{l}\"}} 4.0\napp_duration_{h}_seconds_sum{{task=\"t{l}\"}} 0.25\n"));
            n += 2;
        }
    }
    (s, n)
}

fn structlog_lines(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "{{\"eval_id\": \"e{}\", \"step\": {i}, \"event\": \"evaluation.step\", \"level\": \"info\", \"task_id\": \"8f3c2a4e-1b7d-4c1e-9a0b-{:012x}\", \"timestamp\": \"2026-12-06T01:02:03.{:06}Z\"}}\n",
            i % 97,
            i % 1000,
            i % 1_000_000
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let (text, n) = page();
    let mut g = c.benchmark_group("scrape_parse");
    g.throughput(Throughput::Elements(n as u64));
    let labels = Vec::new();
    let info = convert::TargetInfo {
        job: "app",
        instance: "127.0.0.1:8000",
        labels: &labels,
        honor_labels: false,
        honor_timestamps: true,
    };
    let mut state = convert::TargetState::default();
    g.bench_function("parse_and_convert", |b| {
        b.iter(|| {
            let f = parse::parse(black_box(&text), false).unwrap();
            let s = convert::relabel_samples(f, &[], &info);
            black_box(state.convert(&s, &info, 1, 0.0));
        })
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| black_box(parse::parse(black_box(&text), false).unwrap()))
    });
    g.finish();

    // filelog: a fresh file of `lines` lines per iteration batch.
    let lines = 20_000usize;
    let body = structlog_lines(lines);
    let dir = std::env::temp_dir().join(format!("celeriac-bench-filelog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.log");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let settings = TailSettings {
        include: vec![path.to_string_lossy().into_owned()],
        exclude: Vec::new(),
        start_at_end: false,
        fingerprint_size: 1000,
        max_log_size: 1 << 20,
        encoding: Default::default(),
        force_flush_period: std::time::Duration::from_millis(500),
    };
    let op: OperatorConfig = serde_yaml_ng::from_str(
        "{type: json_parser, timestamp: {parse_from: attributes.timestamp, layout: '%Y-%m-%dT%H:%M:%S.%fZ'}, severity: {parse_from: attributes.level}}",
    )
    .unwrap();
    let ops = vec![Op::build(&op, 0).unwrap()];
    let mut g = c.benchmark_group("filelog");
    g.throughput(Throughput::Elements(lines as u64));
    g.sample_size(10);
    g.bench_function("read_json_parser", |b| {
        b.iter(|| {
            let mut t = Tailer::new(settings.clone(), None);
            let (l, _) = t.poll(Instant::now());
            let mut f = OpFailures::default();
            black_box(to_logs(l, &ops, true, false, &mut f));
        })
    });
    g.bench_function("read_no_operators", |b| {
        b.iter(|| {
            let mut t = Tailer::new(settings.clone(), None);
            let (l, _) = t.poll(Instant::now());
            let mut f = OpFailures::default();
            black_box(to_logs(l, &[], true, false, &mut f));
        })
    });
    g.bench_function("raw_read", |b| {
        b.iter(|| {
            let data = std::fs::read(&path).unwrap();
            black_box(data.split(|b| *b == b'\n').count())
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);

    // logs join: the filelog output (with task_id attributes) through celery_correlate's join.
    let mut t = Tailer::new(settings_for(&body), None);
    let (l, _) = t.poll(Instant::now());
    let mut f = OpFailures::default();
    let batch = to_logs(l, &ops, true, false, &mut f);
    let mut g = c.benchmark_group("logs_join");
    g.throughput(Throughput::Elements(lines as u64));
    g.sample_size(10);
    g.bench_function("route", |b| {
        let mut j = LogJoin::new(10.0, 100_000);
        b.iter(|| {
            black_box(j.route(&batch, 0.0, |id| {
                Some(Link {
                    trace: [id.len() as u8; 16],
                    span: [1; 8],
                    name: Some("evaluation.run".into()),
                })
            }))
        })
    });
    g.finish();
}

/// A file holding `body`, and settings to read it.
fn settings_for(body: &str) -> TailSettings {
    let dir = std::env::temp_dir().join(format!("celeriac-bench-join-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.log");
    std::fs::write(&path, body).unwrap();
    TailSettings {
        include: vec![path.to_string_lossy().into_owned()],
        exclude: Vec::new(),
        start_at_end: false,
        fingerprint_size: 1000,
        max_log_size: 1 << 20,
        encoding: Default::default(),
        force_flush_period: std::time::Duration::from_millis(500),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
