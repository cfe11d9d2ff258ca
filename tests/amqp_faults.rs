//! Faults of a RabbitMQ broker, each test in a vhost of its own: the server closes every
//! connection mid-flood (`rabbitmqctl close_all_connections`) → the receivers reconnect, the gap
//! is counted, nothing published after the reconnect is lost; the vhost is deleted → clear
//! error, retries, no crash, and consumption resumes once it exists again; the agent's own
//! event connection closed while a real worker runs tasks → the `task-started` events lost in
//! the gaps are exactly what the worker's heartbeats show as missed.

mod support;

use std::path::Path;
use std::time::Duration;

use support::rabbitmq::{
    amqp_tool, await_consuming, await_sample, await_sent, close_connections_named, publish_sent,
    rabbitmqctl, value, Vhost,
};
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn config(url: &str, prom: u16, telemetry: u16) -> String {
    AgentConfig::amqp(
        &format!("endpoint: {url}"),
        &format!("endpoint: {url}\nqueues: [celery]\ninterval: 200ms"),
        prom,
        telemetry,
    )
    .yaml()
}

/// A vhost of its own and the agent on it (the [`config`] above): `(vhost, its URL, the
/// agent's Prometheus address, its telemetry address, the agent)`.
fn start(vhost: &str) -> (Vhost, String, String, String, Agent) {
    let vhost = Vhost::create(vhost);
    let url = vhost.url();
    let (prom, tel) = (free_port(), free_port());
    let agent = Agent::start(bin(), &config(&url, prom, tel));
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    (vhost, url, prom_addr, tel_addr, agent)
}

/// Waits up to 10 s for the `amqp_queues` receiver to have read the `celery` queue's depth.
fn await_queue_polled(agent: &Agent, prom_addr: &str) {
    await_sample(
        agent,
        10,
        prom_addr,
        "celery_queue_length",
        &[("queue_name", "celery")],
        |_| true,
    );
}

#[test]
fn connections_closed_by_the_server_mid_flood_reconnect_and_lose_nothing_after() {
    let (vhost, url, prom_addr, tel_addr, mut agent) = start("close");
    await_consuming(&agent, &tel_addr);

    // A flood from another thread; the server closes every connection in the middle of it.
    let flood_url = url.clone();
    let flood = std::thread::spawn(move || amqp_tool(&[&flood_url, "flood", "4", "flood.before"]));
    std::thread::sleep(Duration::from_millis(1500));
    rabbitmqctl(&[
        "close_all_connections",
        "-p",
        &vhost.name,
        "test: server closes",
    ]);
    let flooded = flood.join().expect("flood thread");
    assert!(
        flooded["published"].as_u64().unwrap_or(0) > 1000,
        "{flooded}"
    );

    assert!(
        wait_until(Duration::from_secs(15), || {
            value(&tel_addr, "celeriac_celery_amqp_reconnects_total", &[]) == Some(1.0)
                && value(&tel_addr, "celeriac_celery_amqp_connected", &[]) == Some(1.0)
        }),
        "reconnected\n{}",
        agent.output()
    );
    let gap = value(
        &tel_addr,
        "celeriac_celery_amqp_gap_milliseconds_total",
        &[],
    )
    .unwrap();
    assert!(gap > 0.0, "gap counted");
    let read = value(&tel_addr, "celeriac_celery_events_received_total", &[]).unwrap_or(0.0);
    eprintln!(
        "flood: {} published ({} publisher reconnects), {read} events read, gap {gap} ms",
        flooded["published"], flooded["reconnects"]
    );
    assert!(
        value(
            &tel_addr,
            "celeriac_receiver_errors_total",
            &[("reason", "connection_lost")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(agent.is_running());

    // After the reconnect: every event counted.
    publish_sent(&url, 3000, "flood.after");
    assert!(
        wait_until(Duration::from_secs(15), || value(
            &prom_addr,
            "celery_task_sent_total",
            &[("name", "flood.after")]
        ) == Some(3000.0)),
        "after the reconnect: {:?}\n{}",
        value(
            &prom_addr,
            "celery_task_sent_total",
            &[("name", "flood.after")]
        ),
        agent.output()
    );
    // The queue poller reconnected too.
    await_queue_polled(&agent, &prom_addr);
    assert!(agent
        .stderr()
        .contains("Consuming Celery events again; events published during the gap are lost."));
    agent.stop_ok(Duration::from_secs(10));
}

#[test]
fn deleted_vhost_is_a_clear_error_retried_without_a_crash() {
    let (vhost, url, prom_addr, tel_addr, mut agent) = start("gone");
    await_consuming(&agent, &tel_addr);
    vhost.delete();
    let connect_errors = || {
        value(
            &tel_addr,
            "celeriac_receiver_errors_total",
            &[("reason", "connect")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(15), || connect_errors() >= 3.0),
        "retries counted\n{}",
        agent.output()
    );
    assert!(agent.is_running(), "{}", agent.output());
    assert_eq!(
        value(&tel_addr, "celeriac_celery_amqp_connected", &[]),
        Some(0.0)
    );
    let err = agent.stderr();
    assert!(
        err.contains("Cannot consume Celery events from RabbitMQ; retrying.")
            && err.contains(&vhost.name)
            && err.contains("vhost"),
        "the error names the vhost:\n{err}"
    );
    assert!(!err.contains("guest:guest"), "no credentials in logs");

    vhost.recreate();
    assert!(
        wait_until(Duration::from_secs(20), || value(
            &tel_addr,
            "celeriac_celery_amqp_connected",
            &[]
        ) == Some(1.0)),
        "consuming again\n{}",
        agent.output()
    );
    publish_sent(&url, 50, "after.vhost");
    await_sent(&agent, &prom_addr, "after.vhost", 50.0);
    agent.stop_ok(Duration::from_secs(10));
}

#[test]
fn a_failover_list_moves_to_the_broker_that_answers() {
    let vhost = Vhost::create("failover");
    let url = vhost.url();
    let dead = format!(
        "amqp://guest:guest@127.0.0.1:{}/{}",
        free_port(),
        vhost.name
    );
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let cfg = config(&format!("[{dead}, {url}]"), prom, tel);
    let mut agent = Agent::start(bin(), &cfg);
    await_consuming(&agent, &tel_addr);
    publish_sent(&url, 20, "via.failover");
    await_sent(&agent, &prom_addr, "via.failover", 20.0);
    await_queue_polled(&agent, &prom_addr);
    assert!(!agent.stderr().contains("guest:guest"));
    agent.stop_ok(Duration::from_secs(10));
}

/// Events expire (or, with the queue gone, are never routed) while the agent has no event queue:
/// nothing can fetch them afterwards, so the loss is *counted*. The worker's heartbeats say how
/// many tasks it started (`processed`); the correlator compares that with the `task-started`
/// events it saw (`celeriac_celery_events_missed_total`), as for Redis.
#[test]
fn events_lost_in_the_gaps_show_as_missed_from_the_heartbeats() {
    let (vhost, url, prom_addr, tel_addr, agent) = start("missed");
    let connected = || value(&tel_addr, "celeriac_celery_amqp_connected", &[]) == Some(1.0);
    assert!(
        wait_until(Duration::from_secs(15), connected),
        "{}",
        agent.output()
    );
    let mut worker = CeleryWorker::start(&url, WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let host = [("hostname", "host1")];
    await_sample(&agent, 20, &prom_addr, "celery_worker_up", &host, |v| {
        v == 1.0
    });
    const TASKS: u64 = 600;
    let filled = run_client(&url, &["fill_queue", "celery", &TASKS.to_string()]);
    assert_eq!(filled["total"].as_u64(), Some(TASKS));
    let started = || {
        value(
            &prom_addr,
            "celery_task_started_total",
            &[("name", "shop.charge_card")],
        )
        .unwrap_or(0.0) as u64
    };
    // Three gaps while the worker runs the tasks: the server closes the agent's event connection.
    for k in 1..=3u64 {
        assert!(
            wait_until(Duration::from_secs(30), || started() >= k * TASKS / 5),
            "worker not running tasks\n{}",
            agent.output()
        );
        assert_eq!(
            close_connections_named(&vhost.name, "celeriac receiver/celery_amqp"),
            1
        );
        assert!(wait_until(Duration::from_secs(15), connected));
    }
    // Once the worker is done and its next heartbeats are in: missed == started − seen.
    let (mut missed, mut seen) = (None, 0);
    let settled = wait_until(Duration::from_secs(60), || {
        seen = started();
        missed = value(&prom_addr, "celeriac_celery_events_missed_total", &host);
        vhost.queues().iter().any(|q| q.0 == "celery" && q.1 == 0)
            && missed.is_some_and(|m| m > 0.0 && m as u64 + seen == TASKS)
    });
    assert!(
        settled,
        "missed {missed:?}, seen {seen} of {TASKS}\n{}",
        agent.output()
    );
    assert!(
        value(&tel_addr, "celeriac_celery_amqp_reconnects_total", &[]).is_some_and(|r| r >= 3.0)
    );
    assert!(value(
        &tel_addr,
        "celeriac_celery_amqp_gap_milliseconds_total",
        &[]
    )
    .is_some_and(|g| g > 0.0));
    drop(worker);
}
