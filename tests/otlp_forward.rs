//! Requests only forwarded (`otlp → batch → otlp`) are not decoded by the agent: what the
//! backend receives decodes to exactly the resources the clients sent, over gRPC and HTTP, gzip
//! or not, and whether the agent's exporter compresses or sends the batch's pieces as they are.
//! Malformed bodies are still refused and counted as before. A pipeline that needs the
//! content (here the `logs` exporter) beside the forwarding one gets typed data, and the
//! forwarded copy is unchanged.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::*;
use tonic::codec::CompressionEncoding;

/// A backend keeping every `ResourceSpans` it was sent, each encoded on its own.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        got.extend(
            req.into_inner()
                .resource_spans
                .iter()
                .map(Message::encode_to_vec),
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Sink {
    fn sorted(&self) -> Vec<Vec<u8>> {
        let mut v = self.0.lock().unwrap().clone();
        v.sort();
        v
    }
}

/// Request `n`: two resources, each with `spans` spans carrying attributes of several kinds.
fn request(n: u32, spans: u32) -> ExportTraceServiceRequest {
    let attr = |k: &str, v| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let resource = |r: u32| ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attr(
                "service.name",
                any_value::Value::StringValue(format!("svc-{n}-{r}")),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: (0..spans)
                .map(|i| Span {
                    trace_id: [n as u8, r as u8, i as u8].repeat(6)[..16].to_vec(),
                    span_id: vec![i as u8; 8],
                    name: format!("op-{n}-{r}-{i}"),
                    start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
                    attributes: vec![
                        attr("i", any_value::Value::IntValue(i64::from(i))),
                        attr("b", any_value::Value::BytesValue(vec![0, 1, 2])),
                    ],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![resource(0), resource(1)],
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(b).unwrap();
    z.finish().unwrap()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    sink: Sink,
    agent: Agent,
    grpc: u16,
    http: String,
    tel: String,
}

/// The agent forwarding `otlp → batch → otlp` to a fresh sink, with `extra` pipelines/exporters.
fn start(extra_exporters: &str, extra_pipelines: &str) -> Setup {
    start_with(
        "",
        "timeout: 50ms, send_batch_size: 20",
        extra_exporters,
        extra_pipelines,
    )
}

/// [`start`] with more settings of the `otlp` exporter and the `batch` processor's.
fn start_with(exporter: &str, batch: &str, extra_exporters: &str, extra_pipelines: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sink = Sink::default();
    let sink_port = free_port();
    let server = TraceServiceServer::new(sink.clone()).accept_compressed(CompressionEncoding::Gzip);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", sink_port)))
        .unwrap();
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let server = server.clone();
            let svc = hyper::service::service_fn(move |req| {
                use tonic::codegen::Service;
                let mut server = server.clone();
                async move { server.call(req).await }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let cfg = format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc: {{ endpoint: 127.0.0.1:{grpc} }}
      http: {{ endpoint: 127.0.0.1:{http} }}
processors:
  batch: {{ {batch} }}
exporters:
  otlp: {{ endpoint: "http://127.0.0.1:{sink_port}", tls: {{ insecure: true }}, {exporter} }}
{extra_exporters}
service:
  telemetry: {{ endpoint: 127.0.0.1:{tel} }}
  pipelines:
    traces: {{ receivers: [otlp], processors: [batch], exporters: [otlp] }}
{extra_pipelines}
"#
    );
    let agent = Agent::start(bin(), &cfg);
    let tel = format!("127.0.0.1:{tel}");
    let http = format!("127.0.0.1:{http}");
    assert!(
        wait_until(Duration::from_secs(20), || scrape(&tel).is_some()
            && std::net::TcpStream::connect(&http).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", grpc)).is_ok()),
        "{}",
        agent.output()
    );
    Setup {
        rt,
        sink,
        agent,
        grpc,
        http,
        tel,
    }
}

impl Setup {
    fn grpc(&self, req: &ExportTraceServiceRequest, gz: bool) -> Result<(), tonic::Status> {
        let url = format!("http://127.0.0.1:{}", self.grpc);
        let req = req.clone();
        self.rt.block_on(async move {
            let mut c = TraceServiceClient::connect(url).await.unwrap();
            if gz {
                c = c.send_compressed(CompressionEncoding::Gzip);
            }
            c.export(req).await.map(drop)
        })
    }

    /// Status of an OTLP/HTTP protobuf POST of `body` (already encoded, gzip when `gz`).
    fn http(&self, body: &[u8], gz: bool) -> u16 {
        let mut headers = vec![("Content-Type", "application/x-protobuf")];
        if gz {
            headers.push(("Content-Encoding", "gzip"));
        }
        http_request(&self.http, "POST", "/v1/traces", &headers, body).map_or(0, |r| r.status)
    }

    /// Send one request each way (gRPC, HTTP; plain, gzip); the sorted encodings of every
    /// resource sent.
    fn send_all(&self) -> Vec<Vec<u8>> {
        self.send_sized([5; 4])
    }

    /// [`Setup::send_all`] with requests of `spans[i]` spans per resource.
    fn send_sized(&self, spans: [u32; 4]) -> Vec<Vec<u8>> {
        let reqs: Vec<_> = (0..4).map(|n| request(n, spans[n as usize])).collect();
        self.grpc(&reqs[0], false).unwrap();
        self.grpc(&reqs[1], true).unwrap();
        assert_eq!(self.http(&reqs[2].encode_to_vec(), false), 200);
        assert_eq!(self.http(&gzip(&reqs[3].encode_to_vec()), true), 200);
        let mut sent: Vec<_> = reqs
            .iter()
            .flat_map(|r| r.resource_spans.iter().map(Message::encode_to_vec))
            .collect();
        sent.sort();
        sent
    }

    fn wait_for(&self, resources: usize) {
        assert!(
            wait_until(Duration::from_secs(20), || self
                .sink
                .0
                .lock()
                .unwrap()
                .len()
                >= resources),
            "{}",
            self.agent.output()
        );
        // Nothing more arrives (no duplicates).
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn forwarded_requests_arrive_exactly_as_sent_and_bad_ones_are_refused() {
    let s = start("", "");
    let sent = s.send_all();
    s.wait_for(sent.len());
    assert_eq!(
        s.sink.sorted(),
        sent,
        "every resource arrives once, as sent"
    );
    let t = scrape(&s.tel).unwrap();
    let exported = metric_value(
        &t,
        "celeriac_exporter_sent_items_total",
        &[("component", "exporter/otlp")],
    );
    assert_eq!(exported, Some(40.0));

    // Malformed bodies (the bad-input corpus): refused as before (HTTP 400/413, gRPC not OK),
    // each counted, nothing forwarded.
    let files = corpus("otlp");
    let mut http_sent = 0.0;
    for (name, data) in &files {
        let headers = corpus_headers(name);
        let r = http_request(&s.http, "POST", "/v1/traces", &headers, data).unwrap();
        assert!(r.status == 400 || r.status == 413, "{name}: {}", r.status);
        http_sent += 1.0;
    }
    let mut args = vec![format!("127.0.0.1:{}", s.grpc)];
    let mut grpc_sent = 0.0;
    for (name, _) in files.iter().filter(|(n, _)| n.ends_with(".pb")) {
        args.push(corpus_dir("otlp").join(name).display().to_string());
        args.push("1".into());
        grpc_sent += 1.0;
    }
    let out = std::process::Command::new(python())
        .arg(python_dir().join("grpc_raw.py"))
        .args(&args)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("\"OK\""), "{stdout}");
    let refused = |p: &str| {
        let t = scrape(&s.tel).unwrap();
        t.iter()
            .filter(|x| {
                x.0 == "celeriac_receiver_refused_requests_total"
                    && x.1.get("protocol").map(String::as_str) == Some(p)
            })
            .map(|x| x.2)
            .sum::<f64>()
    };
    assert!(
        wait_until(Duration::from_secs(5), || refused("http") == http_sent
            && refused("grpc") == grpc_sent),
        "refused http {} of {http_sent}, grpc {} of {grpc_sent}: {stdout}",
        refused("http"),
        refused("grpc")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.sink.sorted(), sent, "nothing malformed was forwarded");
}

/// Uncompressed, the exporter sends a batch's pieces as they are: requests large enough to be
/// kept as pieces (tens of KB) between small ones copied together, all in one batch, over each
/// protocol and encoding, arrive exactly as sent; so do they with gzip on the way out.
#[test]
fn large_and_small_requests_in_one_batch_arrive_exactly_as_sent() {
    for exporter in ["compression: none", "compression: gzip"] {
        let s = start_with(exporter, "timeout: 1s, send_batch_size: 100000", "", "");
        let sent = s.send_sized([300, 2, 400, 3]);
        let big = request(0, 300).encode_to_vec().len();
        assert!(
            big > 16 << 10,
            "{big} bytes: large enough to be kept as a piece"
        );
        s.wait_for(sent.len());
        assert_eq!(
            s.sink.sorted(),
            sent,
            "{exporter}: every resource arrives as sent"
        );
    }
}

#[test]
fn a_pipeline_that_needs_the_content_gets_typed_data_beside_forwarding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let s = start(
        &format!("  logs: {{ path: \"{}\" }}", path.display()),
        "    traces/file: { receivers: [otlp], exporters: [logs] }",
    );
    let sent = s.send_all();
    s.wait_for(sent.len());
    assert_eq!(s.sink.sorted(), sent, "the forwarded copy is unchanged");
    let lines = || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("op-"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || lines() >= 40),
        "{}",
        s.agent.output()
    );
    assert_eq!(lines(), 40, "the logs exporter wrote every span");
}
