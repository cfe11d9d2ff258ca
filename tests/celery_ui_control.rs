//! The `celery_ui` write API (Flower 2.2's control endpoints) against a real Celery worker over
//! a real redis-server, side by side with a real Flower 2.2 on the same worker:
//!
//! * each write endpoint's effect is read back from what the worker reports next (pool
//!   processes, active queues, a revoked task's state, a task applied through the API that
//!   succeeds and whose result comes from the Redis result backend);
//! * Flower answers the same requests with the same status and body (messages) or keys;
//! * unauthenticated POST → 401, `read_only` → 403, a cross-origin form post → 403 (CSRF);
//! * every action is logged and counted in `celeriac_ui_control_total{action,result}`.

mod support;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use support::*;

const USER: &str = "admin";
const PASS: &str = "s3cret-pass";

fn config(redis_url: &str, backend: &str, ui: u16, tel: u16, read_only: bool) -> String {
    format!(
        r#"
receivers:
  celery_redis: {{ endpoint: "{redis_url}" }}
connectors:
  celery_correlate: {{ metrics_interval: 200ms }}
exporters:
  debug: {{}}
extensions:
  celery_ui:
    endpoint: 127.0.0.1:{ui}
    read_only: {read_only}
    auth: {{ username: {USER}, password: {PASS} }}
    result_backend: "{backend}"
    inspect: {{ interval: 2s, timeout: 2s }}
service:
  extensions: [celery_ui]
  telemetry: {{ endpoint: "127.0.0.1:{tel}" }}
  pipelines:
    celery: {{ receivers: [celery_redis], exporters: [celery_correlate] }}
    metrics: {{ receivers: [celery_correlate], exporters: [debug] }}
"#
    )
}

struct Flower {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Flower {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Flower 2.2 from the test venv, same app, broker, backend and credentials. Fails loudly when
/// Flower is missing: the comparison is the point.
fn start_flower(broker: &str, backend: &str) -> Flower {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flower.log");
    let out = File::create(&log).unwrap();
    let child = Command::new(python())
        .args(["-m", "celery", "-A", "shopapp", "flower"])
        .arg(format!("--port={port}"))
        .arg("--address=127.0.0.1")
        .arg(format!("--basic-auth={USER}:{PASS}"))
        .current_dir(repo_root())
        .env("PYTHONPATH", python_dir())
        .env("CELERY_BROKER_URL", broker)
        .env("CELERY_RESULT_BACKEND", backend)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("start Flower from the test venv (scripts/test installs it)");
    let addr = format!("127.0.0.1:{port}");
    let f = Flower {
        child,
        addr: addr.clone(),
        _dir: dir,
    };
    let up = wait_until(Duration::from_secs(40), || {
        http_request(
            &addr,
            "GET",
            "/api/workers",
            &[("Authorization", &basic())],
            &[],
        )
        .is_some_and(|r| r.status == 200)
    });
    assert!(
        up,
        "Flower did not start:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    f
}

fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    )
}

fn post(addr: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let auth = basic();
    let mut headers = vec![("Authorization", auth.as_str())];
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http_request(addr, "POST", path, &headers, b.as_bytes())
        .unwrap_or_else(|| panic!("POST {addr}{path}: no answer"));
    (r.status, r.text())
}

fn get(addr: &str, path: &str) -> Value {
    let r = http_request(addr, "GET", path, &[("Authorization", &basic())], &[])
        .unwrap_or_else(|| panic!("GET {addr}{path}: no answer"));
    assert_eq!(r.status, 200, "GET {addr}{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
}

const W: &str = "w1@host1";

/// Pool processes and consumed queues, as the worker reports them now.
fn worker_state(addr: &str) -> (usize, Vec<String>) {
    let w = get(
        addr,
        &format!("/api/workers?refresh=1&workername={}", url_encode(W)),
    );
    worker_pool_and_queues(&w[W])
}

fn wait_result(addr: &str, id: &str) -> Value {
    wait_task_result(Duration::from_secs(20), id, |path| get(addr, path))
}

#[test]
fn control_api_acts_on_a_real_worker_like_flower() {
    let redis = RedisServer::start();
    let backend = redis.url_db(1);
    let mut worker = CeleryWorker::start(
        &redis.url(),
        WorkerOpts {
            result_backend: Some(backend.clone()),
            ..WorkerOpts::default().heartbeat(1)
        },
    );
    worker.assert_ready(Duration::from_secs(60));
    let (ui, tel) = (free_port(), free_port());
    let agent = Agent::start_ready(
        &config(&redis.url(), &backend, ui, tel, false),
        Duration::from_secs(20),
        "celery_ui healthcheck",
        || http_ok(&format!("127.0.0.1:{ui}"), "/healthcheck"),
    );
    let ui = format!("127.0.0.1:{ui}");
    let flower = start_flower(&redis.url(), &backend);
    // Both know the worker (Flower's 404 "Unknown worker" otherwise).
    assert!(
        wait_until(Duration::from_secs(20), || {
            get(&ui, "/api/workers?refresh=1").get(W).is_some()
                && get(&flower.addr, "/api/workers?refresh=1").get(W).is_some()
        }),
        "worker not listed"
    );

    // Unauthenticated → 401, before anything else.
    let r = http_request(&ui, "POST", &format!("/api/worker/pool/grow/{W}"), &[], &[]).unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    // CSRF: a form posted from another site with the browser's cached credentials.
    let r = http_request(
        &ui,
        "POST",
        &format!("/api/worker/pool/grow/{W}"),
        &[
            ("Authorization", &basic()),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"n=1",
    )
    .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("Cross-origin"), "{}", r.text());

    let (procs0, queues0) = worker_state(&ui);
    assert_eq!(procs0, 2, "concurrency 2");
    assert_eq!(queues0, ["celery"]);

    // Pool grow/shrink: same answers as Flower, effect read back from the worker.
    let grow = format!("/api/worker/pool/grow/{W}?n=1");
    let shrink = format!("/api/worker/pool/shrink/{W}?n=1");
    let ours = post(&ui, &grow, None);
    assert_eq!(
        ours,
        (
            200,
            json!({"message": format!("Growing '{W}' worker's pool by 1")}).to_string()
        )
    );
    assert!(wait_until(Duration::from_secs(10), || worker_state(&ui).0 == 3));
    let theirs = post(&flower.addr, &grow, None);
    assert_eq!(theirs.0, 200, "{theirs:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&theirs.1).unwrap(),
        serde_json::from_str::<Value>(&ours.1).unwrap()
    );
    assert!(wait_until(Duration::from_secs(10), || worker_state(&ui).0 == 4));
    // One shrink at a time, each effect read back before the next: two shrinks sent back to
    // back can race inside the worker's prefork pool and leave one process too many.
    for (addr, want) in [(&ui, 3), (&flower.addr, 2)] {
        let (s, b) = post(addr, &shrink, None);
        assert_eq!(s, 200, "{addr}: {b}");
        assert_eq!(
            serde_json::from_str::<Value>(&b).unwrap()["message"],
            format!("Shrinking '{W}' worker's pool by 1")
        );
        assert!(
            wait_until(Duration::from_secs(10), || worker_state(&ui).0 == want),
            "{addr}: pool is {} processes, want {want}",
            worker_state(&ui).0
        );
    }

    // Consumers: the worker's own answer, like Flower's.
    let add = format!("/api/worker/queue/add-consumer/{W}?queue=extra");
    let (s, b) = post(&ui, &add, None);
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap(),
        json!({"message": "add consumer extra"})
    );
    assert!(wait_until(Duration::from_secs(10), || worker_state(&ui).1
        == ["celery", "extra"]));
    let cancel = format!("/api/worker/queue/cancel-consumer/{W}?queue=extra");
    let (s, b) = post(&ui, &cancel, None);
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()),
        (200, json!({"message": "no longer consuming from extra"}))
    );
    assert!(wait_until(Duration::from_secs(10), || worker_state(&ui).1
        == ["celery"]));
    // Flower answers the same for the same commands.
    let (s, fb) = post(&flower.addr, &add, None);
    assert_eq!(
        (s, serde_json::from_str::<Value>(&fb).ok()),
        (200, Some(json!({"message": "add consumer extra"})))
    );
    let (s, fb) = post(&flower.addr, &cancel, None);
    assert_eq!(
        (s, serde_json::from_str::<Value>(&fb).ok()),
        (
            200,
            Some(json!({"message": "no longer consuming from extra"}))
        )
    );

    // Rate and time limits (task names known from the worker's registry).
    let rl = "/api/task/rate-limit/shop.a?ratelimit=100%2Fm&workername=w1%40host1";
    let tl = "/api/task/timeout/shop.a?soft=30&hard=60&workername=w1%40host1";
    for (path, want) in [
        (rl, "new rate limit set successfully"),
        (tl, "time limits set successfully"),
    ] {
        for addr in [&ui, &flower.addr] {
            let (s, b) = post(addr, path, None);
            assert_eq!(
                (s, serde_json::from_str::<Value>(&b).ok()),
                (200, Some(json!({ "message": want }))),
                "{addr}{path}"
            );
        }
    }

    // Unknown worker: Flower's 404 and text.
    for addr in [&ui, &flower.addr] {
        let (s, b) = post(addr, "/api/worker/pool/grow/nobody@nowhere", None);
        assert_eq!(
            (s, b.as_str()),
            (404, "Unknown worker 'nobody@nowhere'"),
            "{addr}"
        );
    }

    // Publishing: async-apply and send-task write task messages the worker runs; the result
    // comes from the Redis result backend, in Flower's shape.
    let (s, b) = post(
        &ui,
        "/api/task/async-apply/shop.a",
        Some(&json!({"args": [41]})),
    );
    assert_eq!(s, 200, "{b}");
    let applied: Value = serde_json::from_str(&b).unwrap();
    let id = applied["task-id"].as_str().unwrap().to_string();
    assert_eq!(applied["state"], "PENDING", "{applied}");
    let res = wait_result(&ui, &id);
    assert_eq!(
        res,
        json!({"task-id": id, "state": "SUCCESS", "result": 42})
    );
    let (s, fb) = post(
        &flower.addr,
        "/api/task/async-apply/shop.a",
        Some(&json!({"args": [1]})),
    );
    assert_eq!(s, 200, "{fb}");
    let theirs: Value = serde_json::from_str(&fb).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&theirs), keys(&applied));
    let flower_res = wait_result(&flower.addr, theirs["task-id"].as_str().unwrap());
    assert_eq!(flower_res["result"], 2);
    // Flower's and ours read the same backend: same answer for the same task.
    assert_eq!(get(&flower.addr, &format!("/api/task/result/{id}")), res);

    let (s, b) = post(
        &ui,
        "/api/task/send-task/shop.c",
        Some(&json!({"args": ["x"], "kwargs": {}, "queue": "celery"})),
    );
    assert_eq!(s, 200, "{b}");
    let sent: Value = serde_json::from_str(&b).unwrap();
    let res = wait_result(&ui, sent["task-id"].as_str().unwrap());
    assert_eq!(res["result"], "total=x");
    let (s, _) = post(&ui, "/api/task/async-apply/no.such.task", Some(&json!({})));
    assert_eq!(s, 404);
    let (s, b) = post(
        &ui,
        "/api/task/send-task/shop.a",
        Some(&json!({"args": {"x": 1}})),
    );
    assert_eq!((s, b.as_str()), (400, "args must be an array"));

    // Revoke with terminate: a running task ends REVOKED, as the worker reports it.
    let (s, b) = post(
        &ui,
        "/api/task/send-task/shop.sleep",
        Some(&json!({"args": [30]})),
    );
    assert_eq!(s, 200, "{b}");
    let long: Value = serde_json::from_str(&b).unwrap();
    let long_id = long["task-id"].as_str().unwrap().to_string();
    assert!(
        wait_until(Duration::from_secs(15), || {
            http_request(
                &ui,
                "GET",
                &format!("/api/task/info/{long_id}"),
                &[("Authorization", &basic())],
                &[],
            )
            .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .is_some_and(|t| t["state"] == "STARTED")
        }),
        "the long task never started"
    );
    let (s, b) = post(
        &ui,
        &format!("/api/task/revoke/{long_id}?terminate=true&signal=SIGKILL"),
        None,
    );
    assert_eq!(
        (s, serde_json::from_str::<Value>(&b).unwrap()),
        (200, json!({"message": format!("Revoked '{long_id}'")}))
    );
    assert!(
        wait_until(Duration::from_secs(15), || {
            get(&ui, &format!("/api/task/info/{long_id}"))["state"] == "REVOKED"
        }),
        "not REVOKED: {}",
        get(&ui, &format!("/api/task/info/{long_id}"))
    );
    let revoked = get(
        &ui,
        &format!("/api/workers?refresh=1&workername={}", url_encode(W)),
    );
    assert!(
        revoked[W]["revoked"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == &json!(long_id))),
        "{}",
        revoked[W]["revoked"]
    );

    // Abort: the result backend says ABORTED (what AbortableTask checks).
    let (s, b) = post(&ui, "/api/task/abort/some-task-id", None);
    assert_eq!(
        (s, b),
        (
            200,
            json!({"message": "Aborted 'some-task-id'"}).to_string()
        )
    );
    assert_eq!(
        get(&ui, "/api/task/result/some-task-id")["state"],
        "ABORTED"
    );

    // Logged and counted.
    let m = scrape(&format!("127.0.0.1:{tel}")).unwrap();
    let count = |action: &str, result: &str| {
        metric_value(
            &m,
            "celeriac_ui_control_total",
            &[("action", action), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("worker.pool_grow", "ok"), 1.0);
    assert_eq!(
        count("worker.pool_grow", "refused"),
        2.0,
        "cross-origin + unknown worker"
    );
    assert_eq!(count("task.revoke", "ok"), 1.0);
    assert_eq!(count("task.send_task", "refused"), 1.0);
    assert!(
        agent.output().contains("Control action.") && agent.output().contains("who=admin"),
        "{}",
        agent.output()
    );

    // Shutdown: the worker process exits.
    let (s, b) = post(&ui, &format!("/api/worker/shutdown/{W}"), None);
    assert_eq!(
        (s, b),
        (200, json!({"message": "Shutting down!"}).to_string())
    );
    assert!(
        wait_until(Duration::from_secs(20), || !worker.is_running()),
        "worker still running after shutdown"
    );
    drop(flower);
}

#[test]
fn read_only_refuses_every_write_and_needs_no_auth_to_refuse() {
    let redis = RedisServer::start();
    let (ui, tel) = (free_port(), free_port());
    let _agent = Agent::start_ready(
        &config(&redis.url(), &redis.url_db(1), ui, tel, true),
        Duration::from_secs(20),
        "celery_ui healthcheck",
        || http_ok(&format!("127.0.0.1:{ui}"), "/healthcheck"),
    );
    let ui = format!("127.0.0.1:{ui}");
    for path in [
        "/api/task/revoke/abc",
        "/api/worker/pool/grow/w1@host1",
        "/api/task/send-task/shop.a",
        "/api/task/abort/abc",
    ] {
        assert_eq!(
            post(&ui, path, None),
            (403, "Read only mode is enabled".to_string()),
            "{path}"
        );
        let r = http_request(&ui, "POST", path, &[], &[]).unwrap();
        assert_eq!(r.status, 401, "{path}");
    }
    // `read_only: false` without auth is refused by validate.
    let (ok, err) = validate_config(
        bin(),
        &config(
            &redis.url(),
            &redis.url_db(1),
            free_port(),
            free_port(),
            false,
        )
        .replace(
            &format!("    auth: {{ username: {USER}, password: {PASS} }}\n"),
            "",
        ),
    );
    assert!(!ok);
    assert!(err.contains("read_only"), "{err}");
}
