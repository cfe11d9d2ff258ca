//! Flower's and celery-exporter's dashboards and alert rules, unchanged, against celeriac, through
//! a real Prometheus: job `flower` scrapes the `celery_ui` extension's `/metrics` (with its bearer
//! token, as Flower's port is scraped), job `celery` the `prometheus` exporter (celery-exporter's
//! names). After a real workload (a real worker, tasks that succeed, fail, retry and are
//! revoked, a second worker that goes offline) every panel query, template variable and alert
//! expression of `../shared/corpora/flower-and-mixin/` must return data.
//!
//! Grafana's variables are replaced by match-all (`$__range` by 1h, `$__rate_interval` by 1m);
//! an alert's threshold and a panel's trailing display filter (`> 0`, `or vector(0)`) are
//! taken off, so the query must find the series themselves, not a constant.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn corpus() -> PathBuf {
    let dir = repo_root().join("../shared/corpora/flower-and-mixin");
    assert!(
        dir.is_dir(),
        "the corpus {} is missing (CI checks it out beside the repository)",
        dir.display()
    );
    dir
}

const TOKEN: &str = "scrape-token-1";

fn config(redis_url: &str, ui: u16, prom: u16, tel: u16) -> String {
    format!(
        r#"
receivers:
  celery_redis: {{ endpoint: "{redis_url}" }}
  redis_queues: {{ endpoint: "{redis_url}", queues: [celery], interval: 300ms }}
connectors:
  celery_correlate: {{ metrics_interval: 200ms }}
exporters:
  prometheus: {{ endpoint: "127.0.0.1:{prom}" }}
extensions:
  celery_ui:
    endpoint: 127.0.0.1:{ui}
    auth: {{ bearer_token: {TOKEN} }}
    inspect: {{ interval: 2s, timeout: 1s }}
service:
  extensions: [celery_ui]
  telemetry: {{ endpoint: "127.0.0.1:{tel}" }}
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    metrics: {{ receivers: [celery_correlate, redis_queues], exporters: [prometheus] }}
"#
    )
}

/// Every `expr` of a Grafana dashboard, and its template variables' `label_values` queries.
fn dashboard_queries(d: &Value, exprs: &mut Vec<String>, vars: &mut Vec<String>) {
    match d {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => exprs.push(e.clone()),
                    ("templating", t) => {
                        for var in t["list"].as_array().into_iter().flatten() {
                            let q = match &var["query"] {
                                Value::String(s) => s.clone(),
                                Value::Object(o) => o
                                    .get("query")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                                _ => String::new(),
                            };
                            if q.starts_with("label_values(") {
                                vars.push(q);
                            }
                        }
                    }
                    _ => dashboard_queries(v, exprs, vars),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, exprs, vars)),
        _ => {}
    }
}

/// Grafana's variables as match-all; the trailing display filter or alert threshold taken off.
fn runnable(expr: &str) -> String {
    let mut e = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    for var in ["$__range", "$__rate_interval", "$__interval"] {
        e = e.replace(var, if var == "$__range" { "1h" } else { "1m" });
    }
    // `label="$x"`, `label=~"$x"` → `label=~".*"`.
    let mut out = String::new();
    let mut rest = e.as_str();
    while let Some(i) = rest.find("\"$") {
        let (head, tail) = rest.split_at(i);
        let head = head
            .strip_suffix("=~")
            .or_else(|| head.strip_suffix('='))
            .unwrap_or(head);
        out.push_str(head);
        out.push_str("=~\".*\"");
        let end = tail[1..].find('"').map_or(tail.len(), |j| j + 2);
        rest = &tail[end..];
    }
    out.push_str(rest);
    let mut e = out.trim().to_string();
    if let Some(x) = e.strip_suffix("or vector(0)") {
        e = x.trim().to_string();
    }
    // A top-level trailing comparison with a number: `... > 0`, `... == 0`, `... * 100 > 5`.
    let b = e.as_bytes();
    let mut depth = 0i32;
    let mut cut = None;
    for (i, c) in b.iter().enumerate() {
        match c {
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            b'>' | b'<' | b'=' if depth == 0 => {
                let tail = e[i..].trim_start_matches(['>', '<', '=', '!']).trim();
                if tail.parse::<f64>().is_ok() {
                    cut = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    if let Some(i) = cut {
        e = e[..i].trim_end_matches('!').trim().to_string();
    }
    e
}

/// `label_values(sel, label)` → a query that has a series per value of `label`.
fn label_values_query(q: &str) -> Option<(String, String)> {
    let inner = q.strip_prefix("label_values(")?.strip_suffix(')')?;
    let (sel, label) = inner.rsplit_once(',')?;
    let label = label.trim().to_string();
    Some((runnable(&format!("count by ({label}) ({sel})")), label))
}

#[test]
fn flowers_and_the_mixins_dashboards_and_alerts_have_data() {
    assert_eq!(
        runnable(r#"count(flower_worker_online{worker=~"$worker"} == 0) or vector(0)"#),
        r#"count(flower_worker_online{worker=~".*"} == 0)"#
    );
    assert_eq!(
        runnable("sum(x{job=~\".*celery.*\"}) by (job)\n* 100 > 5"),
        "sum(x{job=~\".*celery.*\"}) by (job) * 100"
    );
    assert_eq!(
        runnable(r#"sum(rate(a{cluster="$cluster", q!~"None"}[$__rate_interval])) > -1"#),
        r#"sum(rate(a{cluster=~".*", q!~"None"}[1m]))"#
    );

    let corpus = corpus();
    let mut queries: Vec<(String, String, String)> = Vec::new(); // (job, where, promql)
    let mut var_queries: Vec<(String, String, String)> = Vec::new(); // (where, promql, label)
    for (file, job) in [
        (
            "examples_celery-monitoring-grafana-dashboard.json",
            "flower",
        ),
        ("dashboards_out_celery-tasks-overview.json", "celery"),
        ("dashboards_out_celery-tasks-by-task.json", "celery"),
        ("dashboards_out_celery-tasks.json", "celery"),
    ] {
        let d: Value =
            serde_json::from_str(&std::fs::read_to_string(corpus.join(file)).unwrap()).unwrap();
        let (mut exprs, mut vars) = (Vec::new(), Vec::new());
        dashboard_queries(&d, &mut exprs, &mut vars);
        assert!(
            exprs.len() >= 3,
            "{file}: only {} panel queries",
            exprs.len()
        );
        for e in exprs {
            queries.push((job.into(), file.into(), e));
        }
        for v in vars {
            // `cluster` and `namespace` come from Kubernetes service discovery, not from any
            // exporter: the variables that name them have nothing to list outside Kubernetes.
            let (q, label) = label_values_query(&v).unwrap_or_else(|| panic!("{file}: {v}"));
            if label == "cluster" || label == "namespace" {
                continue;
            }
            var_queries.push((format!("{file} variable {label}"), q, label));
        }
    }
    for (file, job) in [
        ("examples_prometheus-alerts.yaml", "flower"),
        ("prometheus_alerts.yaml", "celery"),
    ] {
        let text = std::fs::read_to_string(corpus.join(file)).unwrap();
        let y: Value = serde_yaml_ng::from_str(&text).unwrap();
        // Flower's file is a bare list of rules; the mixin's has groups.
        let rules: Vec<Value> = match &y {
            Value::Array(a) => a.clone(),
            _ => y["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect(),
        };
        assert!(rules.len() >= 3, "{file}: {} rules", rules.len());
        for r in rules {
            let e = r["expr"].as_str().unwrap().to_string();
            queries.push((job.into(), format!("{file} {}", r["alert"]), e));
        }
    }

    let redis = RedisServer::start();
    let (ui, prom, tel) = (free_port(), free_port(), free_port());
    let agent = Agent::start(bin(), &config(&redis.url(), ui, prom, tel));
    let ui_addr = format!("127.0.0.1:{ui}");
    assert!(
        wait_until(Duration::from_secs(20), || http_get(
            &ui_addr,
            "/healthcheck"
        )
        .is_some_and(|(s, b)| s == 200 && b == "OK")),
        "celery_ui /healthcheck:\n{}",
        agent.output()
    );
    // Same auth as the rest of the dashboard; the health check outside it.
    assert_eq!(http_get(&ui_addr, "/metrics").map(|r| r.0), Some(401));

    let prometheus = PrometheusServer::start_with_config(&format!(
        r#"
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
scrape_configs:
  - job_name: flower
    authorization: {{ credentials: {TOKEN} }}
    static_configs: [{{ targets: ["127.0.0.1:{ui}"] }}]
  - job_name: celery
    static_configs: [{{ targets: ["127.0.0.1:{prom}"] }}]
"#
    ));

    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    // A second worker that comes and goes: Flower's offline rule (`flower_worker_online` 0).
    let mut gone = CeleryWorker::start(
        &redis.url(),
        WorkerOpts::default()
            .heartbeat(1)
            .hostname("gone@host2")
            .queues(&["other"]),
    );
    gone.assert_ready(Duration::from_secs(60));
    let up = |job: &str| {
        prometheus
            .query(&format!("up{{job=\"{job}\"}}"))
            .is_some_and(|r| r.first().is_some_and(|(_, v)| *v == 1.0))
    };
    assert!(
        wait_until(Duration::from_secs(30), || up("flower") && up("celery")),
        "scrape targets not up:\n{}\n{}",
        prometheus.log(),
        agent.output()
    );
    gone.stop();
    // Twice, scrapes apart, so every counter has grown between two samples (`increase`).
    for round in 0..2 {
        let mix = run_client(&redis.url(), &["run_mix", "--timeout", "60"]);
        assert_eq!(mix["match"], true, "round {round}: {mix}");
        std::thread::sleep(Duration::from_secs(3));
    }

    let mut missing = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        missing.clear();
        for (job, from, e) in &queries {
            let q = runnable(e);
            match prometheus.query(&q) {
                Some(r) if !r.is_empty() => {
                    assert!(
                        r.iter().all(|(l, _)| l.get("job").is_none_or(|j| j == job)),
                        "{from}: {q} has series of another job: {r:?}"
                    );
                }
                other => missing.push(format!("[{job}] {from}: {q} -> {other:?}")),
            }
        }
        for (from, q, label) in &var_queries {
            match prometheus.query(q) {
                Some(r)
                    if r.iter()
                        .any(|(l, _)| l.get(label).is_some_and(|v| !v.is_empty())) => {}
                other => missing.push(format!("{from}: {q} -> {other:?}")),
            }
        }
        missing.is_empty()
    });
    assert!(
        ok,
        "queries without data:\n{}\n\nflower /metrics:\n{}",
        missing.join("\n"),
        http_request(
            &ui_addr,
            "GET",
            "/metrics",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            &[]
        )
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default()
    );

    // Flower's semantics, checked on values: the worker that left is offline, the running one
    // online; task events are counted per worker node name and type.
    let online = prometheus.query("flower_worker_online").unwrap();
    let by_worker = |w: &str| {
        online
            .iter()
            .find(|(l, _)| l.get("worker").map(String::as_str) == Some(w))
            .map(|(_, v)| *v)
    };
    assert_eq!(by_worker("gone@host2"), Some(0.0), "{online:?}");
    assert_eq!(by_worker("w1@host1"), Some(1.0), "{online:?}");
    let failed = prometheus
        .query(
            r#"flower_events_total{type="task-failed",task="shop.send_receipt",worker="w1@host1"}"#,
        )
        .unwrap();
    assert_eq!(failed.first().map(|(_, v)| *v), Some(4.0), "{failed:?}");
    // celery-exporter's zero series: a task that never failed has a failure counter at 0.
    let never = prometheus
        .query(r#"celery_task_failed_total{name="shop.charge_card"}"#)
        .unwrap();
    assert!(
        !never.is_empty() && never.iter().all(|(_, v)| *v == 0.0),
        "{never:?}"
    );
    drop(worker);
}
