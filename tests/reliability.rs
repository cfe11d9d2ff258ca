//! Faults end to end: the OTLP backend down then back with the file sending queue, the agent
//! SIGKILLed with a non-empty file queue, a file queue that fills up, 10× overload against the
//! memory_limiter, and the limiter's refusals as OTLP/gRPC and celery_redis see them.
//!
//! The outage lasts `CELERIAC_TEST_OUTAGE_SECS` (default 15 s; RELIABILITY.md reports a 60 s
//! run), the overload `CELERIAC_TEST_OVERLOAD_SECS` (default 30 s).

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::*;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// An OTLP/protobuf traces request of `spans` spans named `seq-<seq>-<i>`.
fn traces_request(seq: u32, spans: u32, pad: usize) -> Vec<u8> {
    let spans = (0..spans)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&seq.to_be_bytes());
            span_id[4..].copy_from_slice(&(i + 1).to_be_bytes());
            Span {
                trace_id: [7u8; 16].to_vec(),
                span_id: span_id.to_vec(),
                name: format!("seq-{seq:06}-{i}{}", "#".repeat(pad)),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_100_000_000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Span names the sink received, in the order it received them.
fn received_names(sink: &OtlpSink) -> Vec<String> {
    let mut out = Vec::new();
    for r in sink.requests() {
        for s in spans::request_spans(&r) {
            if let Some(n) = s["name"].as_str() {
                out.push(n.to_string());
            }
        }
    }
    out
}

/// The batch sequence numbers in first-arrival order, and how many spans arrived twice.
fn first_arrivals(names: &[String]) -> (Vec<u32>, usize) {
    let mut batches = HashSet::new();
    let mut spans = HashSet::new();
    let mut order = Vec::new();
    let mut dups = 0;
    for n in names {
        let seq: u32 = n[4..10].parse().unwrap();
        if batches.insert(seq) {
            order.push(seq);
        }
        if !spans.insert(n.as_str()) {
            dups += 1;
        }
    }
    (order, dups)
}

fn post_traces(addr: &str, body: &[u8]) -> Option<u16> {
    http_post(addr, "/v1/traces", "application/x-protobuf", body).map(|r| r.status)
}

struct Ports {
    otlp: String,
    tel: String,
}

fn file_queue_config(ports: &Ports, sink: &str, dir: &Path) -> String {
    format!(
        "receivers:
  otlp:
    grpc: {{ enabled: false }}
    http: {{ endpoint: {otlp} }}
exporters:
  otlp:
    endpoint: {sink}
    compression: none
    timeout: 2s
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s }}
    sending_queue: {{ storage: file, directory: {dir}, max_size_mib: 64, num_consumers: 1 }}
service:
  telemetry: {{ endpoint: {tel} }}
  shutdown_timeout: 5s
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
",
        otlp = ports.otlp,
        tel = ports.tel,
        dir = dir.display()
    )
}

fn ports() -> Ports {
    Ports {
        otlp: format!("127.0.0.1:{}", free_port()),
        tel: format!("127.0.0.1:{}", free_port()),
    }
}

fn telemetry_value(addr: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape(addr).and_then(|s| metric_value(&s, name, labels))
}

fn wait_ready(agent: &Agent, ports: &Ports) {
    assert!(
        wait_until(Duration::from_secs(20), || http_get(&ports.tel, "/healthz")
            .is_some_and(|(s, _)| s == 200)),
        "{}",
        agent.output()
    );
}

#[test]
fn backend_outage_with_file_queue_loses_nothing_and_keeps_order() {
    let outage = env_secs("CELERIAC_TEST_OUTAGE_SECS", 15);
    let mut sink = OtlpSink::start(0);
    let queue = tempfile::tempdir().unwrap();
    let p = ports();
    let agent = Agent::start(
        bin(),
        &file_queue_config(&p, &sink.endpoint(), queue.path()),
    );
    wait_ready(&agent, &p);

    let mut seq = 0u32;
    let send = |seq: &mut u32| {
        assert_eq!(
            post_traces(&p.otlp, &traces_request(*seq, 3, 0)),
            Some(200),
            "{}",
            agent.output()
        );
        *seq += 1;
    };
    for _ in 0..20 {
        send(&mut seq);
    }
    assert!(
        wait_until(Duration::from_secs(10), || received_names(&sink).len()
            == 60),
        "{}",
        agent.output()
    );

    // The backend goes away; the agent keeps accepting at ~20 batches/s.
    sink.kill();
    let down_at = Instant::now();
    let mut peak_queued = 0.0f64;
    while down_at.elapsed() < outage {
        send(&mut seq);
        std::thread::sleep(Duration::from_millis(50));
        if seq % 20 == 0 {
            let q = telemetry_value(&p.tel, "celeriac_exporter_queue_batches", &[]).unwrap_or(0.0);
            peak_queued = peak_queued.max(q);
        }
    }
    let sent_during_outage = seq - 20;
    sink.restart();
    let back_at = Instant::now();
    let total = seq as usize * 3;
    assert!(
        wait_until(Duration::from_secs(60), || received_names(&sink).len()
            >= total),
        "received {} of {total} spans\n{}",
        received_names(&sink).len(),
        agent.output()
    );
    let recovered_in = back_at.elapsed();
    let names = received_names(&sink);
    let (order, dups) = first_arrivals(&names);
    assert_eq!(
        order,
        (0..seq).collect::<Vec<_>>(),
        "lost or reordered batches"
    );
    let t = scrape(&p.tel).unwrap();
    let dropped: f64 = t
        .iter()
        .filter(|s| s.0 == "celeriac_exporter_dropped_items_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(dropped, 0.0, "{}", agent.output());
    assert!(peak_queued >= 10.0, "queue gauge peaked at {peak_queued}");
    eprintln!(
        "FIGURES outage={outage:?} batches_during_outage={sent_during_outage} spans_total={total} \
         lost=0 duplicate_spans={dups} peak_queued_batches={peak_queued} \
         all_delivered_after_backend_back={recovered_in:?}"
    );
}

#[test]
fn sigkill_with_a_non_empty_file_queue_replays_on_restart() {
    let mut sink = OtlpSink::start(0);
    sink.kill();
    let queue = tempfile::tempdir().unwrap();
    let p = ports();
    let cfg = file_queue_config(&p, &sink.endpoint(), queue.path());
    let mut agent = Agent::start(bin(), &cfg);
    wait_ready(&agent, &p);
    let n = 100u32;
    for seq in 0..n {
        assert_eq!(
            post_traces(&p.otlp, &traces_request(seq, 2, 0)),
            Some(200),
            "{}",
            agent.output()
        );
    }
    // One batch is in flight (retrying), the rest wait on disk.
    assert!(
        wait_until(Duration::from_secs(10), || telemetry_value(
            &p.tel,
            "celeriac_exporter_queue_batches",
            &[]
        ) == Some(f64::from(n - 1))),
        "{}",
        agent.output()
    );
    agent.kill();
    // A torn write at the tail of the newest segment, as a crash mid-append leaves it.
    let qdir = queue.path().join("otlp");
    let mut segs: Vec<_> = std::fs::read_dir(&qdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let newest = segs.last().expect("a segment file");
    let mut bytes = std::fs::read(newest).unwrap();
    bytes.extend_from_slice(&[9, 0, 0, 0, 2, 0]);
    std::fs::write(newest, bytes).unwrap();

    sink.restart();
    let restarted = Instant::now();
    let agent = Agent::start(bin(), &cfg);
    assert!(
        wait_until(Duration::from_secs(30), || received_names(&sink).len()
            >= n as usize * 2),
        "received {} spans\n{}",
        received_names(&sink).len(),
        agent.output()
    );
    let replayed_in = restarted.elapsed();
    let (order, dups) = first_arrivals(&received_names(&sink));
    assert_eq!(order, (0..n).collect::<Vec<_>>());
    assert!(
        agent
            .stderr()
            .contains("Replaying batches queued by a previous run"),
        "{}",
        agent.output()
    );
    assert!(
        agent.stderr().contains("torn or corrupt tail"),
        "{}",
        agent.output()
    );
    eprintln!(
        "FIGURES batches_queued_at_kill={n} lost=0 duplicate_spans={dups} replayed_within={replayed_in:?}"
    );
}

/// VmHWM (peak resident set) and VmRSS of a process, in bytes.
fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // "VmHWM:\t  123456 kB"
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = l[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The backend takes 10 batches/s (a 100 ms pause per call); eight clients offer 100 batches/s
/// together (10×), each on a fixed 80 ms schedule whatever the answer. The memory_limiter must keep the peak RSS under `limit_mib`, refuse with
/// 503 + `reason="memory_limit"`, deliver everything it accepted, and accept again on its own.
#[test]
fn overload_stays_under_the_memory_limit_counts_refusals_and_recovers() {
    let duration = env_secs("CELERIAC_TEST_OVERLOAD_SECS", 30);
    let limit_mib = 120u64;
    let sink = OtlpSink::start_with_args(0, &["--delay-ms", "100"]);
    let p = ports();
    let cfg = format!(
        "receivers:
  otlp:
    grpc: {{ enabled: false }}
    http: {{ endpoint: {otlp} }}
processors:
  memory_limiter: {{ check_interval: 50ms, limit_mib: {limit_mib}, spike_limit_mib: 40 }}
exporters:
  otlp:
    endpoint: {sink}
    compression: none
    timeout: 10s
    retry_on_failure: {{ initial_interval: 100ms, max_interval: 1s, max_elapsed_time: 0s }}
    sending_queue: {{ queue_size: 100000, num_consumers: 1 }}
service:
  telemetry: {{ endpoint: {tel} }}
  channel_capacity: 64
  pipelines:
    traces: {{ receivers: [otlp], processors: [memory_limiter], exporters: [otlp] }}
",
        otlp = p.otlp,
        tel = p.tel,
        sink = sink.endpoint()
    );
    let agent = Agent::start(bin(), &cfg);
    wait_ready(&agent, &p);
    let pid = agent.pid().unwrap();
    let (_, rss_idle) = memory_of(pid).unwrap();

    // ~190 KiB per request, 200 spans: the backend's 10 calls/s take ~1.9 MiB/s.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted_spans = Arc::new(AtomicU64::new(0));
    let (ok, refused, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let clients: Vec<_> = (0..8u32)
        .map(|c| {
            let (stop, accepted_spans, ok, refused, other) = (
                stop.clone(),
                accepted_spans.clone(),
                ok.clone(),
                refused.clone(),
                other.clone(),
            );
            let addr = p.otlp.clone();
            std::thread::spawn(move || {
                let body = traces_request(c * 1_000_000, 200, 900);
                let every = Duration::from_millis(80);
                let mut next = Instant::now() + every * c / 8;
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += every;
                    match post_traces(&addr, &body) {
                        Some(200) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            accepted_spans.fetch_add(200, Ordering::Relaxed);
                        }
                        // A polite client would wait Retry-After; these keep their pace.
                        Some(503) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut peak_rss = 0u64;
    let mut refusing_seen = false;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(200));
        if let Some((_, rss)) = memory_of(pid) {
            peak_rss = peak_rss.max(rss);
        }
        refusing_seen |=
            telemetry_value(&p.tel, "celeriac_memory_limiter_refusing", &[]) == Some(1.0);
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let flood = started.elapsed();
    let (hwm, _) = memory_of(pid).unwrap();
    let offered = ok.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
    let offered_rate = offered as f64 / flood.as_secs_f64();
    let t = scrape(&p.tel).unwrap();
    let refused_memory = metric_value(
        &t,
        "celeriac_receiver_refused_requests_total",
        &[("protocol", "http"), ("reason", "memory_limit")],
    )
    .unwrap_or(0.0);
    let refused_full = metric_value(
        &t,
        "celeriac_receiver_refused_requests_total",
        &[("protocol", "http"), ("reason", "pipeline_full")],
    )
    .unwrap_or(0.0);
    // Items refused after decoding (the gate closed while the request was read); requests
    // refused before decoding are counted as requests only.
    let refused_items =
        telemetry_value(&p.tel, "celeriac_memory_limiter_refused_items_total", &[]).unwrap_or(0.0);

    assert!(
        hwm < limit_mib << 20,
        "peak RSS {} MiB over the {limit_mib} MiB limit\n{}",
        hwm >> 20,
        agent.output()
    );
    assert!(
        refusing_seen,
        "the limiter never refused\n{}",
        agent.output()
    );
    assert!(
        offered_rate >= 95.0,
        "offered only {offered_rate:.0} requests/s: not 10× the backend's 10/s"
    );
    assert!(refused_memory > 0.0, "{}", agent.output());
    assert_eq!(
        (refused_memory + refused_full) as u64,
        refused.load(Ordering::Relaxed)
    );
    assert!(refused_items as u64 <= refused_memory as u64 * 200);
    assert_eq!(other.load(Ordering::Relaxed), 0);

    // Recovery without help: the queue drains to the backend, memory falls under the soft
    // limit, requests are accepted again.
    let recover_start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(120), || {
            telemetry_value(&p.tel, "celeriac_memory_limiter_refusing", &[]) == Some(0.0)
                && post_traces(&p.otlp, &traces_request(9_999_999, 1, 0)) == Some(200)
        }),
        "never accepted again\n{}",
        agent.output()
    );
    let recovered_in = recover_start.elapsed();
    accepted_spans.fetch_add(1, Ordering::Relaxed);
    let want = accepted_spans.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(300), || telemetry_value(
            &p.tel,
            "celeriac_exporter_sent_items_total",
            &[]
        )
        .unwrap_or(0.0)
            >= want as f64),
        "accepted {want} spans, delivered {:?}\n{}",
        telemetry_value(&p.tel, "celeriac_exporter_sent_items_total", &[]),
        agent.output()
    );
    let drained_in = recover_start.elapsed();
    eprintln!(
        "FIGURES limit_mib={limit_mib} idle_rss_mib={} peak_rss_mib={} (sampled {}) flood={flood:?} \
         offered_req_per_s={offered_rate:.0} backend_req_per_s=10 accepted_req={} refused_req={} \
         refused_memory_limit={refused_memory} refused_pipeline_full={refused_full} refused_items={refused_items} accepting_again_after={recovered_in:?} \
         all_accepted_delivered_after={drained_in:?}",
        rss_idle >> 20,
        hwm >> 20,
        peak_rss >> 20,
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
}

/// The pipeline `pipeline` from `receiver` (with `body`) through a memory_limiter of 1 MiB (it
/// refuses from its first check on) into `debug`; telemetry on `tel`.
fn memory_limited(pipeline: &str, receiver: &str, body: &str, tel: &str) -> String {
    AgentConfig::new()
        .receiver(receiver, body)
        .processor("memory_limiter", "{ check_interval: 20ms, limit_mib: 1 }")
        .exporter("debug", "{}")
        .telemetry_endpoint(tel)
        .pipeline_with(pipeline, &[receiver], &["memory_limiter"], &["debug"])
        .yaml()
}

/// celery_redis cannot make Redis wait: while a memory_limiter refuses, the events it reads are
/// dropped and counted with `reason="memory_limit"` (a 1 MiB limit refuses from the first
/// check on).
#[test]
fn celery_events_refused_by_the_memory_limiter_are_counted() {
    let redis = RedisServer::start();
    let tel = format!("127.0.0.1:{}", free_port());
    let cfg = memory_limited(
        "celery",
        "celery_redis",
        &format!("{{ endpoint: {} }}", redis.url()),
        &tel,
    );
    let agent = Agent::start(bin(), &cfg);
    let value = |name: &str, labels: &[(&str, &str)]| telemetry_value(&tel, name, labels);
    assert!(
        wait_until(Duration::from_secs(20), || value(
            "celeriac_celery_redis_connected",
            &[]
        ) == Some(1.0)
            && value("celeriac_memory_limiter_refusing", &[]) == Some(1.0)),
        "{}",
        agent.output()
    );
    let lines =
        std::fs::read_to_string(repo_root().join("tests/fixtures/celery-events-redis.jsonl"))
            .unwrap();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let ch = v["channel"].as_str().unwrap();
        if ch.contains("celeryev") {
            redis.cmd(&["PUBLISH", ch, v["data"].as_str().unwrap()]);
        }
    }
    let received = || value("celeriac_celery_events_received_total", &[]).unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(10), || received() > 0.0
            && value(
                "celeriac_celery_events_dropped_total",
                &[("reason", "memory_limit")]
            ) == Some(received())),
        "received {}, dropped {:?}\n{}",
        received(),
        value(
            "celeriac_celery_events_dropped_total",
            &[("reason", "memory_limit")]
        ),
        agent.output()
    );
    let passed = value(
        "celeriac_exporter_incoming_items_total",
        &[("component", "exporter/debug")],
    )
    .unwrap_or(0.0);
    assert_eq!(passed, 0.0, "{}", agent.output());
}

/// A file queue that fills up during an outage drops its oldest batches and counts every span
/// of them: what reaches the backend plus what was counted as `queue_full` is exactly what
/// was accepted, and what is kept is the newest data, in order.
#[test]
fn a_full_file_queue_drops_the_oldest_and_counts_every_item() {
    let mut sink = OtlpSink::start(0);
    sink.kill();
    let queue = tempfile::tempdir().unwrap();
    let p = ports();
    let cfg = file_queue_config(&p, &sink.endpoint(), queue.path())
        .replace("max_size_mib: 64", "max_size_mib: 1");
    let agent = Agent::start(bin(), &cfg);
    wait_ready(&agent, &p);
    // ~12 KiB per batch, ~250 batches: three times what 1 MiB holds. Like an OTLP client,
    // retry a 503 (the queue fsyncs every 128 KiB segment it closes, which can take a while).
    let n = 250u32;
    let mut retried = 0;
    for seq in 0..n {
        let body = traces_request(seq, 10, 1000);
        loop {
            match post_traces(&p.otlp, &body) {
                Some(200) => break,
                Some(503) if retried < 1000 => {
                    retried += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("{other:?}\n{}", agent.output()),
            }
        }
    }
    let dropped = || {
        telemetry_value(
            &p.tel,
            "celeriac_exporter_dropped_items_total",
            &[("reason", "queue_full")],
        )
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(10), || dropped() > 0.0),
        "{}",
        agent.output()
    );
    assert!(
        agent.stderr().contains("Sending queue full"),
        "{}",
        agent.output()
    );
    sink.restart();
    let accepted = f64::from(n * 10);
    let sent = || telemetry_value(&p.tel, "celeriac_exporter_sent_items_total", &[]).unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(30), || sent() + dropped() == accepted),
        "sent {} + dropped {} != accepted {accepted}\n{}",
        sent(),
        dropped(),
        agent.output()
    );
    let names = received_names(&sink);
    let (order, dups) = first_arrivals(&names);
    assert_eq!(dups, 0);
    assert_eq!(names.len() as f64, sent());
    // The batch in flight when the sink died comes first; the rest is the newest, in order.
    let kept = &order[1..];
    assert!(kept.windows(2).all(|w| w[0] + 1 == w[1]), "{order:?}");
    assert_eq!(*kept.last().unwrap(), n - 1);
    eprintln!(
        "FIGURES accepted_spans={accepted} delivered={} dropped_queue_full={} unaccounted=0 retried_503={retried}",
        sent(),
        dropped()
    );
}

/// OTLP/gRPC while the memory_limiter refuses: `UNAVAILABLE` (retryable), counted with
/// `protocol="grpc", reason="memory_limit"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_the_memory_limit_is_unavailable_and_counted() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let grpc = format!("127.0.0.1:{}", free_port());
    let tel = format!("127.0.0.1:{}", free_port());
    let cfg = memory_limited(
        "traces",
        "otlp",
        &format!("grpc: {{ endpoint: {grpc} }}\nhttp: {{ enabled: false }}"),
        &tel,
    );
    let agent = Agent::start(bin(), &cfg);
    let tel2 = tel.clone();
    let refusing = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(20), || {
            telemetry_value(&tel2, "celeriac_memory_limiter_refusing", &[]) == Some(1.0)
        })
    })
    .await
    .unwrap();
    assert!(refusing, "{}", agent.output());
    let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let req = ExportTraceServiceRequest::decode(&traces_request(1, 3, 0)[..]).unwrap();
    let status = client.export(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let counted = tokio::task::spawn_blocking(move || {
        telemetry_value(
            &tel,
            "celeriac_receiver_refused_requests_total",
            &[("protocol", "grpc"), ("reason", "memory_limit")],
        )
    })
    .await
    .unwrap();
    assert_eq!(counted, Some(1.0), "{}", agent.output());
}
