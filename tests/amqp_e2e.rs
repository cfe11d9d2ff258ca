//! End to end on RabbitMQ with a real Celery 5 worker (events on, sent events on), each test in a
//! vhost of its own: the same task counts and log lines as the Redis test (tests/celery_e2e.rs),
//! queue depth of a queue nobody consumes, the consumer count, a missing queue read as 0, the
//! worker up then down after SIGKILL (Celery's heartbeat rule); bad messages (malformed bodies,
//! wrong content types, pickle, oversized) are counted drops and nothing else is lost.

mod support;

use std::path::Path;
use std::time::Duration;

use support::rabbitmq::{amqp_tool, await_consuming, Vhost};
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn config(url: &str, prom: u16, telemetry: u16, log_path: &str) -> String {
    AgentConfig::amqp(
        &format!("endpoint: {url}\nmax_message_size: 65536"),
        &format!("endpoint: {url}\nqueues: [celery, backlog, nosuch]\ninterval: 300ms"),
        prom,
        telemetry,
    )
    .exporter("logs", &format!("path: {log_path}"))
    .pipeline("logs", &["celery_correlate"], &["logs"])
    .yaml()
}

#[test]
fn real_worker_on_rabbitmq_counts_queues_and_workers() {
    let vhost = Vhost::create("e2e");
    let url = vhost.url();
    let (prom, tel) = (free_port(), free_port());
    let prom_addr = format!("127.0.0.1:{prom}");
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tasks.jsonl");
    let mut agent = Agent::start(
        bin(),
        &config(&url, prom, tel, &log_path.display().to_string()),
    );
    await_consuming(&agent, &format!("127.0.0.1:{tel}"));
    // Celery's own queue declaration, as its receiver makes it.
    let ours: Vec<_> = vhost
        .queues()
        .into_iter()
        .filter(|q| q.0.starts_with("celeryev."))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].2, 1, "one consumer on {ours:?}");

    let mut worker = CeleryWorker::start(&url, WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let worker_up = |want: f64| worker_up_is(&prom_addr, "host1", want, Duration::from_secs(20));
    assert!(worker_up(1.0), "worker up\n{}", agent.output());

    let want = assert_mix_counted(&url, &prom_addr, &agent);
    assert_mix_details(&scrape(&prom_addr).unwrap());

    // One log line per lifecycle step, as on Redis.
    assert_logged_per_event(&log_path, &want);

    // Queue depth: a queue nobody consumes, the worker's queue with its consumer, a missing queue.
    let fill = run_client(&url, &["fill_queue", "backlog", "10"]);
    assert_eq!(fill["total"].as_f64(), Some(10.0));
    let depth = |q: &str| {
        scrape(&prom_addr).map(|s| {
            (
                metric_value(&s, "celery_queue_length", &[("queue_name", q)]),
                metric_value(&s, "celery_active_consumer_count", &[("queue_name", q)]),
            )
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || depth("backlog")
            == Some((Some(10.0), Some(0.0)))),
        "backlog: {:?}, RabbitMQ says {:?}\n{}",
        depth("backlog"),
        vhost.queues(),
        agent.output()
    );
    assert!(
        wait_until(Duration::from_secs(10), || depth("celery")
            == Some((Some(0.0), Some(1.0)))),
        "celery: {:?}",
        depth("celery")
    );
    assert_eq!(depth("nosuch"), Some((Some(0.0), Some(0.0))));
    assert_eq!(
        agent
            .stderr()
            .lines()
            .filter(|l| l.contains("Queue does not exist (yet)") && l.contains("nosuch"))
            .count(),
        1,
        "a missing queue is logged once\n{}",
        agent.stderr()
    );
    // ... and only by celeriac: not again by the AMQP client for every channel the broker
    // closes (each poll's passive declare of the missing queue closes one).
    assert!(
        !agent.stderr().contains("Channel closed"),
        "the AMQP client's own channel-close lines\n{}",
        agent.stderr()
    );

    // SIGKILL: no worker-offline event; down by Celery's heartbeat rule.
    worker.kill();
    assert!(
        worker_up(0.0),
        "worker down after SIGKILL\n{}",
        agent.output()
    );
    assert!(
        wait_until(Duration::from_secs(10), || depth("celery")
            == Some((Some(0.0), Some(0.0)))),
        "no consumer after the kill: {:?}",
        depth("celery")
    );

    agent.stop_ok(Duration::from_secs(10));
}

#[test]
fn bad_amqp_messages_are_counted_and_nothing_else_is_lost() {
    let vhost = Vhost::create("bad");
    let url = vhost.url();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("tasks.jsonl");
    let agent = Agent::start(
        bin(),
        &config(&url, prom, tel, &log_path.display().to_string()),
    );
    await_consuming(&agent, &tel_addr);
    let huge = format!(
        r#"{{"type": "worker-heartbeat", "timestamp": 1.0, "hostname": "w", "pad": "{}"}}"#,
        "x".repeat(100_000)
    );
    let bad: Vec<(&str, &str, String)> = vec![
        ("application/json", "utf-8", "not json".into()),
        ("application/json", "utf-8", String::new()),
        (
            "application/json",
            "utf-8",
            r#"{"type": "task-started"}"#.into(),
        ),
        ("application/json", "utf-8", "[1, 2".into()),
        (
            "application/x-python-serialize",
            "binary",
            "\u{80}\u{4}}.".into(),
        ),
        ("application/x-msgpack", "binary", "x".into()),
        ("application/x-yaml", "utf-8", "type: task-sent".into()),
        ("text/plain", "utf-8", "{}".into()),
        ("application/json", "latin-1", "{}".into()),
        ("application/json", "utf-8", huge),
    ];
    let path = dir.path().join("bad.jsonl");
    let lines: Vec<String> = bad
        .iter()
        .map(|(ct, enc, body)| {
            serde_json::json!({
                "exchange": "celeryev", "routing_key": "task.multi",
                "content_type": ct, "content_encoding": enc,
                "headers": {"hostname": "bad@host"}, "body": body,
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let sent = amqp_tool(&[&url, "publish", &path.display().to_string()]);
    assert_eq!(sent["published"].as_u64(), Some(bad.len() as u64));
    // Then the real capture from a RabbitMQ worker: counted exactly as if nothing bad came first.
    let fixture = repo_root().join("tests/fixtures/celery-events-amqp.jsonl");
    let sent = amqp_tool(&[&url, "publish", &fixture.display().to_string()]);
    // 114 event messages; the 5 pidbox ones are left out (their exchange is not ours).
    assert_eq!(sent["published"].as_u64(), Some(114));

    let t = await_celery_telemetry(&agent, &tel_addr, |t| {
        metric_value(t, "celeriac_celery_events_received_total", &[]) == Some(149.0)
            && metric_value(t, "celeriac_celery_events_dropped_total", &[]) == Some(10.0)
    });
    for (reason, n) in [
        ("malformed_body", 3.0),
        ("missing_field", 1.0),
        ("pickle", 1.0),
        ("msgpack", 1.0),
        ("yaml", 1.0),
        ("unsupported_content_type", 1.0),
        ("unsupported_body_encoding", 1.0),
        ("too_large", 1.0),
    ] {
        assert_eq!(events_dropped(&t, reason), n, "{reason}: {t:?}");
    }
    // The fixture's 30 tasks: 20 + 3 successes, 5 failures, 2 revoked.
    let ok = wait_until(Duration::from_secs(10), || {
        scrape(&prom_addr).is_some_and(|s| {
            metric_value(&s, "celery_task_succeeded_total", &[]) == Some(23.0)
                && metric_value(&s, "celery_task_failed_total", &[("name", "bars.boom")])
                    == Some(5.0)
        })
    });
    assert!(ok, "{}", agent.output());
    assert!(agent
        .stderr()
        .contains("Dropping undecodable Celery input."));
}

/// `amqp_queues.management`: ready messages (passive declare), unacknowledged messages and the
/// head message's age from RabbitMQ's real management API (plugin on 15672, enabled by
/// `scripts/test`), for a queue holding 5 ready and 2 unacknowledged messages published with an AMQP
/// `timestamp` two minutes old. Wrong management credentials: counted, the AMQP gauges stay.
#[test]
fn management_api_reads_unacknowledged_and_head_age() {
    let vhost = Vhost::create("mgmt");
    let url = vhost.url();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 120;
    let mut holder = std::process::Command::new(python())
        .arg(python_dir().join("amqp_tool.py"))
        .args([&url, "hold", "work", "7", "2", &ts.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python amqp_tool.py hold");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("\"held\": 2"), "holder: {line}");

    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let receiver = |name: &str, password: &str, queues: &str| {
        format!(
            r#"
  amqp_queues/{name}:
    endpoint: {url}
    queues: {queues}
    interval: 300ms
    management: {{ endpoint: "http://127.0.0.1:15672", username: guest, password: "{password}" }}"#
        )
    };
    let cfg = format!(
        r#"
receivers:{}{}
exporters:
  prometheus:
    endpoint: 127.0.0.1:{prom}
service:
  telemetry:
    endpoint: 127.0.0.1:{tel}
  pipelines:
    metrics:
      receivers: [amqp_queues/good, amqp_queues/badauth]
      exporters: [prometheus]
"#,
        receiver("good", "guest", "[work, nosuch]"),
        receiver("badauth", "wrong", "[other]")
    );
    let agent = Agent::start(bin(), &cfg);
    let work = [("queue_name", "work")];
    let mut s = Vec::new();
    // The management statistics are refreshed every 5 s (collect_statistics_interval).
    let ok = wait_until(Duration::from_secs(30), || {
        s = scrape(&prom_addr).unwrap_or_default();
        metric_value(&s, "celery_queue_unacknowledged_messages", &work) == Some(2.0)
            && metric_value(&s, "celery_queue_length", &work) == Some(5.0)
            && metric_value(&s, "celery_queue_oldest_message_age_seconds", &work).is_some()
    });
    // RabbitMQ's own view agrees on the ready count (read while the 2 are still held).
    let ready = vhost.queues();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(ok, "{s:?}\n{}", agent.output());
    assert!(ready.iter().any(|q| q.0 == "work" && q.1 == 5), "{ready:?}");
    assert_eq!(
        metric_value(&s, "celery_active_consumer_count", &work),
        Some(1.0)
    );
    let age = metric_value(&s, "celery_queue_oldest_message_age_seconds", &work).unwrap();
    assert!((119.0..200.0).contains(&age), "age {age}");
    // A queue that does not exist: 0 unacknowledged, and no age (RabbitMQ has none to give).
    let nosuch = [("queue_name", "nosuch")];
    assert_eq!(
        metric_value(&s, "celery_queue_unacknowledged_messages", &nosuch),
        Some(0.0)
    );
    assert_eq!(
        metric_value(&s, "celery_queue_oldest_message_age_seconds", &nosuch),
        None
    );
    // Wrong password: the management API answers 401, counted; the AMQP gauges still come.
    let mut t = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        t = scrape(&tel_addr).unwrap_or_default();
        metric_value(
            &t,
            "celeriac_receiver_errors_total",
            &[
                ("component", "receiver/amqp_queues/badauth"),
                ("reason", "management"),
            ],
        )
        .is_some_and(|v| v >= 1.0)
    });
    let errors: Vec<_> = t.iter().filter(|s| s.0.contains("errors")).collect();
    assert!(ok, "{errors:?}");
    assert!(
        agent.stderr().contains("HTTP status 401"),
        "{}",
        agent.output()
    );
}
