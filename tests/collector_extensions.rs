//! The collector's extensions, run in the celeriac binary as a collector user would declare
//! them: `health_check` answers with the collector's JSON, `zpages` shows the pipelines and the
//! live status of their components, `pprof` hands out a CPU profile in pprof's protobuf format.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_celeriac"))
}

fn config(health: u16, zpages: u16, otlp: u16, extra_ext: &str, extra_enabled: &str) -> String {
    format!(
        "receivers:
  otlp:
    grpc:
      enabled: false
    http:
      endpoint: 127.0.0.1:{otlp}
processors:
  batch:
exporters:
  debug:
    verbosity: basic
extensions:
  health_check:
    endpoint: 127.0.0.1:{health}
  zpages:
    endpoint: 127.0.0.1:{zpages}
{extra_ext}
service:
  extensions: [health_check, zpages{extra_enabled}]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
    logs:
      receivers: [otlp]
      exporters: [debug]
"
    )
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
    let mut agent = Agent::start(bin(), &config(health, zpages, otlp, "", ""));
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
    let mut agent = Agent::start(bin(), &config(health, zpages, otlp, "", ""));
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
