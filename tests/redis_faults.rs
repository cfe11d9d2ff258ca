//! Redis goes away mid-stream: the receiver reconnects, resubscribes, counts the gap, and the
//! task counters stay monotonic and right for everything published while it was subscribed.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn fixture_envelopes() -> Vec<(String, String)> {
    std::fs::read_to_string(repo_root().join("tests/fixtures/celery-events-redis.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let ch = v["channel"].as_str()?.to_string();
            ch.contains("celeryev")
                .then(|| (ch, v["data"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

#[test]
fn redis_restart_resubscribes_and_counts_the_gap() {
    let mut redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let cfg = format!(
        "receivers:\n  celery_redis:\n    endpoint: {}\nconnectors:\n  celery_correlate:\n    metrics_interval: 100ms\nexporters:\n  prometheus:\n    endpoint: {prom_addr}\nservice:\n  telemetry:\n    endpoint: {tel_addr}\n  pipelines:\n    celery:\n      receivers: [celery_redis]\n      exporters: [celery_correlate]\n    metrics:\n      receivers: [celery_correlate]\n      exporters: [prometheus]\n",
        redis.url()
    );
    let agent = Agent::start(bin(), &cfg);
    let connected = |want: f64| {
        wait_until(Duration::from_secs(20), || {
            scrape(&tel_addr).and_then(|s| metric_value(&s, "celeriac_celery_redis_connected", &[]))
                == Some(want)
        })
    };
    assert!(connected(1.0), "{}", agent.output());
    let envs = fixture_envelopes();
    let succeeded =
        || scrape(&prom_addr).and_then(|s| metric_value(&s, "celery_task_succeeded_total", &[]));
    for (ch, data) in &envs {
        redis.cmd(&["PUBLISH", ch, data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || succeeded() == Some(12.0)),
        "{}",
        agent.output()
    );

    redis.kill();
    assert!(connected(0.0), "{}", agent.output());
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    assert!(connected(1.0), "{}", agent.output());

    // Replay the capture (same task ids: the counters add up, they never reset).
    for (ch, data) in &envs {
        redis.cmd(&["PUBLISH", ch, data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || succeeded() == Some(24.0)),
        "{}",
        agent.output()
    );
    let t = scrape(&tel_addr).unwrap();
    assert!(metric_value(&t, "celeriac_celery_redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        metric_value(&t, "celeriac_celery_redis_gap_milliseconds_total", &[]).unwrap_or(0.0)
            >= 400.0
    );
    assert!(
        agent.stderr().contains("Resubscribed to Celery events"),
        "{}",
        agent.output()
    );
}
