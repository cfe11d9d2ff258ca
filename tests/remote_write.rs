//! The `prometheus_remote_write` exporter against a real Prometheus and against fake endpoints.
//!
//! * `real_prometheus_holds_exactly_what_celeriac_computed`: a real Celery workload through
//!   celery_redis → celery_correlate → prometheus_remote_write (+ the scrape exporter); Prometheus'
//!   query API then returns, for every `celery_task_*` series, exactly the value of the scrape page,
//!   the client's expected counts per task name and event, and a staleness marker ends the series
//!   of a worker that stopped.
//! * `retries_after_503_lose_nothing`: a fake endpoint answers 503 (Retry-After: 1) then 2xx; every
//!   sample arrives exactly once, in timestamp order per series, with the protocol's headers.
//! * `rejected_requests_are_counted_not_retried`: a fake endpoint answering 400 gets each request
//!   once; every sample is counted as dropped.
//! * `unreachable_endpoint_is_retried_until_max_elapsed_time`: connection errors are retried with
//!   backoff, then the samples are dropped and counted (`reason="retries_exhausted"`).
//! * `https_with_client_certificate_reaches_real_prometheus`: a real Prometheus serving HTTPS and
//!   requiring client certificates: refused without our CA or without a client certificate,
//!   delivered with both.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use celeriac::component::Factory;
use celeriac::component::{Context, Input};
use celeriac::config::Value;
use celeriac::otlp::str_kv as kv;
use celeriac::prompb::WriteRequest;
use celeriac::registry::lookup;
use celeriac::signal::{Batch, Signal};
use celeriac::telemetry::{Counter, Telemetry};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value as Json;
use support::*;
use tokio_util::sync::CancellationToken;

const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

// ---------------------------------------------------------------------------------------------
// (a) real Prometheus, real Celery

fn agent_config(redis_url: &str, write_url: &str, scrape: u16, telemetry: u16) -> String {
    AgentConfig::celery(
        redis_url,
        "metrics_interval: 200ms\nforget_workers_after: 4s",
        telemetry,
    )
    .exporter("prometheus", &format!("endpoint: 127.0.0.1:{scrape}"))
    .exporter(
        "prometheus_remote_write",
        &format!("endpoint: {write_url}\nexternal_labels: {{ cluster: test }}\nstale_after: 1s"),
    )
    .pipeline(
        "metrics",
        &["celery_correlate"],
        &["prometheus", "prometheus_remote_write"],
    )
    .yaml()
}

type Series = BTreeMap<String, String>;

/// Every `celery_task_*` sample of the scrape page, keyed by name + labels.
fn scraped_task_series(addr: &str) -> BTreeMap<Series, f64> {
    scrape(addr)
        .unwrap_or_default()
        .into_iter()
        .filter(|(n, _, _)| n.starts_with("celery_task_"))
        .map(|(n, mut labels, v)| {
            labels.insert("__name__".into(), n);
            (labels, v)
        })
        .collect()
}

/// The same series as Prometheus holds them, minus the labels only remote write adds.
fn queried_task_series(prom: &PrometheusServer) -> BTreeMap<Series, f64> {
    let Some(rows) = prom.query(r#"{__name__=~"celery_task_.+"}"#) else {
        return BTreeMap::new();
    };
    rows.into_iter()
        .map(|(mut labels, v)| {
            assert_eq!(labels.get("job").map(String::as_str), Some("celery"));
            assert_eq!(labels.get("cluster").map(String::as_str), Some("test"));
            labels.remove("job");
            labels.remove("cluster");
            (labels, v)
        })
        .collect()
}

/// `sum by (name) (<metric>)` from Prometheus, as `{name: count}`, zeros left out.
fn per_name(prom: &PrometheusServer, metric: &str) -> BTreeMap<String, u64> {
    prom.query(&format!("sum by (name) ({metric})"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| (l["name"].clone(), v as u64))
        .collect()
}

#[test]
fn real_prometheus_holds_exactly_what_celeriac_computed() {
    let started = Instant::now();
    let prom = PrometheusServer::start();
    let redis = RedisServer::start();
    let (scrape_port, tel) = (free_port(), free_port());
    let scrape_addr = format!("127.0.0.1:{scrape_port}");
    let mut agent = Agent::start_ready(
        &agent_config(&redis.url(), &prom.write_url(), scrape_port, tel),
        Duration::from_secs(15),
        "agent up",
        || scrape(&scrape_addr).is_some(),
    );
    let mut worker = CeleryWorker::start(&redis.url(), WorkerOpts::default().heartbeat(1));
    worker.assert_ready(Duration::from_secs(60));
    let worker_up = r#"celery_worker_up{hostname="host1"}"#;
    assert!(
        wait_until(Duration::from_secs(15), || {
            prom.query(worker_up)
                .is_some_and(|r| r.len() == 1 && r[0].1 == 1.0)
        }),
        "worker up in Prometheus\n{}\n{}",
        agent.output(),
        prom.log()
    );

    let mix = run_client(&redis.url(), &["run_mix"]);
    assert_eq!(
        mix["match"],
        Json::Bool(true),
        "client saw its events: {mix}"
    );
    let want = expected_counts(&mix);

    // Prometheus converges on exactly the scrape page, series by series (buckets included),
    // once the workload's last events are in.
    let mut scraped = BTreeMap::new();
    let mut queried = BTreeMap::new();
    let converged = wait_until(Duration::from_secs(20), || {
        scraped = scraped_task_series(&scrape_addr);
        queried = queried_task_series(&prom);
        let done = scrape(&scrape_addr).is_some_and(|s| {
            metric_value(&s, "celery_task_succeeded_total", &[]) == Some(7.0)
                && metric_value(&s, "celery_task_revoked_total", &[]) == Some(2.0)
        });
        done && !scraped.is_empty() && scraped == queried
    });
    assert!(
        converged,
        "Prometheus != scrape\nscrape: {scraped:#?}\nprometheus: {queried:#?}\n{}\n{}",
        agent.output(),
        prom.log()
    );

    // ... and on the client's own counts, per event and task name.
    for ev in EVENTS {
        let got = per_name(&prom, &format!("celery_task_{ev}_total"));
        assert_eq!(got, want.get(ev).cloned().unwrap_or_default(), "{ev}");
    }
    assert_eq!(
        per_name(&prom, "celery_task_runtime_count"),
        want["succeeded"],
        "runtime histogram counts"
    );
    assert_eq!(
        per_name(&prom, r#"celery_task_runtime_bucket{le="+Inf"}"#),
        want["succeeded"],
        "+Inf buckets"
    );
    let waits = prom
        .query("sum(celery_task_queue_wait_time_count)")
        .expect("query");
    assert_eq!(waits[0].1, 12.0, "queue wait observations");

    // The worker stops: once celery_correlate forgets it (4 s), its series get a staleness
    // marker (1 s later) and vanish from instant queries (without one they would linger 5 min).
    worker.stop();
    assert!(
        wait_until(Duration::from_secs(20), || prom
            .query(worker_up)
            .is_some_and(|r| r.is_empty())),
        "worker_up should have gone stale\n{}",
        agent.output()
    );
    let had = prom
        .query(&format!("count_over_time({worker_up}[5m])"))
        .expect("query");
    assert!(had[0].1 > 0.0, "the series had samples before the marker");

    // Nothing was rejected, reordered or dropped on the way.
    let own = http_get(&format!("127.0.0.1:{tel}"), "/metrics")
        .expect("agent telemetry")
        .1;
    let own = parse_prometheus_text(&own);
    let drops = metric_value(
        &own,
        "celeriac_exporter_dropped_items_total",
        &[("component", "exporter/prometheus_remote_write")],
    );
    assert_eq!(drops, Some(0.0), "{own:?}");
    let sent = metric_value(
        &own,
        "celeriac_exporter_sent_items_total",
        &[("component", "exporter/prometheus_remote_write")],
    )
    .unwrap_or(0.0);
    assert!(sent > 0.0);
    agent.terminate();
    assert!(agent.wait_exit(Duration::from_secs(15)).is_some());
    eprintln!("real Prometheus test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// (b), (c): fake endpoints

/// One request the fake endpoint received.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn decode(&self) -> WriteRequest {
        assert_eq!(
            self.headers.get("content-encoding").map(String::as_str),
            Some("snappy")
        );
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .expect("snappy block format");
        WriteRequest::decode(&raw[..]).expect("protobuf WriteRequest")
    }
}

/// A tiny HTTP/1.1 endpoint on a std TcpListener: answers request n with `respond(n)` =
/// (status, extra header lines), one request per connection.
struct FakeEndpoint {
    addr: String,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeEndpoint {
    fn start(respond: impl Fn(usize) -> (u16, &'static str) + Send + 'static) -> FakeEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let (mut conn, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Some((headers, body)) = read_request(&mut conn) else {
                    continue;
                };
                let n = rec.lock().unwrap().len();
                let (status, extra) = respond(n);
                rec.lock().unwrap().push(Received {
                    at: Instant::now(),
                    headers,
                    body,
                    status,
                });
                let reason = match status {
                    204 => "No Content",
                    400 => "Bad Request",
                    503 => "Service Unavailable",
                    _ => "Whatever",
                };
                let text = if status == 400 {
                    "out of order sample\n"
                } else {
                    ""
                };
                let resp = format!(
                    "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(resp.as_bytes());
            }
        });
        FakeEndpoint {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Option<(HashMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let headers: HashMap<String, String> = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((headers, body))
}

/// A celery_correlate-like batch: `celery_task_succeeded` for `names`, value = `v`, at `ts_ms`.
/// One batch of counters, as the exporter's input channel carries it.
fn counters(names: &[String], v: f64, ts_ms: u64) -> Batch {
    let rm = vec![ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", "celery")],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![Metric {
                name: "celery_task_succeeded".into(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: names
                        .iter()
                        .map(|n| NumberDataPoint {
                            attributes: vec![kv("name", n)],
                            time_unix_nano: ts_ms * 1_000_000,
                            value: Some(number_data_point::Value::AsInt(v as i64)),
                            ..Default::default()
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }];
    Signal::Metrics(Arc::new(rm)).into()
}

/// The exporter, in process, fed through its input channel.
struct Running {
    tx: async_channel::Sender<Batch>,
    run: tokio::task::JoinHandle<Result<(), celeriac::component::ComponentError>>,
    telemetry: Telemetry,
}

fn start_exporter(yaml: &str) -> Running {
    let Factory::Exporter { build, .. } = &lookup(
        celeriac::config::Section::Exporters,
        "prometheus_remote_write",
    )
    .unwrap()
    .factory
    else {
        panic!("prometheus_remote_write is an exporter");
    };
    let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let exporter = build(&v).unwrap_or_else(|e| panic!("{}: {}", e.path, e.message));
    let telemetry = Telemetry::new();
    let ctx = Context {
        id: "exporter/prometheus_remote_write".into(),
        shutdown: CancellationToken::new(),
        telemetry: telemetry.clone(),
        ready: Default::default(),
    };
    let (tx, rx) = async_channel::bounded(16);
    let run = tokio::spawn(exporter.run(ctx, Input::new(rx, Counter::default())));
    Running { tx, run, telemetry }
}

impl Running {
    async fn finish(self) -> Telemetry {
        drop(self.tx);
        tokio::time::timeout(Duration::from_secs(20), self.run)
            .await
            .expect("exporter finished")
            .unwrap()
            .unwrap();
        self.telemetry
    }
}

fn own(t: &Telemetry, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(&parse_prometheus_text(&t.render()), name, labels).unwrap_or(0.0)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_503_lose_nothing() {
    let ep = FakeEndpoint::start(|n| {
        if n == 0 {
            (503, "Retry-After: 1\r\n")
        } else {
            (204, "")
        }
    });
    let rw = start_exporter(&format!(
        "endpoint: {}\nbearer_token: s3cret\nstale_after: 700ms\nmax_samples_per_send: 7\n\
         remote_write_queue: {{ num_consumers: 2, queue_size: 1000 }}\n\
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 100ms }}\n",
        ep.url()
    ));
    let names: Vec<String> = (0..10).map(|i| format!("task{i}")).collect();
    let t0 = now_ms();
    let mut fed: Vec<(String, u64, f64)> = Vec::new();
    for step in 0..3u64 {
        let ts = t0 + step * 100;
        rw.tx
            .send(counters(&names, step as f64 + 1.0, ts))
            .await
            .unwrap();
        fed.extend(names.iter().map(|n| (n.clone(), ts, step as f64 + 1.0)));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // task9 disappears: it gets a staleness marker once unseen for stale_after.
    let ts = t0 + 300;
    rw.tx.send(counters(&names[..9], 4.0, ts)).await.unwrap();
    fed.extend(names[..9].iter().map(|n| (n.clone(), ts, 4.0)));
    let ok = wait_until_async(Duration::from_secs(10), || {
        ep.received().iter().any(|r| {
            r.status == 204
                && r.decode()
                    .timeseries
                    .iter()
                    .any(|s| s.samples[0].value.to_bits() == STALE_NAN_BITS)
        })
    })
    .await;
    assert!(ok, "staleness marker for task9");
    let telemetry = rw.finish().await;

    let got = ep.received();
    assert_eq!(got[0].status, 503);
    // The rejected body came again, after at least Retry-After, marked as a retry.
    let retried = got[1..]
        .iter()
        .find(|r| r.body == got[0].body)
        .expect("the 503'd request was retried");
    assert!(retried.at.duration_since(got[0].at) >= Duration::from_millis(990));
    assert_eq!(
        retried.headers.get("retry-attempt").map(String::as_str),
        Some("1")
    );
    assert_eq!(got.iter().filter(|r| r.body == got[0].body).count(), 2);

    let mut delivered: Vec<(String, u64, f64)> = Vec::new();
    let mut stale = Vec::new();
    let mut last_ts: HashMap<String, u64> = HashMap::new();
    for r in got.iter().filter(|r| r.status == 204) {
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/x-protobuf")
        );
        assert_eq!(
            r.headers
                .get("x-prometheus-remote-write-version")
                .map(String::as_str),
            Some("0.1.0")
        );
        assert!(r.headers["user-agent"].starts_with("celeriac/"));
        assert_eq!(r.headers["authorization"], "Bearer s3cret");
        let req = r.decode();
        assert!(req.timeseries.len() <= 7, "max_samples_per_send");
        for ts in req.timeseries {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            assert_eq!(names, ["__name__", "job", "name"], "sorted labels");
            assert_eq!(ts.labels[0].value, "celery_task_succeeded_total");
            assert_eq!(ts.labels[1].value, "celery");
            let name = ts.labels[2].value.clone();
            for s in ts.samples {
                // Per series, timestamps only grow, across requests too.
                let prev = last_ts.insert(name.clone(), s.timestamp as u64);
                assert!(
                    prev.is_none_or(|p| p < s.timestamp as u64),
                    "{name} out of order"
                );
                if s.value.to_bits() == STALE_NAN_BITS {
                    stale.push(name.clone());
                } else {
                    delivered.push((name.clone(), s.timestamp as u64, s.value));
                }
            }
        }
    }
    delivered.sort_by(|a, b| a.partial_cmp(b).unwrap());
    fed.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(delivered, fed, "every sample exactly once");
    assert!(stale.contains(&"task9".to_string()));
    let component = ("component", "exporter/prometheus_remote_write");
    assert_eq!(
        own(
            &telemetry,
            "celeriac_exporter_sent_items_total",
            &[component]
        ) as usize,
        fed.len() + stale.len()
    );
    assert!(own(&telemetry, "celeriac_exporter_retries_total", &[component]) >= 1.0);
    assert_eq!(
        own(
            &telemetry,
            "celeriac_exporter_dropped_items_total",
            &[component]
        ),
        0.0
    );
    // The credential appears in no telemetry.
    assert!(!telemetry.render().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_are_counted_not_retried() {
    let ep = FakeEndpoint::start(|_| (400, ""));
    let rw = start_exporter(&format!(
        "endpoint: {}\nremote_write_queue: {{ num_consumers: 2 }}\n\
         retry_on_failure: {{ initial_interval: 10ms, max_interval: 20ms }}\n",
        ep.url()
    ));
    let names: Vec<String> = (0..10).map(|i| format!("task{i}")).collect();
    let t0 = now_ms();
    let batches = 5u64;
    for step in 0..batches {
        rw.tx
            .send(counters(&names, step as f64, t0 + step * 100))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a would-be retry loop time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let telemetry = rw.finish().await;
    let got = ep.received();
    assert!(!got.is_empty());
    assert!(
        got.len() as u64 <= batches * 2,
        "at most one request per batch and shard, got {}",
        got.len()
    );
    let mut bodies: Vec<&Vec<u8>> = got.iter().map(|r| &r.body).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), got.len(), "no request was sent twice");
    assert!(got.iter().all(|r| !r.headers.contains_key("retry-attempt")));
    let samples: usize = got.iter().map(|r| r.decode().timeseries.len()).sum();
    assert_eq!(samples as u64, batches * names.len() as u64);
    let component = ("component", "exporter/prometheus_remote_write");
    assert_eq!(
        own(
            &telemetry,
            "celeriac_exporter_dropped_items_total",
            &[component, ("reason", "rejected")]
        ) as usize,
        samples
    );
    assert_eq!(
        own(
            &telemetry,
            "celeriac_exporter_sent_items_total",
            &[component]
        ),
        0.0
    );
    assert_eq!(
        own(&telemetry, "celeriac_exporter_retries_total", &[component]),
        0.0
    );
}

async fn wait_until_async(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(done) = poll_once(deadline, &mut f) {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_is_retried_until_max_elapsed_time() {
    // A port nobody listens on: connection errors are retryable, until max_elapsed_time.
    let port = free_port();
    let rw = start_exporter(&format!(
        "endpoint: http://127.0.0.1:{port}/api/v1/write\ntimeout: 1s\n\
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 400ms }}\n"
    ));
    let names: Vec<String> = (0..4).map(|i| format!("task{i}")).collect();
    rw.tx.send(counters(&names, 1.0, now_ms())).await.unwrap();
    let t = rw.telemetry.clone();
    let component = ("component", "exporter/prometheus_remote_write");
    let gave_up = wait_until_async(Duration::from_secs(10), || {
        own(
            &t,
            "celeriac_exporter_dropped_items_total",
            &[component, ("reason", "retries_exhausted")],
        ) == 4.0
    })
    .await;
    assert!(gave_up, "{}", t.render());
    let retries = own(&t, "celeriac_exporter_retries_total", &[component]);
    // 400 ms of 20..50 ms (±50 %) backoff: a handful of retries per shard used, not a storm.
    assert!((1.0..=100.0).contains(&retries), "{retries} retries");
    rw.finish().await;
}

/// `sending_queue.storage: file`: requests that could not be sent survive the exporter being
/// killed (its task aborted, as `kill -9` would end it), and a new exporter on the same
/// directory sends them, in order per series, before anything new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_queue_survives_a_crash_and_replays_in_order() {
    let queue = tempfile::tempdir().unwrap();
    let dead = free_port();
    let settings = |url: &str| {
        format!(
            "endpoint: {url}\ntimeout: 1s\nmax_samples_per_send: 5\n\
             remote_write_queue: {{ num_consumers: 2, queue_size: 1000 }}\n\
             sending_queue: {{ storage: file, directory: {}, max_size_mib: 8 }}\n\
             retry_on_failure: {{ initial_interval: 20ms, max_interval: 100ms, max_elapsed_time: 0s }}\n",
            queue.path().display()
        )
    };
    let rw = start_exporter(&settings(&format!("http://127.0.0.1:{dead}/api/v1/write")));
    let names: Vec<String> = (0..10).map(|i| format!("task{i}")).collect();
    let t0 = now_ms();
    for step in 0..4u64 {
        rw.tx
            .send(counters(&names, step as f64 + 1.0, t0 + step * 100))
            .await
            .unwrap();
    }
    let t = rw.telemetry.clone();
    // On disk: 40 samples, less the request (at most 5 samples) each shard is retrying.
    let queued = wait_until_async(Duration::from_secs(10), || {
        let q = own(&t, "celeriac_exporter_queue_items", &[]);
        (30.0..40.0).contains(&q) && own(&t, "celeriac_exporter_retries_total", &[]) >= 4.0
    })
    .await;
    assert!(queued, "{}", t.render());
    // Crash: no flush, no shutdown.
    rw.run.abort();
    let _ = rw.run.await;

    let ep = FakeEndpoint::start(|_| (204, ""));
    let rw = start_exporter(&settings(&ep.url()));
    let sent = wait_until_async(Duration::from_secs(10), || {
        own(&rw.telemetry, "celeriac_exporter_sent_items_total", &[]) == 40.0
    })
    .await;
    assert!(sent, "{}", rw.telemetry.render());
    let telemetry = rw.finish().await;
    let mut per_series: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in ep.received() {
        for ts in r.decode().timeseries {
            let name = ts
                .labels
                .iter()
                .find(|l| l.name == "name")
                .map(|l| l.value.clone())
                .unwrap_or_default();
            per_series
                .entry(name)
                .or_default()
                .extend(ts.samples.iter().map(|s| s.timestamp));
        }
    }
    assert_eq!(per_series.len(), 10);
    for (name, ts) in &per_series {
        let want: Vec<i64> = (0..4).map(|s| (t0 + s * 100) as i64).collect();
        assert_eq!(ts, &want, "{name}");
    }
    let dropped: f64 = parse_prometheus_text(&telemetry.render())
        .iter()
        .filter(|s| s.0 == "celeriac_exporter_dropped_items_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(dropped, 0.0);
}

// ---------------------------------------------------------------------------------------------
// (d): https with mutual TLS, against a real Prometheus

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificate_reaches_real_prometheus() {
    let pki = support::pki::Pki::generate();
    let prom = PrometheusServer::start_tls(&pki);
    assert!(prom.write_url().starts_with("https://"));
    let names: Vec<String> = (0..3).map(|i| format!("tls_task{i}")).collect();

    // Without our CA the server is not trusted: every attempt fails, nothing arrives.
    let untrusting = start_exporter(&format!(
        "endpoint: {}\ntimeout: 2s\n\
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 300ms }}\n",
        prom.write_url()
    ));
    untrusting
        .tx
        .send(counters(&names, 1.0, now_ms()))
        .await
        .unwrap();
    let t = untrusting.finish().await;
    let component = ("component", "exporter/prometheus_remote_write");
    assert_eq!(
        own(&t, "celeriac_exporter_sent_items_total", &[component]),
        0.0
    );
    assert!(own(&t, "celeriac_exporter_dropped_items_total", &[component]) > 0.0);

    // Trusting our CA but without a client certificate: Prometheus refuses the handshake.
    let anonymous = start_exporter(&format!(
        "endpoint: {}\ntimeout: 2s\ntls: {{ ca_file: {} }}\n\
         retry_on_failure: {{ initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 300ms }}\n",
        prom.write_url(),
        pki.ca().display()
    ));
    anonymous
        .tx
        .send(counters(&names, 2.0, now_ms()))
        .await
        .unwrap();
    let t = anonymous.finish().await;
    assert_eq!(
        own(&t, "celeriac_exporter_sent_items_total", &[component]),
        0.0
    );

    // With the CA and a client certificate: delivered, and Prometheus holds the values.
    let rw = start_exporter(&format!(
        "endpoint: {}\ntls: {{ ca_file: {}, cert_file: {}, key_file: {} }}\n",
        prom.write_url(),
        pki.ca().display(),
        pki.client_cert().display(),
        pki.client_key().display()
    ));
    rw.tx.send(counters(&names, 42.0, now_ms())).await.unwrap();
    let t = rw.telemetry.clone();
    assert!(
        wait_until_async(Duration::from_secs(15), || {
            own(&t, "celeriac_exporter_sent_items_total", &[component]) == 3.0
        })
        .await,
        "sent over https:\n{}\n{}",
        t.render(),
        prom.log()
    );
    let _ = rw.finish().await;
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        wait_until(Duration::from_secs(10), || {
            got = prom
                .query("celery_task_succeeded_total")
                .unwrap_or_default();
            got.len() == 3
        });
        got
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    for (labels, v) in got {
        assert!(labels["name"].starts_with("tls_task"), "{labels:?}");
        assert_eq!(v, 42.0);
    }
}
