//! Remote control over AMQP's pidbox and several brokers in one agent: `celery_ui` answers
//! `/api/workers?refresh=1` from a RabbitMQ worker (the `celery_amqp` receiver's broker by
//! default), and one Redis app plus one RabbitMQ app run side by side, each through its own
//! receiver → `celery_correlate` → `celery_ui`, with counters (`job` = the correlator's
//! `service_name`) and workers kept apart. Flower's write API (`read_only: false`) sends its
//! control commands over the AMQP pidbox too.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::rabbitmq::Vhost;
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn get_ok(addr: &str, path: &str) -> Value {
    let r = http_request(addr, "GET", path, &[], &[]).unwrap_or_else(|| panic!("GET {path}"));
    assert_eq!(r.status, 200, "GET {addr}{path}");
    serde_json::from_slice(&r.body).expect("JSON")
}

fn up(prom: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape(prom).and_then(|s| metric_value(&s, "celery_worker_up", labels))
}

/// An agent with one `celery_amqp` receiver on `url`, its correlator, the exporter
/// `(name, settings)` for the metrics, and `celery_ui` with `ui` settings (a YAML flow map).
fn ui_config(url: &str, exporter: (&str, &str), ui: &str, tel: u16) -> String {
    let (exporter, settings) = exporter;
    format!(
        r#"
receivers:
  celery_amqp:
    endpoint: {url}
connectors:
  celery_correlate:
    metrics_interval: 200ms
exporters:
  {exporter}: {settings}
extensions:
  celery_ui: {ui}
service:
  extensions: [celery_ui]
  telemetry:
    endpoint: 127.0.0.1:{tel}
  pipelines:
    celery:
      receivers: [celery_amqp]
      exporters: [celery_correlate]
    metrics:
      receivers: [celery_correlate]
      exporters: [{exporter}]
"#
    )
}

#[test]
fn workers_refresh_over_the_amqp_pidbox() {
    let vhost = Vhost::create("ui");
    let url = vhost.url();
    let (prom, ui, tel) = (free_port(), free_port(), free_port());
    let (prom_addr, ui_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{ui}"));
    let agent = Agent::start(
        bin(),
        &ui_config(
            &url,
            ("prometheus", &format!("{{ endpoint: {prom_addr} }}")),
            &format!("{{ endpoint: {ui_addr}, inspect: {{ interval: 2s, timeout: 1s }} }}"),
            tel,
        ),
    );
    let mut worker = CeleryWorker::start(&url, WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(20), || up(
            &prom_addr,
            &[("hostname", "host1")]
        ) == Some(1.0)),
        "{}",
        agent.output()
    );
    let mut workers = Value::Null;
    let ok = wait_until(Duration::from_secs(15), || {
        workers = get_ok(&ui_addr, "/api/workers?refresh=1");
        workers["w1@host1"]["stats"].is_object()
    });
    assert!(ok, "{workers:#}\n{}", agent.output());
    let w = &workers["w1@host1"];
    assert_eq!(w["stats"]["pool"]["max-concurrency"], 2, "{workers:#}");
    assert_eq!(w["stats"]["broker"]["transport"], "amqp", "{workers:#}");
    assert_eq!(w["active_queues"][0]["name"], "celery");
    assert!(w["registered"]
        .as_array()
        .is_some_and(|r| r.iter().any(|t| t == "shop.charge_card")));
    assert!(w["active"].is_array() && w["reserved"].is_array() && w["scheduled"].is_array());
    let named = get_ok(&ui_addr, "/api/workers?refresh=1&workername=w1%40host1");
    assert!(named["w1@host1"]["stats"].is_object(), "{named:#}");
    let queues = get_ok(&ui_addr, "/api/queues/length");
    assert_eq!(queues["active_queues"][0]["name"], "celery", "{queues}");
    assert_eq!(queues["active_queues"][0]["messages"], 0, "{queues}");
    // The password is never shown.
    assert!(!workers.to_string().contains("guest:guest"));
}

const TOKEN: &str = "amqp-control-token";

fn authed(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = http_request(addr, method, path, &headers, body)
        .unwrap_or_else(|| panic!("{method} {addr}{path}: no answer"));
    (r.status, r.text())
}

/// POST `path` with `body` (authenticated); panics unless it answers 200; its answer.
fn post_ok(addr: &str, path: &str, body: &[u8]) -> String {
    let (s, b) = authed(addr, "POST", path, body);
    assert_eq!(s, 200, "{b}");
    b
}

/// Pool processes and consumed queues of `w1@host1`, as the worker reports them now.
fn pool_and_queues(addr: &str) -> (usize, Vec<String>) {
    let (s, b) = authed(
        addr,
        "GET",
        "/api/workers?refresh=1&workername=w1%40host1",
        b"",
    );
    assert_eq!(s, 200, "{b}");
    let w: Value = serde_json::from_str(&b).expect("JSON");
    worker_pool_and_queues(&w["w1@host1"])
}

#[test]
fn control_commands_over_the_amqp_pidbox() {
    let vhost = Vhost::create("uictl");
    let url = vhost.url();
    let redis = RedisServer::start();
    let backend = redis.url_db(1);
    let (ui, tel) = (free_port(), free_port());
    let ui_addr = format!("127.0.0.1:{ui}");
    let agent = Agent::start(
        bin(),
        &ui_config(
            &url,
            ("debug", "{}"),
            &format!(
                "{{ endpoint: {ui_addr}, read_only: false, auth: {{ bearer_token: {TOKEN} }}, \
                 inspect: {{ interval: 2s, timeout: 2s }}, result_backend: {backend} }}"
            ),
            tel,
        ),
    );
    let mut worker = CeleryWorker::start(
        &url,
        WorkerOpts {
            result_backend: Some(backend.clone()),
            ..WorkerOpts::default().heartbeat(1)
        },
    );
    worker.assert_ready(Duration::from_secs(60));
    assert!(
        wait_until(Duration::from_secs(20), || pool_and_queues(&ui_addr).0 == 2),
        "worker not answering over the AMQP pidbox\n{}",
        agent.output()
    );

    // Pool grow/shrink: Flower's answers, the effect read back from the worker.
    let (s, b) = authed(&ui_addr, "POST", "/api/worker/pool/grow/w1@host1?n=1", b"");
    assert_eq!(s, 200, "{b}\n{}", agent.output());
    let answer: Value = serde_json::from_str(&b).expect("JSON");
    assert_eq!(answer["message"], "Growing 'w1@host1' worker's pool by 1");
    assert!(
        wait_until(Duration::from_secs(10), || pool_and_queues(&ui_addr).0 == 3),
        "pool did not grow: {:?}",
        pool_and_queues(&ui_addr)
    );
    post_ok(&ui_addr, "/api/worker/pool/shrink/w1@host1?n=1", b"");
    assert!(wait_until(Duration::from_secs(10), || pool_and_queues(
        &ui_addr
    )
    .0 == 2));

    // A consumer added and cancelled: the worker's own confirmation comes back over AMQP.
    let b = post_ok(
        &ui_addr,
        "/api/worker/queue/add-consumer/w1@host1?queue=extra",
        b"",
    );
    assert!(b.contains("extra"), "{b}");
    assert!(wait_until(Duration::from_secs(10), || {
        pool_and_queues(&ui_addr).1 == ["celery", "extra"]
    }));
    post_ok(
        &ui_addr,
        "/api/worker/queue/cancel-consumer/w1@host1?queue=extra",
        b"",
    );
    assert!(wait_until(Duration::from_secs(10), || {
        pool_and_queues(&ui_addr).1 == ["celery"]
    }));

    // Publishing over AMQP: send-task and async-apply put protocol-2 task messages on the
    // queue, the real worker runs them, and the result comes back from the result backend.
    let (s, b) = authed(
        &ui_addr,
        "POST",
        "/api/task/send-task/shop.c",
        br#"{"args": ["x"], "kwargs": {}, "queue": "celery"}"#,
    );
    assert_eq!(s, 200, "{b}\n{}", agent.output());
    let sent: Value = serde_json::from_str(&b).expect("JSON");
    let res = wait_result(&ui_addr, sent["task-id"].as_str().expect("task-id"));
    assert_eq!(res["state"], "SUCCESS", "{res}");
    assert_eq!(res["result"], "total=x", "{res}");
    let b = post_ok(
        &ui_addr,
        "/api/task/async-apply/shop.a",
        br#"{"args": [41]}"#,
    );
    let applied: Value = serde_json::from_str(&b).expect("JSON");
    let id = applied["task-id"].as_str().expect("task-id").to_string();
    let res = wait_result(&ui_addr, &id);
    assert_eq!(
        res,
        serde_json::json!({"task-id": id, "state": "SUCCESS", "result": 42})
    );
    // A queue nobody declared yet is declared as Celery declares it, and the message waits there.
    post_ok(
        &ui_addr,
        "/api/task/send-task/shop.a",
        br#"{"args": [1], "queue": "later"}"#,
    );
    assert!(
        wait_until(Duration::from_secs(5), || vhost
            .queues()
            .iter()
            .any(|q| q.0 == "later" && q.1 == 1)),
        "{:?}",
        vhost.queues()
    );
    drop(worker);
}

fn wait_result(addr: &str, id: &str) -> Value {
    wait_task_result(Duration::from_secs(30), id, |path| {
        let (_, b) = authed(addr, "GET", path, b"");
        serde_json::from_str(&b).unwrap_or(Value::Null)
    })
}

#[test]
fn one_redis_app_and_one_rabbitmq_app_stay_apart() {
    let redis = RedisServer::start();
    let vhost = Vhost::create("multi");
    let (rurl, aurl) = (redis.url(), vhost.url());
    let (prom, ui_r, ui_a, tel) = (free_port(), free_port(), free_port(), free_port());
    let prom_addr = format!("127.0.0.1:{prom}");
    let (ui_shop, ui_bars) = (format!("127.0.0.1:{ui_r}"), format!("127.0.0.1:{ui_a}"));
    let agent = Agent::start(
        bin(),
        &format!(
            r#"
receivers:
  celery_redis/shop:
    endpoint: {rurl}
  celery_amqp/bars:
    endpoint: {aurl}
connectors:
  celery_correlate/shop:
    service_name: shop
    metrics_interval: 200ms
  celery_correlate/bars:
    service_name: bars
    metrics_interval: 200ms
exporters:
  prometheus:
    endpoint: {prom_addr}
    resource_to_telemetry_conversion: true
extensions:
  celery_ui/shop:
    endpoint: {ui_shop}
    correlator: celery_correlate/shop
    inspect: {{ broker: {rurl}, interval: 2s, timeout: 1s }}
  celery_ui/bars:
    endpoint: {ui_bars}
    correlator: celery_correlate/bars
    inspect: {{ broker: {aurl}, interval: 2s, timeout: 1s }}
service:
  extensions: [celery_ui/shop, celery_ui/bars]
  telemetry:
    endpoint: 127.0.0.1:{tel}
  pipelines:
    celery/shop:
      receivers: [celery_redis/shop]
      exporters: [celery_correlate/shop]
    celery/bars:
      receivers: [celery_amqp/bars]
      exporters: [celery_correlate/bars]
    metrics:
      receivers: [celery_correlate/shop, celery_correlate/bars]
      exporters: [prometheus]
"#
        ),
    );
    let mut wr = CeleryWorker::start(
        &rurl,
        WorkerOpts::default().hostname("w1@redis-host").heartbeat(1),
    );
    let mut wa = CeleryWorker::start(
        &aurl,
        WorkerOpts::default().hostname("w1@amqp-host").heartbeat(1),
    );
    wr.assert_ready(Duration::from_secs(60));
    wa.assert_ready(Duration::from_secs(60));
    let ok = wait_until(Duration::from_secs(20), || {
        up(&prom_addr, &[("job", "shop"), ("hostname", "redis-host")]) == Some(1.0)
            && up(&prom_addr, &[("job", "bars"), ("hostname", "amqp-host")]) == Some(1.0)
    });
    assert!(ok, "both workers up\n{}", agent.output());
    // Each worker under its own app only.
    assert_eq!(
        up(&prom_addr, &[("job", "shop"), ("hostname", "amqp-host")]),
        None
    );
    assert_eq!(
        up(&prom_addr, &[("job", "bars"), ("hostname", "redis-host")]),
        None
    );

    // The same task names on both: one chain on Redis, two on RabbitMQ.
    run_client(&rurl, &["chain", "--wait", "30"]);
    run_client(&aurl, &["chain", "--wait", "30"]);
    run_client(&aurl, &["chain", "--wait", "30"]);
    let succeeded = |job: &str| {
        scrape(&prom_addr).and_then(|s| {
            metric_value(
                &s,
                "celery_task_succeeded_total",
                &[("job", job), ("name", "shop.a")],
            )
        })
    };
    let ok = wait_until(Duration::from_secs(15), || {
        succeeded("shop") == Some(1.0) && succeeded("bars") == Some(2.0)
    });
    assert!(
        ok,
        "shop {:?} bars {:?}\n{}",
        succeeded("shop"),
        succeeded("bars"),
        agent.output()
    );

    // One dashboard per app, each asking its own broker.
    for (ui, mine, theirs) in [
        (&ui_shop, "w1@redis-host", "w1@amqp-host"),
        (&ui_bars, "w1@amqp-host", "w1@redis-host"),
    ] {
        let mut workers = Value::Null;
        let ok = wait_until(Duration::from_secs(15), || {
            workers = get_ok(ui, "/api/workers?refresh=1");
            workers[mine]["stats"].is_object()
        });
        assert!(ok, "{ui}: {workers:#}\n{}", agent.output());
        assert!(workers.get(theirs).is_none(), "{ui}: {workers:#}");
        let tasks = get_ok(ui, "/api/tasks");
        let n = tasks.as_object().map_or(0, |m| m.len());
        assert_eq!(
            n,
            if mine == "w1@redis-host" { 3 } else { 6 },
            "{ui}: {tasks:#}"
        );
    }
}
