//! The graph at run time: one batch fans out to two exporters, and SIGTERM drains in order
//! (a batch processor holding everything flushes it to both exporters before the agent exits).

mod support;

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
    let cfg = AgentConfig::celery_without_telemetry(&redis.url(), "{}")
        .telemetry_endpoint(&tel_addr)
        .service("shutdown_timeout", "5s")
        .processor("batch", "{ send_batch_size: 1000000, timeout: 1h }")
        .exporter("logs/a", &format!("{{ path: \"{}\" }}", a.display()))
        .exporter("logs/b", &format!("{{ path: \"{}\" }}", b.display()))
        .pipeline_with(
            "logs",
            &["celery_correlate"],
            &["batch"],
            &["logs/a", "logs/b"],
        )
        .yaml();
    let mut agent = Agent::start_ready(
        &cfg,
        Duration::from_secs(20),
        "celery_redis connected",
        || redis_connected(&tel_addr),
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
