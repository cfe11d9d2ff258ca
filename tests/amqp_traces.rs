//! Lifecycle traces from a RabbitMQ app have exactly the shape of those from a Redis app: the same
//! chain runs on a real Celery worker on each broker at once (one agent, one pipeline per broker,
//! one OTLP sink), and the spans of each (names, kinds, parent/child structure, attribute keys,
//! status) are compared.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::rabbitmq::Vhost;
use support::spans::{spans, SpanJ};
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

/// The broker-independent shape of a trace: per span (name, kind, parent's name, attribute
/// keys, status), sorted.
fn shape(all: &[SpanJ]) -> Vec<(String, String, String, Vec<String>, String)> {
    let mut out: Vec<_> = all
        .iter()
        .map(|s| {
            let parent = all
                .iter()
                .find(|p| p.span_id == s.parent)
                .map_or(String::new(), |p| p.name.clone());
            (
                s.name.clone(),
                s.kind.clone(),
                parent,
                s.attrs.keys().cloned().collect(),
                s.status.clone(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn amqp_lifecycle_traces_have_the_redis_shape() {
    let redis = RedisServer::start();
    let vhost = Vhost::create("traces");
    let (rurl, aurl) = (redis.url(), vhost.url());
    let sink = OtlpSink::start(0);
    let tel = free_port();
    let agent = Agent::start(
        bin(),
        &format!(
            r#"
receivers:
  celery_redis:
    endpoint: {rurl}
  celery_amqp:
    endpoint: {aurl}
connectors:
  celery_correlate/redis: {{ service_name: shop-redis, metrics_interval: 500ms }}
  celery_correlate/amqp: {{ service_name: shop-amqp, metrics_interval: 500ms }}
exporters:
  otlp:
    endpoint: {sink}
    timeout: 2s
service:
  telemetry:
    endpoint: 127.0.0.1:{tel}
  pipelines:
    celery/redis: {{ receivers: [celery_redis], exporters: [celery_correlate/redis] }}
    celery/amqp: {{ receivers: [celery_amqp], exporters: [celery_correlate/amqp] }}
    traces: {{ receivers: [celery_correlate/redis, celery_correlate/amqp], exporters: [otlp] }}
"#,
            sink = sink.endpoint()
        ),
    );
    let mut wr = CeleryWorker::start(&rurl, WorkerOpts::default().heartbeat(1));
    let mut wa = CeleryWorker::start(&aurl, WorkerOpts::default().heartbeat(1));
    wr.assert_ready(Duration::from_secs(60));
    wa.assert_ready(Duration::from_secs(60));
    let chain_ids = |url: &str| -> BTreeSet<String> {
        client_ids(&run_client(url, &["chain", "--wait", "30"]))
            .into_iter()
            .collect()
    };
    let (on_redis, on_amqp) = (chain_ids(&rurl), chain_ids(&aurl));
    assert_eq!(on_redis.len(), 3);
    assert_eq!(on_amqp.len(), 3);

    let of = |ids: &BTreeSet<String>| -> Vec<SpanJ> {
        let mut seen = BTreeSet::new();
        spans(&sink)
            .into_iter()
            .filter(|s| ids.contains(s.attr("celery.task_id")))
            .filter(|s| seen.insert(s.span_id.clone()))
            .collect()
    };
    let (mut r, mut a) = (Vec::new(), Vec::new());
    let ok = wait_until(Duration::from_secs(25), || {
        r = of(&on_redis);
        a = of(&on_amqp);
        // Three tasks, each with its queue and run phases at least.
        r.len() >= 9 && r.len() == a.len()
    });
    assert!(
        ok,
        "redis {} spans, amqp {} spans\n{}",
        r.len(),
        a.len(),
        agent.output()
    );
    assert_eq!(shape(&r), shape(&a), "span shapes differ");
    // One trace per broker's chain, each rooted at its own chain head.
    let traces = |s: &[SpanJ]| {
        s.iter()
            .map(|x| x.trace_id.clone())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(traces(&r).len(), 1);
    assert_eq!(traces(&a).len(), 1);
    assert_ne!(traces(&r), traces(&a));
}
