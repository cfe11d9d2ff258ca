//! The OTLP exporter's in-memory sending queue bounded by `sending_queue.sizer` (the
//! collector's `requests | items | bytes`, v0.123 on), against real traffic: OTLP/gRPC clients
//! (tonic's generated `TraceServiceClient`) flood the agent, which forwards to a slow real
//! backend (tests/python/otlp_sink.py: grpcio, one call at a time, 100 ms each).
//!
//! * `items_and_bytes_bound_the_queue_and_lose_nothing_accepted`: while the backend is the
//!   bottleneck the queue fills up to `queue_size` in its unit and never past it (read on the
//!   agent's `celeriac_exporter_sending_queue_size` while the flood runs), clients are held back
//!   (UNAVAILABLE once the pipeline is full too), and every span the agent accepted reaches the
//!   backend. A batch larger than the whole queue is dropped and counted (`queue_full`).
//! * `queue_settings_are_checked`: an unknown sizer and a sizer the file queue cannot honour are
//!   configuration errors with the key's position.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::spans::request_spans;
use support::*;

/// Request `n` of `spans` spans, each with a distinct id.
fn request(n: u32, spans: u32) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("flood".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: [n.to_be_bytes(), i.to_be_bytes()].concat().repeat(2),
                        span_id: [n.to_be_bytes(), i.to_be_bytes()].concat(),
                        name: format!("op-{i}"),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn config(grpc: u16, tel: u16, sink: &str, queue: &str) -> String {
    format!(
        "receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc} }}
exporters:
  otlp:
    endpoint: {sink}
    compression: none
    timeout: 10s
    retry_on_failure: {{ initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s }}
    sending_queue: {queue}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  channel_capacity: 2
  pipelines:
    traces: {{ receivers: [otlp], exporters: [otlp] }}
"
    )
}

fn sink_spans(sink: &OtlpSink) -> u64 {
    let requests = sink.requests();
    requests
        .iter()
        .map(|r| request_spans(r).count() as u64)
        .sum()
}

/// Flood for `secs` with 100-span requests from 4 clients; `(accepted spans, refused
/// requests, the highest sending-queue fill the agent reported, the most spans seen inside
/// the agent: accepted by it and not yet at the backend)`.
fn flood(grpc: u16, tel: &str, sink: &OtlpSink, secs: u64) -> (u64, u64, f64, u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let (stop, accepted, refused) = (stop.clone(), accepted.clone(), refused.clone());
            rt.spawn(async move {
                let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                    .await
                    .unwrap();
                let mut n = c * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    match client.export(request(n, 100)).await {
                        Ok(_) => accepted.fetch_add(100, Ordering::Relaxed),
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(s) => panic!("unexpected answer: {s}"),
                    };
                }
            })
        })
        .collect();
    let (mut peak, mut held) = (0f64, 0u64);
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        // Read in this order, the difference can only be too small, never too large.
        let (acc, got) = (accepted.load(Ordering::Relaxed), sink_spans(sink));
        held = held.max(acc.saturating_sub(got));
        if let Some(v) = scrape(tel).and_then(|s| {
            metric_value(
                &s,
                "celeriac_exporter_sending_queue_size",
                &[("component", "exporter/otlp")],
            )
        }) {
            peak = peak.max(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(c).unwrap();
    }
    (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        peak,
        held,
    )
}

#[test]
fn items_and_bytes_bound_the_queue_and_lose_nothing_accepted() {
    // One 100-span request: how many bytes it is on the wire decides the bytes bound.
    let body = request(1, 100).encode_to_vec().len() as u64;
    for (sizer, queue_size, unit) in [("items", 500u64, 100u64), ("bytes", 5 * body, body)] {
        let sink = OtlpSink::start_with_args(0, &["--delay-ms", "100"]);
        let (grpc, tel_port) = (free_port(), free_port());
        let tel = format!("127.0.0.1:{tel_port}");
        let queue = format!("{{ sizer: {sizer}, queue_size: {queue_size}, num_consumers: 2 }}");
        let agent = Agent::start(bin(), &config(grpc, tel_port, &sink.endpoint(), &queue));
        assert!(
            wait_until(Duration::from_secs(20), || http_ok(&tel, "/healthz")),
            "{}",
            agent.output()
        );
        let capacity = scrape(&tel).and_then(|s| {
            metric_value(
                &s,
                "celeriac_exporter_sending_queue_capacity",
                &[("component", "exporter/otlp")],
            )
        });
        assert_eq!(capacity, Some(queue_size as f64), "{sizer}");

        let (accepted, refused, peak, held) = flood(grpc, &tel, &sink, 4);
        // The backend takes ~10 calls/s: the queue filled to its bound (five requests' worth)
        // and never past it; the clients were held back.
        assert!(
            peak <= queue_size as f64,
            "{sizer}: peak {peak} > {queue_size}"
        );
        assert!(
            peak >= (queue_size - unit) as f64,
            "{sizer}: peak {peak}: never filled"
        );
        assert!(refused > 0, "{sizer}: nobody was held back");
        // Counted from the outside: the queue's five requests, the two the pipeline channel
        // holds and the one the exporter holds while it waits for room. (With the default
        // sizer, `requests`, the same queue_size would let thousands of spans pile up.)
        assert!(held <= 800, "{sizer}: {held} spans held inside the agent");

        // A request larger than the whole queue can never be queued: dropped and counted.
        let big = request(9_999_999, 600);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                .await
                .unwrap();
            // The pipeline may still be full from the flood: retry until it is taken.
            while let Err(s) = c.export(big.clone()).await {
                assert_eq!(s.code(), tonic::Code::Unavailable, "{s}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let dropped = || {
            scrape(&tel).and_then(|s| {
                metric_value(
                    &s,
                    "celeriac_exporter_dropped_items_total",
                    &[("component", "exporter/otlp"), ("reason", "queue_full")],
                )
            })
        };
        assert!(
            wait_until(Duration::from_secs(30), || dropped() == Some(600.0)),
            "{sizer}: dropped {:?}\n{}",
            dropped(),
            agent.output()
        );
        // Every accepted span arrives, and nothing else (the oversized batch did not).
        let mut got = 0;
        assert!(
            wait_until(Duration::from_secs(60), || {
                got = sink_spans(&sink);
                got >= accepted
            }),
            "{sizer}: backend got {got} of {accepted} accepted spans"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(sink_spans(&sink), accepted, "{sizer}");
        drop(agent);
    }
}

#[test]
fn queue_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (queue, key, says) in [
        ("{ sizer: spans }", "sending_queue.sizer", "spans"),
        (
            &*format!(
                "{{ sizer: bytes, queue_size: 1000000, storage: file, directory: {} }}",
                dir.path().display()
            ),
            "sending_queue.sizer",
            "max_size_mib",
        ),
        (
            "{ sizer: items, queue_size: 0 }",
            "sending_queue.queue_size",
            "at least 1",
        ),
    ] {
        let cfg = config(free_port(), free_port(), "http://127.0.0.1:1", queue);
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, &cfg).unwrap();
        let out = std::process::Command::new(bin())
            .arg("validate")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{queue}: accepted");
        // Pointed at the key (`sending_queue:` is on line 11) and saying what is wrong.
        assert!(
            err.contains("c.yaml:11:") && err.contains(says),
            "{queue} ({key}): {err}"
        );
    }
}
