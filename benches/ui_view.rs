//! Cost of the `celery_ui` extension on the connector and per request: the view update per
//! event (paid by the connector only when the extension is enabled), and the reads the API and
//! the live page make over a full view (100 000 tasks, the default `max_tasks`), the tasks
//! page (filter, sort and one page over the whole view) included.
//!
//! `cargo bench --bench ui_view`

mod support;

use std::hint::black_box;

use celeriac::celery::event::CeleryEvent;
use celeriac::connectors::celery_correlate::view::View;
use celeriac::extensions::celery_ui::api::{self, Inspected, TaskQuery};
use celeriac::extensions::celery_ui::page::RedactConfig;
use celeriac::extensions::celery_ui::tasks_page;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The captured fixture's events (17 tasks' lifecycles and heartbeats).
fn events() -> Vec<CeleryEvent> {
    support::fixture_events().expect("fixture")
}

/// The fixture replayed with task ids made unique per copy, until `tasks` distinct ids.
fn many(events: &[CeleryEvent], tasks: usize) -> Vec<CeleryEvent> {
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e.task_uuid()).collect();
    let per = ids.len().max(1);
    let mut out = Vec::new();
    for copy in 0..tasks.div_ceil(per) {
        for e in events {
            let mut e = e.clone();
            if let Some(t) = e.task.as_mut() {
                t.uuid = format!("{}-{copy}", t.uuid);
            }
            out.push(e);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut g = c.benchmark_group("ui_view");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("apply (per event, batch of the fixture)", |b| {
        let v = View::new(100_000);
        v.enable();
        b.iter(|| v.apply(black_box(&evs), 1.0));
    });
    g.finish();

    let v = View::new(100_000);
    v.enable();
    for chunk in many(&evs, 100_000).chunks(64) {
        v.apply(chunk, 1.0);
    }
    let redact = RedactConfig::default();
    let inspected = Inspected::new();
    eprintln!("view holds {} tasks", v.read(|s| s.task_count()));
    c.bench_function("ui_view/api tasks limit=100 (100k tasks)", |b| {
        let q = TaskQuery {
            limit: Some(100),
            ..TaskQuery::default()
        };
        b.iter(|| v.read(|s| black_box(api::tasks_body(s, &q, &redact))))
    });
    c.bench_function(
        "ui_view/api tasks state=FAILURE limit=100 sort_by=-received (100k tasks)",
        |b| {
            let q = TaskQuery::parse(&[
                ("state".into(), "FAILURE".into()),
                ("limit".into(), "100".into()),
                ("sort_by".into(), "-received".into()),
            ])
            .unwrap();
            b.iter(|| v.read(|s| black_box(api::tasks_body(s, &q, &redact))))
        },
    );
    // Flower's `search=`: a miss scans every task (the worst case), a free-text hit stops at
    // the page, a boolean query with a field and an exact state.
    for (label, search) in [
        ("free text, no match", "no-such-text"),
        ("free text, matches", "shop"),
        (
            "(args:SKU OR name:charge) state:success",
            "(args:SKU OR name:charge) state:success",
        ),
    ] {
        c.bench_function(
            &format!("ui_view/api tasks search={label} limit=100 (100k tasks)"),
            |b| {
                let q = TaskQuery::parse(&[
                    ("search".into(), search.into()),
                    ("limit".into(), "100".into()),
                ])
                .unwrap();
                b.iter(|| v.read(|s| black_box(api::tasks_body(s, &q, &redact))))
            },
        );
    }
    // The tasks page: every request filters and sorts the whole view, then renders one page.
    for (label, q) in [
        ("default (started, newest first) page 1", vec![]),
        ("default page 1000 of 2000", vec![("page", "1000")]),
        ("sort=name page 1", vec![("sort", "name")]),
        ("sort=-runtime page 1", vec![("sort", "-runtime")]),
        (
            "state=SUCCESS search=shop sort=-received",
            vec![
                ("state", "SUCCESS"),
                ("search", "shop"),
                ("sort", "-received"),
            ],
        ),
    ] {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c.bench_function(
            &format!("ui_view/tasks page {label} length=50 (100k tasks)"),
            |b| b.iter(|| v.read(|s| black_box(tasks_page::render(s, &pairs, &redact, "")))),
        );
    }
    c.bench_function("ui_view/dashboard snapshot (100k tasks)", |b| {
        b.iter(|| {
            v.read(|s| black_box(api::dashboard(s, &inspected, &[], &redact, 1.0).to_string()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
