//! Correlation over the real captured traffic in `tests/fixtures/`.

use super::*;
use crate::celery::envelope::decode_envelope;

fn fixture_events(file: &str) -> Vec<CeleryEvent> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        let data = v["data"].as_str().expect("data");
        let _ = decode_envelope(data.as_bytes(), &mut out);
    }
    out
}

fn run(file: &str) -> Correlator {
    let mut c = Correlator::new(CorrelateConfig::default(), true);
    for ev in fixture_events(file) {
        c.apply(&ev, ev.timestamp);
    }
    c
}

#[test]
fn counts_match_the_capture() {
    let c = run("celery-events-redis.jsonl");
    let m = &c.metrics;
    let w = "host1";
    assert_eq!(
        m.counter(Count::Received, "shop.charge_card", w, "celery"),
        3
    );
    assert_eq!(
        m.counter(Count::Succeeded, "shop.charge_card", w, "celery"),
        1
    );
    assert_eq!(
        m.counter(Count::Revoked, "shop.charge_card", w, "celery"),
        2
    );
    assert_eq!(
        m.counter(Count::Failed, "shop.send_receipt", w, "celery"),
        1
    );
    assert_eq!(
        m.counter(Count::Failed, "shop.reject_order", w, "celery"),
        1
    );
    assert_eq!(
        m.counter(Count::Rejected, "shop.reject_order", w, "celery"),
        1
    );
    assert_eq!(
        m.counter(Count::Retried, "shop.sync_inventory", w, "celery"),
        2
    );
    assert_eq!(
        m.counter(Count::Started, "shop.sync_inventory", w, "celery"),
        3
    );
    assert_eq!(m.counter(Count::Succeeded, "shop.a", w, "celery"), 7);
    assert_eq!(
        m.counter(Count::Revoked, "shop.slow_report", w, "celery"),
        1
    );
    // Every task-sent comes from a client named gen<pid>@vm.
    assert_eq!(m.counter(Count::Sent, "shop.a", "vm", "celery"), 7);
    // Runtime observed for each success (12), each with a name carried from sent/received.
    let total: u64 = [
        "shop.charge_card",
        "shop.sync_inventory",
        "shop.a",
        "shop.b",
        "shop.c",
        "shop.tally",
    ]
    .iter()
    .map(|n| m.runtime_hist(n).map_or(0, |h| h.count))
    .sum();
    assert_eq!(total, 12);
    assert!(m.runtime_hist("unknown").is_none());
}

#[test]
fn one_log_record_per_lifecycle_step() {
    let mut c = run("celery-events-redis.jsonl");
    let logs = c.take_logs();
    // 75 task events in the capture (88 minus 13 worker events).
    assert_eq!(logs.len(), 75);
    let failed: Vec<_> = logs
        .iter()
        .filter(|r| r.event_name == "task.failed")
        .collect();
    assert_eq!(failed.len(), 2);
    let attr = |r: &LogRecord, k: &str| {
        r.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
    };
    assert!(failed.iter().any(|r| matches!(attr(r, "exception.type").and_then(|v| v.value), Some(any_value::Value::StringValue(s)) if s == "ValueError")));
    let completed = logs
        .iter()
        .filter(|r| r.event_name == "task.completed")
        .count();
    assert_eq!(completed, 12);
    use opentelemetry_proto::tonic::common::v1::any_value;
}

#[test]
fn worker_goes_up_then_down() {
    let events = fixture_events("celery-events-redis.jsonl");
    let mut c = Correlator::new(CorrelateConfig::default(), false);
    let online = events
        .iter()
        .position(|e| e.kind == EventKind::WorkerOnline)
        .unwrap();
    c.apply(&events[online], 100.0);
    assert!(c.workers.by_label(101.0)[0].1);
    // Expired after 2 × freq (2 s) with no heartbeat.
    assert!(!c.workers.by_label(104.5)[0].1);
    let offline = events
        .iter()
        .position(|e| e.kind == EventKind::WorkerOffline)
        .unwrap();
    c.apply(&events[online], 200.0);
    c.apply(&events[offline], 200.5);
    assert!(!c.workers.by_label(200.6)[0].1);
}

#[test]
fn no_events_missed_in_a_clean_capture() {
    let c = run("celery-events-redis.jsonl");
    assert!(c.newly_missed.is_empty(), "{:?}", c.newly_missed);
}

#[test]
fn dropped_events_are_estimated() {
    let events = fixture_events("celery-events-redis.jsonl");
    let mut c = Correlator::new(CorrelateConfig::default(), false);
    // Lose every third task-started.
    let mut dropped = 0;
    let mut n = 0;
    for ev in &events {
        if ev.kind == EventKind::TaskStarted {
            n += 1;
            if n % 3 == 0 {
                dropped += 1;
                continue;
            }
        }
        c.apply(ev, ev.timestamp);
    }
    let missed: u64 = c.workers.by_label(0.0).iter().map(|w| w.3).sum();
    // Started events after the baseline heartbeat and before the last settled one are counted.
    assert!(
        missed > 0 && missed <= dropped,
        "missed {missed}, dropped {dropped}"
    );
}

#[test]
fn memory_is_bounded_by_max_tasks() {
    let cfg = CorrelateConfig {
        max_tasks: 1000,
        ..Default::default()
    };
    let mut c = Correlator::new(cfg, false);
    let template = fixture_events("celery-events-redis.jsonl")
        .into_iter()
        .find(|e| e.kind == EventKind::TaskReceived)
        .unwrap();
    for i in 0..20_000 {
        let mut ev = template.clone();
        if let Some(t) = ev.task.as_mut() {
            t.uuid = format!("task-{i}");
        }
        c.apply(&ev, i as f64);
    }
    assert_eq!(c.tasks_tracked(), 1000);
    assert_eq!(c.stats().evicted_unfinished, 19_000);
}

#[test]
fn iso_timestamps() {
    assert_eq!(parse_iso8601("1970-01-01T00:00:00+00:00"), Some(0.0));
    assert_eq!(
        parse_iso8601("2026-11-25T11:42:41.5Z"),
        Some(1_795_606_961.5)
    );
    assert_eq!(
        parse_iso8601("2026-11-25T13:42:41.5+02:00"),
        Some(1_795_606_961.5)
    );
    assert_eq!(parse_iso8601("nope"), None);
}

#[test]
fn exception_classes() {
    assert_eq!(exception_class(Some("ValueError('x')")), "ValueError");
    assert_eq!(exception_class(Some("(x)")), "UnknownException");
    assert_eq!(exception_class(None), "UnknownException");
}
