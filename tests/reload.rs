//! Config reload on a running agent: SIGHUP swaps an exporter's setting in the middle of a
//! flood of Celery events and loses none of them (every task log line lands in the old file or
//! the new one), and the task counters never go down; a config with errors is rejected
//! (`celeriac reload` says so, the counter counts it) and the running pipelines keep working;
//! new correlator settings carry its task records and counters over.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn config(redis_url: &str, prom: u16, tel: u16, log_path: &Path) -> String {
    AgentConfig::celery(redis_url, "{ metrics_interval: 100ms }", tel)
        .exporter(
            "prometheus",
            &format!("{{ endpoint: \"127.0.0.1:{prom}\" }}"),
        )
        .exporter("logs", &format!("{{ path: \"{}\" }}", log_path.display()))
        .pipeline("metrics", &["celery_correlate"], &["prometheus"])
        .pipeline("logs", &["celery_correlate"], &["logs"])
        .yaml()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

fn succeeded(addr: &str) -> Option<f64> {
    let s = scrape(addr)?;
    Some(
        s.iter()
            .filter(|(n, _, _)| n == "celery_task_succeeded_total")
            .map(|(_, _, v)| v)
            .sum(),
    )
}

fn reloads(tel: &str, result: &str) -> f64 {
    scrape(tel)
        .and_then(|s| metric_value(&s, "celeriac_config_reloads_total", &[("result", result)]))
        .unwrap_or(0.0)
}

fn hup(agent: &Agent) {
    let pid = agent.pid().expect("agent pid").to_string();
    let ok = Command::new("kill")
        .args(["-s", "HUP", &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP {pid}");
}

#[test]
fn sighup_swaps_an_exporter_under_a_flood_and_loses_nothing() {
    const TASKS: u64 = 6000;
    let redis = RedisServer::start_pubsub_unlimited();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let dir = tempfile::tempdir().unwrap();
    let (a, b): (PathBuf, PathBuf) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let mut agent = Agent::start_ready(
        &config(&redis.url(), prom, tel, &a),
        Duration::from_secs(15),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );

    // 6000 task lifecycles (sent, received, started, succeeded) at 6000 events/s: ~4 s.
    let flood = Command::new("python3")
        .arg(repo_root().join("bench/flood.py"))
        .args([
            "--port",
            &redis.port().to_string(),
            "--tasks",
            &TASKS.to_string(),
        ])
        .args(["--rate", "6000", "--fail", "0", "--workers", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 bench/flood.py");

    // Once the flood is flowing into a.jsonl, point the logs exporter at b.jsonl.
    assert!(
        wait_until(Duration::from_secs(20), || lines(&a) > 1000),
        "{}",
        agent.output()
    );
    std::fs::write(agent.config_path(), config(&redis.url(), prom, tel, &b)).unwrap();
    let before = succeeded(&prom_addr).unwrap_or(0.0);
    hup(&agent);

    // Task counters never go down across the swap.
    let mut last = before;
    let mut decreased = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    let expected_lines = (TASKS * 4) as usize;
    while Instant::now() < deadline {
        if let Some(v) = succeeded(&prom_addr) {
            if v < last {
                decreased = Some((last, v));
            }
            last = v;
        }
        if lines(&a) + lines(&b) >= expected_lines && last >= TASKS as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = flood.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("flood.py prints one JSON object");
    assert_eq!(report["unheard"], 0, "{report}");
    assert_eq!(report["tasks"], TASKS, "{report}");

    assert_eq!(decreased, None, "celery_task_succeeded_total went down");
    assert_eq!(reloads(&tel_addr, "success"), 1.0, "{}", agent.output());
    let (na, nb) = (lines(&a), lines(&b));
    assert!(
        na > 0 && nb > 0,
        "the swap happened mid-flood: a={na} b={nb}"
    );
    assert_eq!(na + nb, expected_lines, "a={na} b={nb}\n{}", agent.output());
    assert_eq!(succeeded(&prom_addr), Some(TASKS as f64));
    // Every line is whole JSON (the old file was flushed and closed, not cut).
    for p in [&a, &b] {
        for l in std::fs::read_to_string(p).unwrap().lines() {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        }
    }
    assert!(
        agent.stderr().contains("Configuration reloaded."),
        "{}",
        agent.output()
    );
    agent.stop_ok(Duration::from_secs(15));
}

#[test]
fn a_config_with_errors_is_rejected_and_the_pipelines_keep_running() {
    let redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let mut agent = Agent::start_ready(
        &config(&redis.url(), prom, tel, &a),
        Duration::from_secs(15),
        "celery_redis connected",
        || redis_connected(&tel_addr),
    );

    // An unknown exporter key: `celeriac reload` reports the rejection.
    let bad = config(&redis.url(), prom, tel, &a).replace("logs: { path:", "logs: { paht:");
    std::fs::write(agent.config_path(), bad).unwrap();
    let out = Command::new(bin())
        .args(["reload", "--endpoint", &tel_addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rejected"),
        "{out:?}"
    );
    assert_eq!(reloads(&tel_addr, "failure"), 1.0);
    assert!(
        agent.stderr().contains("unknown field `paht`"),
        "{}",
        agent.output()
    );

    // The old pipelines still work: a real worker's tasks are counted and logged.
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let chain = run_client(&redis.url(), &["chain", "--wait", "30"]);
    assert_eq!(chain["ids"].as_array().map(Vec::len), Some(3), "{chain}");
    assert!(
        wait_until(Duration::from_secs(15), || succeeded(&prom_addr)
            == Some(3.0)),
        "{}",
        agent.output()
    );
    assert!(wait_until(Duration::from_secs(5), || lines(&a) >= 12));

    // Fixed: the same command now reports success, and a second `reload` with an unchanged
    // file keeps every component.
    std::fs::write(agent.config_path(), config(&redis.url(), prom, tel, &a)).unwrap();
    let out = Command::new(bin())
        .args(["reload", "--endpoint", &tel_addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", agent.output());
    assert_eq!(reloads(&tel_addr, "success"), 1.0);
    // Nothing changed, so nothing was restarted.
    let stderr = agent.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("Configuration reloaded."))
        .unwrap_or_default();
    assert!(
        line.ends_with("started=[] stopped=[]") && line.contains("\"connector/celery_correlate\""),
        "{line}"
    );
    assert_eq!(succeeded(&prom_addr), Some(3.0));

    // New correlator settings: a new instance takes over the old one's tasks and counters, so
    // the counts go on from 3 (and never dip while the instances change).
    let changed = config(&redis.url(), prom, tel, &a).replace(
        "celery_correlate: { metrics_interval: 100ms }",
        "celery_correlate: { metrics_interval: 150ms, max_tasks: 5000 }",
    );
    std::fs::write(agent.config_path(), changed).unwrap();
    hup(&agent);
    let mut low = None;
    let swapped = wait_until(Duration::from_secs(15), || {
        if let Some(v) = succeeded(&prom_addr).filter(|v| *v < 3.0) {
            low = Some(v);
        }
        reloads(&tel_addr, "success") == 2.0
    });
    assert!(swapped, "{}", agent.output());
    for _ in 0..20 {
        if let Some(v) = succeeded(&prom_addr).filter(|v| *v < 3.0) {
            low = Some(v);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(low, None, "celery_task_succeeded_total went below 3");
    assert!(
        agent.stderr().contains("carried over"),
        "{}",
        agent.output()
    );
    let chain = run_client(&redis.url(), &["chain", "--wait", "30"]);
    assert_eq!(chain["ids"].as_array().map(Vec::len), Some(3), "{chain}");
    assert!(
        wait_until(Duration::from_secs(15), || succeeded(&prom_addr)
            == Some(6.0)),
        "{:?}\n{}",
        succeeded(&prom_addr),
        agent.output()
    );
    agent.stop_ok(Duration::from_secs(15));
}

/// With `service.telemetry.bearer_token`, reloading over HTTP needs the token too.
#[test]
fn reload_over_http_needs_the_telemetry_token() {
    let redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let tel_addr = format!("127.0.0.1:{tel}");
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(&redis.url(), prom, tel, &dir.path().join("a.jsonl")).replace(
        &format!("  telemetry:\n    endpoint: 127.0.0.1:{tel}\n"),
        &format!("  telemetry:\n    endpoint: 127.0.0.1:{tel}\n    bearer_token: s3cret-token\n"),
    );
    assert!(yaml.contains("bearer_token"), "{yaml}");
    let mut agent = Agent::start_ready(&yaml, Duration::from_secs(15), "healthz", || {
        http_ok(&tel_addr, "/healthz")
    });
    let reload = |extra: &[&str]| {
        Command::new(bin())
            .args(["reload", "--endpoint", &tel_addr])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = reload(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bearer token"),
        "{out:?}"
    );
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let out = reload(&["--bearer-token-file", token.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}\n{}", agent.output());
    agent.stop_ok(Duration::from_secs(15));
}
