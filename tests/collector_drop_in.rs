//! celeriac run exactly as the OpenTelemetry Collector is run: an unchanged collector config
//! file (opentelemetry.io's Python getting-started file, `otlp` receiver on gRPC and HTTP,
//! `batch`, `debug` exporter) with `celeriac --config=FILE` and no subcommand, the test's free
//! ports given by `--config=yaml:…` and `--set` overrides, spans sent by the official
//! OpenTelemetry Python SDK over both protocols.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn corpus_file(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpora/collector-configs")
        .join(name);
    assert!(
        p.is_file(),
        "{} missing (CI has shared/ beside the repo)",
        p.display()
    );
    p
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn send(proto: &str, endpoint: &str, n: usize) -> serde_json::Value {
    otlp_send(&mut otlp_send_command(&[proto, endpoint, &n.to_string()]))
}

/// The accepted-items counter of the otlp receiver for traces, from the agent's /metrics.
fn accepted(tel: &str) -> u64 {
    let Some((200, page)) = http_get(tel, "/metrics") else {
        return 0;
    };
    page.lines()
        .filter(|l| {
            l.starts_with("celeriac_receiver_accepted_items_total")
                && l.contains("otlp")
                && l.contains("traces")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn unchanged_collector_file_with_config_uris_and_python_sdk() {
    let file = corpus_file("06-otelio-python-getting-started.yaml");
    let (grpc, http, tel) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .arg(format!("--config={}", file.display()))
        // A yaml: URI with the collector's `::` key paths, merged over the file…
        .arg(format!(
            "--config=yaml:receivers::otlp::protocols::grpc::endpoint: 127.0.0.1:{grpc}"
        ))
        // …and --set, which is the same thing written with dots.
        .arg(format!(
            "--set=receivers.otlp.protocols.http.endpoint=127.0.0.1:{http}"
        ))
        .arg(format!(
            "--set=service.telemetry.metrics.address=127.0.0.1:{tel}"
        ))
        // service.telemetry.resource (a key with dots: only `::` splits paths).
        .arg("--config=yaml:service::telemetry::resource::service.name: celeriac-drop-in")
        .arg("--feature-gates=-component.UseLocalHostAsDefaultHost")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start celeriac");
    let mut agent = Kill(child);
    let tel_addr = format!("127.0.0.1:{tel}");
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || {
            http_get(&format!("127.0.0.1:{http}"), "/v1/traces").is_some()
                && http_get(&tel_addr, "/metrics").is_some()
        }),
        "celeriac did not come up:\n{}",
        log()
    );
    assert!(
        log().contains("ignoring unknown gate(s): component.UseLocalHostAsDefaultHost"),
        "{}",
        log()
    );
    let (_, page) = http_get(&tel_addr, "/metrics").unwrap();
    assert!(
        page.contains("target_info{service_name=\"celeriac-drop-in\"} 1"),
        "{page}"
    );
    let g = send("grpc", &format!("http://127.0.0.1:{grpc}"), 4);
    let h = send("http", &format!("http://127.0.0.1:{http}"), 3);
    assert_eq!(g["span_ids"].as_array().unwrap().len(), 4);
    assert_eq!(h["span_ids"].as_array().unwrap().len(), 3);
    assert!(
        wait_until(Duration::from_secs(10), || accepted(&tel_addr) == 7),
        "accepted {} of 7 spans:\n{}",
        accepted(&tel_addr),
        log()
    );
    // The file's debug exporter (verbosity: detailed) got them after the batch processor and
    // printed the collector's text dump.
    assert!(
        wait_until(Duration::from_secs(10), || log()
            .contains("Trace ID       : ")
            && log().contains("otlp-send-grpc")
            && log().contains("otlp-send-http")),
        "{}",
        log()
    );
    // Nothing was opened on the file's own 0.0.0.0:4317/4318: the overrides replaced them.
    assert!(!log().contains("0.0.0.0:4317"), "{}", log());
    let _ = agent.0.kill();
}

#[test]
fn validate_subcommand_takes_config_uris() {
    let file = corpus_file("12-grafana-tempo-otel-collector.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .arg("validate")
        .arg(format!("--config=file:{}", file.display()))
        .arg("--config=yaml:exporters::otlp::bogus_key: 1")
        .arg("--set=exporters.otlp.another_bogus=2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Both wrong keys, each at its own source.
    assert!(
        stderr.contains("yaml:exporters::otlp::bogus_key: 1:1:1: error: exporter otlp: unknown field `bogus_key`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("yaml:exporters::otlp::another_bogus: 2:1:1: error: exporter otlp: unknown field `another_bogus`"),
        "{stderr}"
    );
    // Unchanged, it is valid; `run -c` and `validate -c` keep working.
    let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
        .args(["validate", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
