//! Redis goes away mid-stream: the receiver reconnects, resubscribes, counts the gap, and the
//! task counters stay monotonic and right for everything published while it was subscribed.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(redis_url: &str, prom_addr: &str, tel: u16) -> String {
    AgentConfig::celery(redis_url, "metrics_interval: 100ms", tel)
        .exporter("prometheus", &format!("endpoint: {prom_addr}"))
        .pipeline("metrics", &["celery_correlate"], &["prometheus"])
        .yaml()
}

#[test]
fn redis_restart_resubscribes_and_counts_the_gap() {
    let mut redis = RedisServer::start();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let agent = Agent::start(bin(), &config(&redis.url(), &prom_addr, tel));
    let connected = |want: f64| {
        wait_until(Duration::from_secs(20), || {
            redis_connected_value(&tel_addr) == Some(want)
        })
    };
    assert!(connected(1.0), "{}", agent.output());
    let envs = fixture_envelopes();
    let succeeded =
        || scrape(&prom_addr).and_then(|s| metric_value(&s, "celery_task_succeeded_total", &[]));
    for (ch, data) in &envs {
        redis.cmd(&["PUBLISH", ch, data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || succeeded() == Some(12.0)),
        "{}",
        agent.output()
    );

    redis.kill();
    assert!(connected(0.0), "{}", agent.output());
    std::thread::sleep(Duration::from_millis(500));
    redis.restart();
    assert!(connected(1.0), "{}", agent.output());

    // Replay the capture (same task ids: the counters add up, they never reset).
    for (ch, data) in &envs {
        redis.cmd(&["PUBLISH", ch, data]);
    }
    assert!(
        wait_until(Duration::from_secs(10), || succeeded() == Some(24.0)),
        "{}",
        agent.output()
    );
    let t = scrape(&tel_addr).unwrap();
    assert!(metric_value(&t, "celeriac_celery_redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        metric_value(&t, "celeriac_celery_redis_gap_milliseconds_total", &[]).unwrap_or(0.0)
            >= 400.0
    );
    assert!(
        agent.stderr().contains("Resubscribed to Celery events"),
        "{}",
        agent.output()
    );
}

/// Task-succeeded events in one envelope (Celery batches events: the body is an event or a
/// list of them).
fn succeeded_in(envelope: &str) -> u64 {
    use base64::Engine as _;
    let Ok(v) = serde_json::from_str::<Value>(envelope) else {
        return 0;
    };
    let Some(body) = v["body"].as_str() else {
        return 0;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(body) else {
        return 0;
    };
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return 0;
    };
    let events = match body {
        Value::Array(a) => a,
        one => vec![one],
    };
    events
        .iter()
        .filter(|e| e["type"] == "task-succeeded")
        .count() as u64
}

/// What the flood's publisher saw: PUBLISH replies say how many subscribers got each message.
#[derive(Default)]
struct Published {
    /// Messages Redis handed to the agent's subscription (reply ≥ 1), and their
    /// task-succeeded events.
    delivered: u64,
    delivered_succeeded: u64,
    /// Messages nobody was subscribed for, or that failed while Redis was down.
    missed: u64,
}

/// One pipelined replay of `envs` on a fresh connection; counts into `p`.
fn publish_replay(port: u16, envs: &[(String, String, u64)], p: &mut Published) {
    let messages: Vec<(&str, &str)> = envs
        .iter()
        .map(|(c, d, _)| (c.as_str(), d.as_str()))
        .collect();
    for (reply, (_, _, succeeded)) in publish_pipelined(port, &messages).into_iter().zip(envs) {
        match reply {
            Some(n) if n >= 1 => {
                p.delivered += 1;
                p.delivered_succeeded += succeeded;
            }
            _ => p.missed += 1,
        }
    }
}

#[test]
fn redis_killed_during_a_flood_counts_what_arrived_and_reports_the_gap() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let mut redis = RedisServer::start_pubsub_unlimited();
    let port = redis.port();
    let (prom, tel) = (free_port(), free_port());
    let (prom_addr, tel_addr) = (format!("127.0.0.1:{prom}"), format!("127.0.0.1:{tel}"));
    let agent = Agent::start(bin(), &config(&redis.url(), &prom_addr, tel));
    let tel_value = |name: &str| {
        scrape(&tel_addr)
            .and_then(|s| metric_value(&s, name, &[]))
            .unwrap_or(0.0)
    };
    let connected = |want: f64| {
        wait_until(Duration::from_secs(20), || {
            redis_connected_value(&tel_addr) == Some(want)
        })
    };
    assert!(connected(1.0), "{}", agent.output());
    let envs: Vec<(String, String, u64)> = fixture_envelopes()
        .into_iter()
        .map(|(ch, data)| {
            let s = succeeded_in(&data);
            (ch, data, s)
        })
        .collect();
    assert_eq!(envs.iter().map(|e| e.2).sum::<u64>(), 12);
    let succeeded = || {
        scrape(&prom_addr)
            .and_then(|s| metric_value(&s, "celery_task_succeeded_total", &[]))
            .unwrap_or(0.0)
    };

    // The flood: the capture replayed every 20 ms (~4000 messages/s) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Mutex::new(Published::default()));
    let publisher = {
        let (stop, published, envs) = (stop.clone(), published.clone(), envs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut p = Published::default();
                publish_replay(port, &envs, &mut p);
                let mut total = published.lock().unwrap();
                total.delivered += p.delivered;
                total.delivered_succeeded += p.delivered_succeeded;
                total.missed += p.missed;
                drop(total);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Counters are sampled throughout: they must never go down.
    let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
    let sampler = {
        let (stop, samples, prom_addr) = (stop.clone(), samples.clone(), prom_addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = scrape(&prom_addr)
                    .and_then(|s| metric_value(&s, "celery_task_succeeded_total", &[]))
                {
                    samples.lock().unwrap().push(v);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    std::thread::sleep(Duration::from_secs(3));
    assert!(succeeded() > 0.0, "{}", agent.output());
    let killed_at = Instant::now();
    redis.kill();
    assert!(connected(0.0), "{}", agent.output());
    std::thread::sleep(Duration::from_secs(2));
    redis.restart();
    let restarted_at = Instant::now();
    let down = killed_at.elapsed();
    assert!(connected(1.0), "{}", agent.output());
    let resubscribed_in = restarted_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    sampler.join().unwrap();

    let p = std::mem::take(&mut *published.lock().unwrap());
    // Let the agent finish what it received.
    let mut last = (-1.0, -1.0);
    assert!(wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = (tel_value("celeriac_celery_messages_total"), succeeded());
        std::mem::replace(&mut last, now) == now
    }));
    let (agent_messages, counted) = last;
    // Messages Redis had accepted for the agent but had not written out when it was killed.
    let lost_in_flight = p.delivered.saturating_sub(agent_messages as u64);
    let counted = counted as u64;
    let samples = samples.lock().unwrap().clone();
    assert!(
        samples.windows(2).all(|w| w[0] <= w[1]),
        "celery_task_succeeded_total went down: {samples:?}"
    );
    assert!(
        p.missed > 0,
        "Redis was down: some messages must have missed the agent"
    );
    assert!(
        counted <= p.delivered_succeeded,
        "{counted} > {}",
        p.delivered_succeeded
    );
    assert!(
        counted + lost_in_flight * 12 >= p.delivered_succeeded,
        "counted {counted}, delivered {} (lost in flight {lost_in_flight})",
        p.delivered_succeeded
    );
    assert!(lost_in_flight <= 200, "lost in flight: {lost_in_flight}");
    let t = scrape(&tel_addr).unwrap();
    let gap_ms =
        metric_value(&t, "celeriac_celery_redis_gap_milliseconds_total", &[]).unwrap_or(0.0);
    assert!(metric_value(&t, "celeriac_celery_redis_reconnects_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(gap_ms >= 1500.0, "gap {gap_ms} ms for a {down:?} outage");
    eprintln!(
        "FIGURES redis_down={down:?} resubscribed_after_restart={resubscribed_in:?} gap_reported_ms={gap_ms} \
         messages_delivered_by_redis={} messages_missed={} agent_messages={agent_messages} \
         lost_in_flight={lost_in_flight} succeeded_delivered={} succeeded_counted={counted} samples={}",
        p.delivered,
        p.missed,
        p.delivered_succeeded,
        samples.len()
    );
}
