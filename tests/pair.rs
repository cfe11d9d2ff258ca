//! Two agents on one Redis, one leader (`celery_correlate.leader_election`).
//!
//! * `sigkill_of_the_leader_loses_nothing_and_resets_nothing`: a real worker, a real Prometheus
//!   (remote write) and an OTLP sink. Exactly one agent reports `celeriac_leader 1`; the first
//!   tasks reach Prometheus and the sink once; the leader is SIGKILLed while a task runs; the
//!   standby leads within the lease, the task that finished during the handover reaches the sink
//!   (replayed), the next tasks arrive, `resets()` over every counter is 0 and the counts exact.
//! * `clean_shutdown_hands_over_in_under_a_second`: SIGTERM to the leader; it releases the lock
//!   after its final flush and the standby leads in under a second.
//! * `redis_unreachable_longer_than_the_lease_silences_both`: Redis is stopped for longer than the
//!   lease: the leader fences itself, the standby cannot take the lock, nobody exports and there
//!   are never two leaders; when Redis is back one of them leads again and exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::spans::{spans, SpanJ};
use support::*;

const LEASE_MS: u64 = 3000;

struct Sinks<'a> {
    write_url: Option<&'a str>,
    otlp: Option<&'a str>,
}

/// celery_redis → celery_correlate (leader election) → remote write (metrics) and OTLP (spans,
/// and metrics when there is no remote write).
fn config(redis_url: &str, key: &str, telemetry: u16, scrape: u16, sinks: &Sinks) -> String {
    let correlate = format!(
        "metrics_interval: 200ms\nleader_election:\n  endpoint: {redis_url}\n  lease: {LEASE_MS}ms\n  key: {key}"
    );
    let mut cfg = AgentConfig::celery(redis_url, &correlate, telemetry)
        .exporter("prometheus", &format!("endpoint: 127.0.0.1:{scrape}"));
    let mut metrics_to = vec!["prometheus"];
    let mut traces_to = Vec::new();
    if let Some(w) = sinks.write_url {
        cfg = cfg.exporter(
            "prometheus_remote_write",
            &format!("endpoint: {w}\nexternal_labels: {{ cluster: pair }}"),
        );
        metrics_to.push("prometheus_remote_write");
    }
    if let Some(o) = sinks.otlp {
        cfg = cfg.exporter("otlp", &format!("endpoint: {o}\ntimeout: 2s"));
        traces_to.push("otlp");
        if sinks.write_url.is_none() {
            metrics_to.push("otlp");
        }
    }
    cfg = cfg.pipeline("metrics", &["celery_correlate"], &metrics_to);
    if !traces_to.is_empty() {
        cfg = cfg.pipeline("traces", &["celery_correlate"], &traces_to);
    }
    cfg.yaml()
}

struct Member {
    agent: Agent,
    telemetry: String,
    scrape: String,
}

impl Member {
    fn start(redis_url: &str, key: &str, sinks: &Sinks) -> Member {
        let (port, scrape) = (free_port(), free_port());
        let agent = Agent::start(bin(), &config(redis_url, key, port, scrape, sinks));
        Member {
            agent,
            telemetry: format!("127.0.0.1:{port}"),
            scrape: format!("127.0.0.1:{scrape}"),
        }
    }

    /// The scrape exporter's status: 200 on the leader, 503 on the standby.
    fn scrape_status(&self) -> Option<u16> {
        http_get(&self.scrape, "/metrics").map(|r| r.0)
    }

    /// `celeriac_leader` as the agent's telemetry reports it (None: not answering).
    fn leader(&self) -> Option<f64> {
        leader_of(&self.telemetry)
    }

    fn own(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let page = http_get(&self.telemetry, "/metrics")?.1;
        metric_value(&parse_prometheus_text(&page), name, labels)
    }
}

fn leader_of(addr: &str) -> Option<f64> {
    let page = http_get(addr, "/metrics")?.1;
    metric_value(
        &parse_prometheus_text(&page),
        "celeriac_leader",
        &[("component", "connector/celery_correlate")],
    )
}

/// Waits until exactly one of the pair reports `celeriac_leader 1` and the other 0; returns the
/// leader's index.
fn one_leader(pair: &[&Member; 2], within: Duration) -> usize {
    let mut seen = (None, None);
    let ok = wait_until(within, || {
        seen = (pair[0].leader(), pair[1].leader());
        matches!(seen, (Some(a), Some(b)) if a + b == 1.0)
    });
    assert!(
        ok,
        "exactly one leader expected, got {seen:?}\n--- a:\n{}\n--- b:\n{}",
        pair[0].agent.output(),
        pair[1].agent.output()
    );
    if seen.0 == Some(1.0) {
        0
    } else {
        1
    }
}

/// Polls both agents' `celeriac_leader` every 25 ms in the background and records any moment
/// both said 1.
struct TwoLeaderWatch {
    stop: Arc<AtomicBool>,
    both: Arc<Mutex<Vec<Duration>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TwoLeaderWatch {
    fn start(a: &str, b: &str) -> TwoLeaderWatch {
        let (a, b) = (a.to_string(), b.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let both = Arc::new(Mutex::new(Vec::new()));
        let (s, w) = (stop.clone(), both.clone());
        let t0 = Instant::now();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if leader_of(&a) == Some(1.0) && leader_of(&b) == Some(1.0) {
                    w.lock().unwrap().push(t0.elapsed());
                }
                sleep(Duration::from_millis(25));
            }
        });
        TwoLeaderWatch {
            stop,
            both,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.both.lock().unwrap().clone()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The task spans (`celery.task_id` set) at the sink, by task id.
fn task_spans(sink: &OtlpSink) -> BTreeMap<String, Vec<SpanJ>> {
    let mut m: BTreeMap<String, Vec<SpanJ>> = BTreeMap::new();
    for s in spans(sink) {
        let id = s.attr("celery.task_id").to_string();
        if !id.is_empty() {
            m.entry(id).or_default().push(s);
        }
    }
    m
}

fn prom_sum(prom: &PrometheusServer, q: &str) -> Option<f64> {
    prom.query(q)?.first().map(|r| r.1)
}

#[test]
fn sigkill_of_the_leader_loses_nothing_and_resets_nothing() {
    let started = Instant::now();
    let prom = PrometheusServer::start();
    let redis = RedisServer::start();
    let sink = OtlpSink::start(0);
    let (write_url, otlp) = (prom.write_url(), sink.endpoint());
    let sinks = Sinks {
        write_url: Some(&write_url),
        otlp: Some(&otlp),
    };
    let mut members = vec![
        Member::start(&redis.url(), "celeriac:leader:test", &sinks),
        Member::start(&redis.url(), "celeriac:leader:test", &sinks),
    ];
    let lead = one_leader(&[&members[0], &members[1]], Duration::from_secs(20));
    let watch = TwoLeaderWatch::start(&members[0].telemetry, &members[1].telemetry);
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));

    // 1. The leader alone exports: the chain's three tasks, once each.
    let first = run_client(&redis.url(), &["chain", "--wait", "30"]);
    let first_ids = client_ids(&first);
    assert!(
        wait_until(Duration::from_secs(20), || {
            prom_sum(&prom, "sum(celery_task_succeeded_total)") == Some(3.0)
                && first_ids
                    .iter()
                    .all(|id| task_spans(&sink).contains_key(id))
        }),
        "first chain in Prometheus and at the sink\n{}",
        members[lead].agent.output()
    );
    sleep(Duration::from_millis(600));
    let by_task = task_spans(&sink);
    for id in &first_ids {
        let ss = &by_task[id];
        let unique: BTreeSet<_> = ss.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(
            unique.len(),
            ss.len(),
            "each span once before the takeover: {ss:#?}"
        );
    }
    let standby = 1 - lead;
    let dropped = members[standby]
        .own(
            "celeriac_correlate_standby_dropped_items_total",
            &[
                ("component", "connector/celery_correlate"),
                ("signal", "traces"),
            ],
        )
        .unwrap_or(0.0);
    assert!(
        dropped >= 3.0,
        "the standby built and dropped the spans: {dropped}"
    );

    // 2. A task runs while the leader dies; it finishes during the handover.
    let slow = run_client(&redis.url(), &["send", "shop.sleep", "[1.2]"]);
    let slow_id = client_ids(&slow)[0].clone();
    // Kill as soon as the leader has seen it start: it ends 1.2 s later, before the standby can
    // lead (at least 3/4 of the lease after the leader's last renewal).
    assert!(
        wait_until(Duration::from_secs(10), || {
            scrape(&members[lead].scrape).is_some_and(|s| {
                metric_value(&s, "celery_task_started_total", &[("name", "shop.sleep")])
                    == Some(1.0)
            })
        }),
        "the slow task started\n{}",
        members[lead].agent.output()
    );
    let killed_at = now_ns();
    let t_kill = Instant::now();
    members[lead].agent.kill();
    let mut took = None;
    assert!(
        wait_until(Duration::from_millis(LEASE_MS + 2000), || {
            if members[standby].leader() == Some(1.0) {
                took = Some(t_kill.elapsed());
                true
            } else {
                false
            }
        }),
        "the standby leads within the lease\n{}",
        members[standby].agent.output()
    );
    let took = took.expect("takeover time");
    let led_at = now_ns();
    eprintln!("SIGKILL takeover: standby led {took:?} after the kill (lease {LEASE_MS} ms)");
    assert!(took <= Duration::from_millis(LEASE_MS + 300), "{took:?}");

    // 3. The next tasks arrive through the new leader.
    let third = run_client(&redis.url(), &["chain", "--wait", "30"]);
    let third_ids = client_ids(&third);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let ts = task_spans(&sink);
            prom_sum(&prom, "sum(celery_task_succeeded_total)") == Some(7.0)
                && third_ids.iter().all(|id| ts.contains_key(id))
                && ts.contains_key(&slow_id)
        }),
        "after the takeover: counts {:?}, slow task spans {:?}\n{}",
        prom_sum(&prom, "sum(celery_task_succeeded_total)"),
        task_spans(&sink).get(&slow_id).map(Vec::len),
        members[standby].agent.output()
    );
    // The slow task ended while nobody led, and its spans still reached the sink (replay).
    let ts = task_spans(&sink);
    let slow_end = ts[&slow_id].iter().map(|s| s.end).max().unwrap_or(0);
    assert!(
        slow_end > killed_at && slow_end < led_at,
        "the slow task should have finished during the handover: end {slow_end}, kill {killed_at}, led {led_at}"
    );
    let replayed = members[standby]
        .own(
            "celeriac_correlate_replayed_items_total",
            &[("component", "connector/celery_correlate")],
        )
        .unwrap_or(0.0);
    assert!(replayed >= 1.0, "replayed {replayed}");
    // Duplicates, if any, carry the same ids: every task has one span id per phase.
    for id in third_ids.iter().chain(&first_ids).chain([&slow_id]) {
        let names: BTreeMap<String, BTreeSet<String>> =
            ts[id].iter().fold(BTreeMap::new(), |mut m, s| {
                m.entry(s.name.clone())
                    .or_default()
                    .insert(s.span_id.clone());
                m
            });
        assert!(
            names.values().all(|ids| ids.len() == 1),
            "one span id per span name for {id}: {names:?}"
        );
    }

    // 4. Counters: continuous (no reset) and exact.
    sleep(Duration::from_millis(1000));
    for (metric, want) in [
        ("celery_task_sent_total", 7.0),
        ("celery_task_received_total", 7.0),
        ("celery_task_started_total", 7.0),
        ("celery_task_succeeded_total", 7.0),
    ] {
        assert_eq!(
            prom_sum(&prom, &format!("sum({metric})")),
            Some(want),
            "{metric}"
        );
        // resets() drops the name, so one query per counter.
        assert_eq!(
            prom_sum(&prom, &format!("sum(resets({metric}[10m]))")),
            Some(0.0),
            "resets of {metric}"
        );
    }
    let both = watch.finish();
    assert!(both.is_empty(), "two leaders at {both:?}");
    members[standby].agent.terminate();
    assert!(members[standby]
        .agent
        .wait_exit(Duration::from_secs(15))
        .is_some());
    drop(members);
    eprintln!("pair SIGKILL test took {:?}", started.elapsed());
}

#[test]
fn clean_shutdown_hands_over_in_under_a_second() {
    let redis = RedisServer::start();
    let sinks = Sinks {
        write_url: None,
        otlp: None,
    };
    let mut members = [
        Member::start(&redis.url(), "celeriac:leader:clean", &sinks),
        Member::start(&redis.url(), "celeriac:leader:clean", &sinks),
    ];
    let mut timings = Vec::new();
    // Twice: the first leader hands over, restarts as standby, and gets the lock back.
    for round in 0..2 {
        let lead = one_leader(&[&members[0], &members[1]], Duration::from_secs(20));
        let standby = 1 - lead;
        // Only the leader's scrape page answers; the standby's says 503.
        assert_eq!(members[lead].scrape_status(), Some(200));
        let (code, body) = http_get(&members[standby].scrape, "/metrics").expect("standby scrape");
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("standby"), "{body}");
        let t = Instant::now();
        members[lead].agent.terminate();
        let mut took = None;
        let ok = wait_until(Duration::from_secs(5), || {
            if members[standby].leader() == Some(1.0) {
                took = Some(t.elapsed());
                true
            } else {
                false
            }
        });
        assert!(ok, "no takeover\n{}", members[standby].agent.output());
        let took = took.expect("time");
        assert!(
            members[lead]
                .agent
                .wait_exit(Duration::from_secs(15))
                .is_some(),
            "leader exits"
        );
        let out = members[lead].agent.output();
        assert!(out.contains("lock released"), "{out}");
        eprintln!("clean shutdown takeover (round {round}): {took:?}");
        assert!(took < Duration::from_secs(1), "takeover took {took:?}");
        assert_eq!(
            members[standby].scrape_status(),
            Some(200),
            "the new leader's page"
        );
        timings.push(took);
        members[lead] = Member::start(&redis.url(), "celeriac:leader:clean", &sinks);
    }
    eprintln!("clean shutdown takeovers: {timings:?}");
}

#[test]
fn redis_unreachable_longer_than_the_lease_silences_both() {
    let mut redis = RedisServer::start();
    let sink = OtlpSink::start(0);
    let otlp = sink.endpoint();
    let sinks = Sinks {
        write_url: None,
        otlp: Some(&otlp),
    };
    let members = [
        Member::start(&redis.url(), "celeriac:leader:outage", &sinks),
        Member::start(&redis.url(), "celeriac:leader:outage", &sinks),
    ];
    let lead = one_leader(&[&members[0], &members[1]], Duration::from_secs(20));
    let watch = TwoLeaderWatch::start(&members[0].telemetry, &members[1].telemetry);
    // A worker, so the correlators have series to export every 200 ms.
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let metrics_requests = || {
        sink.requests()
            .iter()
            .filter(|r| r["signal"] == "metrics")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || metrics_requests() > 0),
        "the leader exports metrics"
    );

    let t_down = Instant::now();
    redis.kill();
    // The leader fences itself within 3/4 of the lease after its last renewal.
    let mut fenced = None;
    assert!(
        wait_until(Duration::from_millis(LEASE_MS + 1000), || {
            if members[lead].leader() == Some(0.0) {
                fenced = Some(t_down.elapsed());
                true
            } else {
                false
            }
        }),
        "the leader stops leading without Redis\n{}",
        members[lead].agent.output()
    );
    let fenced = fenced.expect("fenced");
    eprintln!("Redis down: leader fenced after {fenced:?} (lease {LEASE_MS} ms)");
    assert!(
        fenced <= Duration::from_millis(LEASE_MS * 3 / 4 + 300),
        "{fenced:?}"
    );
    // Let what was already past the gate drain, then nobody exports for the rest of the outage.
    sleep(Duration::from_millis(500));
    let before = metrics_requests();
    let dropped_before: Vec<f64> = members
        .iter()
        .map(|m| {
            m.own(
                "celeriac_correlate_standby_dropped_items_total",
                &[
                    ("component", "connector/celery_correlate"),
                    ("signal", "metrics"),
                ],
            )
            .unwrap_or(0.0)
        })
        .collect();
    while t_down.elapsed() < Duration::from_millis(LEASE_MS * 2) {
        assert_eq!(members[0].leader(), Some(0.0));
        assert_eq!(members[1].leader(), Some(0.0));
        assert_eq!(members[0].scrape_status(), Some(503));
        assert_eq!(members[1].scrape_status(), Some(503));
        sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metrics_requests(),
        before,
        "nobody exports while Redis is down"
    );
    for (m, b) in members.iter().zip(dropped_before) {
        let now = m
            .own(
                "celeriac_correlate_standby_dropped_items_total",
                &[
                    ("component", "connector/celery_correlate"),
                    ("signal", "metrics"),
                ],
            )
            .unwrap_or(0.0);
        assert!(now > b, "both drop their output, counted: {b} -> {now}");
    }

    // Redis back: one leader again, exporting.
    let t_up = Instant::now();
    redis.restart();
    let again = one_leader(&[&members[0], &members[1]], Duration::from_secs(15));
    eprintln!("Redis back: agent {again} leads after {:?}", t_up.elapsed());
    assert!(
        wait_until(Duration::from_secs(10), || metrics_requests() > before),
        "exports resume"
    );
    let both = watch.finish();
    assert!(both.is_empty(), "two leaders at {both:?}");
}
