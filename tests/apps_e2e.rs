//! The application's own telemetry on the agent (issue 20), end to end with real parts: a real
//! Celery worker (tests/python/evalapp.py) whose task logs JSON lines with structlog to a file
//! and counts with prometheus_client on a port. celeriac tails the file (filelog, json_parser)
//! across a rename rotation and an agent restart, and celery_correlate puts every line of a task
//! whose events it saw on the task's trace: the same trace id and run span id as the lifecycle
//! spans it emits. Lines of tasks that ran while the agent was down arrive exactly once too,
//! unjoined and counted.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn send_eval(redis: &RedisServer, eval_id: &str, steps: u32) -> String {
    let args = format!("[\"{eval_id}\", {steps}]");
    let out = run_client(
        &redis.url(),
        &["send", "evaluation.run", &args, "--wait", "30"],
    );
    assert_eq!(
        out["final_states"].as_object().map(|m| m.len()),
        Some(1),
        "{out}"
    );
    out["ids"][0].as_str().expect("task id").to_string()
}

/// JSON lines of the `logs` exporter's file.
fn out_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The application's lines (they carry eval_id), keyed by their original text.
fn app_lines(path: &Path) -> Vec<serde_json::Value> {
    out_lines(path)
        .into_iter()
        .filter(|l| l.get("eval_id").is_some())
        .collect()
}

#[test]
fn structlog_lines_follow_rotation_and_restart_and_join_their_task_trace() {
    let redis = RedisServer::start();
    let dir = tempfile::Builder::new()
        .prefix("celeriac-apps-")
        .tempdir()
        .unwrap();
    let log = dir.path().join("app.log");
    let out = dir.path().join("out.jsonl");
    let state = dir.path().join("state");
    let metrics_port = free_port();
    let cfg = |tel: u16| {
        format!(
            r#"
receivers:
  celery_redis: {{ endpoint: "{redis}" }}
  filelog:
    include: ["{dir}/app.log*"]
    start_at: beginning
    poll_interval: 100ms
    storage_dir: "{state}"
    operators:
      - type: json_parser
        timestamp: {{ parse_from: attributes.timestamp, layout: '%Y-%m-%dT%H:%M:%S.%fZ' }}
        severity: {{ parse_from: attributes.level }}
connectors:
  celery_correlate: {{ join_window: 10s }}
exporters:
  logs: {{ path: "{out}" }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    logs/app: {{ receivers: [filelog], exporters: [celery_correlate] }}
    logs: {{ receivers: [celery_correlate], exporters: [logs] }}
    traces: {{ receivers: [celery_correlate], exporters: [logs] }}
"#,
            redis = redis.url(),
            dir = dir.path().display(),
            state = state.display(),
            out = out.display(),
        )
    };
    let start_agent = || {
        let tel = free_port();
        let agent = Agent::start(bin(), &cfg(tel));
        assert!(
            wait_until(Duration::from_secs(20), || scrape(&format!(
                "127.0.0.1:{tel}"
            ))
            .and_then(|s| metric_value(&s, "celeriac_celery_redis_connected", &[]))
                == Some(1.0)),
            "{}",
            agent.output()
        );
        (agent, tel)
    };
    let (mut agent, _) = start_agent();
    let mut worker = CeleryWorker::start(
        &redis.url(),
        WorkerOpts {
            concurrency: 1,
            ..WorkerOpts::default()
        }
        .env("CELERIAC_EVALAPP_LOG", &log.to_string_lossy())
        .env("CELERIAC_EVALAPP_PORT", &metrics_port.to_string()),
    );
    worker.assert_ready(Duration::from_secs(60));

    // Phase A, then a rename rotation (the app reopens app.log, as WatchedFileHandler does),
    // then phase B: all seen live by the agent.
    let steps = 3u32;
    let per_task = steps as usize + 2;
    let mut live = Vec::new();
    for i in 0..3 {
        live.push(send_eval(&redis, &format!("a{i}"), steps));
    }
    assert!(
        wait_until(Duration::from_secs(30), || app_lines(&out).len()
            >= 3 * per_task),
        "phase A lines: {}\n{}",
        app_lines(&out).len(),
        agent.output()
    );
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    for i in 0..3 {
        live.push(send_eval(&redis, &format!("b{i}"), steps));
    }
    assert!(
        wait_until(Duration::from_secs(30), || app_lines(&out).len()
            >= 6 * per_task),
        "phase B lines: {}\n{}",
        app_lines(&out).len(),
        agent.output()
    );

    // Agent down: phase C runs meanwhile (its events are missed, its lines are not).
    agent.terminate();
    assert!(
        agent.wait_exit(Duration::from_secs(20)).is_some(),
        "agent did not stop"
    );
    let mut offline = Vec::new();
    for i in 0..2 {
        offline.push(send_eval(&redis, &format!("c{i}"), steps));
    }
    let (agent, tel) = start_agent();
    // Phase D with the restarted agent.
    for i in 0..2 {
        live.push(send_eval(&redis, &format!("d{i}"), steps));
    }
    let total = (live.len() + offline.len()) * per_task;
    assert!(
        wait_until(Duration::from_secs(40), || app_lines(&out).len() >= total),
        "lines: {} of {total}\n{}",
        app_lines(&out).len(),
        agent.output()
    );
    // Let anything doubled show up.
    std::thread::sleep(Duration::from_millis(1500));
    let lines = app_lines(&out);

    // No line lost, none doubled: the file content, line for line.
    let mut written: Vec<String> = Vec::new();
    for f in ["app.log.1", "app.log"] {
        written.extend(
            std::fs::read_to_string(dir.path().join(f))
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    assert_eq!(written.len(), total, "the app wrote what it should");
    let mut got: Vec<String> = lines
        .iter()
        .map(|l| l["msg"].as_str().unwrap_or_default().to_string())
        .collect();
    got.sort();
    written.sort();
    assert_eq!(got, written, "every written line exactly once");

    // Trace ids: each live task's lines carry the trace and run span of its lifecycle spans.
    let spans: Vec<serde_json::Value> = out_lines(&out)
        .into_iter()
        .filter(|l| l["event"] == "span")
        .collect();
    let mut by_task: BTreeMap<&str, Vec<&serde_json::Value>> = BTreeMap::new();
    for l in &lines {
        by_task
            .entry(l["task_id"].as_str().expect("task_id attribute"))
            .or_default()
            .push(l);
    }
    for id in &live {
        let run = spans
            .iter()
            .find(|s| s["celery.task_id"] == id.as_str() && s["msg"] == "run")
            .unwrap_or_else(|| panic!("no run span for {id}"));
        let trace = run["trace_id"].as_str().unwrap();
        assert_eq!(
            trace,
            id.replace('-', ""),
            "a root task's trace id is its uuid"
        );
        let mine = &by_task[id.as_str()];
        assert_eq!(mine.len(), per_task);
        for l in mine {
            assert_eq!(l["trace_id"].as_str(), Some(trace), "{l}");
            assert_eq!(l["span_id"], run["span_id"], "{l}");
            assert_eq!(l["celery.task.name"], "evaluation.run", "{l}");
            assert!(l["level"].is_string(), "{l}");
        }
    }
    for id in &offline {
        for l in &by_task[id.as_str()] {
            assert!(l.get("trace_id").is_none(), "missed task joined? {l}");
        }
    }
    let s = scrape(&format!("127.0.0.1:{tel}")).unwrap();
    let label = [("component", "connector/celery_correlate")];
    assert_eq!(
        metric_value(&s, "celeriac_correlate_logs_unjoined_total", &label),
        Some((offline.len() * per_task) as f64),
        "{}",
        agent.output()
    );
    let joined_after_restart = metric_value(&s, "celeriac_correlate_logs_joined_total", &label);
    assert_eq!(joined_after_restart, Some((2 * per_task) as f64));
    worker.stop();
}
