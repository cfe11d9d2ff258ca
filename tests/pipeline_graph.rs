//! The graph at run time: one batch fans out to two exporters, and SIGTERM drains in order
//! (a batch processor holding everything flushes it to both exporters before the agent exits).

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

#[test]
fn fan_out_and_drain_on_sigterm() {
    let redis = RedisServer::start();
    let tel = free_port();
    let tel_addr = format!("127.0.0.1:{tel}");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let cfg = format!(
        r#"
receivers:
  celery_redis: {{ endpoint: "{}" }}
connectors:
  celery_correlate: {{}}
processors:
  batch: {{ send_batch_size: 1000000, timeout: 1h }}
exporters:
  logs/a: {{ path: "{}" }}
  logs/b: {{ path: "{}" }}
service:
  telemetry: {{ endpoint: "{tel_addr}" }}
  shutdown_timeout: 5s
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    logs: {{ receivers: [celery_correlate], processors: [batch], exporters: [logs/a, logs/b] }}
"#,
        redis.url(),
        a.display(),
        b.display()
    );
    let mut agent = Agent::start(Path::new(env!("CARGO_BIN_EXE_celeriac")), &cfg);
    assert!(
        wait_until(Duration::from_secs(20), || scrape(&tel_addr).and_then(
            |s| metric_value(&s, "celeriac_celery_redis_connected", &[])
        ) == Some(1.0)),
        "{}",
        agent.output()
    );
    for l in std::fs::read_to_string(repo_root().join("tests/fixtures/celery-events-redis.jsonl"))
        .unwrap()
        .lines()
    {
        let v: Value = serde_json::from_str(l).unwrap();
        let ch = v["channel"].as_str().unwrap();
        if ch.contains("celeryev") {
            redis.cmd(&["PUBLISH", ch, v["data"].as_str().unwrap()]);
        }
    }
    // All 75 task log records reach the batch processor, which holds them.
    assert!(
        wait_until(Duration::from_secs(10), || scrape(&tel_addr).and_then(
            |s| metric_value(
                &s,
                "celeriac_processor_incoming_items_total",
                &[("component", "processor/batch@logs")]
            )
        ) == Some(75.0)),
        "{}",
        agent.output()
    );
    assert_eq!(
        std::fs::read_to_string(&a)
            .unwrap_or_default()
            .lines()
            .count(),
        0,
        "held by the batch processor"
    );
    agent.terminate();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the deadline");
    assert!(status.success(), "{}", agent.output());
    let la = std::fs::read_to_string(&a).unwrap();
    let lb = std::fs::read_to_string(&b).unwrap();
    assert_eq!(la.lines().count(), 75, "{}", agent.output());
    assert_eq!(la, lb, "both exporters got the same records");
}
