//! Bytes per tracked task: the `celery_correlate` connector's task table and the dashboard's
//! view (`celery_ui`), measured by a counting allocator: the bytes the code asks for, whatever
//! allocator serves them (the system allocator here, so valgrind's massif can profile it; the
//! `celeriac` binary's mimalloc adds its own overhead on top, visible only in RSS).
//!
//! The captured fixture's 17 task lifecycles are replayed with task ids made unique per copy
//! until N distinct tasks have been seen, with `max_tasks` = N so nothing is evicted. Two
//! states are reported: every task still running (received + started: the correlator must
//! keep its record until the task ends) and every task finished (the view keeps its record
//! for the dashboard; the correlator keeps it for late events until eviction).
//!
//! `cargo run --release --example task-memory -- 100000 1000000`
//! For a heap profile: `valgrind --tool=massif --pages-as-heap=no target/release/examples/task-memory 100000`
//! then `ms_print massif.out.<pid>`.

#[path = "../benches/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

use celeriac::celery::event::{CeleryEvent, EventKind};
use celeriac::connectors::celery_correlate::view::View;
use celeriac::connectors::celery_correlate::{CorrelateConfig, Correlator};

/// The system allocator with a count of the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static INNER: std::alloc::System = std::alloc::System;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Feeds copies of the fixture's task events (ids made unique per copy) until `tasks`
/// distinct tasks; `running` keeps only the events up to task-started.
fn feed(events: &[CeleryEvent], tasks: usize, running: bool, mut sink: impl FnMut(&[CeleryEvent])) {
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e.task_uuid()).collect();
    let per = ids.len().max(1);
    let keep = |e: &&CeleryEvent| {
        e.task.is_some()
            && (!running
                || matches!(
                    e.kind,
                    EventKind::TaskSent | EventKind::TaskReceived | EventKind::TaskStarted
                ))
    };
    let template: Vec<&CeleryEvent> = events.iter().filter(keep).collect();
    let mut seen = 0usize;
    let mut batch = Vec::with_capacity(template.len());
    for copy in 0.. {
        if seen >= tasks {
            break;
        }
        batch.clear();
        for e in &template {
            let mut e = (*e).clone();
            if let Some(t) = e.task.as_mut() {
                t.uuid = format!("{}-{copy}", t.uuid);
            }
            batch.push(e);
        }
        sink(&batch);
        seen += per;
    }
}

fn measure(events: &[CeleryEvent], tasks: usize, running: bool) {
    let cfg = CorrelateConfig {
        max_tasks: tasks,
        ..CorrelateConfig::default()
    };
    let before = live();
    let mut corr = Correlator::new(cfg, false).with_spans(true);
    feed(events, tasks, running, |b| {
        for e in b {
            corr.apply(e, e.timestamp);
        }
        drop(corr.take_spans());
    });
    let corr_bytes = live() - before;
    let tracked = corr.tasks_tracked();

    let before = live();
    let view = View::new(tasks);
    view.enable();
    feed(events, tasks, running, |b| view.apply(b, 1.0));
    let view_bytes = live() - before;
    let held = view.read(|s| s.task_count());

    let state = if running { "running " } else { "finished" };
    println!(
        "{tasks:>8} tasks {state}: correlator {tracked:>8} tracked, {:>6.0} B/task ({:>7.1} MiB) | view {held:>8} held, {:>6.0} B/task ({:>7.1} MiB) | together {:>6.0} B/task",
        corr_bytes as f64 / tracked.max(1) as f64,
        corr_bytes as f64 / 1048576.0,
        view_bytes as f64 / held.max(1) as f64,
        view_bytes as f64 / 1048576.0,
        (corr_bytes + view_bytes) as f64 / tasks as f64,
    );
    drop(corr);
    drop(view);
}

fn main() {
    let events = match support::fixture_events() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("task-memory: cannot read the fixture: {e}");
            std::process::exit(2);
        }
    };
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        sizes
    };
    println!(
        "inline record sizes: correlator Task {} B, view TaskRecord {} B (plus the Arc<str> key and hash-table slack)",
        std::mem::size_of::<celeriac::connectors::celery_correlate::tasks::Task>(),
        std::mem::size_of::<celeriac::connectors::celery_correlate::view::TaskRecord>(),
    );
    for n in sizes {
        measure(&events, n, true);
        measure(&events, n, false);
    }
}
