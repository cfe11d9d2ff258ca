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

// ---- spans -------------------------------------------------------------------------------

use opentelemetry_proto::tonic::common::v1::any_value::Value as Av;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

fn spans_of(file: &str) -> Vec<Span> {
    let mut c = Correlator::new(CorrelateConfig::default(), false).with_spans(true);
    for ev in fixture_events(file) {
        c.apply(&ev, ev.timestamp);
    }
    c.take_spans()
}

fn attr<'a>(s: &'a Span, k: &str) -> Option<&'a Av> {
    s.attributes
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn str_attr<'a>(s: &'a Span, k: &str) -> &'a str {
    match attr(s, k) {
        Some(Av::StringValue(v)) => v,
        _ => "",
    }
}

fn task_spans<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn every_ended_attempt_is_a_span_with_phases() {
    let spans = spans_of("celery-events-redis.jsonl");
    let attempts: Vec<_> = spans
        .iter()
        .filter(|s| s.name != "queue" && s.name != "run")
        .collect();
    // 17 tasks: 12 succeeded (one of them after 2 retries), 2 failed, 3 revoked.
    assert_eq!(attempts.len(), 12 + 2 + 2 + 3);
    let runs = spans.iter().filter(|s| s.name == "run").count();
    // Every attempt that started: 12 successes + 2 retried + 2 failures + the terminated one.
    assert_eq!(runs, 17);
    for s in &spans {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano, "{s:?}");
        assert!(s.start_time_unix_nano > 1_700_000_000_000_000_000, "{s:?}");
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
    }
    for r in spans.iter().filter(|s| s.name == "run") {
        assert_eq!(r.kind, SpanKind::Consumer as i32);
        let parent = spans
            .iter()
            .find(|p| p.span_id == r.parent_span_id)
            .unwrap();
        assert!(parent.start_time_unix_nano <= r.start_time_unix_nano);
        assert_eq!(parent.end_time_unix_nano, r.end_time_unix_nano);
    }
}

#[test]
fn chain_children_hang_off_their_parent_in_one_trace() {
    let spans = spans_of("celery-events-redis.jsonl");
    let (a, b, c) = (
        task_spans(&spans, "shop.a"),
        task_spans(&spans, "shop.b"),
        task_spans(&spans, "shop.c"),
    );
    // shop.a runs in several canvases in the capture; follow the chain from shop.c.
    let c = c[0];
    let b = b
        .iter()
        .find(|b| b.span_id == c.parent_span_id)
        .expect("c's parent is b");
    let a = a
        .iter()
        .find(|a| a.span_id == b.parent_span_id)
        .expect("b's parent is a");
    assert!(a.parent_span_id.is_empty(), "a is the root");
    assert_eq!(a.trace_id, b.trace_id);
    assert_eq!(b.trace_id, c.trace_id);
    let a_id = str_attr(a, "celery.task_id");
    assert_eq!(a.trace_id, spans::uuid_bytes(a_id).unwrap().to_vec());
    assert_eq!(
        a.span_id,
        spans::span_id(a_id, 0, spans::Phase::Task).to_vec()
    );
}

#[test]
fn retries_are_events_and_links_between_attempts() {
    let spans = spans_of("celery-events-redis.jsonl");
    let mut att = task_spans(&spans, "shop.sync_inventory");
    att.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(att.len(), 3);
    let states: Vec<_> = att.iter().map(|s| str_attr(s, "celery.state")).collect();
    assert_eq!(states, ["RETRY", "RETRY", "SUCCESS"]);
    for (n, s) in att.iter().enumerate() {
        assert!(matches!(attr(s, "celery.retries"), Some(Av::IntValue(r)) if *r == n as i64));
        assert_eq!(s.trace_id, att[0].trace_id, "attempts share the trace");
        // No self-parenting from the retried message's parent_id == own id.
        assert!(s.parent_span_id.is_empty());
        if n > 0 {
            assert_eq!(s.links.len(), 1);
            assert_eq!(s.links[0].span_id, att[n - 1].span_id);
        } else {
            assert!(s.links.is_empty());
        }
        if n < 2 {
            let ev = &s.events[0];
            assert_eq!(ev.name, "retry");
            assert!(ev.attributes.iter().any(|a| a.key == "exception.type"));
        }
        // A retried attempt's queue phase starts at its own re-send, not at the first send.
        let q = spans
            .iter()
            .find(|q| q.name == "queue" && q.parent_span_id == s.span_id)
            .expect("queue span");
        assert!(q.start_time_unix_nano >= s.start_time_unix_nano);
    }
}

#[test]
fn failures_are_errors_with_an_exception_event() {
    let spans = spans_of("celery-events-redis.jsonl");
    let f = task_spans(&spans, "shop.send_receipt")[0];
    let st = f.status.as_ref().unwrap();
    assert_eq!(st.code, StatusCode::Error as i32);
    assert!(!st.message.is_empty());
    assert_eq!(str_attr(f, "celery.state"), "FAILURE");
    assert_eq!(str_attr(f, "error.type"), "ValueError");
    let ev = f.events.iter().find(|e| e.name == "exception").unwrap();
    let keys: Vec<_> = ev.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "exception.type",
            "exception.message",
            "exception.stacktrace"
        ]
    );
    // failed then rejected (acks_late Reject): one span, ended as the failure.
    let r = task_spans(&spans, "shop.reject_order");
    assert_eq!(r.len(), 1);
    assert_eq!(str_attr(r[0], "celery.state"), "FAILURE");
}

#[test]
fn revoked_attempts_end_revoked() {
    let spans = spans_of("celery-events-redis.jsonl");
    let revoked: Vec<_> = spans
        .iter()
        .filter(|s| str_attr(s, "celery.state") == "REVOKED")
        .collect();
    assert_eq!(revoked.len(), 3);
    let slow = task_spans(&spans, "shop.slow_report")[0];
    assert!(matches!(
        attr(slow, "celery.terminated"),
        Some(Av::BoolValue(true))
    ));
    assert!(slow.status.is_none());
}

#[test]
fn two_correlators_emit_identical_ids() {
    let a = spans_of("celery-events-redis.jsonl");
    let b = spans_of("celery-events-redis.jsonl");
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.trace_id, &x.span_id, &x.parent_span_id),
            (&y.trace_id, &y.span_id, &y.parent_span_id)
        );
        assert_eq!(x.start_time_unix_nano, y.start_time_unix_nano);
    }
    let mut ids: Vec<_> = a.iter().map(|s| s.span_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), a.len(), "span ids are unique");
}

#[test]
fn unfinished_attempts_close_as_lost_at_ttl() {
    let events = fixture_events("celery-events-redis.jsonl");
    let cfg = CorrelateConfig {
        task_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let mut c = Correlator::new(cfg, false).with_spans(true);
    // Drop every end event of shop.charge_card: its attempts never finish.
    let mut charge = std::collections::HashSet::new();
    for ev in &events {
        let tf = ev.task.as_ref();
        if tf.and_then(|t| t.name.as_deref()) == Some("shop.charge_card") {
            charge.insert(tf.unwrap().uuid.clone());
        }
        let ends = matches!(
            ev.kind,
            EventKind::TaskSucceeded | EventKind::TaskRevoked | EventKind::TaskFailed
        );
        if ends && ev.task_uuid().is_some_and(|u| charge.contains(u)) {
            continue;
        }
        c.apply(ev, 1000.0);
    }
    c.take_spans();
    c.expire(1030.0);
    assert!(c.take_spans().is_empty());
    c.expire(1061.0);
    let lost = c.take_spans();
    let attempts: Vec<_> = lost
        .iter()
        .filter(|s| s.name == "shop.charge_card")
        .collect();
    assert_eq!(attempts.len(), 3);
    for s in &attempts {
        assert_eq!(str_attr(s, "celery.state"), "LOST");
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
    }
    assert_eq!(c.stats().lost_attempts, 3);
}

#[test]
fn out_of_order_and_partial_sequences_do_not_panic() {
    let events = fixture_events("celery-events-redis.jsonl");
    // Reversed, and every other event dropped: still spans, never a panic.
    let mut c = Correlator::new(CorrelateConfig::default(), true).with_spans(true);
    for ev in events.iter().rev() {
        c.apply(ev, ev.timestamp);
    }
    for s in c.take_spans() {
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    let mut c = Correlator::new(CorrelateConfig::default(), true).with_spans(true);
    for ev in events.iter().step_by(2) {
        c.apply(ev, ev.timestamp);
    }
    let spans = c.take_spans();
    assert!(!spans.is_empty());
    // A success seen alone still gives a run span from its runtime.
    let only = events
        .iter()
        .find(|e| e.kind == EventKind::TaskSucceeded)
        .unwrap();
    let mut c = Correlator::new(CorrelateConfig::default(), false).with_spans(true);
    c.apply(only, 0.0);
    let spans = c.take_spans();
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0].name, "unknown");
    assert_eq!(spans[1].name, "run");
}

#[test]
fn reconfigure_keeps_state_unless_the_series_change() {
    let mut c = run("celery-events-redis.jsonl");
    let tracked = c.tasks_tracked();
    let before = c
        .metrics
        .counter(Count::Succeeded, "shop.a", "host1", "celery");
    assert!(tracked > 0 && before > 0);
    let cfg = CorrelateConfig {
        max_tasks: 50,
        task_ttl: Duration::from_secs(60),
        ..CorrelateConfig::default()
    };
    assert_eq!(c.reconfigure(cfg, true, true), Ok(()));
    assert_eq!(c.tasks_tracked(), tracked);
    assert_eq!(
        c.metrics
            .counter(Count::Succeeded, "shop.a", "host1", "celery"),
        before
    );
    let buckets = CorrelateConfig {
        runtime_buckets: vec![1.0, 2.0],
        ..CorrelateConfig::default()
    };
    assert!(c.reconfigure(buckets, true, true).is_err());
}
