//! celeriac as `otel-collector:4317`: a real Celery app instrumented with the real
//! opentelemetry-instrumentation-celery and opentelemetry-exporter-otlp points at celeriac (gRPC,
//! then HTTP); the backend (tests/python/otlp_sink.py) receives one connected trace per request:
//! the app's producer and worker spans unchanged, and celeriac's lifecycle spans (attempt, queue
//! wait, run) joined under the producer span, with no orphan spans and no duplicate span ids.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::spans::*;
use support::*;

fn run(protocol: &str) {
    let redis = RedisServer::start();
    let sink = OtlpSink::start(0);
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http} }} }}
  celery_redis: {{ endpoint: "{}" }}
connectors:
  celery_correlate: {{ join_window: 10s }}
processors:
  batch: {{ timeout: 100ms }}
exporters:
  otlp: {{ endpoint: "{}", compression: gzip, retry_on_failure: {{ initial_interval: 100ms }} }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    traces/in: {{ receivers: [otlp], exporters: [celery_correlate] }}
    traces: {{ receivers: [otlp, celery_correlate], processors: [batch], exporters: [otlp] }}
"#,
        redis.url(),
        sink.endpoint()
    );
    let agent = Agent::start_ready(
        &cfg,
        Duration::from_secs(20),
        "celery_redis connected",
        || redis_connected(&format!("127.0.0.1:{tel}")),
    );
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{grpc}"),
        _ => format!("http://127.0.0.1:{http}"),
    };
    let mut worker = CeleryWorker::start(
        &redis.url(),
        WorkerOpts::default()
            .env("CELERIAC_OTEL", "1")
            .otel(&endpoint, protocol),
    );
    worker.assert_ready(Duration::from_secs(60));
    let env = [
        ("CELERIAC_OTEL", "1"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
    ];
    let chain = run_client_env(&redis.url(), &["chain", "--wait", "20"], &env);
    let ids: Vec<String> = chain["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);

    // Every task: the app's producer span, the worker's run span, celeriac's attempt + queue + run.
    let mut all = Vec::new();
    let complete = wait_until(Duration::from_secs(40), || {
        all = spans(&sink);
        ids.iter().all(|id| {
            let mine = all
                .iter()
                .filter(|s| s.attr("celery.task_id") == id)
                .count();
            let app = all
                .iter()
                .filter(|s| {
                    s.attr("messaging.message.id") == id && !s.attrs.contains_key("celery.task_id")
                })
                .count();
            mine >= 3 && app >= 2
        })
    });
    assert!(
        complete,
        "spans: {:#?}\n{}",
        all.iter()
            .map(|s| (
                &s.name,
                s.attr("celery.task_id"),
                s.attr("messaging.message.id")
            ))
            .collect::<Vec<_>>(),
        agent.output()
    );

    let mut by_id: BTreeMap<String, SpanJ> = BTreeMap::new();
    let mut dup = BTreeSet::new();
    for s in &all {
        if by_id.insert(s.span_id.clone(), s.clone()).is_some() {
            dup.insert(s.span_id.clone());
        }
    }
    // The OTLP exporter may deliver a request twice only after a failure; none happened here.
    assert!(dup.is_empty(), "duplicate span ids: {dup:?}");

    let producer = |id: &str| {
        all.iter()
            .find(|s| s.name.starts_with("apply_async/") && s.attr("messaging.message.id") == id)
            .cloned()
            .unwrap_or_else(|| panic!("producer span of {id}"))
    };
    let trace = producer(&ids[0]).trace_id;
    for id in &ids {
        let p = producer(id);
        assert_eq!(p.trace_id, trace, "one trace for the whole chain");
        let worker_run = all
            .iter()
            .find(|s| s.name.starts_with("run/") && s.attr("messaging.message.id") == id)
            .expect("worker run span");
        assert_eq!(
            worker_run.parent, p.span_id,
            "the app's own parenting is untouched"
        );
        let attempt = all
            .iter()
            .find(|s| s.attr("celery.task_id") == id && s.attrs.contains_key("celery.state"))
            .expect("attempt span");
        assert_eq!(
            attempt.trace_id, trace,
            "lifecycle joined into the app's trace"
        );
        assert_eq!(attempt.parent, p.span_id, "attempt under the producer span");
        let queue = all
            .iter()
            .find(|s| s.attr("celery.task_id") == id && s.name == "queue")
            .expect("queue-wait span");
        assert_eq!(queue.parent, attempt.span_id);
        assert_eq!(queue.trace_id, trace);
        assert!(queue.end >= queue.start && queue.end <= attempt.end);
    }
    // No orphans: every parent of a span in the trace is in the trace.
    for s in all.iter().filter(|s| s.trace_id == trace) {
        if !s.parent.is_empty() {
            assert!(
                by_id.get(&s.parent).is_some_and(|p| p.trace_id == trace),
                "orphan span {} ({}) with parent {}",
                s.name,
                s.span_id,
                s.parent
            );
        }
    }
    let joined = || {
        scrape(&format!("127.0.0.1:{tel}"))
            .and_then(|t| metric_value(&t, "celeriac_correlate_joined_total", &[]))
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || joined() >= 3.0),
        "{}",
        agent.output()
    );
    worker.stop();
}

#[test]
fn instrumented_app_over_grpc_gets_one_connected_trace() {
    run("grpc");
}

#[test]
fn instrumented_app_over_http_gets_one_connected_trace() {
    run("http/protobuf");
}
