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

/// Does the output hold the `run` span of every task in `ids`?
fn have_run_spans(path: &Path, ids: &[String]) -> bool {
    let lines = out_lines(path);
    ids.iter().all(|id| {
        lines.iter().any(|s| {
            s["event"] == "span" && s["msg"] == "run" && s["celery.task_id"] == id.as_str()
        })
    })
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
        let agent = Agent::start_ready(
            &cfg(tel),
            Duration::from_secs(20),
            "celery_redis connected",
            || redis_connected(&format!("127.0.0.1:{tel}")),
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

    // Before stopping: the agent has seen every task end (its run span is out), so nothing
    // that phase A and B need is still in flight from the broker.
    assert!(
        wait_until(Duration::from_secs(30), || have_run_spans(&out, &live)),
        "run spans of phase A/B\n{}",
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
        wait_until(Duration::from_secs(40), || app_lines(&out).len() >= total
            && have_run_spans(&out, &live)),
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

/// A tiny HTTP server answering every request with `respond` (one thread per connection).
fn serve(respond: fn(&mut std::net::TcpStream)) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut c, &mut buf);
                respond(&mut c);
            });
        }
    });
    port
}

fn garbage(c: &mut std::net::TcpStream) {
    let body = "<html><body>metrics{{{ are here</body></html>\n";
    let _ = std::io::Write::write_all(
        c,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn slow(c: &mut std::net::TcpStream) {
    std::thread::sleep(Duration::from_secs(5));
    let _ = std::io::Write::write_all(
        c,
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n",
    );
}

/// 10 MB of valid comment lines, streamed without a Content-Length.
fn huge(c: &mut std::net::TcpStream) {
    use std::io::Write;
    let _ =
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n");
    let line = [b'#'; 1000];
    for _ in 0..10_000 {
        if c.write_all(&line).and_then(|_| c.write_all(b"\n")).is_err() {
            return;
        }
    }
}

/// `k=v`, with bucket bounds compared as numbers (`1.0` on the page, `1` after OTLP).
fn label(k: &str, v: &str) -> String {
    match (k, v.parse::<f64>()) {
        ("le" | "quantile", Ok(x)) => format!("{k}={x}"),
        _ => format!("{k}={v}"),
    }
}

/// The evaluation app's own page, as `{name{labels}: value}` for the evaluation_* series.
fn app_page(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = http_get(&format!("127.0.0.1:{port}"), "/metrics").expect("app page");
    assert_eq!(status, 200);
    parse_prometheus_text(&body)
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("evaluation_") && !n.ends_with("_created"))
        .map(|(n, l, v)| {
            let labels: Vec<String> = l.iter().map(|(k, v)| label(k, v)).collect();
            (format!("{n}{{{}}}", labels.join(",")), v)
        })
        .collect()
}

/// The same series read back from Prometheus (job/instance/env left out).
fn prom_series(prom: &PrometheusServer) -> BTreeMap<String, f64> {
    prom.query(r#"{__name__=~"evaluation_.*",job="evaluations"}"#)
        .unwrap_or_default()
        .into_iter()
        .filter(|(l, _)| !l["__name__"].ends_with("_created"))
        .map(|(l, v)| {
            let name = l["__name__"].clone();
            let labels: Vec<String> = l
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance" | "env"))
                .map(|(k, v)| label(k, v))
                .collect();
            (format!("{name}{{{}}}", labels.join(",")), v)
        })
        .collect()
}

#[test]
fn prometheus_client_metrics_reach_real_prometheus_and_bad_targets_are_counted() {
    let redis = RedisServer::start();
    let prom = PrometheusServer::start();
    let dir = tempfile::Builder::new()
        .prefix("celeriac-apps-prom-")
        .tempdir()
        .unwrap();
    let app_port = free_port();
    let (g, s, h) = (serve(garbage), serve(slow), serve(huge));
    let tel = free_port();
    // The same app once more through file_sd, to see targets come and go with the file.
    let sd = dir.path().join("targets.json");
    std::fs::write(
        &sd,
        format!(r#"[{{"targets": ["127.0.0.1:{app_port}"], "labels": {{"via": "file"}}}}]"#),
    )
    .unwrap();
    let cfg = format!(
        r#"
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: evaluations_sd
          scrape_interval: 1s
          file_sd_configs: [{{ files: ["{sd_glob}"] }}]
        - job_name: evaluations
          scrape_interval: 1s
          static_configs: [{{ targets: ["127.0.0.1:{app_port}"], labels: {{ env: test }} }}]
          metric_relabel_configs:
            - {{ source_labels: [__name__], regex: 'python_.*|process_.*', action: drop }}
        - job_name: garbage
          scrape_interval: 1s
          static_configs: [{{ targets: ["127.0.0.1:{g}"] }}]
        - job_name: slow
          scrape_interval: 1s
          scrape_timeout: 500ms
          static_configs: [{{ targets: ["127.0.0.1:{s}"] }}]
        - job_name: huge
          scrape_interval: 1s
          static_configs: [{{ targets: ["127.0.0.1:{h}"] }}]
exporters:
  prometheus_remote_write: {{ endpoint: "{write}" }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    metrics: {{ receivers: [prometheus], exporters: [prometheus_remote_write] }}
"#,
        write = prom.write_url(),
        sd_glob = dir.path().join("*.json").display(),
    );
    let agent = Agent::start(bin(), &cfg);
    let mut worker = CeleryWorker::start(
        &redis.url(),
        WorkerOpts {
            concurrency: 1,
            ..WorkerOpts::default()
        }
        .env(
            "CELERIAC_EVALAPP_LOG",
            &dir.path().join("app.log").to_string_lossy(),
        )
        .env("CELERIAC_EVALAPP_PORT", &app_port.to_string()),
    );
    worker.assert_ready(Duration::from_secs(60));
    for i in 0..3 {
        send_eval(&redis, &format!("p{i}"), 2);
    }
    let out = run_client(
        &redis.url(),
        &[
            "send",
            "evaluation.run",
            r#"["p-err", 4, "error"]"#,
            "--wait",
            "30",
        ],
    );
    assert!(out["ids"][0].is_string(), "{out}");

    // Prometheus converges on exactly the app's page (counters, histogram buckets, gauge).
    let want = app_page(app_port);
    assert_eq!(want["evaluation_tasks_total{status=ok}"], 3.0, "{want:#?}");
    assert_eq!(want["evaluation_tasks_total{status=error}"], 1.0);
    assert_eq!(want["evaluation_queue_depth{}"], 4.0);
    let mut got = BTreeMap::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            got = prom_series(&prom);
            got == want
        }),
        "app page != Prometheus\napp: {want:#?}\nprometheus: {got:#?}\n{}",
        agent.output()
    );
    let up = |job: &str| {
        prom.query(&format!("up{{job=\"{job}\"}}"))
            .and_then(|r| r.first().map(|(_, v)| *v))
    };
    assert_eq!(up("evaluations"), Some(1.0));
    let samples = prom
        .query(r#"scrape_samples_scraped{job="evaluations"}"#)
        .unwrap_or_default();
    assert!(
        samples.first().is_some_and(|(_, v)| *v > 10.0),
        "{samples:?}"
    );

    // Bad targets: each failure counted under its reason, up 0, the good job unaffected.
    let failures = |job: &str, reason: &str| {
        scrape(&format!("127.0.0.1:{tel}")).and_then(|s| {
            metric_value(
                &s,
                "celeriac_prometheus_scrape_failures_total",
                &[("job", job), ("reason", reason)],
            )
        })
    };
    assert!(
        wait_until(Duration::from_secs(15), || {
            failures("garbage", "parse").is_some_and(|v| v >= 1.0)
                && failures("slow", "timeout").is_some_and(|v| v >= 1.0)
                && failures("huge", "too_large").is_some_and(|v| v >= 1.0)
        }),
        "{}",
        agent.output()
    );
    for job in ["garbage", "slow", "huge"] {
        assert!(
            wait_until(Duration::from_secs(10), || up(job) == Some(0.0)),
            "up{{job={job}}}: {:?}",
            up(job)
        );
    }
    let log = agent.output();
    assert!(log.contains("Scrape failed"), "{log}");

    // file_sd: the target found through the file, then removed from it: its series go stale.
    let sd_depth = || {
        prom.query(r#"evaluation_queue_depth{job="evaluations_sd",via="file"}"#)
            .unwrap_or_default()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(15), || sd_depth() == 1),
        "file_sd target not scraped\n{}",
        agent.output()
    );
    std::fs::write(&sd, "[]").unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || sd_depth() == 0
            && up("evaluations_sd").is_none()),
        "file_sd target still there after its removal\n{}",
        agent.output()
    );
    assert_eq!(up("evaluations"), Some(1.0), "the static job is untouched");

    // The app goes away: its series get staleness markers and vanish from instant queries.
    worker.stop();
    assert!(
        wait_until(Duration::from_secs(20), || prom_series(&prom).is_empty()
            && up("evaluations") == Some(0.0)),
        "still: {:#?}\n{}",
        prom_series(&prom),
        agent.output()
    );
}

#[test]
fn filelog_bad_input_is_counted_and_the_rest_flows() {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("celeriac-apps-bad-")
        .tempdir()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let tel = free_port();
    let cfg = format!(
        r#"
receivers:
  filelog:
    include: ["{dir}/*.log"]
    start_at: beginning
    poll_interval: 100ms
    operators:
      - type: json_parser
exporters:
  logs: {{ path: "{out}" }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    logs: {{ receivers: [filelog], exporters: [logs] }}
"#,
        dir = dir.path().display(),
        out = out.display(),
    );
    let a = dir.path().join("a.log");
    let mut f = std::fs::File::create(&a).unwrap();
    f.write_all(b"{\"n\": \"ok-1\"}\n").unwrap();
    f.write_all(b"\xff\xfe\x00\x01binary junk\x80\n").unwrap();
    let mut long = vec![b'x'; 1_500_000];
    long.push(b'\n');
    f.write_all(&long).unwrap();
    f.write_all(b"not json at all\n{\"n\": \"ok-2\"}\n")
        .unwrap();
    drop(f);
    let agent = Agent::start(bin(), &cfg);
    let n_values = || -> Vec<String> {
        out_lines(&out)
            .iter()
            .filter_map(|l| l["n"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || n_values().len() >= 2),
        "{:?}\n{}",
        n_values(),
        agent.output()
    );
    // A file deleted while it is being read: what was written before the delete still arrives.
    let b = dir.path().join("b.log");
    std::fs::write(&b, "{\"n\": \"b-1\"}\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || n_values()
            .contains(&"b-1".into())),
        "{}",
        agent.output()
    );
    let mut fb = std::fs::OpenOptions::new().append(true).open(&b).unwrap();
    fb.write_all(b"{\"n\": \"b-2\"}\n{\"n\": \"b-3\"}\n")
        .unwrap();
    std::fs::remove_file(&b).unwrap();
    drop(fb);
    assert!(
        wait_until(Duration::from_secs(10), || n_values().len() >= 5),
        "{:?}\n{}",
        n_values(),
        agent.output()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut got = n_values();
    got.sort();
    assert_eq!(got, ["b-1", "b-2", "b-3", "ok-1", "ok-2"]);
    // Every line is in the output, the bad ones as their (lossy) text.
    let all = out_lines(&out);
    assert_eq!(
        all.len(),
        5 + 1 + 2 + 1,
        "5 JSON, 1 junk, 2 pieces of the long line, 1 text"
    );
    assert!(all.iter().any(|l| l["msg"] == "not json at all"));
    let junk = all
        .iter()
        .find(|l| l["msg"].as_str().is_some_and(|m| m.contains("binary junk")))
        .expect("the junk line, kept");
    assert!(junk["msg"].as_str().unwrap().contains('\u{fffd}'));
    let pieces: Vec<usize> = all
        .iter()
        .filter_map(|l| l["msg"].as_str())
        .filter(|m| m.starts_with("xxx"))
        .map(str::len)
        .collect();
    assert_eq!(pieces, [1 << 20, 1_500_000 - (1 << 20)]);
    let s = scrape(&format!("127.0.0.1:{tel}")).unwrap();
    let c = |name: &str, extra: &[(&str, &str)]| {
        let mut l = vec![("component", "receiver/filelog")];
        l.extend_from_slice(extra);
        metric_value(&s, name, &l)
    };
    assert_eq!(c("celeriac_filelog_invalid_encoding_total", &[]), Some(1.0));
    assert_eq!(c("celeriac_filelog_lines_truncated_total", &[]), Some(1.0));
    assert_eq!(
        c(
            "celeriac_filelog_operator_errors_total",
            &[("operator", "json_parser")]
        ),
        Some(4.0),
        "junk, two pieces, the text line"
    );
    assert_eq!(c("celeriac_filelog_lines_total", &[]), Some(9.0));
    let log = agent.output();
    assert!(log.contains("Operators could not process"), "{log}");
    assert!(log.contains("max_log_size"), "{log}");
}
