//! Task lifecycles as traces, end to end: a real Celery worker on a real redis-server, celeriac
//! correlating its events, and the `otlp` exporter delivering to an OTLP/gRPC receiver written
//! with another stack (tests/python/otlp_sink.py: grpcio + the PyPI opentelemetry-proto package).
//!
//! * `chain_failure_and_retries_arrive_as_traces`: a chain of three, a failing task and a task
//!   retried twice arrive with parent/child ids, phases that hold the worker's own `runtime`,
//!   ERROR status with an `exception` event, retry events and links; the first two
//!   export calls are refused (UNAVAILABLE) and retried; the task logs and metrics arrive too.
//! * `receiver_outage_loses_nothing`: the receiver is killed for a few seconds mid-stream and
//!   restarted on the same port; every span arrives once it is back.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::spans::*;
use support::*;

fn config(redis_url: &str, sink: &str, telemetry: u16, signals: &[&str]) -> String {
    let mut cfg = AgentConfig::celery(redis_url, "metrics_interval: 500ms", telemetry).exporter(
        "otlp",
        &format!(
            "
            endpoint: {sink}
            compression: gzip
            headers: {{ x-celeriac-test: not-logged-token }}
            timeout: 2s
            retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 60s }}
            sending_queue: {{ queue_size: 100, num_consumers: 2 }}"
        ),
    );
    for s in signals {
        cfg = cfg.pipeline(s, &["celery_correlate"], &["otlp"]);
    }
    cfg.yaml()
}

/// Spans of the given task ids, each span once (a retried delivery may repeat a request).
fn spans_of(sink: &OtlpSink, ids: &BTreeSet<String>) -> Vec<SpanJ> {
    let mut seen = BTreeSet::new();
    spans(sink)
        .into_iter()
        .filter(|s| ids.contains(s.attr("celery.task_id")))
        .filter(|s| seen.insert(s.span_id.clone()))
        .collect()
}

fn wait_spans(sink: &OtlpSink, ids: &BTreeSet<String>, n: usize, agent: &Agent) -> Vec<SpanJ> {
    let mut last = Vec::new();
    let ok = wait_until(Duration::from_secs(25), || {
        last = spans_of(sink, ids);
        last.len() >= n
    });
    assert!(
        ok,
        "expected {n} spans for {ids:?}, got {}:\n{:#?}\n{}",
        last.len(),
        last.iter()
            .map(|s| (&s.name, s.attr("celery.task_id")))
            .collect::<Vec<_>>(),
        agent.output()
    );
    last
}

fn start_agent(redis: &RedisServer, sink: &OtlpSink, signals: &[&str]) -> (Agent, String) {
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start_ready(
        &config(&redis.url(), &sink.endpoint(), tel, signals),
        Duration::from_secs(15),
        "agent ready",
        || http_ok(&tel_addr, "/healthz"),
    );
    (agent, tel_addr)
}

fn child(spans: &[SpanJ], parent: &SpanJ, name: &str) -> SpanJ {
    spans
        .iter()
        .find(|s| s.parent == parent.span_id && s.name == name)
        .unwrap_or_else(|| panic!("no {name} under {parent:?}"))
        .clone()
}

fn attempt(spans: &[SpanJ], id: &str, n: i64) -> SpanJ {
    spans
        .iter()
        .find(|s| {
            s.attr("celery.task_id") == id
                && s.name != "queue"
                && s.name != "run"
                && s.attrs.get("celery.retries").and_then(Value::as_i64) == Some(n)
        })
        .unwrap_or_else(|| panic!("no attempt {n} of {id}"))
        .clone()
}

/// Slack for comparing event timestamps: Celery stamps events with `time.time()` as float
/// seconds, which near 1.7e9 s are exact to 0.24 µs.
const FLOAT_SLACK_NS: u64 = 1_000;

/// When the worker received each attempt, from the `task.received` log records the agent sent:
/// (task id, attempt) → Unix ns.
fn received_at(sink: &OtlpSink) -> BTreeMap<(String, i64), u64> {
    let mut out = BTreeMap::new();
    for r in sink.requests().iter().filter(|r| r["signal"] == "logs") {
        let records = r["request"]["resource_logs"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|rl| rl["scope_logs"].as_array().into_iter().flatten())
            .flat_map(|sl| sl["log_records"].as_array().into_iter().flatten());
        for rec in records.filter(|rec| rec["event_name"] == "task.received") {
            let attr = |k: &str| {
                rec["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|kv| kv["key"] == k)
                    .map(|kv| &kv["value"])
            };
            let id = attr("celery.task_id").and_then(|v| v["string_value"].as_str());
            let n = attr("celery.retries")
                .and_then(|v| v["int_value"].as_str())
                .and_then(|n| n.parse().ok());
            let ts = rec["time_unix_nano"].as_str().and_then(|t| t.parse().ok());
            if let (Some(id), Some(n), Some(ts)) = (id, n, ts) {
                out.insert((id.to_string(), n), ts);
            }
        }
    }
    out
}

/// queue = sent → started, run = started → end, and the worker's own `runtime` lies between
/// the attempt's `task-received` (`received`) and the run's end.
///
/// Where `runtime` is measured decides what can be compared. The worker's main process stamps
/// `task-received` before it hands the task to a pool child, and `task-started` and
/// `task-succeeded` when it hears back from the child; the child measures `runtime` in between.
/// So received → end holds the runtime whatever the load, and the run starts after received.
/// The run span itself is no such bound: the main process stamps `task-started` when it gets
/// round to the child's acknowledgement, which on a busy machine can be after the child has
/// started timing, so the run span may be shorter than `runtime` by that delay, and longer by
/// the delay in reporting the end. Those delays are scheduling latency, far below a second; a
/// run span off by more is not this attempt's run.
fn assert_phases(spans: &[SpanJ], a: &SpanJ, received: &BTreeMap<(String, i64), u64>) {
    let run = child(spans, a, "run");
    let queue = child(spans, a, "queue");
    assert_eq!(run.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(queue.end, run.start, "queue ends when the run starts");
    assert_eq!(run.end, a.end);
    assert!(queue.start >= a.start && queue.start <= queue.end);
    if let Some(rt) = a.attrs.get("celery.runtime").and_then(Value::as_f64) {
        let n = a.attrs.get("celery.retries").and_then(Value::as_i64);
        let key = (a.attr("celery.task_id").to_string(), n.unwrap_or(-1));
        let received = *received
            .get(&key)
            .unwrap_or_else(|| panic!("no task.received record of {key:?}"));
        assert!(
            run.start + FLOAT_SLACK_NS >= received,
            "run starts before the worker received the task ({})",
            a.name
        );
        let window = run.end.saturating_sub(received);
        assert!(
            window + FLOAT_SLACK_NS >= (rt * 1e9) as u64,
            "worker runtime {:.3} ms longer than received → end, {:.3} ms ({})",
            rt * 1000.0,
            window as f64 / 1e6,
            a.name
        );
        assert!(
            (run.ms() - rt * 1000.0).abs() < 1000.0,
            "run span {:.3} ms vs worker runtime {:.3} ms ({})",
            run.ms(),
            rt * 1000.0,
            a.name
        );
    }
}

#[test]
fn chain_failure_and_retries_arrive_as_traces() {
    let t0 = Instant::now();
    let redis = RedisServer::start();
    // The first two export calls are refused: they must be retried, not lost.
    let sink = OtlpSink::start(2);
    let (agent, tel) = start_agent(&redis, &sink, &["traces", "logs", "metrics"]);
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));

    let chain = client_ids(&run_client(&redis.url(), &["chain", "--wait", "30"]));
    let fail = client_ids(&run_client(&redis.url(), &["fail", "--wait", "30"]));
    let retry = client_ids(&run_client(&redis.url(), &["retry", "--wait", "30"]));
    let all: BTreeSet<String> = chain.iter().chain(&fail).chain(&retry).cloned().collect();
    // chain: 3 × (attempt, queue, run); fail: 3; retry: 3 attempts × 3.
    let got = wait_spans(&sink, &all, 9 + 3 + 9, &agent);
    assert_eq!(got.len(), 21, "{got:#?}");
    // The successful attempts' task.received records (the logs pipeline may deliver them last).
    let want: Vec<(String, i64)> = chain
        .iter()
        .map(|id| (id.clone(), 0))
        .chain([(retry[0].clone(), 2)])
        .collect();
    let mut received = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            received = received_at(&sink);
            want.iter().all(|k| received.contains_key(k))
        }),
        "task.received records of {want:?}: {received:?}"
    );

    // Chain: one trace (the root task's id), a → b → c.
    let (a, b, c) = (
        attempt(&got, &chain[0], 0),
        attempt(&got, &chain[1], 0),
        attempt(&got, &chain[2], 0),
    );
    assert_eq!(a.trace_id, chain[0].replace('-', ""));
    assert_eq!(
        (b.trace_id.as_str(), c.trace_id.as_str()),
        (a.trace_id.as_str(), a.trace_id.as_str())
    );
    assert!(a.parent.is_empty(), "a is the root: {a:?}");
    assert_eq!(b.parent, a.span_id);
    assert_eq!(c.parent, b.span_id);
    assert_eq!(
        (a.name.as_str(), b.name.as_str(), c.name.as_str()),
        ("shop.a", "shop.b", "shop.c")
    );
    for s in [&a, &b, &c] {
        assert_eq!(s.attr("celery.state"), "SUCCESS");
        assert_eq!(s.attr("celery.hostname"), "w1@host1");
        assert_eq!(s.attr("celery.queue"), "celery");
        assert_eq!(s.attr("messaging.system"), "celery");
        assert_eq!(s.attr("messaging.message.id"), s.attr("celery.task_id"));
        assert_phases(&got, s, &received);
    }

    // Failure: ERROR, exception event with type, message and traceback.
    let f = attempt(&got, &fail[0], 0);
    assert_eq!(f.status, "STATUS_CODE_ERROR");
    assert!(
        f.status_message.contains("no e-mail address on order 2001"),
        "{f:?}"
    );
    assert_eq!(f.attr("celery.state"), "FAILURE");
    let (_, exc) = f
        .events
        .iter()
        .find(|(n, _)| n == "exception")
        .expect("exception event");
    assert_eq!(exc["exception.type"], "ValueError");
    assert!(exc["exception.message"].as_str().unwrap().contains("2001"));
    assert!(exc["exception.stacktrace"]
        .as_str()
        .unwrap()
        .contains("Traceback"));
    assert_eq!(child(&got, &f, "run").status, "STATUS_CODE_ERROR");
    assert_phases(&got, &f, &received);

    // Retried twice then succeeded: three attempts in one trace, events and links.
    let r: Vec<SpanJ> = (0..3).map(|n| attempt(&got, &retry[0], n)).collect();
    let states: Vec<_> = r.iter().map(|s| s.attr("celery.state")).collect();
    assert_eq!(states, ["RETRY", "RETRY", "SUCCESS"]);
    for n in 0..3 {
        assert_eq!(r[n].trace_id, retry[0].replace('-', ""));
        assert!(r[n].parent.is_empty(), "no self-parent: {:?}", r[n]);
        if n > 0 {
            assert_eq!(r[n].links, vec![r[n - 1].span_id.clone()]);
            // The pool child sends the next attempt while it runs this one, before the main
            // process stamps `task-retried`: the next attempt begins within this one.
            assert!(
                r[n].start + FLOAT_SLACK_NS >= r[n - 1].start
                    && r[n].start <= r[n - 1].end + FLOAT_SLACK_NS,
                "attempt {n} sent outside attempt {}: {:?}",
                n - 1,
                (r[n - 1].start, r[n].start, r[n - 1].end)
            );
        }
        if n < 2 {
            let (_, ev) = r[n]
                .events
                .iter()
                .find(|(k, _)| k == "retry")
                .expect("retry event");
            assert_eq!(ev["exception.type"], "ConnectionError");
        }
        assert_phases(&got, &r[n], &received);
    }

    // The correlated task logs and the metrics went out over OTLP too; the header was sent.
    let reqs = sink.requests();
    let logs: usize = reqs
        .iter()
        .filter(|r| r["signal"] == "logs")
        .map(|r| r.to_string().matches("\"task.completed\"").count())
        .sum();
    assert!(logs >= 4, "task.completed log records: {logs}");
    assert!(
        reqs.iter()
            .any(|r| r["signal"] == "metrics"
                && r.to_string().contains("celery_task_succeeded_total"))
    );
    assert!(reqs
        .iter()
        .all(|r| r["metadata"]["x-celeriac-test"] == "not-logged-token"));
    assert!(!agent.stderr().contains("not-logged-token"));

    let samples = scrape(&tel).expect("agent metrics");
    let retried = metric_value(
        &samples,
        "celeriac_exporter_retries_total",
        &[("component", "exporter/otlp")],
    );
    assert!(retried.unwrap_or(0.0) >= 2.0, "retries {retried:?}");
    let dropped = metric_value(
        &samples,
        "celeriac_exporter_dropped_items_total",
        &[("component", "exporter/otlp")],
    );
    assert_eq!(dropped, Some(0.0));
    eprintln!("took {:?}", t0.elapsed());
}

#[test]
fn receiver_outage_loses_nothing() {
    let t0 = Instant::now();
    let redis = RedisServer::start();
    let mut sink = OtlpSink::start(0);
    let (agent, tel) = start_agent(&redis, &sink, &["traces"]);
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));

    let first: BTreeSet<String> = client_ids(&run_client(&redis.url(), &["chain", "--wait", "30"]))
        .into_iter()
        .collect();
    wait_spans(&sink, &first, 9, &agent);

    // Receiver gone: these spans wait in the exporter's retries.
    sink.kill();
    let mut all = first.clone();
    all.extend(client_ids(&run_client(
        &redis.url(),
        &["chain", "--wait", "30"],
    )));
    all.extend(client_ids(&run_client(
        &redis.url(),
        &["fail", "--wait", "30"],
    )));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        spans_of(&sink, &all).len(),
        9,
        "nothing arrives while the receiver is down"
    );
    sink.restart();

    let got = wait_spans(&sink, &all, 9 + 9 + 3, &agent);
    assert_eq!(got.len(), 21);
    let samples = scrape(&tel).expect("agent metrics");
    let retried = metric_value(
        &samples,
        "celeriac_exporter_retries_total",
        &[("component", "exporter/otlp")],
    );
    assert!(retried.unwrap_or(0.0) >= 1.0, "retries {retried:?}");
    assert_eq!(
        metric_value(
            &samples,
            "celeriac_exporter_dropped_items_total",
            &[("component", "exporter/otlp")]
        ),
        Some(0.0)
    );
    eprintln!("took {:?}", t0.elapsed());
}
