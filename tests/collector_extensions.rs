//! The collector's extensions, run in the celeriac binary as a collector user would declare
//! them: `health_check` answers with the collector's JSON, `zpages` shows the pipelines and the
//! live status of their components, `pprof` hands out a CPU profile in pprof's protobuf format.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(health: u16, zpages: u16, otlp: u16, pprof: Option<u16>) -> String {
    let mut cfg = AgentConfig::new()
        .receiver("otlp", &otlp_http_only(otlp))
        .processor("batch", "null")
        .exporter("debug", "verbosity: basic")
        .extension("health_check", &format!("endpoint: 127.0.0.1:{health}"))
        .extension("zpages", &format!("endpoint: 127.0.0.1:{zpages}"));
    if let Some(pprof) = pprof {
        cfg = cfg.extension("pprof", &format!("endpoint: 127.0.0.1:{pprof}"));
    }
    cfg.telemetry(free_port())
        .pipeline_with("traces", &["otlp"], &["batch"], &["debug"])
        .pipeline("logs", &["otlp"], &["debug"])
        .yaml()
}

/// The `otlp` receiver's body for OTLP/HTTP alone on 127.0.0.1:`port`.
fn otlp_http_only(port: u16) -> String {
    format!("grpc:\n  enabled: false\nhttp:\n  endpoint: 127.0.0.1:{port}")
}

/// Waits until `path` on `addr` answers at all.
fn wait_http(addr: &str, path: &str, agent: &mut Agent) -> (u16, String) {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(20), || {
        last = http_get(addr, path);
        last.is_some()
    });
    assert!(ok, "{addr}{path} never answered\n{}", agent.output());
    last.unwrap()
}

#[test]
fn health_check_answers_with_the_collectors_json_and_zpages_shows_the_pipelines() {
    let (health, zpages, otlp) = (free_port(), free_port(), free_port());
    let mut agent = Agent::start(bin(), &config(health, zpages, otlp, None));
    let h = format!("127.0.0.1:{health}");
    let z = format!("127.0.0.1:{zpages}");

    // health_check: 200 and the JSON of healthcheckextension's handler.go once pipelines run.
    let mut last = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(20), || {
            last = http_get(&h, "/").unwrap_or_default();
            last.0 == 200
        }),
        "{last:?}\n{}",
        agent.output()
    );
    let body: Value = serde_json::from_str(&last.1).expect("JSON");
    assert_eq!(body["status"], "Server available", "{body}");
    let since = body["upSince"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.len() >= 20, "{since}");
    assert!(body["uptime"].as_str().unwrap().ends_with('s'), "{body}");
    let full = http_request(&h, "GET", "/", &[], &[]).unwrap();
    assert_eq!(full.header("content-type"), Some("application/json"));
    assert_eq!(http_get(&h, "/other").unwrap().0, 404);

    // zpages: both pipelines, and every component StatusOK.
    let (code, page) = wait_http(&z, "/debug/pipelinez", &mut agent);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<tr><td>traces</td><td>traces</td><td>true</td><td>otlp</td><td>&rarr; batch &rarr; </td><td>debug</td></tr>"),
        "{page}"
    );
    assert!(
        page.contains("<tr><td>logs</td><td>logs</td><td>false</td><td>otlp</td>"),
        "{page}"
    );
    for label in [
        "receiver/otlp",
        "exporter/debug",
        "processor/batch@traces",
        "extension/health_check",
        "extension/zpages",
    ] {
        assert!(
            page.contains(&format!("<tr><td>{label}</td><td>StatusOK</td>")),
            "{label}: {page}"
        );
    }
    let (code, ext) = wait_http(&z, "/debug/extensionz", &mut agent);
    assert_eq!(code, 200);
    assert!(
        ext.contains(">health_check</a></td><td>StatusOK</td>"),
        "{ext}"
    );
    let (code, svc) = wait_http(&z, "/debug/servicez", &mut agent);
    assert_eq!(code, 200);
    assert!(svc.contains("<td>Healthy</td><td>true</td>"), "{svc}");

    agent.terminate();
    assert!(agent.wait_exit(Duration::from_secs(15)).is_some());
}

/// A component that fails at start (its port is taken) marks the agent unhealthy: health_check
/// never answers 200.
#[test]
fn health_check_is_never_up_when_a_component_fails() {
    let (health, zpages, otlp) = (free_port(), free_port(), free_port());
    let taken = std::net::TcpListener::bind(("127.0.0.1", otlp)).unwrap();
    let mut agent = Agent::start(bin(), &config(health, zpages, otlp, None));
    let h = format!("127.0.0.1:{health}");
    let mut codes = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && agent.is_running() {
        if let Some((code, _)) = http_get(&h, "/") {
            codes.push(code);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        agent.wait_exit(Duration::from_secs(15)).is_some(),
        "{}",
        agent.output()
    );
    assert!(!codes.contains(&200), "{codes:?}");
    assert!(agent.output().contains("cannot bind"), "{}", agent.output());
    drop(taken);
}

/// Ready means serving: the moment the agent first says it is ready (`/healthz` on even starts,
/// `health_check` on odd ones, polled with no pause), the `otlp` receiver takes an OTLP/HTTP
/// POST and an OTLP/gRPC export and the `prometheus` exporter a scrape, with no wait in between,
/// and the other readiness endpoint agrees. The window in which a start could report ready
/// before a listener is bound is short, so the agent is started 30 times.
#[test]
fn ready_means_every_listener_takes_requests_at_once() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    const STARTS: usize = 30;
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: [7u8; 16].to_vec(),
                    span_id: [8u8; 8].to_vec(),
                    name: "work".into(),
                    start_time_unix_nano: 1,
                    end_time_unix_nano: 2,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let span = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"work","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    for start in 0..STARTS {
        let (grpc, http, prom, health, tel) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let cfg = AgentConfig::new()
            .receiver(
                "otlp",
                &format!(
                    "protocols:\n  grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n  http: {{ endpoint: 127.0.0.1:{http} }}"
                ),
            )
            .exporter("debug", "verbosity: basic")
            .exporter("prometheus", &format!("endpoint: 127.0.0.1:{prom}"))
            .extension("health_check", &format!("endpoint: 127.0.0.1:{health}"))
            .telemetry(tel)
            .pipeline("traces", &["otlp"], &["debug"])
            .pipeline("metrics", &["otlp"], &["prometheus"])
            .yaml();
        let (tel, health, http, prom) = (
            format!("127.0.0.1:{tel}"),
            format!("127.0.0.1:{health}"),
            format!("127.0.0.1:{http}"),
            format!("127.0.0.1:{prom}"),
        );
        let (first, other) = if start % 2 == 0 {
            ((&tel, "/healthz"), (&health, "/"))
        } else {
            ((&health, "/"), (&tel, "/healthz"))
        };
        let mut agent = Agent::start(bin(), &cfg);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !http_ok(first.0, first.1) {
            assert!(
                std::time::Instant::now() < deadline,
                "start {start}: {}{} never answered 200\n{}",
                first.0,
                first.1,
                agent.output()
            );
        }
        let posted = http_post(&http, "/v1/traces", "application/json", span).map(|r| r.status);
        // A runtime of its own, dropped before the agent stops, so the gRPC connection closes
        // and the agent does not wait for it to drain.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let exported = rt.block_on(async {
            let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
                .await
                .map_err(|e| e.to_string())?;
            client
                .export(request.clone())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        });
        drop(rt);
        let scraped = http_get(&prom, "/metrics").map(|(code, _)| code);
        let agreed = http_get(other.0, other.1).map(|(code, _)| code);
        assert_eq!(
            (posted, exported, scraped, agreed),
            (Some(200), Ok(()), Some(200), Some(200)),
            "start {start}, ready by {}{}: (OTLP/HTTP, OTLP/gRPC, scrape, {}{})\n{}",
            first.0,
            first.1,
            other.0,
            other.1,
            agent.output()
        );
        agent.stop_ok(Duration::from_secs(15));
    }
}

// ---- pprof -------------------------------------------------------------------------------------

/// The parts of pprof's `perftools.profiles.Profile` (github.com/google/pprof,
/// proto/profile.proto) the test checks, decoded independently of the crate that wrote it.
mod profile_proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
    }
}

#[test]
fn pprof_serves_a_cpu_profile_in_pprofs_protobuf_format() {
    use prost::Message;
    use std::io::Read;

    let (health, zpages, otlp, pprof) = (free_port(), free_port(), free_port(), free_port());
    let mut agent = Agent::start(bin(), &config(health, zpages, otlp, Some(pprof)));
    let p = format!("127.0.0.1:{pprof}");
    let (code, index) = wait_http(&p, "/debug/pprof/", &mut agent);
    assert_eq!(code, 200, "{index}");

    // Keep the agent busy with OTLP/HTTP requests while it profiles itself.
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let load = {
        let busy = busy.clone();
        let addr = format!("127.0.0.1:{otlp}");
        std::thread::spawn(move || {
            let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"work","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
            let mut sent = 0u32;
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                if http_post(&addr, "/v1/traces", "application/json", body).is_some() {
                    sent += 1;
                }
            }
            sent
        })
    };
    let resp = http_request(&p, "GET", "/debug/pprof/profile?seconds=2", &[], &[])
        .expect("profile answer");
    busy.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().unwrap();
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), agent.output());
    assert_eq!(
        resp.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(sent > 0);

    // gzip-compressed, as Go's runtime/pprof writes it.
    assert_eq!(&resp.body[..2], &[0x1f, 0x8b], "not gzip");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&resp.body[..])
        .read_to_end(&mut raw)
        .expect("gunzip");
    let prof = profile_proto::Profile::decode(&raw[..]).expect("a pprof Profile message");
    let s = |i: i64| prof.string_table[i as usize].as_str();
    assert_eq!(prof.string_table[0], "", "string_table[0] must be empty");
    let types: Vec<(&str, &str)> = prof
        .sample_type
        .iter()
        .map(|t| (s(t.r#type), s(t.unit)))
        .collect();
    assert!(types.contains(&("cpu", "nanoseconds")), "{types:?}");
    assert!(
        prof.period > 0 && prof.duration_nanos >= 1_000_000_000,
        "{} {}",
        prof.period,
        prof.duration_nanos
    );
    assert!(!prof.sample.is_empty(), "no samples in a busy 2 s profile");
    // Every sample's stack resolves to locations, functions and names.
    let mut names = std::collections::BTreeSet::new();
    for sample in &prof.sample {
        assert!(!sample.location_id.is_empty());
        assert_eq!(sample.value.len(), prof.sample_type.len());
        for id in &sample.location_id {
            let loc = prof
                .location
                .iter()
                .find(|l| l.id == *id)
                .expect("location");
            for line in &loc.line {
                let f = prof
                    .function
                    .iter()
                    .find(|f| f.id == line.function_id)
                    .expect("function");
                names.insert(s(f.name).to_string());
            }
        }
    }
    assert!(
        names
            .iter()
            .any(|n| n.contains("celeriac") || n.contains("tokio") || n.contains("hyper")),
        "{names:?}"
    );
    agent.terminate();
    assert!(agent.wait_exit(Duration::from_secs(15)).is_some());
}

// ---- otlphttp exporter, bearertokenauth and basicauth, debug detailed ------------------------

/// `otlp` (with `otlp` as its body) into `exporter` (with `body`) by the pipeline `traces`,
/// telemetry on a free port.
fn traces_from_otlp(otlp: &str, exporter: &str, body: &str) -> AgentConfig {
    AgentConfig::new()
        .receiver("otlp", otlp)
        .exporter(exporter, body)
        .telemetry(free_port())
        .pipeline("traces", &["otlp"], &[exporter])
}

fn send_spans(endpoint: &str) -> Value {
    otlp_send(&mut otlp_send_command(&["http", endpoint, "3"]))
}

/// Spans from the Python SDK enter agent A over OTLP/HTTP, leave it through the `otlphttp`
/// exporter with a `bearertokenauth` header, and arrive at agent B, whose `otlp` receiver
/// requires that token (`auth: {authenticator: bearertokenauth}`) and whose `debug` exporter
/// prints the collector's detailed dump.
#[test]
fn otlphttp_delivers_to_a_real_otlp_receiver_with_bearer_auth() {
    let (a_in, b_in) = (free_port(), free_port());
    let b = Agent::start(
        bin(),
        &traces_from_otlp(
            &format!(
                "{}\n  auth:\n    authenticator: bearertokenauth",
                otlp_http_only(b_in)
            ),
            "debug",
            "verbosity: detailed\nuse_internal_logger: false",
        )
        .extension("bearertokenauth", "token: tok-123")
        .yaml(),
    );
    let mut a = Agent::start(
        bin(),
        &traces_from_otlp(
            &otlp_http_only(a_in),
            "otlphttp",
            &format!(
                "
                endpoint: http://127.0.0.1:{b_in}
                auth:
                  authenticator: bearertokenauth/out
                compression: gzip
                retry_on_failure: {{ initial_interval: 100ms, max_interval: 500ms }}
                sending_queue: {{ enabled: true, num_consumers: 2, queue_size: 10 }}"
            ),
        )
        .extension("bearertokenauth/out", "token: tok-123")
        .yaml(),
    );
    let mut b = b;
    let b_addr = format!("127.0.0.1:{b_in}");
    b.assert_ready(Duration::from_secs(20), "agent B", || {
        http_get(&b_addr, "/").is_some()
    });
    // B refuses a request without the token, and one with another token.
    let body = br#"{"resourceSpans":[]}"#;
    let no = http_post(&b_addr, "/v1/traces", "application/json", body).unwrap();
    assert_eq!(no.status, 401, "{}", no.text());
    let wrong = http_request(
        &b_addr,
        "POST",
        "/v1/traces",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer nope"),
        ],
        body,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let right = http_request(
        &b_addr,
        "POST",
        "/v1/traces",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer tok-123"),
        ],
        body,
    )
    .unwrap();
    assert_eq!(right.status, 200, "{}", right.text());

    let a_addr = format!("127.0.0.1:{a_in}");
    a.assert_ready(Duration::from_secs(20), "agent A", || {
        http_get(&a_addr, "/").is_some()
    });
    let sent = send_spans(&format!("http://{a_addr}"));
    let trace_ids: Vec<String> = sent["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(trace_ids.len(), 3);
    let arrived = wait_until(Duration::from_secs(20), || {
        let out = b.stdout();
        trace_ids
            .iter()
            .all(|t| out.contains(&format!("    Trace ID       : {t}\n")))
    });
    assert!(arrived, "A:\n{}\nB:\n{}", a.output(), b.output());
    let out = b.stdout();
    assert!(
        out.contains("ResourceSpans #0\nResource SchemaURL: "),
        "{out}"
    );
    assert!(out.contains("Span #0\n"), "{out}");
    assert!(out.contains("     -> service.name: Str("), "{out}");
    a.terminate();
    b.terminate();
    assert!(a.wait_exit(Duration::from_secs(15)).is_some());
    assert!(b.wait_exit(Duration::from_secs(15)).is_some());
}

/// `basicauth`'s `client_auth` on the `otlphttp` exporter: the receiving side (a plain HTTP
/// server here, reading the request as any OTLP/HTTP server would) gets RFC 7617 credentials.
#[test]
fn basicauth_client_sends_rfc7617_credentials() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a_in = free_port();
    let mut a = Agent::start(
        bin(),
        &traces_from_otlp(
            &otlp_http_only(a_in),
            "otlp_http",
            &format!(
                "
                endpoint: http://127.0.0.1:{port}
                compression: none
                auth:
                  authenticator: basicauth/client"
            ),
        )
        .extension(
            "basicauth/client",
            "client_auth: { username: agent, password: 'open sesame' }",
        )
        .yaml(),
    );
    let a_addr = format!("127.0.0.1:{a_in}");
    a.assert_ready(Duration::from_secs(20), "agent A", || {
        http_get(&a_addr, "/").is_some()
    });
    send_spans(&format!("http://{a_addr}"));
    listener.set_nonblocking(false).unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    let mut w = stream;
    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    assert!(head[0].starts_with("post /v1/traces "), "{head:?}");
    assert!(
        head.contains(&"authorization: basic ywdlbnq6b3blbibzzxnhbwu=".to_string()),
        "{head:?}"
    );
    assert!(
        head.contains(&"content-type: application/x-protobuf".to_string()),
        "{head:?}"
    );
    a.terminate();
    assert!(a.wait_exit(Duration::from_secs(15)).is_some());
}

/// While the agent drains at shutdown, health_check still answers, with 503: extensions stop
/// last, as in the collector. The drain is held up by an exporter whose backend accepts
/// connections but never answers.
#[test]
fn health_check_answers_503_while_the_agent_drains() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (health, otlp) = (free_port(), free_port());
    let h = format!("127.0.0.1:{health}");
    let mut agent = Agent::start_ready(
        &traces_from_otlp(
            &otlp_http_only(otlp),
            "otlphttp",
            &format!(
                "
                endpoint: http://127.0.0.1:{silent_port}
                timeout: 4s
                sending_queue: {{ num_consumers: 1 }}"
            ),
        )
        .extension("health_check", &format!("endpoint: 127.0.0.1:{health}"))
        .service("shutdown_timeout", "20s")
        .yaml(),
        Duration::from_secs(20),
        "health_check 200",
        || http_ok(&h, "/"),
    );
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"work","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let r = http_post(
        &format!("127.0.0.1:{otlp}"),
        "/v1/traces",
        "application/json",
        body,
    )
    .expect("otlp answer");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(500));
    agent.terminate();
    let mut saw_503 = None;
    let ok = wait_until(Duration::from_secs(10), || {
        if let Some((code, body)) = http_get(&h, "/") {
            if code == 503 {
                saw_503 = Some(body);
                return true;
            }
        }
        false
    });
    assert!(ok, "no 503 while draining\n{}", agent.output());
    let body: Value = serde_json::from_str(&saw_503.unwrap()).unwrap();
    assert_eq!(body["status"], "Server not available");
    assert_eq!(body["upSince"], "0001-01-01T00:00:00Z");
    assert!(
        agent.wait_exit(Duration::from_secs(25)).is_some(),
        "{}",
        agent.output()
    );
    drop(silent);
}
