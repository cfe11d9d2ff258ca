//! Secrets and access: bearer tokens on the agent's own HTTP endpoints (`/metrics` of the
//! telemetry server and of the `prometheus` exporter; `/healthz` stays open for probes), and
//! credentials never printed — not by `validate` when the file around them is wrong, not in the
//! agent's logs while it runs.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const SECRET: &str = "hunter2-s3cret";

#[test]
fn own_endpoints_require_the_bearer_token() {
    let redis = RedisServer::start();
    let (prom, tel) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let cfg = AgentConfig::celery_without_telemetry(&redis.url(), "{}")
        .telemetry_body(&format!("{{ endpoint: {tel}, bearer_token: {SECRET} }}"))
        .exporter(
            "prometheus",
            &format!("{{ endpoint: {prom}, bearer_token: {SECRET} }}"),
        )
        .pipeline("metrics", &["celery_correlate"], &["prometheus"])
        .yaml();
    let agent = Agent::start_ready(&cfg, Duration::from_secs(15), "healthz", || {
        http_ok(&tel, "/healthz")
    });
    let auth = format!("Bearer {SECRET}");
    for addr in [&tel, &prom] {
        let anonymous = http_request(addr, "GET", "/metrics", &[], b"").expect("answer");
        assert_eq!(anonymous.status, 401, "{addr}");
        assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
        let wrong = http_request(
            addr,
            "GET",
            "/metrics",
            &[("authorization", "Bearer nope")],
            b"",
        )
        .expect("answer");
        assert_eq!(wrong.status, 401, "{addr}");
        assert!(
            wait_until(Duration::from_secs(10), || {
                http_request(addr, "GET", "/metrics", &[("authorization", &auth)], b"")
                    .is_some_and(|r| r.status == 200)
            }),
            "{addr} with the token"
        );
    }
    assert!(!agent.output().contains(SECRET), "{}", agent.output());
}

fn validate(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(bin())
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .expect("run celeriac");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn validate_never_prints_credentials() {
    // Each file holds the secret somewhere and is wrong somewhere (often right next to it).
    let cases = [
        // credentials in URLs where they are refused or the URL is otherwise bad
        format!("receivers:\n  celery_redis: {{ endpoint: 'redis://u:{SECRET}@' }}\n"),
        format!("receivers:\n  celery_redis: {{ endpoint: 'redis://u:{SECRET}@h:notaport/0' }}\n"),
        format!("receivers:\n  redis_queues: {{ endpoint: 'redis://u:{SECRET}@h:x/0' }}\n"),
        format!(
            "exporters:\n  prometheus_remote_write: {{ endpoint: 'http://u:{SECRET}@h/api/v1/write' }}\n"
        ),
        // secrets of the wrong type or beside an unknown key
        format!(
            "exporters:\n  prometheus_remote_write:\n    basic_auth: {{ username: u, password: {SECRET}, extra: 1 }}\n"
        ),
        format!("exporters:\n  otlp: {{ endpoint: 'http://h:4317', headers: {{ authorization: {SECRET} }}, nope: 1 }}\n"),
        format!("receivers:\n  otlp: {{ auth: {{ bearer_token: {SECRET}, other: 1 }} }}\n"),
        format!("receivers:\n  otlp: {{ auth: {{ bearer_token: [{SECRET}] }} }}\n"),
        format!("exporters:\n  prometheus: {{ bearer_token: {{ x: {SECRET} }} }}\n"),
        format!("service:\n  telemetry: {{ bearer_token: {SECRET}, endpoint: nowhere }}\n"),
    ];
    for yaml in &cases {
        let (code, out) = validate(yaml);
        assert_eq!(code, 1, "should be invalid:\n{yaml}\n{out}");
        assert!(
            !out.contains(SECRET),
            "the secret was printed for\n{yaml}\n---\n{out}"
        );
    }
}
