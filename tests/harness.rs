//! Proves the end-to-end harness (tests/support) itself works: redis-server, a real Celery worker,
//! the Python client, and the std-only HTTP / Prometheus helpers.
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn redis_celery_worker_and_client() {
    let started = Instant::now();

    // redis-server: start, kill, restart on the same port.
    let mut redis = RedisServer::start();
    assert_eq!(redis.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(redis.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    let port = redis.port();
    redis.kill();
    assert!(!redis.is_running());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after kill"
    );
    redis.restart();
    assert_eq!(redis.port(), port);
    assert!(redis.is_running());
    assert_eq!(
        redis.cmd(&["GET", "k"]),
        Resp::Bulk(None),
        "no persistence expected"
    );
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));

    // A real Celery worker.
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(40));

    // chain a -> b -> c: the worker logs each task's success.
    let out = run_client(&redis.url(), &["chain"]);
    let ids: Vec<String> = out["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    for (id, name) in ids.iter().zip(["shop.a", "shop.b", "shop.c"]) {
        assert_eq!(out["names"][id], name, "{out}");
        let line = format!("Task {name}[{id}] succeeded");
        assert!(
            worker.wait_for_log(&line, Duration::from_secs(15)),
            "worker did not log {line:?}; log:\n{}",
            worker.log()
        );
    }
    assert!(
        worker.log().contains("'total=30'"),
        "c's result; log:\n{}",
        worker.log()
    );

    // A queue nobody consumes, with Celery's Redis priority sub-queues.
    let out = run_client(&redis.url(), &["fill_queue", "backlog", "10"]);
    assert_eq!(
        out["sent"],
        serde_json::json!({"plain": 10, "priority_5": 3, "priority_9": 2}),
        "{out}"
    );
    assert_eq!(out["keys"], out["expected_keys"], "{out}");
    assert_eq!(out["keys"]["backlog"], 10, "{out}");
    assert_eq!(out["keys"]["backlog\u{6}\u{16}3"], 3, "{out}");
    assert_eq!(out["keys"]["backlog\u{6}\u{16}9"], 2, "{out}");
    assert_eq!(redis.cmd(&["LLEN", "backlog"]).as_int(), Some(10));
    assert_eq!(
        redis.cmd(&["LLEN", "backlog\u{6}\u{16}3"]).as_int(),
        Some(3)
    );
    assert_eq!(
        redis.cmd(&["LLEN", "backlog\u{6}\u{16}9"]).as_int(),
        Some(2)
    );
    assert_eq!(out["ids"].as_array().unwrap().len(), 15);

    // The mixed workload: the client's own event subscription must see exactly what it documents.
    let out = run_client(&redis.url(), &["run_mix", "--timeout", "30"]);
    assert_eq!(out["observed"], out["expected"], "{out}");
    assert_eq!(out["match"], true, "{out}");
    assert_eq!(out["expected_totals"]["sent"], 13, "{out}");
    assert_eq!(out["names"].as_object().unwrap().len(), 11, "{out}");
    let mut finals: BTreeMap<String, u64> = BTreeMap::new();
    for state in out["final_states"].as_object().unwrap().values() {
        *finals
            .entry(state.as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        serde_json::to_value(&finals).unwrap(),
        out["expected_final_states"],
        "{out}"
    );

    // Warm shutdown.
    let status = worker.stop().expect("worker exit status");
    assert!(
        status.success(),
        "worker exited with {status}; log:\n{}",
        worker.log()
    );
    assert!(
        worker.log().contains("Warm shutdown"),
        "log:\n{}",
        worker.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "harness test took {:?}",
        started.elapsed()
    );
}

#[test]
fn agent_process_control() {
    // The Agent wrapper with a stand-in program (the celeriac binary is exercised elsewhere).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fake-agent");
    std::fs::write(
        &bin,
        "#!/bin/sh\ntrap 'echo got TERM; exit 3' TERM\necho \"args: $*\"\necho \"config: $(cat \"$3\")\"\necho oops >&2\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&bin)
        .status()
        .unwrap();

    let mut agent = Agent::start(Path::new(&bin), "receivers: {}\n");
    assert!(
        wait_until(Duration::from_secs(5), || agent.stdout_lines().len() >= 2),
        "{}",
        agent.output()
    );
    let lines = agent.stdout_lines();
    assert_eq!(
        lines[0],
        format!("args: run -c {}", agent.config_path().display())
    );
    assert_eq!(lines[1], "config: receivers: {}");
    assert!(agent.stderr().contains("oops"));
    assert!(agent.is_running());
    assert!(agent.wait_exit(Duration::from_millis(200)).is_none());
    agent.terminate();
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .expect("exited after SIGTERM");
    assert_eq!(status.code(), Some(3));
    assert!(agent.stdout().contains("got TERM"));
}

/// A one-shot HTTP server on a free port answering `response` to the first request.
fn one_shot_server(response: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        s.write_all(response).unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (addr, handle)
}

#[test]
fn http_get_plain_and_chunked() {
    let (addr, h) = one_shot_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    );
    assert_eq!(
        http_get(&addr, "/healthz"),
        Some((200, "hello".to_string()))
    );
    let req = h.join().unwrap();
    assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Connection: close\r\n"), "{req}");

    let (addr, _h) = one_shot_server(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n");
    assert_eq!(http_get(&addr, "/"), Some((503, "not ready".to_string())));

    assert_eq!(http_get(&format!("127.0.0.1:{}", free_port()), "/"), None);
}

#[test]
fn prometheus_text_parsing() {
    let text = r#"
# HELP celery_task_sent_total Sent tasks.
# TYPE celery_task_sent_total counter
celery_task_sent_total{name="shop.a",hostname="w1@host1",queue_name="celery"} 3
celery_task_sent_total{name="shop.b",hostname="w2@host1",queue_name="celery"} 2 1700000000000
celery_task_sent_total{name="we\"ird,{x}",queue_name="a\\b\nc"} 1
celery_worker_up 1
celery_task_runtime_bucket{name="shop.a",le="+Inf"} 4
odd_values{k="v"} NaN
neg{k="v",} -Inf
"#;
    let samples = parse_prometheus_text(text);
    assert_eq!(samples.len(), 7);
    assert_eq!(
        metric_value(&samples, "celery_task_sent_total", &[]),
        Some(6.0)
    );
    assert_eq!(
        metric_value(&samples, "celery_task_sent_total", &[("name", "shop.a")]),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &samples,
            "celery_task_sent_total",
            &[("queue_name", "celery")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metric_value(&samples, "celery_task_sent_total", &[("name", "shop.c")]),
        None
    );
    assert_eq!(
        metric_value(
            &samples,
            "celery_task_sent_total",
            &[("name", "we\"ird,{x}")]
        ),
        Some(1.0)
    );
    assert_eq!(metric_value(&samples, "celery_worker_up", &[]), Some(1.0));
    assert_eq!(
        metric_value(&samples, "celery_task_runtime_bucket", &[("le", "+Inf")]),
        Some(4.0)
    );
    assert!(metric_value(&samples, "odd_values", &[]).unwrap().is_nan());
    assert_eq!(
        metric_value(&samples, "neg", &[("k", "v")]),
        Some(f64::NEG_INFINITY)
    );
    let weird = &samples[2];
    let want: BTreeMap<String, String> = [("name", "we\"ird,{x}"), ("queue_name", "a\\b\nc")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(weird.1, want);
}
