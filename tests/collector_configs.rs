//! Real OpenTelemetry Collector config files (`../shared/corpora/collector-configs/`, see its
//! SOURCES.md), validated unchanged with `celeriac validate --config=FILE`.
//!
//! Per file, [`CORPUS`] lists what celeriac is expected to refuse once every planned component
//! is in (the component types and signals celeriac does not have). Which types are *known* is
//! read from the registry at test time, so the test holds before and after more components land:
//!
//! * every error must sit in the block of a component whose type is not registered (or in a
//!   listed refused region: a `profiles` pipeline, push telemetry), never anywhere else;
//! * every declared component whose type is not registered is named, all in one run;
//! * a file none of whose types or signals is missing validates (exit 0).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use celeriac::config::Section;

fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora/collector-configs");
    assert!(
        dir.join("SOURCES.md").is_file(),
        "the collector config corpus is missing at {} (CI checks out shared/ beside the repo)",
        dir.display()
    );
    dir
}

/// (file, component types celeriac will still lack when every planned component is in,
/// other refused regions as `service.…` key paths).
type Expect = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

const CORPUS: &[Expect] = &[
    (
        "01-otelcol-core-default.yaml",
        &[("receivers", "jaeger"), ("receivers", "zipkin")],
        &[],
    ),
    ("02-collector-examples-local.yaml", &[], &[]),
    ("03-collector-examples-k8s-agent.yaml", &[], &[]),
    ("04-collector-examples-k8s-gateway.yaml", &[], &[]),
    ("05-otelio-configuration-basic.yaml", &[], &[]),
    ("06-otelio-python-getting-started.yaml", &[], &[]),
    ("07-python-docs-logs-example.yaml", &[], &[]),
    ("08-java-examples-javaagent.yaml", &[], &[]),
    // `sending_queue.batch` (exporters.otlp/jaeger, exporters.prometheus) is the collector-ext
    // part's sending_queue shape; until it lands those keys are refused too.
    (
        "09-java-examples-otlp-demo.yaml",
        &[("exporters", "zipkin")],
        &[
            "exporters.otlp/jaeger.sending_queue",
            "exporters.prometheus.sending_queue",
        ],
    ),
    ("10-contrib-examples-demo.yaml", &[], &[]),
    (
        "11-grafana-docker-otel-lgtm.yaml",
        &[("receivers", "prometheus")],
        &[],
    ),
    ("12-grafana-tempo-otel-collector.yaml", &[], &[]),
    (
        "13-jaeger-monitor-spanmetrics.yml",
        &[("receivers", "jaeger"), ("connectors", "spanmetrics")],
        &[],
    ),
    (
        "14-otel-demo-otelcol-config.yml",
        &[
            ("receivers", "http_check"),
            ("receivers", "nginx"),
            ("receivers", "docker_stats"),
            ("receivers", "redis"),
            ("receivers", "postgresql"),
            ("receivers", "prometheus"),
            ("receivers", "host_metrics"),
            ("processors", "resource_detection"),
            ("processors", "filter"),
            ("processors", "transform"),
            ("processors", "gen_ai_normalizer"),
            ("connectors", "span_metrics"),
        ],
        // The profiles signal, and the internal telemetry pushed over OTLP.
        &["service.pipelines.profiles", "service.telemetry"],
    ),
    (
        "15-r0mdau-cortex-prometheusremotewrite.yaml",
        &[("receivers", "prometheus")],
        &[],
    ),
];

/// Component types the collector-ext part adds; until they are registered they are refused
/// like any unknown type (and expected to be).
const PLANNED: &[(&str, &str)] = &[
    ("extensions", "health_check"),
    ("extensions", "zpages"),
    ("extensions", "pprof"),
    ("extensions", "bearertokenauth"),
    ("extensions", "basicauth"),
    ("extensions", "file_storage"),
    ("exporters", "otlphttp"),
    ("exporters", "otlp_http"),
    ("exporters", "logging"),
];

fn section(key: &str) -> Section {
    match key {
        "receivers" => Section::Receivers,
        "processors" => Section::Processors,
        "exporters" => Section::Exporters,
        "connectors" => Section::Connectors,
        "extensions" => Section::Extensions,
        other => panic!("not a section: {other}"),
    }
}

/// One declared component and the line span of its block (1-based, inclusive).
struct Block {
    section: String,
    id: String,
    lines: (usize, usize),
}

/// The component blocks and the line spans of `service.…` paths, read from the file's layout
/// (two-space-indented ids under a top-level section, as every corpus file is written).
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let meaningful = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    let mut out = Vec::new();
    let mut top = String::new();
    let mut child_indent = None;
    for (i, l) in lines.iter().enumerate() {
        if !meaningful(l) {
            continue;
        }
        if indent(l) == 0 {
            top = l.trim_end().trim_end_matches(':').to_string();
            child_indent = None;
            continue;
        }
        let ci = *child_indent.get_or_insert(indent(l));
        if indent(l) != ci {
            continue;
        }
        let Some((key, _)) = l.trim().split_once(':') else {
            continue;
        };
        let end = (i + 1..lines.len())
            .take_while(|&j| !meaningful(lines[j]) || indent(lines[j]) > ci)
            .filter(|&j| meaningful(lines[j]))
            .last()
            .unwrap_or(i);
        out.push(Block {
            section: top.clone(),
            id: key.trim().to_string(),
            lines: (i + 1, end + 1),
        });
    }
    out
}

/// The line span of a `service.x.y` path (its key and everything indented under it).
fn path_span(text: &str, path: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut from = 0;
    let mut min_indent = 0;
    let mut span = (0, lines.len());
    for part in path.split('.') {
        let i = (from..span.1)
            .find(|&i| {
                let l = lines[i];
                indent(l) >= min_indent && l.trim_start().starts_with(&format!("{part}:"))
            })
            .unwrap_or_else(|| panic!("{path}: `{part}` not found"));
        let ind = indent(lines[i]);
        let end = (i + 1..lines.len())
            .take_while(|&j| lines[j].trim().is_empty() || indent(lines[j]) > ind)
            .last()
            .unwrap_or(i);
        span = (i, end + 1);
        from = i + 1;
        min_indent = ind + 1;
    }
    (span.0 + 1, span.1)
}

fn known(sec: &str, id: &str) -> bool {
    let t = id.split('/').next().unwrap_or(id);
    celeriac::registry::lookup(section(sec), t).is_some()
}

#[test]
fn collector_config_corpus() {
    let dir = corpus_dir();
    let mut on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    assert_eq!(on_disk.len(), 15, "{on_disk:?}");
    let mut report = String::new();
    for (file, refused, regions) in CORPUS {
        assert!(on_disk.remove(*file), "{file} not in the corpus");
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        // The demo's file is meant to run with these set (its compose file sets them).
        let out = Command::new(env!("CARGO_BIN_EXE_celeriac"))
            .arg("validate")
            .arg(format!("--config={}", path.display()))
            .env("OTEL_COLLECTOR_HOST", "0.0.0.0")
            .env("OTEL_COLLECTOR_PORT_GRPC", "4317")
            .env("OTEL_COLLECTOR_PORT_HTTP", "4318")
            .output()
            .expect("run celeriac validate");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let prefix = format!("{}:", path.display());
        let errors: Vec<(usize, &str)> = stderr
            .lines()
            .filter(|l| l.contains(": error: "))
            .map(|l| {
                let rest = l
                    .strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{file}: error without file:line:col: {l}"));
                let line: usize = rest
                    .split(':')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{file}: error without a line: {l}"));
                (line, l)
            })
            .collect();
        let blocks = blocks(&text);
        let missing: Vec<&Block> = blocks
            .iter()
            .filter(|b| b.section != "service" && !known(&b.section, &b.id))
            .collect();
        for b in &missing {
            let t = b.id.split('/').next().unwrap();
            assert!(
                refused.contains(&(b.section.as_str(), t))
                    || PLANNED.contains(&(b.section.as_str(), t)),
                "{file}: {} {} is not registered and not expected to be refused",
                b.section,
                b.id
            );
            assert!(
                errors
                    .iter()
                    .any(|(line, msg)| *line == b.lines.0 && msg.contains(&format!("`{t}`"))),
                "{file}: {} {} (line {}) is not named as refused:\n{stderr}",
                b.section,
                b.id,
                b.lines.0
            );
        }
        let spans: Vec<(usize, usize)> = regions.iter().map(|p| path_span(&text, p)).collect();
        for (line, msg) in &errors {
            let in_missing = missing
                .iter()
                .any(|b| (b.lines.0..=b.lines.1).contains(line));
            let in_region = spans.iter().any(|(a, z)| (*a..=*z).contains(line));
            assert!(
                in_missing || in_region,
                "{file}: an error outside the components celeriac lacks: {msg}\n{stderr}"
            );
        }
        let region_names = regions.iter().filter(|p| p.contains("pipelines"));
        for p in region_names {
            let (a, _) = path_span(&text, p);
            assert!(
                errors.iter().any(|(line, _)| *line == a),
                "{file}: {p} is not refused:\n{stderr}"
            );
        }
        let expect_valid = missing.is_empty() && regions.is_empty();
        if expect_valid {
            assert_eq!(
                out.status.code(),
                Some(0),
                "{file} should validate unchanged:\n{stderr}"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{file}:\n{stderr}");
        }
        report.push_str(&format!(
            "{file}: {}\n",
            if expect_valid {
                "valid".to_string()
            } else {
                format!("{} error(s)", errors.len())
            }
        ));
    }
    assert!(
        on_disk.is_empty(),
        "corpus files without expectations: {on_disk:?}"
    );
    eprintln!("{report}");
}

/// The file layout reader the test relies on.
#[test]
fn block_reader() {
    let text = "receivers:\n  otlp:\n    protocols:\n\n      grpc:\n  jaeger:\n    x: 1\n# c\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n    profiles:\n      receivers: [otlp]\n";
    let b = blocks(text);
    assert_eq!(b[0].id, "otlp");
    assert_eq!(b[0].lines, (2, 5));
    assert_eq!(b[1].id, "jaeger");
    assert_eq!(b[1].lines, (6, 7));
    assert_eq!(path_span(text, "service.pipelines.profiles"), (13, 14));
}
