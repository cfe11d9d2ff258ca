//! Brokers that need more than `redis://host`: TLS (`rediss://`) with a client certificate and an
//! ACL user with a password, for both Redis receivers; a wrong password is a counted, logged
//! connect error that never shows the password; and a failover list (no Sentinel) on which the
//! receivers move to the next broker when theirs goes away, keeping every counter monotonic.

mod support;

use std::time::Duration;

use support::*;

/// Agent config: both Redis receivers on `endpoint` (YAML, a string or a list) with `tls`
/// (YAML or empty), correlated, on a scrape page.
fn config(endpoint: &str, tls: &str, prom: &str, tel: &str) -> String {
    AgentConfig::new()
        .receiver(
            "celery_redis",
            &format!("endpoint: {endpoint}\nconnect_timeout: 2s\n{tls}"),
        )
        .receiver(
            "redis_queues",
            &format!("endpoint: {endpoint}\ninterval: 200ms\nqueues: [celery]\n{tls}"),
        )
        .connector("celery_correlate", "metrics_interval: 100ms")
        .exporter("prometheus", &format!("endpoint: {prom}"))
        .telemetry_endpoint(tel)
        .pipeline("celery", &["celery_redis"], &["celery_correlate"])
        .pipeline(
            "metrics",
            &["celery_correlate", "redis_queues"],
            &["prometheus"],
        )
        .yaml()
}

fn value(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape(addr).and_then(|s| metric_value(&s, name, labels))
}

#[test]
fn rediss_with_client_certificate_and_acl_user() {
    let pki = pki::Pki::generate();
    let tls_port = free_port();
    let redis = RedisServer::builder()
        .arg("--tls-port")
        .arg(tls_port.to_string())
        .arg("--tls-cert-file")
        .arg(pki.server_cert().display().to_string())
        .arg("--tls-key-file")
        .arg(pki.server_key().display().to_string())
        .arg("--tls-ca-cert-file")
        .arg(pki.ca().display().to_string())
        .arg("--tls-auth-clients")
        .arg("yes")
        .start();
    let acl = redis.cmd(&[
        "ACL",
        "SETUSER",
        "celeriac",
        "on",
        ">s3cret-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    assert_eq!(acl.as_string().as_deref(), Some("OK"), "{acl:?}");
    redis.cmd(&["LPUSH", "celery", "m1", "m2", "m3"]);

    let tls = format!(
        "tls: {{ ca_file: {}, cert_file: {}, key_file: {} }}",
        pki.ca().display(),
        pki.client_cert().display(),
        pki.client_key().display()
    );
    let (prom, tel) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );

    // A wrong password: a counted connect error, a warning, and never the password itself.
    let wrong = config(
        &format!("rediss://celeriac:not-the-pw@127.0.0.1:{tls_port}/0"),
        &tls,
        &prom,
        &tel,
    );
    let mut agent = Agent::start(bin(), &wrong);
    assert!(
        wait_until(Duration::from_secs(15), || {
            ["receiver/celery_redis", "receiver/redis_queues"]
                .iter()
                .all(|c| {
                    value(
                        &tel,
                        "celeriac_receiver_errors_total",
                        &[("component", c), ("reason", "connect")],
                    )
                    .unwrap_or(0.0)
                        >= 1.0
                })
        }),
        "{}",
        agent.output()
    );
    // The receiver counts the error, then logs it: the line may reach our reader a moment
    // after the counter reached the scrape.
    assert!(
        wait_until(Duration::from_secs(5), || agent
            .stderr()
            .contains("AUTH failed")),
        "{}",
        agent.output()
    );
    assert!(!agent.output().contains("not-the-pw"), "{}", agent.output());
    agent.terminate();
    assert!(agent.wait_exit(Duration::from_secs(15)).is_some());

    // The right one, over TLS with a client certificate: events and queue lengths arrive.
    let right = config(
        &format!("rediss://celeriac:s3cret-pw@127.0.0.1:{tls_port}/0"),
        &tls,
        &prom,
        &tel,
    );
    let agent = Agent::start_ready(
        &right,
        Duration::from_secs(15),
        "celery_redis connected",
        || redis_connected(&tel),
    );
    for (ch, data) in fixture_envelopes() {
        redis.cmd(&["PUBLISH", &ch, &data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            value(&prom, "celery_task_succeeded_total", &[]) == Some(12.0)
                && value(&prom, "celery_queue_length", &[("queue_name", "celery")]) == Some(3.0)
        }),
        "{}\n{:?}",
        agent.output(),
        scrape(&prom)
    );
    assert!(!agent.output().contains("s3cret-pw"), "{}", agent.output());
    assert!(
        agent.stderr().contains("rediss://***@127.0.0.1"),
        "the endpoint is logged without credentials\n{}",
        agent.output()
    );
}

#[test]
fn failover_list_moves_to_the_next_broker() {
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    a.cmd(&["LPUSH", "celery", "x"]);
    b.cmd(&["LPUSH", "celery", "y", "z"]);
    let (prom, tel) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let list = format!("[{}, {}]", a.url(), b.url());
    let agent = Agent::start(bin(), &config(&list, "", &prom, &tel));
    let connected = |want: f64| {
        wait_until(Duration::from_secs(20), || {
            redis_connected_value(&tel) == Some(want)
        })
    };
    assert!(connected(1.0), "{}", agent.output());
    let envs = fixture_envelopes();
    for (ch, data) in &envs {
        a.cmd(&["PUBLISH", ch, data]);
    }
    let queue = || value(&prom, "celery_queue_length", &[("queue_name", "celery")]);
    assert!(
        wait_until(Duration::from_secs(10), || {
            value(&prom, "celery_task_succeeded_total", &[]) == Some(12.0) && queue() == Some(1.0)
        }),
        "{}",
        agent.output()
    );

    // The first broker dies for good: both receivers move to the second one.
    a.kill();
    assert!(
        wait_until(Duration::from_secs(20), || queue() == Some(2.0)),
        "queue lengths from the second broker\n{}",
        agent.output()
    );
    assert!(connected(1.0), "{}", agent.output());
    for (ch, data) in &envs {
        b.cmd(&["PUBLISH", ch, data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || value(
            &prom,
            "celery_task_succeeded_total",
            &[]
        ) == Some(24.0)),
        "counters continue on the second broker\n{}",
        agent.output()
    );
    assert!(value(&tel, "celeriac_celery_redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        agent.stderr().contains(&format!("127.0.0.1:{}", b.port())),
        "{}",
        agent.output()
    );
}
