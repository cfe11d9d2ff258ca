use super::*;
use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

const MAIN: &str = "celery-events-redis.jsonl";
const PICKLE: &str = "celery-events-redis-pickle.jsonl";
const LEGACY: &str = "celery-events-redis-legacy.jsonl";

/// (channel, data) of every line of a fixture.
fn fixture(name: &str) -> Vec<(String, String)> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("fixture line is JSON");
            (
                v["channel"].as_str().expect("channel").to_owned(),
                v["data"].as_str().expect("data").to_owned(),
            )
        })
        .collect()
}

fn decode_all(name: &str) -> (Vec<CeleryEvent>, BTreeMap<&'static str, usize>) {
    let mut out = Vec::new();
    let mut errors = BTreeMap::new();
    for (channel, data) in fixture(name) {
        match decode_envelope(data.as_bytes(), &mut out) {
            Ok(d) => assert!(d.is_complete(), "{channel}: dropped {:?}", d.dropped),
            Err(e) => *errors.entry(e.reason()).or_insert(0) += 1,
        }
    }
    (out, errors)
}

fn counts(events: &[CeleryEvent]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        assert_eq!(e.kind.as_str(), e.type_name, "all fixture types are known");
        *m.entry(e.type_name.as_str()).or_insert(0) += 1;
    }
    m
}

/// A kombu envelope around `body` (JSON text), base64-encoded like the Redis transport.
fn envelope(body: &str) -> Vec<u8> {
    envelope_with(body, |_| {})
}

fn envelope_with(body: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut env = json!({
        "body": STANDARD.encode(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": "hdr@host"},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": "task.multi"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "d2249b3a-6994-434f-9b9b-403a56511470"
        }
    });
    edit(&mut env);
    serde_json::to_vec(&env).expect("serialize")
}

fn one(data: &[u8]) -> CeleryEvent {
    let mut out = Vec::new();
    let d = decode_envelope(data, &mut out).expect("decodes");
    assert!(d.is_complete(), "{:?}", d.dropped);
    assert_eq!((d.appended, out.len()), (1, 1));
    out.pop().expect("one event")
}

fn err(data: &[u8]) -> DecodeError {
    let mut out = Vec::new();
    let e = decode_envelope(data, &mut out).expect_err("must fail");
    assert!(out.is_empty(), "nothing appended on Err");
    // Display must not panic and must say something.
    assert!(!e.to_string().is_empty());
    e
}

const STARTED: &str = r#"{"hostname":"w1@host1","utcoffset":0.0,"pid":20320,"clock":9,"uuid":"u-1","timestamp":1795606961.5,"type":"task-started"}"#;

// ---- fixtures --------------------------------------------------------------------------

#[test]
fn main_fixture_counts() {
    let (events, errors) = decode_all(MAIN);
    assert_eq!(events.len(), 88);
    let expected: BTreeMap<&str, usize> = [
        ("worker-online", 1),
        ("worker-heartbeat", 11),
        ("worker-offline", 1),
        ("task-sent", 19),
        ("task-received", 19),
        ("task-started", 17),
        ("task-succeeded", 12),
        ("task-failed", 2),
        ("task-retried", 2),
        ("task-revoked", 3),
        ("task-rejected", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts(&events), expected);
    // 4 pidbox envelopes, 20 celery-task-meta payloads (not kombu envelopes).
    let expected_errors: BTreeMap<&str, usize> = [("not_an_event", 4), ("malformed_envelope", 20)]
        .into_iter()
        .collect();
    assert_eq!(errors, expected_errors);
    for e in &events {
        assert_eq!(e.task.is_some(), e.kind.is_task());
        assert_eq!(e.worker.is_some(), e.kind.is_worker());
        assert!(e.timestamp > 1.79e9 && e.timestamp < 1.80e9);
        assert!(!e.hostname.is_empty());
        assert_eq!(e.utcoffset, Some(0.0));
        assert!(e.pid.is_some() && e.clock.is_some());
    }
}

#[test]
fn main_fixture_per_channel() {
    for (channel, data) in fixture(MAIN) {
        let mut out = Vec::new();
        let r = decode_envelope(data.as_bytes(), &mut out);
        if channel.ends_with("celery.pidbox") {
            assert_eq!(r.expect_err("pidbox").reason(), "not_an_event");
        } else if channel.starts_with("celery-task-meta-") {
            assert_eq!(r.expect_err("meta").reason(), "malformed_envelope");
        } else {
            let routing = channel.rsplit('/').next().expect("routing key");
            let d = r.expect("event envelope");
            assert!(d.appended >= 1 && d.appended <= 2, "{channel}");
            if routing != "task.multi" {
                assert_eq!(d.appended, 1);
                assert_eq!(out[0].type_name.replace('-', "."), routing);
            }
        }
    }
}

#[test]
fn pickle_fixture_is_refused() {
    let mut pickle = 0;
    for (channel, data) in fixture(PICKLE) {
        let mut out = Vec::new();
        let e = decode_envelope(data.as_bytes(), &mut out).expect_err("nothing decodes");
        assert!(out.is_empty());
        if channel.contains(".celeryev/") {
            assert_eq!(e.reason(), "pickle", "{channel}: {e}");
            assert!(matches!(e, DecodeError::Pickle { .. }));
            pickle += 1;
        } else if channel.ends_with("celery.pidbox") {
            assert_eq!(e.reason(), "not_an_event");
        } else {
            assert_eq!(e.reason(), "malformed_envelope");
        }
    }
    assert_eq!(pickle, 14);
}

#[test]
fn legacy_fixture_counts() {
    let (events, errors) = decode_all(LEGACY);
    assert_eq!(events.len(), 14);
    let expected: BTreeMap<&str, usize> = [
        ("worker-online", 1),
        ("worker-heartbeat", 4),
        ("worker-offline", 1),
        ("task-sent", 2),
        ("task-received", 2),
        ("task-started", 2),
        ("task-succeeded", 1),
        ("task-failed", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts(&events), expected);
    let expected_errors: BTreeMap<&str, usize> = [("not_an_event", 1), ("malformed_envelope", 2)]
        .into_iter()
        .collect();
    assert_eq!(errors, expected_errors);
    // Worker in America/New_York (EST): 5 hours west of UTC; the client sends 0.0.
    for e in &events {
        let want = if e.kind == EventKind::TaskSent {
            0.0
        } else {
            5.0
        };
        assert_eq!(e.utcoffset, Some(want), "{}", e.type_name);
    }
}

// ---- fixture field checks --------------------------------------------------------------

fn main_events() -> Vec<CeleryEvent> {
    decode_all(MAIN).0
}

fn task<'e>(events: &'e [CeleryEvent], uuid: &str, kind: EventKind) -> Vec<&'e TaskFields> {
    events
        .iter()
        .filter(|e| e.kind == kind && e.task_uuid() == Some(uuid))
        .filter_map(|e| e.task.as_ref())
        .collect()
}

#[test]
fn wakeup_heartbeat_has_int_freq_and_no_counters() {
    let lines = fixture(MAIN);
    let ev = one(lines[3].1.as_bytes());
    assert_eq!(ev.kind, EventKind::WorkerHeartbeat);
    let w = ev.worker.expect("worker fields");
    assert_eq!(w.freq, Some(5.0));
    assert_eq!((w.active, w.processed, w.loadavg), (None, None, None));
    assert_eq!(w.sw_ident.as_deref(), Some("py-celery"));
    assert_eq!(w.sw_ver.as_deref(), Some("5.7.0"));
    assert_eq!(w.sw_sys.as_deref(), Some("Linux"));
    assert_eq!(ev.hostname, "w1@host1");
    assert_eq!((ev.pid, ev.clock), (Some(20320), Some(3)));
    assert!(ev.task.is_none());
}

#[test]
fn worker_fields() {
    let events = main_events();
    let online = events
        .iter()
        .find(|e| e.kind == EventKind::WorkerOnline)
        .expect("online");
    let w = online.worker.as_ref().expect("fields");
    assert_eq!(w.freq, Some(2.0));
    assert_eq!(w.loadavg, Some([0.61, 0.97, 0.54]));
    assert_eq!((w.active, w.processed), (Some(0), Some(0)));
    let offline = events.last().expect("events");
    assert_eq!(offline.kind, EventKind::WorkerOffline);
    assert_eq!(offline.worker.as_ref().and_then(|w| w.processed), Some(17));
    // Periodic heartbeats: freq 2.0, increasing clocks.
    let clocks: Vec<u64> = events
        .iter()
        .filter(|e| {
            e.kind == EventKind::WorkerHeartbeat
                && e.worker.as_ref().and_then(|w| w.freq) == Some(2.0)
        })
        .filter_map(|e| e.clock)
        .collect();
    assert_eq!(clocks.len(), 10);
    assert!(clocks.windows(2).all(|w| w[0] < w[1]), "{clocks:?}");
}

#[test]
fn revoked_terminated_signum() {
    let events = main_events();
    let r = task(
        &events,
        "602e5864-f010-4ab8-a5d6-873e6243241a",
        EventKind::TaskRevoked,
    );
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].signum.as_deref(), Some("15"));
    assert_eq!((r[0].terminated, r[0].expired), (Some(true), Some(false)));
    let eta = task(
        &events,
        "7b0d1eb5-036c-4697-920a-ac4d80f6a593",
        EventKind::TaskRevoked,
    );
    assert_eq!(eta[0].signum, None);
    assert_eq!(
        (eta[0].terminated, eta[0].expired),
        (Some(false), Some(false))
    );
    let exp = task(
        &events,
        "e7d6ea60-8ec6-4993-8054-f414c2cf5d2e",
        EventKind::TaskRevoked,
    );
    assert_eq!(
        (exp[0].terminated, exp[0].expired),
        (Some(false), Some(true))
    );
    let rec = task(
        &events,
        "e7d6ea60-8ec6-4993-8054-f414c2cf5d2e",
        EventKind::TaskReceived,
    );
    assert!(rec[0].eta.is_some() && rec[0].expires.is_some());
    let rej = task(
        &events,
        "75d0455a-7cc4-4193-818f-a3794f1a3b1f",
        EventKind::TaskRejected,
    );
    assert_eq!(rej[0].requeue, Some(false));
}

#[test]
fn succeeded_failed_retried_fields() {
    let events = main_events();
    for e in &events {
        let t = e.task.as_ref();
        match e.kind {
            EventKind::TaskSucceeded => {
                let t = t.expect("task");
                assert!(t.runtime.is_some_and(|r| r > 0.0));
                assert!(t.result.is_some());
            }
            EventKind::TaskFailed | EventKind::TaskRetried => {
                let t = t.expect("task");
                assert!(t
                    .traceback
                    .as_deref()
                    .is_some_and(|tb| tb.starts_with("Traceback (most recent call last):")
                        && tb.contains('\n')));
                assert!(t.exception.is_some());
            }
            EventKind::TaskStarted => {
                let t = t.expect("task");
                let only_uuid = TaskFields {
                    uuid: t.uuid.clone(),
                    ..TaskFields::default()
                };
                assert_eq!(t, &only_uuid, "task-started carries only uuid");
            }
            _ => {}
        }
    }
    let c = task(
        &events,
        "d459bbcf-b346-428a-b844-9a99554b25bf",
        EventKind::TaskSucceeded,
    );
    assert_eq!(c[0].result.as_deref(), Some("'total=30'"));
    let f = task(
        &events,
        "7b6d40a3-42e1-4881-88df-f1cc451101fd",
        EventKind::TaskFailed,
    );
    assert_eq!(
        f[0].exception.as_deref(),
        Some("ValueError('no email on file for order 1001')")
    );
    let r = task(
        &events,
        "3412ec4d-4465-4e27-8b5d-6da8c5060c6b",
        EventKind::TaskRetried,
    );
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].exception.as_deref(),
        Some("ConnectionError('warehouse API timeout')")
    );
}

#[test]
fn sent_fields_and_chain_ids() {
    let events = main_events();
    let a = "cbac63a6-0853-4c3c-a950-0f9bdcab267d";
    let b = "26c6da41-5553-4b92-b76c-85b9c9838f0a";
    let c = "d459bbcf-b346-428a-b844-9a99554b25bf";
    let ids = |uuid: &str| {
        let s = task(&events, uuid, EventKind::TaskSent);
        assert_eq!(s.len(), 1);
        (s[0].root_id.clone(), s[0].parent_id.clone())
    };
    assert_eq!(ids(a), (Some(a.to_owned()), None));
    assert_eq!(ids(b), (Some(a.to_owned()), Some(a.to_owned())));
    assert_eq!(ids(c), (Some(a.to_owned()), Some(b.to_owned())));
    let rec = task(&events, b, EventKind::TaskReceived);
    assert_eq!(rec[0].root_id.as_deref(), Some(a));
    assert_eq!(rec[0].parent_id.as_deref(), Some(a));

    let sent = task(
        &events,
        "d1ec4bb6-d942-4613-b166-064acf3a9861",
        EventKind::TaskSent,
    );
    let s = sent[0];
    assert_eq!(s.name.as_deref(), Some("shop.charge_card"));
    assert_eq!(s.args.as_deref(), Some("(1001, 42.5)"));
    assert_eq!(s.kwargs.as_deref(), Some("{}"));
    assert_eq!(s.retries, Some(0));
    assert_eq!(s.queue.as_deref(), Some("celery"));
    assert_eq!(s.exchange.as_deref(), Some(""));
    assert_eq!(s.routing_key.as_deref(), Some("celery"));
    assert_eq!((s.eta.as_deref(), s.expires.as_deref()), (None, None));
    // Retries: sent with retries 1 and 2, parent_id == own uuid.
    let inv = "3412ec4d-4465-4e27-8b5d-6da8c5060c6b";
    let sent = task(&events, inv, EventKind::TaskSent);
    let retries: Vec<_> = sent.iter().map(|t| t.retries).collect();
    assert_eq!(retries, [Some(0), Some(1), Some(2)]);
    assert_eq!(sent[2].parent_id.as_deref(), Some(inv));
    assert!(sent[2].eta.is_some());
}

#[test]
fn task_multi_of_two() {
    let lines = fixture(MAIN);
    let (_, data) = lines
        .iter()
        .find(|(c, d)| {
            c.ends_with("task.multi") && {
                let mut out = Vec::new();
                matches!(decode_envelope(d.as_bytes(), &mut out), Ok(r) if r.appended == 2)
            }
        })
        .expect("a task.multi list of 2");
    let mut out = vec![CeleryEvent::default()];
    let d = decode_envelope(data.as_bytes(), &mut out).expect("ok");
    assert_eq!(d.appended, 2);
    assert_eq!(out.len(), 3, "appends, does not clear");
    assert!(out[1].timestamp <= out[2].timestamp);
}

// ---- synthetic: tolerance --------------------------------------------------------------

#[test]
fn single_object_body_and_header_hostname_fallback() {
    let ev = one(&envelope(
        r#"{"type":"task-started","uuid":"u-9","timestamp":1}"#,
    ));
    assert_eq!(ev.kind, EventKind::TaskStarted);
    assert_eq!(ev.hostname, "hdr@host");
    assert_eq!(ev.timestamp, 1.0);
    assert_eq!((ev.utcoffset, ev.pid, ev.clock), (None, None, None));
    let ev = one(&envelope_with(
        r#"{"type":"task-started","uuid":"u-9","timestamp":1,"hostname":null}"#,
        |e| e["headers"] = json!(null),
    ));
    assert_eq!(ev.hostname, "");
    let ev = one(&envelope(STARTED));
    assert_eq!(ev.hostname, "w1@host1", "body hostname wins");
}

#[test]
fn tolerated_variants() {
    let ev = one(&envelope(
        r#"[{"type":"task-revoked","uuid":"u","timestamp":1.5,"clock":null,"signum":"SIGTERM",
             "terminated":true,"expired":null,"utcoffset":-5,"pid":7.0,
             "custom":{"__type__":"datetime","__value__":"2026-11-25T10:00:00"},
             "nested":{"a":[1,{"b":null}]},
             "eta":{"__type__":"datetime","__value__":"2026-11-25T10:00:01"},
             "freq":"not checked for task events"}]"#,
    ));
    let t = ev.task.as_ref().expect("task");
    assert_eq!(ev.clock, None);
    assert_eq!(ev.utcoffset, Some(-5.0));
    assert_eq!(ev.pid, Some(7));
    assert_eq!(t.signum.as_deref(), Some("SIGTERM"));
    assert_eq!((t.terminated, t.expired), (Some(true), None));
    assert_eq!(t.eta.as_deref(), Some("2026-11-25T10:00:01"));
    assert!(ev.worker.is_none());

    let ev = one(&envelope(
        r#"{"type":"worker-heartbeat","hostname":"w","timestamp":2,"freq":5,"loadavg":[0,1,2.5],"active":null}"#,
    ));
    let w = ev.worker.expect("worker");
    assert_eq!(w.freq, Some(5.0));
    assert_eq!(w.loadavg, Some([0.0, 1.0, 2.5]));
    assert_eq!(w.active, None);
}

#[test]
fn other_kinds() {
    let ev = one(&envelope(
        r#"{"type":"task-progress","uuid":"u","timestamp":1,"current":3}"#,
    ));
    assert_eq!(ev.kind, EventKind::TaskOther);
    assert_eq!(ev.type_name, "task-progress");
    assert_eq!(ev.task_uuid(), Some("u"));
    let ev = one(&envelope(
        r#"{"type":"worker-elect","timestamp":1,"id":"x","topic":"t","action":"a"}"#,
    ));
    assert_eq!(ev.kind, EventKind::WorkerOther);
    assert!(ev.worker.is_some() && ev.task.is_none());
    let ev = one(&envelope(
        r#"{"type":"custom-thing","timestamp":1,"uuid":5}"#,
    ));
    assert_eq!(ev.kind, EventKind::Unknown);
    assert!(ev.worker.is_none() && ev.task.is_none());
}

#[test]
fn raw_utf8_body_encoding() {
    for enc in [json!(null), json!("utf-8")] {
        let data = envelope_with(STARTED, |e| {
            e["body"] = json!(STARTED);
            e["properties"]["body_encoding"] = enc.clone();
        });
        assert_eq!(one(&data).task_uuid(), Some("u-1"));
    }
    let data = envelope_with(STARTED, |e| {
        e["body"] = json!(STARTED);
        e["properties"]
            .as_object_mut()
            .expect("object")
            .remove("body_encoding");
    });
    assert_eq!(one(&data).task_uuid(), Some("u-1"));
    let data = envelope_with(STARTED, |e| {
        e["properties"]["body_encoding"] = json!("gzip")
    });
    assert_eq!(err(&data).reason(), "unsupported_body_encoding");
}

#[test]
fn escaped_base64_body() {
    // `\/` is a legal JSON escape; the body string is then not borrowable.
    let b64 = STANDARD.encode(STARTED);
    let escaped = b64.replace('/', "\\/");
    let data = String::from_utf8(envelope(STARTED))
        .expect("utf8")
        .replace(&b64, &escaped);
    assert_eq!(one(data.as_bytes()).task_uuid(), Some("u-1"));
}

// ---- synthetic: errors -----------------------------------------------------------------

#[test]
fn malformed_envelopes() {
    assert_eq!(err(b"").reason(), "malformed_envelope");
    assert_eq!(err(b"   ").reason(), "malformed_envelope");
    assert_eq!(err(b"not json").reason(), "malformed_envelope");
    assert_eq!(err(b"[1,2]").reason(), "malformed_envelope");
    assert_eq!(err(b"null").reason(), "malformed_envelope");
    assert_eq!(err(&[0xff, 0xfe, 0x80]).reason(), "malformed_envelope");
    assert_eq!(err(br#"{"body":"eA=="}"#).reason(), "malformed_envelope");
    let full = envelope(STARTED);
    for cut in [1, full.len() / 3, full.len() / 2, full.len() - 1] {
        assert_eq!(
            err(&full[..cut]).reason(),
            "malformed_envelope",
            "cut {cut}"
        );
    }
    let mut trailing = full.clone();
    trailing.extend_from_slice(b" x");
    assert_eq!(err(&trailing).reason(), "malformed_envelope");
    // Deep nesting in an ignored envelope field is skipped iteratively by serde_json (the
    // envelope is then judged on its merits); in a captured field it hits serde_json's
    // recursion limit. Neither overflows the stack.
    let n = 100_000;
    let deep = format!(
        r#"{{"body":"","properties":{{"x":{}{}}}}}"#,
        "[".repeat(n),
        "]".repeat(n)
    );
    assert_eq!(err(deep.as_bytes()).reason(), "not_an_event");
    let deep = String::from_utf8(envelope(STARTED)).expect("utf8").replace(
        r#""hdr@host""#,
        &format!("{}{}", "[".repeat(n), "]".repeat(n)),
    );
    assert_eq!(err(deep.as_bytes()).reason(), "malformed_envelope");
}

#[test]
fn not_events() {
    let data = envelope_with(STARTED, |e| {
        e["properties"]["delivery_info"]["exchange"] = json!("celery.pidbox")
    });
    let e = err(&data);
    assert_eq!(e.reason(), "not_an_event");
    assert!(e.to_string().contains("celery.pidbox"), "{e}");
    let data = envelope_with(STARTED, |e| {
        e["properties"]
            .as_object_mut()
            .expect("obj")
            .remove("delivery_info");
    });
    assert_eq!(err(&data).reason(), "not_an_event");
}

#[test]
fn content_types_and_compression() {
    let ct = |ct: Value| envelope_with(STARTED, |e| e["content-type"] = ct);
    assert_eq!(
        err(&ct(json!("application/x-python-serialize"))).reason(),
        "pickle"
    );
    assert_eq!(err(&ct(json!("application/x-msgpack"))).reason(), "msgpack");
    assert_eq!(err(&ct(json!("application/x-yaml"))).reason(), "yaml");
    assert_eq!(
        err(&ct(json!("text/plain"))).reason(),
        "unsupported_content_type"
    );
    assert_eq!(err(&ct(json!(null))).reason(), "unsupported_content_type");
    assert_eq!(
        one(&ct(json!("application/json; charset=utf-8"))).task_uuid(),
        Some("u-1")
    );
    let data = envelope_with(STARTED, |e| {
        e["headers"]["compression"] = json!("application/x-gzip")
    });
    let e = err(&data);
    assert_eq!(e.reason(), "compressed");
    assert!(e.to_string().contains("gzip"));
    let data = envelope_with(STARTED, |e| e["headers"]["compression"] = json!(null));
    one(&data);
}

#[test]
fn bad_bodies() {
    let data = envelope_with(STARTED, |e| e["body"] = json!("not base64 !!"));
    assert_eq!(err(&data).reason(), "bad_base64");
    let data = envelope_with(STARTED, |e| e["body"] = json!("eyJ0eXBlIjoid"));
    assert_eq!(err(&data).reason(), "bad_base64");
    let data = envelope_with(STARTED, |e| e["body"] = json!(5));
    assert_eq!(err(&data).reason(), "malformed_envelope");

    for (body, reason) in [
        ("", "malformed_body"),
        ("{", "malformed_body"),
        (&STARTED[..STARTED.len() - 1], "malformed_body"),
        ("[{}, ", "malformed_body"),
        ("{} {}", "malformed_body"),
        ("5", "malformed_event"),
        ("\"task-sent\"", "malformed_event"),
        ("null", "malformed_event"),
        ("true", "malformed_event"),
        ("{}", "missing_field"),
    ] {
        let e = err(&envelope(body));
        assert_eq!(e.reason(), reason, "{body:?}: {e}");
    }
    // Not UTF-8 after base64.
    let data = envelope_with(STARTED, |e| {
        e["body"] = json!(STANDARD.encode([b'"', 0xff, b'"']))
    });
    assert_eq!(err(&data).reason(), "malformed_body");
    // Huge nesting in the body. In a captured (known) field: serde_json's recursion limit.
    let n = 100_000;
    for body in [
        format!(
            r#"{{"type":"task-sent","args":{}1{}}}"#,
            "{\"__value__\":".repeat(n),
            "}".repeat(n)
        ),
        format!(
            r#"{{"type":"worker-online","loadavg":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        ),
        format!(
            r#"[{{"type":"task-sent","eta":{}{}}}]"#,
            "[".repeat(n),
            "]".repeat(n)
        ),
    ] {
        assert_eq!(err(&envelope(&body)).reason(), "malformed_body");
    }
    // As a list element, or in an unknown field: skipped iteratively, no limit needed.
    let mut out = Vec::new();
    let body = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let d = decode_envelope(&envelope(&body), &mut out).expect("one bad element");
    assert_eq!((d.appended, d.dropped.len()), (0, 1));
    assert_eq!(d.dropped[0].reason(), "malformed_event");
    let body = format!(
        r#"{{"type":"task-started","uuid":"u","timestamp":1,"x":{}{}}}"#,
        "[".repeat(n),
        "]".repeat(n)
    );
    assert_eq!(one(&envelope(&body)).task_uuid(), Some("u"));
}

#[test]
fn single_event_errors() {
    let e = err(&envelope(
        r#"{"type":"task-succeeded","timestamp":1,"result":"3"}"#,
    ));
    assert!(
        matches!(&e, DecodeError::MissingField { field: "uuid", index: None, event_type: Some(t) } if t == "task-succeeded"),
        "{e:?}"
    );
    assert_eq!(e.reason(), "missing_field");
    assert!(e.to_string().contains("uuid"));
    let e = err(&envelope(
        r#"{"type":"task-started","uuid":"","timestamp":1}"#,
    ));
    assert_eq!(e.reason(), "missing_field");
    let e = err(&envelope(r#"{"type":"task-started","uuid":"u"}"#));
    assert!(matches!(
        e,
        DecodeError::MissingField {
            field: "timestamp",
            ..
        }
    ));
    let e = err(&envelope(r#"{"uuid":"u","timestamp":1}"#));
    assert!(matches!(e, DecodeError::MissingField { field: "type", .. }));
    for body in [
        r#"{"type":5,"timestamp":1}"#,
        r#"{"type":"task-started","uuid":7,"timestamp":1}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":"1"}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"pid":-1}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"pid":5000000000}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"clock":1.5}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"hostname":["a"]}"#,
        r#"{"type":"task-sent","uuid":"u","timestamp":1,"retries":"1"}"#,
        r#"{"type":"task-sent","uuid":"u","timestamp":1,"args":[1,2]}"#,
        r#"{"type":"task-revoked","uuid":"u","timestamp":1,"terminated":1}"#,
        r#"{"type":"task-revoked","uuid":"u","timestamp":1,"signum":1.5}"#,
        r#"{"type":"worker-heartbeat","timestamp":1,"freq":"2"}"#,
        r#"{"type":"worker-heartbeat","timestamp":1,"loadavg":[1,2]}"#,
        r#"{"type":"worker-heartbeat","timestamp":1,"loadavg":[1,2,"3"]}"#,
        r#"{"type":"worker-heartbeat","timestamp":1,"active":-3}"#,
    ] {
        let e = err(&envelope(body));
        assert_eq!(e.reason(), "malformed_event", "{body}: {e}");
    }
    let e = err(&envelope(
        r#"{"type":"task-sent","uuid":"u","timestamp":1,"retries":"1"}"#,
    ));
    let msg = e.to_string();
    assert!(
        msg.contains("retries") && msg.contains("task-sent"),
        "{msg}"
    );
}

#[test]
fn list_keeps_good_elements() {
    let body = format!(
        r#"[{STARTED}, 5, {{"type":"task-failed","timestamp":2}}, [{STARTED}], {{"timestamp":3}},
            {{"type":"task-started","uuid":"u","timestamp":1,"pid":"x"}}, {STARTED}]"#
    );
    let mut out = vec![CeleryEvent::default()];
    let d = decode_envelope(&envelope(&body), &mut out).expect("partial success");
    assert_eq!(d.appended, 2);
    assert_eq!(out.len(), 3);
    assert!(!d.is_complete());
    let got: Vec<(&str, Option<usize>)> =
        d.dropped
            .iter()
            .map(|e| match e {
                DecodeError::MalformedEvent { index, .. }
                | DecodeError::MissingField { index, .. } => (e.reason(), *index),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
    assert_eq!(
        got,
        [
            ("malformed_event", Some(1)),
            ("missing_field", Some(2)),
            ("malformed_event", Some(3)),
            ("missing_field", Some(4)),
            ("malformed_event", Some(5)),
        ]
    );
    assert!(
        d.dropped[1].to_string().contains("list element 2"),
        "{}",
        d.dropped[1]
    );

    // All bad: Ok with nothing appended, everything reported.
    let d = decode_envelope(&envelope("[1, {}]"), &mut out).expect("ok");
    assert_eq!((d.appended, d.dropped.len()), (0, 2));
    // Empty list.
    let d = decode_envelope(&envelope("[]"), &mut out).expect("ok");
    assert_eq!((d.appended, d.dropped.len()), (0, 0));
    // A syntax error after good elements: nothing kept.
    let before = out.len();
    let body = format!("[{STARTED}, {STARTED}, {{");
    assert_eq!(
        decode_envelope(&envelope(&body), &mut out)
            .expect_err("syntax")
            .reason(),
        "malformed_body"
    );
    assert_eq!(out.len(), before);
}

#[test]
fn buffer_reuse_across_sizes() {
    let big = format!(
        r#"{{"type":"task-failed","uuid":"u","timestamp":1,"traceback":"{}"}}"#,
        "x".repeat(200_000)
    );
    let ev = one(&envelope(&big));
    assert_eq!(
        ev.task.and_then(|t| t.traceback).map(|t| t.len()),
        Some(200_000)
    );
    assert_eq!(one(&envelope(STARTED)).task_uuid(), Some("u-1"));
}

#[test]
fn scanner_edges_numbers_escapes_unicode() {
    // Numbers at the edges, in known fields.
    let ev = one(&envelope(
        r#"{"type":"task-started","uuid":"u","timestamp":1.5e0,"pid":-0,"clock":18446744073709551615,"utcoffset":-0.0}"#,
    ));
    assert_eq!((ev.pid, ev.clock), (Some(0), Some(u64::MAX)));
    assert_eq!(ev.timestamp, 1.5);
    let ev = one(&envelope(
        r#"{"type":"task-sent","uuid":"u","timestamp":1,"retries":2.0,"pid":1E3}"#,
    ));
    assert_eq!(ev.pid, Some(1000));
    assert_eq!(ev.task.and_then(|t| t.retries), Some(2));
    for body in [
        r#"{"type":"task-started","uuid":"u","timestamp":1,"clock":18446744073709551616}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"pid":1.5}"#,
        r#"{"type":"task-started","uuid":"u","timestamp":1,"clock":-1}"#,
    ] {
        assert_eq!(err(&envelope(body)).reason(), "malformed_event", "{body}");
    }
    // A number that overflows f64: a syntax error in a known field, skipped in an unknown one.
    let e = err(&envelope(
        r#"{"type":"task-started","uuid":"u","timestamp":1e999}"#,
    ));
    assert_eq!(e.reason(), "malformed_body");
    assert!(e.to_string().contains("number out of range"), "{e}");
    let ev = one(&envelope(
        r#"{"type":"task-started","uuid":"u","timestamp":1,"x":[1e999,-1e999]}"#,
    ));
    assert_eq!(ev.task_uuid(), Some("u"));

    // Escapes and unicode: decoded exactly, in values and in keys.
    let ev = one(&envelope(
        r#"{"typ\u0065":"task-failed","uuid":"u\/1","timestamp":1,"hostname":"w\u00e9@h\ud83d\ude00",
            "exception":"KeyError('café')","traceback":"T\n\t\"x\"\\"}"#,
    ));
    assert_eq!(ev.type_name, "task-failed");
    assert_eq!(ev.hostname, "w\u{e9}@h\u{1f600}");
    let t = ev.task.expect("task fields");
    assert_eq!(t.uuid, "u/1");
    assert_eq!(t.exception.as_deref(), Some("KeyError('caf\u{e9}')"));
    assert_eq!(t.traceback.as_deref(), Some("T\n\t\"x\"\\"));
    // A lone surrogate or a raw control character in a string is a syntax error.
    for body in [
        r#"{"type":"task-started","uuid":"\ud800","timestamp":1}"#,
        "{\"type\":\"task-started\",\"uuid\":\"a\tb\",\"timestamp\":1}",
    ] {
        assert_eq!(err(&envelope(body)).reason(), "malformed_body", "{body}");
    }
    // In the envelope: a raw control character inside the body string is refused.
    let data = String::from_utf8(envelope(STARTED))
        .expect("utf8")
        .replacen(r#""body":""#, "\"body\":\"\u{1}", 1);
    assert!(data.contains('\u{1}'));
    assert_eq!(err(data.as_bytes()).reason(), "malformed_envelope");
}

#[test]
fn never_panics_on_mutations() {
    // Every truncation and single-byte corruption of a real envelope: errors, no panics.
    let lines = fixture(MAIN);
    let data = lines[1].1.as_bytes();
    let mut out = Vec::new();
    for cut in 0..data.len() {
        let _ = decode_envelope(&data[..cut], &mut out);
    }
    let mut buf = data.to_vec();
    for i in 0..buf.len() {
        for b in [b'"', b'\\', b'{', b'[', 0xff, b'A', b'0'] {
            let orig = buf[i];
            buf[i] = b;
            let _ = decode_envelope(&buf, &mut out);
            buf[i] = orig;
        }
    }
}
