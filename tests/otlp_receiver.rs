//! The `otlp` receiver as a drop-in collector: spans from the real OpenTelemetry Python SDK
//! (gRPC and HTTP exporters) pass through unchanged; JSON and gzip bodies work; bad requests get
//! clear, counted errors; a full pipeline answers with the retryable code instead of buffering;
//! with `tls` and `client_ca_file` only clients with a certificate from that CA get in (mTLS).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn send(proto: &str, endpoint: &str, n: usize, token: Option<&str>) -> Value {
    send_with(proto, endpoint, n, token, &[])
}

/// `extra`: more otlp_send.py options (`--ca`, `--cert`, `--key`).
fn send_with(proto: &str, endpoint: &str, n: usize, token: Option<&str>, extra: &[&Path]) -> Value {
    let mut cmd = otlp_send_command(&[proto, endpoint, &n.to_string()]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    for (flag, path) in ["--ca", "--cert", "--key"].iter().zip(extra) {
        cmd.arg(flag).arg(path);
    }
    if !extra.is_empty() {
        // requests lets these override the exporter's own CA file.
        cmd.env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE");
    }
    otlp_send(&mut cmd)
}

/// `otlp` (with `otlp` as its body) into the `logs` exporter writing to `path` by the pipeline
/// `traces`, telemetry on 127.0.0.1:`tel`.
fn otlp_to_logs(otlp: &str, path: &Path, tel: u16) -> AgentConfig {
    AgentConfig::new()
        .receiver("otlp", otlp)
        .exporter("logs", &format!("{{ path: \"{}\" }}", path.display()))
        .telemetry(tel)
        .pipeline("traces", &["otlp"], &["logs"])
}

fn spans_in(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn python_sdk_spans_pass_through_and_bad_requests_are_refused() {
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.jsonl");
    let cfg = otlp_to_logs(
        &format!(
            "
            grpc: {{ endpoint: 127.0.0.1:{grpc} }}
            http: {{ endpoint: 127.0.0.1:{http}, max_request_body_size_mib: 1 }}
            auth: {{ bearer_token: s3cret-token }}"
        ),
        &spans,
        tel,
    )
    .yaml();
    let http_addr = format!("127.0.0.1:{http}");
    let agent = Agent::start_ready(&cfg, Duration::from_secs(15), "OTLP/HTTP up", || {
        http_get(&http_addr, "/v1/traces").is_some()
    });

    let g = send(
        "grpc",
        &format!("http://127.0.0.1:{grpc}"),
        5,
        Some("s3cret-token"),
    );
    let h = send(
        "http",
        &format!("http://127.0.0.1:{http}"),
        5,
        Some("s3cret-token"),
    );
    let mut want: Vec<String> = Vec::new();
    for v in [&g, &h] {
        for id in v["span_ids"].as_array().unwrap() {
            want.push(id.as_str().unwrap().to_string());
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || spans_in(&spans).len() >= 10),
        "{}",
        agent.output()
    );
    let got = spans_in(&spans);
    assert_eq!(got.len(), 10, "no duplicates");
    for (i, id) in g["span_ids"].as_array().unwrap().iter().enumerate() {
        let line = got
            .iter()
            .find(|s| s["span_id"] == *id)
            .unwrap_or_else(|| panic!("span {id} missing"));
        assert_eq!(line["trace_id"], g["trace_ids"][i], "trace id unchanged");
        assert_eq!(line["msg"], g["names"][i]);
        assert_eq!(line["test.index"], i as i64);
    }

    // Without the token: refused, nothing exported.
    let unauth = http_post(&http_addr, "/v1/traces", "application/x-protobuf", b"").unwrap();
    assert_eq!(unauth.status, 401);

    let post = |ctype: &str, body: &[u8], extra: &[(&str, &str)]| {
        let mut headers = vec![
            ("content-type", ctype),
            ("authorization", "Bearer s3cret-token"),
        ];
        headers.extend_from_slice(extra);
        http_request(&http_addr, "POST", "/v1/traces", &headers, body).unwrap()
    };
    // OTLP/JSON, hex ids, as the spec writes them.
    let json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"json-span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
    let r = post("application/json", json, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The same, gzip-compressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(
        String::from_utf8_lossy(json)
            .replace("eee19b7ec3c1b174", "eee19b7ec3c1b175")
            .as_bytes(),
    )
    .unwrap();
    let r = post(
        "application/json",
        &gz.finish().unwrap(),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(wait_until(Duration::from_secs(5), || spans_in(&spans)
        .len()
        == 12));
    let j = spans_in(&spans)
        .into_iter()
        .find(|s| s["span_id"] == "eee19b7ec3c1b174")
        .unwrap();
    assert_eq!(j["trace_id"], "5b8efff798038103d269b633813fc60c");

    // Corrupt protobuf, wrong type, wrong method, too large, gzip bomb.
    assert_eq!(
        post("application/x-protobuf", b"\xff\xff\xff\xff", &[]).status,
        400
    );
    assert_eq!(post("text/plain", b"hi", &[]).status, 415);
    assert_eq!(http_get(&http_addr, "/v1/traces").unwrap().0, 405);
    assert_eq!(
        post("application/x-protobuf", &vec![0u8; 2 << 20], &[]).status,
        413
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b' '; 8 << 20]).unwrap();
    let r = post(
        "application/json",
        &bomb.finish().unwrap(),
        &[("content-encoding", "gzip")],
    );
    assert_eq!(r.status, 413);
    // Metrics: no pipeline takes them from this receiver.
    let r = http_request(
        &http_addr,
        "POST",
        "/v1/metrics",
        &[
            ("content-type", "application/x-protobuf"),
            ("authorization", "Bearer s3cret-token"),
        ],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 404);

    let t = scrape(&format!("127.0.0.1:{tel}")).unwrap();
    let refused = |reason: &str| {
        metric_value(
            &t,
            "celeriac_receiver_refused_requests_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused("unauthenticated"), 1.0);
    assert_eq!(refused("corrupt"), 1.0);
    assert_eq!(refused("too_large"), 2.0);
    assert_eq!(refused("unsupported_content_type"), 1.0);
    assert_eq!(refused("no_pipeline"), 1.0);
    assert_eq!(spans_in(&spans).len(), 12, "nothing else was exported");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_full_pipeline_answers_503_and_memory_stays_flat() {
    let (http, tel) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    // A backend that stops reading: a FIFO whose reader never reads.
    let fifo = dir.path().join("stalled");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let cfg = otlp_to_logs(
        &format!("grpc: {{ enabled: false }}\nhttp: {{ endpoint: 127.0.0.1:{http} }}"),
        &fifo,
        tel,
    )
    .service("channel_capacity", "4")
    .yaml();
    let addr = format!("127.0.0.1:{http}");
    let agent = Agent::start_ready(&cfg, Duration::from_secs(15), "OTLP/HTTP up", || {
        http_get(&addr, "/v1/traces").is_some()
    });
    // ~40 KiB of spans per request.
    let mut spans = String::new();
    for i in 0..100 {
        if i > 0 {
            spans.push(',');
        }
        spans.push_str(&format!(r#"{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{i:016x}","name":"{}","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}}"#, "x".repeat(300)));
    }
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    let (mut ok, mut busy) = (0, 0);
    let mut peak = 0;
    for _ in 0..400 {
        let r = http_request(
            &addr,
            "POST",
            "/v1/traces",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .unwrap();
        match r.status {
            200 => ok += 1,
            503 => {
                assert_eq!(r.header("retry-after"), Some("1"));
                busy += 1;
            }
            s => panic!("unexpected status {s}: {}", r.text()),
        }
        peak = peak.max(rss_kib(agent.pid().unwrap()));
    }
    assert!(
        busy > 300,
        "the pipeline filled up and the receiver pushed back: ok {ok}, 503 {busy}"
    );
    assert!(peak < 100 * 1024, "RSS stayed bounded: {peak} KiB");
    let t = scrape(&format!("127.0.0.1:{tel}")).unwrap();
    assert_eq!(
        metric_value(
            &t,
            "celeriac_receiver_refused_requests_total",
            &[("reason", "pipeline_full")]
        ),
        Some(busy as f64)
    );
    // The backend recovers: drain the FIFO in the background; requests are accepted again.
    // Detached: the FIFO never reports end of file (the reader also holds a write end).
    std::thread::spawn(move || {
        let mut r = reader;
        let mut buf = vec![0u8; 1 << 16];
        use std::io::Read;
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    assert!(
        wait_until(Duration::from_secs(10), || http_request(
            &addr,
            "POST",
            "/v1/traces",
            &[("content-type", "application/json")],
            body.as_bytes()
        )
        .map(|r| r.status)
            == Some(200)),
        "{}",
        agent.output()
    );
    drop(agent);
}

#[test]
fn mutual_tls_lets_only_certified_clients_in() {
    let pki = pki::Pki::generate();
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.jsonl");
    let tls = format!(
        "{{ cert_file: {}, key_file: {}, client_ca_file: {} }}",
        pki.server_cert().display(),
        pki.server_key().display(),
        pki.ca().display()
    );
    let cfg = otlp_to_logs(
        &format!(
            "
            grpc: {{ endpoint: 127.0.0.1:{grpc}, tls: {tls} }}
            http: {{ endpoint: 127.0.0.1:{http}, tls: {tls} }}"
        ),
        &spans,
        tel,
    )
    .yaml();
    let tel_addr = format!("127.0.0.1:{tel}");
    let agent = Agent::start_ready(&cfg, Duration::from_secs(15), "telemetry up", || {
        http_get(&tel_addr, "/metrics").is_some()
    });
    let refused = |protocol: &str| {
        let page = http_get(&tel_addr, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        metric_value(
            &parse_prometheus_text(&page),
            "celeriac_receiver_refused_requests_total",
            &[("protocol", protocol), ("reason", "tls_handshake")],
        )
        .unwrap_or(0.0)
    };
    let (ca, cert, key) = (pki.ca(), pki.client_cert(), pki.client_key());
    let (stranger, stranger_key) = (pki.stranger_cert(), pki.stranger_key());

    // Certified clients over gRPC and HTTPS: every span arrives.
    let g = send_with(
        "grpc",
        &format!("127.0.0.1:{grpc}"),
        3,
        None,
        &[&ca, &cert, &key],
    );
    let h = send_with(
        "http",
        &format!("https://127.0.0.1:{http}"),
        3,
        None,
        &[&ca, &cert, &key],
    );
    assert!(
        wait_until(Duration::from_secs(10), || spans_in(&spans).len() >= 6),
        "{}",
        agent.output()
    );
    let got: Vec<String> = spans_in(&spans)
        .iter()
        .map(|s| s["span_id"].as_str().unwrap_or("").to_string())
        .collect();
    for v in [&g, &h] {
        for id in v["span_ids"].as_array().unwrap() {
            assert!(
                got.contains(&id.as_str().unwrap().to_string()),
                "{id} missing"
            );
        }
    }
    assert_eq!(refused("grpc") + refused("http"), 0.0);

    // No client certificate, a certificate from another CA, or plaintext: refused in the
    // handshake, counted, nothing exported.
    send_with("grpc", &format!("127.0.0.1:{grpc}"), 2, None, &[&ca]);
    send_with(
        "http",
        &format!("https://127.0.0.1:{http}"),
        2,
        None,
        &[&ca, &stranger, &stranger_key],
    );
    assert!(
        http_post(
            &format!("127.0.0.1:{http}"),
            "/v1/traces",
            "application/x-protobuf",
            b""
        )
        .is_none(),
        "plaintext gets no HTTP answer from a TLS port"
    );
    assert!(
        wait_until(Duration::from_secs(10), || refused("grpc") >= 1.0
            && refused("http") >= 2.0),
        "grpc {} http {}\n{}",
        refused("grpc"),
        refused("http"),
        agent.output()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        spans_in(&spans).len(),
        6,
        "only the certified clients' spans"
    );
}

/// Spans in the sink's requests (proto field names: `resource_spans`, `scope_spans`).
fn sink_spans(sink: &OtlpSink) -> usize {
    sink.requests()
        .iter()
        .flat_map(|r| {
            r["request"]["resource_spans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| rs["scope_spans"].as_array().cloned().unwrap_or_default())
        .map(|ss| ss["spans"].as_array().map_or(0, Vec::len))
        .sum()
}

/// `celeriac_pipeline_latency_seconds{pipeline}` on the telemetry endpoint counts every span
/// that went through each pipeline once: through a batch processor to the OTLP exporter (which
/// observes as it hands the request to the network) and straight to the logs exporter (which
/// observes as it takes the batch); buckets are cumulative up to `+Inf` = `_count`.
#[test]
fn pipeline_latency_histogram_counts_what_went_through() {
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let sink = OtlpSink::start(0);
    let dir = tempfile::tempdir().unwrap();
    let spans = dir.path().join("spans.jsonl");
    let cfg = format!(
        r#"
receivers:
  otlp:
    grpc: {{ endpoint: 127.0.0.1:{grpc} }}
    http: {{ endpoint: 127.0.0.1:{http} }}
processors:
  batch: {{ timeout: 50ms }}
exporters:
  otlp: {{ endpoint: "{}", tls: {{ insecure: true }} }}
  logs: {{ path: "{}" }}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp] }}
    traces/file: {{ receivers: [otlp], exporters: [logs] }}
"#,
        sink.endpoint(),
        spans.display()
    );
    let agent = Agent::start(bin(), &cfg);
    let tel_addr = format!("127.0.0.1:{tel}");
    assert!(
        wait_until(Duration::from_secs(15), || scrape(&tel_addr).is_some()),
        "{}",
        agent.output()
    );
    send("grpc", &format!("http://127.0.0.1:{grpc}"), 7, None);
    send("http", &format!("http://127.0.0.1:{http}"), 5, None);
    assert!(
        wait_until(Duration::from_secs(15), || sink_spans(&sink) >= 12
            && spans_in(&spans).len() >= 12),
        "{}",
        agent.output()
    );
    let t = scrape(&tel_addr).unwrap();
    let value = |name: &str, pipeline: &str, le: Option<&str>| {
        let mut labels = vec![("pipeline", pipeline)];
        labels.extend(le.map(|le| ("le", le)));
        metric_value(&t, name, &labels).unwrap_or_else(|| panic!("{name}{{{pipeline}}} missing"))
    };
    for pipeline in ["traces", "traces/file"] {
        let count = value("celeriac_pipeline_latency_seconds_count", pipeline, None);
        assert_eq!(count, 12.0, "{pipeline}: one observation per span");
        assert_eq!(
            value(
                "celeriac_pipeline_latency_seconds_bucket",
                pipeline,
                Some("+Inf")
            ),
            count
        );
        let sum = value("celeriac_pipeline_latency_seconds_sum", pipeline, None);
        assert!(sum > 0.0 && sum < 12.0 * 10.0, "{pipeline}: sum {sum}");
        let mut last = 0.0;
        for (n, l, v) in &t {
            if n == "celeriac_pipeline_latency_seconds_bucket"
                && l.get("pipeline").map(String::as_str) == Some(pipeline)
            {
                assert!(
                    *v >= last,
                    "{pipeline}: buckets cumulative at le={:?}",
                    l.get("le")
                );
                last = *v;
            }
        }
    }
    assert_eq!(sink_spans(&sink), 12, "the sink got each span once");
    let sent = metric_value(
        &t,
        "celeriac_exporter_sent_items_total",
        &[("component", "exporter/otlp")],
    );
    assert_eq!(
        sent,
        Some(12.0),
        "the exporter counted the same spans as sent"
    );
}
