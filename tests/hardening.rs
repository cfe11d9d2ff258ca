//! Slow and hostile clients against the agent's listeners: the gRPC bearer token is checked
//! before tonic decodes a body, and a few hundred slow-loris connections on every kind of
//! listener (OTLP/HTTP, OTLP/gRPC, `/metrics`) are cut off after `read_header_timeout` while a
//! normal client keeps being served in its usual time.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One unary gRPC call with prior-knowledge HTTP/2: `(grpc-status, elapsed)`.
async fn grpc_call(
    addr: &str,
    path: &str,
    token: Option<&str>,
    message: &[u8],
) -> (String, Duration) {
    let t0 = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // A gRPC frame: uncompressed flag, big-endian length, the message.
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let mut req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let head = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.unwrap();
    let status = head
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, t0.elapsed())
}

const EXPORT_TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The `otlp` receiver (`otlp` is its body) into `debug`, telemetry on 127.0.0.1:`tel`.
fn otlp_to_debug(otlp: &str, tel: u16) -> String {
    AgentConfig::new()
        .receiver("otlp", otlp)
        .exporter("debug", "{}")
        .telemetry(tel)
        .pipeline("traces", &["otlp"], &["debug"])
        .yaml()
}

#[test]
fn grpc_bearer_token_is_checked_before_the_body_is_decoded() {
    let (grpc, tel) = (free_port(), free_port());
    let cfg = otlp_to_debug(
        &format!(
            "
            grpc: {{ endpoint: 127.0.0.1:{grpc} }}
            http: {{ enabled: false }}
            auth: {{ bearer_token: s3cret-token }}"
        ),
        tel,
    );
    let tel = format!("127.0.0.1:{tel}");
    let agent = Agent::start_ready(&cfg, Duration::from_secs(15), "telemetry up", || {
        scrape(&tel).is_some()
    });
    let addr = format!("127.0.0.1:{grpc}");
    let garbage: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
    let rt = rt();
    rt.block_on(async {
        // Garbage without a token, garbage with a wrong token, an empty valid message without
        // one: UNAUTHENTICATED (16) every time, never INTERNAL.
        assert_eq!(
            grpc_call(&addr, EXPORT_TRACES, None, &garbage).await.0,
            "16"
        );
        assert_eq!(
            grpc_call(&addr, EXPORT_TRACES, Some("wrong"), &garbage)
                .await
                .0,
            "16"
        );
        assert_eq!(grpc_call(&addr, EXPORT_TRACES, None, &[]).await.0, "16");
        // With the token: garbage is corrupt, an empty request is fine.
        let corrupt = grpc_call(&addr, EXPORT_TRACES, Some("s3cret-token"), &garbage)
            .await
            .0;
        assert!(corrupt == "13" || corrupt == "3", "{corrupt}");
        assert_eq!(
            grpc_call(&addr, EXPORT_TRACES, Some("s3cret-token"), &[])
                .await
                .0,
            "0"
        );
    });
    let t = scrape(&tel).unwrap();
    let refused = |reason: &str| {
        metric_value(
            &t,
            "celeriac_receiver_refused_requests_total",
            &[("reason", reason), ("protocol", "grpc")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(refused("unauthenticated"), 3.0, "{}", agent.output());
    assert_eq!(refused("corrupt"), 1.0);
}

/// A slow-loris connection: sends `start`, then one more byte of `trickle` (cycling) every
/// `every`, until the server closes it. Returns how long the server kept it open (None: still
/// open at `give_up`).
async fn loris(
    addr: String,
    start: &'static [u8],
    trickle: &'static [u8],
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(&addr).await.ok()?;
    if s.write_all(start).await.is_err() {
        return Some(t0.elapsed());
    }
    let mut buf = [0u8; 256];
    let mut next = trickle.iter().cycle();
    loop {
        if t0.elapsed() > give_up {
            return None;
        }
        match tokio::time::timeout(every, s.read(&mut buf)).await {
            // Closed (EOF or reset), or an answer the server sends before it closes.
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => {
                let byte = [*next.next().unwrap_or(&b'x')];
                if s.write_all(&byte).await.is_err() {
                    return Some(t0.elapsed());
                }
            }
        }
    }
}

#[test]
fn slow_loris_connections_are_cut_off_and_normal_clients_served() {
    const LORISES: usize = 300;
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let cfg = otlp_to_debug(
        &format!(
            "
            grpc: {{ endpoint: 127.0.0.1:{grpc}, read_header_timeout: 2s }}
            http: {{ endpoint: 127.0.0.1:{http}, read_header_timeout: 2s }}"
        ),
        tel,
    );
    let (grpc, http, tel) = (
        format!("127.0.0.1:{grpc}"),
        format!("127.0.0.1:{http}"),
        format!("127.0.0.1:{tel}"),
    );
    let _agent = Agent::start_ready(
        &cfg,
        Duration::from_secs(15),
        "telemetry and OTLP/HTTP up",
        || scrape(&tel).is_some() && http_get(&http, "/v1/traces").is_some(),
    );
    let normal = |http: &str| {
        let t0 = Instant::now();
        let r = http_post(http, "/v1/traces", "application/x-protobuf", b"").expect("answer");
        assert_eq!(r.status, 200);
        t0.elapsed()
    };
    // The usual time, without lorises.
    let mut usual: Vec<Duration> = (0..20).map(|_| normal(&http)).collect();
    usual.sort();
    let rt = rt();
    let give_up = Duration::from_secs(20);
    let every = Duration::from_millis(500);
    let mut lorises = Vec::new();
    rt.block_on(async {
        for i in 0..LORISES {
            // A third each: OTLP/HTTP, /metrics (an HTTP/1 head trickled), OTLP/gRPC (the
            // HTTP/2 connection preface trickled).
            let (addr, start, trickle): (&String, &'static [u8], &'static [u8]) = match i % 3 {
                0 => (&http, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nX-A: ", b"x"),
                1 => (&tel, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: ", b"x"),
                _ => (&grpc, b"PRI * HT", b"TP/2.0\r\n\r\nSM\r\n\r\n"),
            };
            lorises.push(rt.spawn(loris(addr.clone(), start, trickle, every, give_up)));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile a normal client, every 100 ms for 4 s.
    let t0 = Instant::now();
    let mut during = Vec::new();
    while t0.elapsed() < Duration::from_secs(4) {
        during.push(normal(&http));
        std::thread::sleep(Duration::from_millis(100));
    }
    during.sort();
    let held: Vec<Option<Duration>> = rt.block_on(async {
        let mut v = Vec::new();
        for l in lorises {
            v.push(l.await.unwrap());
        }
        v
    });
    let pct = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p) as usize];
    // By listener: OTLP/HTTP and OTLP/gRPC with `read_header_timeout: 2s`, `/metrics` with the
    // default (10 s).
    for (group, name, bound) in [
        (0, "OTLP/HTTP", Duration::from_secs(2)),
        (1, "/metrics", Duration::from_secs(10)),
        (2, "OTLP/gRPC", Duration::from_secs(2)),
    ] {
        let mine: Vec<Option<Duration>> = held.iter().skip(group).step_by(3).copied().collect();
        let open = mine.iter().filter(|h| h.is_none()).count();
        let mut cut: Vec<Duration> = mine.iter().flatten().copied().collect();
        cut.sort();
        println!(
            "FIGURES slow_loris {name}: {} lorises, {} cut off (p50 {:?}, max {:?}; read_header_timeout {bound:?}), {open} still open after {give_up:?}",
            mine.len(),
            cut.len(),
            cut.first().map(|_| pct(&cut, 0.5)).unwrap_or_default(),
            cut.last().copied().unwrap_or_default(),
        );
        assert_eq!(open, 0, "{name}: slow-loris connections never cut off");
        assert!(
            cut[0] >= bound - Duration::from_millis(100)
                && cut[cut.len() - 1] < bound + Duration::from_secs(3),
            "{name}: cut off after {:?}..{:?}, want about {bound:?}",
            cut[0],
            cut[cut.len() - 1]
        );
    }
    println!(
        "FIGURES slow_loris normal client: without lorises p50 {:?} max {:?}; with {LORISES} ({} requests over 4 s) p50 {:?} max {:?}",
        pct(&usual, 0.5),
        usual[usual.len() - 1],
        during.len(),
        pct(&during, 0.5),
        during[during.len() - 1],
    );
    assert!(
        during[during.len() - 1] < Duration::from_secs(1).max(usual[usual.len() - 1] * 10),
        "a normal client waited {:?} with the lorises (usual max {:?})",
        during[during.len() - 1],
        usual[usual.len() - 1]
    );
}
