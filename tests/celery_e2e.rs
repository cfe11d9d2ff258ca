//! End to end with a real redis-server and a real Celery 5 worker (events on, sent events on):
//! the scrape endpoint shows exactly the counts of the workload, the queue length of a queue
//! nobody consumes (priority sub-queues included), the worker up then down, and one log line per
//! lifecycle step; bad envelopes are counted and change nothing else.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(redis_url: &str, prom: u16, telemetry: u16, log_path: &str) -> String {
    AgentConfig::celery(redis_url, "metrics_interval: 200ms", telemetry)
        .receiver(
            "redis_queues",
            &format!("endpoint: {redis_url}\nqueues: [celery, backlog]\ninterval: 300ms"),
        )
        .exporter("prometheus", &format!("endpoint: 127.0.0.1:{prom}"))
        .exporter("logs", &format!("path: {log_path}"))
        .pipeline(
            "metrics",
            &["celery_correlate", "redis_queues"],
            &["prometheus"],
        )
        .pipeline("logs", &["celery_correlate"], &["logs"])
        .yaml()
}

#[test]
fn real_worker_counts_queues_workers_and_logs() {
    let redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let prom_addr = format!("127.0.0.1:{prom}");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tasks.jsonl");
    let mut agent = Agent::start_ready(
        &config(&redis.url(), prom, tel, &log_path.display().to_string()),
        Duration::from_secs(15),
        "agent up",
        || scrape(&prom_addr).is_some(),
    );

    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let worker_up = |want: f64| worker_up_is(&prom_addr, "host1", want, Duration::from_secs(15));
    assert!(worker_up(1.0), "worker up\n{}", agent.output());

    let want = assert_mix_counted(&redis.url(), &prom_addr, &agent);

    let samples = scrape(&prom_addr).unwrap();
    // Runtime histogram: one observation per success, per task name.
    for (name, n) in &want["succeeded"] {
        let count = metric_value(&samples, "celery_task_runtime_count", &[("name", name)]);
        assert_eq!(count, Some(*n as f64), "runtime count for {name}");
        let inf = metric_value(
            &samples,
            "celery_task_runtime_bucket",
            &[("name", name), ("le", "+Inf")],
        );
        assert_eq!(inf, Some(*n as f64), "+Inf bucket for {name}");
    }
    assert_mix_details(&samples);

    // One log line per lifecycle step.
    assert_logged_per_event(&log_path, &want);
    let text = std::fs::read_to_string(&log_path).unwrap();
    let failed = text
        .lines()
        .find(|l| l.contains("\"task.failed\""))
        .unwrap();
    let failed: Value = serde_json::from_str(failed).unwrap();
    assert_eq!(failed["exception.type"], "ValueError");
    assert!(failed["exception.stacktrace"]
        .as_str()
        .unwrap()
        .starts_with("Traceback"));
    assert_eq!(failed["level"], "error");

    // A queue nobody consumes, with priority sub-queues.
    let fill = run_client(&redis.url(), &["fill_queue", "backlog", "10"]);
    let total = fill["total"].as_f64().unwrap();
    assert_eq!(total, 15.0);
    assert!(
        wait_until(Duration::from_secs(10), || {
            scrape(&prom_addr)
                .and_then(|s| metric_value(&s, "celery_queue_length", &[("queue_name", "backlog")]))
                == Some(total)
        }),
        "queue length of backlog\n{}",
        agent.output()
    );

    // Worker stops (warm shutdown sends worker-offline): down.
    worker.stop();
    assert!(worker_up(0.0), "worker down\n{}", agent.output());

    agent.stop_ok(Duration::from_secs(10));
}

#[test]
fn bad_envelopes_are_counted_and_nothing_else_is_lost() {
    let redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tasks.jsonl");
    let agent = Agent::start_ready(
        &config(&redis.url(), prom, tel, &log_path.display().to_string()),
        Duration::from_secs(15),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );

    let fixtures = repo_root().join("tests/fixtures");
    let lines = |f: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(fixtures.join(f))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["channel"].as_str().unwrap().to_string(),
                    v["data"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    // Pickle-serialized events (the capture used db 5; publish them on our db 0 channels).
    let mut pickles = 0;
    for (ch, data) in lines("celery-events-redis-pickle.jsonl") {
        if ch.contains("celeryev") {
            redis.cmd(&["PUBLISH", &ch.replace("/5.", "/0."), &data]);
            pickles += 1;
        }
    }
    let garbage = [
        "",
        "not json",
        "{\"body\": 1}",
        "{\"body\": \"!!!\", \"content-type\": \"application/json\", \"properties\": {\"body_encoding\": \"base64\", \"delivery_info\": {\"exchange\": \"celeryev\", \"routing_key\": \"task.multi\"}}}",
        "{\"body\": \"W3sidHlwZSI6ICJ0YXNrLXN0YXJ0ZWQifV0=\", \"content-type\": \"application/json\", \"content-encoding\": \"utf-8\", \"properties\": {\"body_encoding\": \"base64\", \"delivery_info\": {\"exchange\": \"celeryev\", \"routing_key\": \"task.multi\"}}}",
        "{\"body\": \"gAR9lC4=\", \"content-type\": \"application/x-msgpack\", \"content-encoding\": \"binary\", \"properties\": {\"body_encoding\": \"base64\", \"delivery_info\": {\"exchange\": \"celeryev\", \"routing_key\": \"task.multi\"}}}",
    ];
    for g in garbage {
        redis.cmd(&["PUBLISH", "/0.celeryev/task.multi", g]);
    }
    // Then the real JSON capture: it must be counted exactly as if nothing bad had come before.
    for (ch, data) in lines("celery-events-redis.jsonl") {
        if ch.contains("celeryev") {
            redis.cmd(&["PUBLISH", &ch, &data]);
        }
    }
    let t = await_celery_telemetry(&agent, &tel_addr, |t| {
        events_dropped(t, "pickle") == pickles as f64
            && metric_value(t, "celeriac_celery_events_received_total", &[]) == Some(88.0)
    });
    let total_dropped =
        metric_value(&t, "celeriac_celery_events_dropped_total", &[]).unwrap_or(0.0);
    assert_eq!(total_dropped, (pickles + garbage.len()) as f64, "{t:?}");
    assert_eq!(events_dropped(&t, "msgpack"), 1.0);
    assert_eq!(events_dropped(&t, "bad_base64"), 1.0);
    let ok = wait_until(Duration::from_secs(10), || {
        scrape(&prom_addr)
            .and_then(|s| metric_value(&s, "celery_task_succeeded_total", &[("name", "shop.a")]))
            == Some(7.0)
    });
    assert!(ok, "{}", agent.output());
    assert!(agent
        .stderr()
        .contains("Dropping undecodable Celery input."));
}
