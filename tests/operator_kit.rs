//! The operator kit against a real Celery workload: every metric name that the Grafana
//! dashboard (deploy/grafana/celeriac.json) and the alert rules (deploy/prometheus/alerts.yaml)
//! query is on celeriac's scrape endpoints after real work. The names are parsed out of the
//! PromQL, so a panel or rule that names a metric celeriac does not expose fails here.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use support::*;

/// PromQL words that are not metric names (the label-list keywords, [`LABEL_LISTS`], are skipped
/// before this list is asked).
const NOT_METRICS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "atan2",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects (Grafana `$variables` allowed). Label matchers
/// `{…}`, ranges `[…]`, strings, numbers, function calls and label lists are skipped.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let is_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let is_cont = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    // Index just past the bracket that closes the one at `i`.
    let close = |mut i: usize, open: u8, shut: u8| {
        let mut depth = 0;
        while i < b.len() {
            if b[i] == b'"' || b[i] == b'\'' {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            } else if b[i] == open {
                depth += 1;
            } else if b[i] == shut {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        b.len()
    };
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            i = close(i, b'{', b'}');
        } else if c == b'[' {
            i = close(i, b'[', b']');
        } else if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' || c.is_ascii_digit() || c == b'.' {
            // A Grafana variable, a number or a duration: skip the whole word.
            i += 1;
            while i < b.len() && (is_cont(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < b.len() && is_cont(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = j < b.len() && b[j] == b'(';
            if LABEL_LISTS.contains(&word) {
                if call {
                    i = close(j, b'(', b')');
                }
            } else if !call && !NOT_METRICS.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn promql_names_are_parsed_out_of_expressions() {
    let got = promql_metric_names(
        r#"sum by (job, queue_name) (rate(celery_task_failed_total{name=~"$name",x="a{b}"}[$__rate_interval] offset 5m))
           / on (job) group_left (le) (histogram_quantile(0.95, sum by (le) (rate(celery_task_runtime_bucket[10m]))) > 1e3)
           unless on(job) max(celery_worker_up) > bool 0 or absent(celeriac:recorded_rule)"#,
    );
    let want: BTreeSet<String> = [
        "celery_task_failed_total",
        "celery_task_runtime_bucket",
        "celery_worker_up",
        "celeriac:recorded_rule",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want);
}

/// Every metric name used by the alert rules and the dashboard (panels and template variables).
fn kit_metric_names() -> BTreeSet<String> {
    let root = repo_root();
    let mut names = BTreeSet::new();

    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let mut exprs = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            names.extend(promql_metric_names(rule["expr"].as_str().unwrap()));
            exprs += 1;
        }
    }
    assert!(exprs >= 8, "{exprs} rules");

    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/celeriac.json")).unwrap(),
    )
    .unwrap();
    let mut targets = 0;
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            names.extend(promql_metric_names(t["expr"].as_str().unwrap()));
            targets += 1;
        }
    }
    assert!(targets >= 30, "{targets} dashboard queries");
    for var in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            // label_values(metric, label)
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split_once(','))
                .unwrap_or_else(|| panic!("unexpected variable query {q}"));
            names.extend(promql_metric_names(inner.0));
        }
    }
    names
}

fn config(redis_url: &str, prom: u16, tel: u16, log_path: &str) -> String {
    format!(
        r#"
receivers:
  celery_redis: {{ endpoint: "{redis_url}" }}
  redis_queues: {{ endpoint: "{redis_url}", queues: [celery], interval: 300ms }}
  internal_metrics: {{ interval: 200ms }}
connectors:
  celery_correlate: {{ metrics_interval: 200ms }}
exporters:
  prometheus: {{ endpoint: "127.0.0.1:{prom}" }}
  logs: {{ path: "{log_path}" }}
service:
  telemetry: {{ endpoint: "127.0.0.1:{tel}" }}
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    metrics: {{ receivers: [celery_correlate, redis_queues], exporters: [prometheus] }}
    logs: {{ receivers: [celery_correlate], exporters: [logs] }}
    metrics/self: {{ receivers: [internal_metrics], exporters: [prometheus] }}
"#
    )
}

#[test]
fn every_metric_of_the_dashboard_and_the_alerts_is_exposed_after_a_real_workload() {
    let wanted = kit_metric_names();
    for must in [
        "celery_queue_length",
        "celery_task_runtime_bucket",
        "celery_task_queue_wait_time_bucket",
        "celeriac_exporter_queue_size",
        "celeriac_receiver_refused_items_total",
    ] {
        assert!(wanted.contains(must), "{must} not parsed out: {wanted:?}");
    }

    let redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("tasks.jsonl");
    let agent = Agent::start_ready(
        &config(&redis.url(), prom, tel, &log.display().to_string()),
        Duration::from_secs(15),
        "agent up",
        || redis_connected(&tel_addr),
    );

    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let mix = run_client(&redis.url(), &["run_mix", "--timeout", "60"]);
    assert_eq!(mix["match"], true, "{mix}");
    // A publisher with a broken serializer: counted by reason, like any undecodable message.
    redis.cmd(&["PUBLISH", "/0.celeryev/task.multi", "not json"]);

    let exposed = || -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        for addr in [&prom_addr, &tel_addr] {
            for (name, _, _) in scrape(addr).unwrap_or_default() {
                s.insert(name);
            }
        }
        s
    };
    let mut missing = BTreeSet::new();
    let all_there = wait_until(Duration::from_secs(20), || {
        let have = exposed();
        missing = wanted.difference(&have).cloned().collect();
        missing.is_empty()
    });
    assert!(
        all_there,
        "used by the dashboard or the alert rules but not exposed: {missing:?}\n{}",
        agent.output()
    );
    // And the task counts are there, not just the names.
    let s = scrape(&prom_addr).unwrap();
    // The agent's own metrics also went through a pipeline (internal_metrics → prometheus).
    let own = |s: &[Sample]| {
        metric_value(
            s,
            "celeriac_celery_events_received_total",
            &[("component", "receiver/celery_redis")],
        )
    };
    assert!(
        own(&s).unwrap_or(0.0) > 0.0,
        "internal_metrics through the prometheus exporter: {:?}",
        own(&s)
    );
    assert_eq!(
        metric_value(
            &s,
            "celery_task_succeeded_total",
            &[("name", "shop.charge_card")]
        ),
        Some(3.0)
    );
}

/// `systemd-analyze verify` accepts deploy/systemd/celeriac.service with no warning (it exits 0
/// on unknown keys and bad values, so its output must be empty too). The unit names
/// /usr/local/bin/celeriac, which verify requires to exist: the copy checked here names the
/// binary under test instead.
#[test]
fn systemd_accepts_the_unit() {
    let have = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        have,
        "systemd-analyze is not installed (scripts/test installs Debian's systemd package)"
    );
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/celeriac.service"))
        .unwrap()
        .replace("/usr/local/bin/celeriac", &bin().display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("celeriac.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.trim().is_empty(),
        "systemd-analyze complained:\n{text}"
    );
}

/// scripts/demo on its own ports: the shop's tasks show up on celeriac's scrape endpoint within
/// 30 s, and SIGINT to its process group (Ctrl-C) stops every process it started.
#[test]
fn demo_comes_up_and_stops_on_ctrl_c() {
    use std::os::unix::process::CommandExt;
    let (redis_port, metrics, tel, ui) = (free_port(), free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let venv_python = python();
    let venv = venv_python.parent().and_then(Path::parent).unwrap();
    let mut child = std::process::Command::new(repo_root().join("scripts/demo"))
        .env("CELERIAC_BIN", bin())
        .env("CELERIAC_DEMO_REDIS_PORT", redis_port.to_string())
        .env("CELERIAC_DEMO_METRICS_PORT", metrics.to_string())
        .env("CELERIAC_DEMO_TELEMETRY_PORT", tel.to_string())
        .env("CELERIAC_DEMO_UI_PORT", ui.to_string())
        .env("CELERIAC_DEMO_RATE", "10")
        .env("CELERIAC_DEMO_DIR", dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("demo.out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let log = || {
        let mut s = String::new();
        for f in [
            "demo.err",
            "celeriac.log",
            "worker-orders.log",
            "producer.log",
        ] {
            s += &format!(
                "--- {f}\n{}\n",
                std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()
            );
        }
        s
    };
    let group_signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args(["-s", sig, "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status();
    };
    assert!(venv.join("bin/celery").exists(), "{venv:?}");

    let addr = format!("127.0.0.1:{metrics}");
    let succeeded = || {
        scrape(&addr).map_or(0.0, |s| {
            s.iter()
                .filter(|(n, _, _)| n == "celery_task_succeeded_total")
                .map(|(_, _, v)| v)
                .sum()
        })
    };
    let up = wait_until(Duration::from_secs(30), || succeeded() > 0.0);
    if !up {
        group_signal("KILL");
        let _ = child.wait();
        panic!("no succeeded task on {addr} within 30 s\n{}", log());
    }
    // Both workers are seen (the demo labels workers by node name).
    assert!(
        wait_until(Duration::from_secs(15), || {
            scrape(&addr)
                .and_then(|s| metric_value(&s, "celery_worker_up", &[]))
                .unwrap_or(0.0)
                >= 2.0
        }),
        "{}",
        log()
    );

    // The demo also serves the dashboard and Flower's API: the same tasks are listed there.
    let banner = std::fs::read_to_string(dir.path().join("demo.err")).unwrap_or_default();
    assert!(banner.contains("Flower-compatible UI"), "{}", log());
    let ui_addr = format!("127.0.0.1:{ui}");
    let listed = wait_until(Duration::from_secs(30), || {
        http_get(&ui_addr, "/api/tasks")
            .filter(|(status, _)| *status == 200)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v.as_object().map(|o| !o.is_empty()))
            .unwrap_or(false)
    });
    assert!(listed, "no task on http://{ui_addr}/api/tasks\n{}", log());

    group_signal("INT");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every process it started (workers' pool children included) is gone.
    let group_alive = || {
        std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let emptied = status.is_some() && wait_until(Duration::from_secs(10), || !group_alive());
    // Whatever happened, leave nothing behind.
    group_signal("KILL");
    assert!(
        status.is_some(),
        "scripts/demo still running 20 s after SIGINT\n{}",
        log()
    );
    assert!(
        emptied,
        "processes of the demo left running after it exited\n{}",
        log()
    );
    for port in [redis_port, metrics, tel] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after the demo stopped\n{}",
            log()
        );
    }
}
