//! The config file: YAML in the OpenTelemetry Collector's shape, `${env:VAR}` expansion, and
//! diagnostics that carry `file:line:col`.
//!
//! This module owns the *shape* of the file (sections, component ids, pipelines, service
//! settings). Each component's own settings stay an opaque [`Value`] here and are decoded by that
//! component's builder (see [`decode`]), so one config type lives next to the code that uses it.
//! Cross-component rules (signals, references, cycles) live in [`crate::pipeline::graph`].

mod diag;
mod expand;
mod marks;
mod service;
mod source;
pub mod types;

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
pub use serde_yaml_ng::Value;

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use marks::Pos;
pub use source::set_to_uri;

/// The pipeline file shipped in the binary; `celeriac run` uses it when no `-c` is given.
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/default.yaml");

/// A component id: `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    pub type_name: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (t, n) = match s.split_once('/') {
            Some((t, n)) => (t, Some(n)),
            None => (s, None),
        };
        let valid_type = !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid_type {
            return Err(format!(
                "`{s}` is not a valid component id: the type must be lowercase letters, digits and `_`"
            ));
        }
        if n.is_some_and(|n| n.is_empty() || n.contains('/')) {
            return Err(format!(
                "`{s}` is not a valid component id: write `type` or `type/name`"
            ));
        }
        Ok(ComponentId {
            type_name: t.to_string(),
            name: n.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.type_name, n),
            None => f.write_str(&self.type_name),
        }
    }
}

/// Which of the four config sections a component is declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    Receivers,
    Processors,
    Connectors,
    Exporters,
    /// Not part of any pipeline: enabled by `service.extensions`.
    Extensions,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Receivers,
        Section::Processors,
        Section::Connectors,
        Section::Exporters,
    ];
    pub fn key(self) -> &'static str {
        match self {
            Section::Receivers => "receivers",
            Section::Processors => "processors",
            Section::Connectors => "connectors",
            Section::Exporters => "exporters",
            Section::Extensions => "extensions",
        }
    }
    /// "receiver", "processor", ... for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Section::Receivers => "receiver",
            Section::Processors => "processor",
            Section::Connectors => "connector",
            Section::Exporters => "exporter",
            Section::Extensions => "extension",
        }
    }
}

/// One declared component.
#[derive(Debug, Clone)]
pub struct ComponentDecl {
    pub id: ComponentId,
    pub section: Section,
    /// Its settings, env-expanded; `null` means "all defaults".
    pub settings: Value,
    /// Key path of the declaration, for diagnostics.
    pub path: String,
    /// Settings read by a whole-value `${…}` as a number or boolean, by key path under
    /// `settings`, with the text that was read: a string setting gets the text back.
    pub originals: Vec<(String, String)>,
}

/// A reference to a component from a pipeline.
#[derive(Debug, Clone)]
pub struct ComponentRef {
    pub id: ComponentId,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct PipelineDecl {
    pub id: String,
    pub signal: crate::signal::SignalKind,
    pub receivers: Vec<ComponentRef>,
    pub processors: Vec<ComponentRef>,
    pub exporters: Vec<ComponentRef>,
    pub path: String,
}

pub use service::{LogEncoding, ServiceSettings, TelemetrySettings};

/// The whole file, shape-checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub components: Vec<ComponentDecl>,
    pub pipelines: Vec<PipelineDecl>,
    pub service: ServiceSettings,
}

impl Config {
    /// The extensions `service.extensions` enables (names that do not parse are left out).
    pub fn enabled_extensions(&self) -> Vec<ComponentId> {
        self.service
            .extensions
            .iter()
            .filter_map(|s| ComponentId::parse(s).ok())
            .collect()
    }

    pub fn component(&self, section: Section, id: &ComponentId) -> Option<&ComponentDecl> {
        self.components
            .iter()
            .find(|c| c.section == section && &c.id == id)
    }
}

/// Read and shape-check a file. Diagnostics (warnings too) are returned either way; the config
/// is `None` when any error was found.
pub fn load(path: &Path) -> (Option<Config>, Diagnostics) {
    load_uris(&[path.display().to_string()])
}

/// Read, merge and shape-check the `--config` URIs (paths, `file:`, `env:`, `yaml:`; see
/// [`source`]) in order, then expand `${…}` over the result as the collector does.
pub fn load_uris(uris: &[String]) -> (Option<Config>, Diagnostics) {
    let (cfg, d) = load_uris_partial(uris);
    if d.has_errors() {
        (None, d)
    } else {
        (cfg, d)
    }
}

/// Like [`load_uris`], but the config comes back even when its shape has errors (`None` only
/// when a source cannot be read), so the components can be checked too and every problem is
/// reported at once. Callers must look at `d.has_errors()`.
pub fn load_uris_partial(uris: &[String]) -> (Option<Config>, Diagnostics) {
    let mut d = Diagnostics::empty();
    match source::resolve(uris, &mut d) {
        Some(root) => check(root, d),
        None => (None, d),
    }
}

/// YAML `text` as a value; invalid YAML is an error at its line and column.
fn parse_yaml(text: &str, d: &mut Diagnostics) -> Option<Value> {
    match serde_yaml_ng::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let pos = e.location().map(|l| Pos {
                line: l.line(),
                col: l.column(),
            });
            d.push_at(Severity::Error, "", pos, format!("invalid YAML: {e}"));
            None
        }
    }
}

/// Shape-check YAML `text`; `file` names it in diagnostics.
pub fn parse(text: &str, file: &str) -> (Option<Config>, Diagnostics) {
    let mut d = Diagnostics::new(file, text);
    let Some(root) = parse_yaml(text, &mut d) else {
        return (None, d);
    };
    let (cfg, d) = check(root, d);
    if d.has_errors() {
        (None, d)
    } else {
        (cfg, d)
    }
}

fn check(root: Value, mut d: Diagnostics) -> (Option<Config>, Diagnostics) {
    let mut originals = std::collections::BTreeMap::new();
    let root = expand::expand(root, &mut d, &mut originals);
    let root = match root {
        Value::Mapping(m) => m,
        Value::Null => Default::default(),
        _ => {
            d.error(
                "",
                "the config must be a mapping with `receivers`, `exporters` and `service`",
            );
            return (None, d);
        }
    };

    let mut components = Vec::new();
    let mut service = ServiceSettings::default();
    let mut pipelines = Vec::new();
    for (k, v) in &root {
        let Some(key) = k.as_str() else {
            d.error("", "top-level keys must be strings");
            continue;
        };
        if let Some(section) = Section::ALL.iter().find(|s| s.key() == key) {
            read_section(*section, v, &mut components, &originals, &mut d);
        } else if key == "service" {
            read_service(v, &mut service, &mut pipelines, &mut d);
        } else if key == "extensions" {
            read_section(Section::Extensions, v, &mut components, &originals, &mut d);
        } else {
            d.error(
                key,
                format!("unknown top-level key `{key}`: expected receivers, processors, connectors, exporters, extensions or service"),
            );
        }
    }
    if !root.contains_key("service") {
        d.error(
            "",
            "the config has no `service` section, so no pipeline runs",
        );
    }
    let config = Config {
        components,
        pipelines,
        service,
    };
    (Some(config), d)
}

fn read_section(
    section: Section,
    v: &Value,
    out: &mut Vec<ComponentDecl>,
    originals: &std::collections::BTreeMap<String, String>,
    d: &mut Diagnostics,
) {
    let key = section.key();
    let map = match v {
        Value::Mapping(m) => m,
        Value::Null => return,
        _ => {
            d.error(
                key,
                format!("`{key}` must be a mapping of component ids to settings"),
            );
            return;
        }
    };
    for (k, settings) in map {
        let Some(id_str) = k.as_str() else {
            d.error(key, format!("ids in `{key}` must be strings"));
            continue;
        };
        let path = format!("{key}.{id_str}");
        match ComponentId::parse(id_str) {
            Ok(id) => {
                let prefix = format!("{path}.");
                let originals = originals
                    .iter()
                    .filter_map(|(k, text)| {
                        k.strip_prefix(&prefix)
                            .map(|rel| (rel.to_string(), text.clone()))
                    })
                    .collect();
                out.push(ComponentDecl {
                    id,
                    section,
                    settings: settings.clone(),
                    path,
                    originals,
                })
            }
            Err(msg) => d.error(&path, msg),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFields {
    #[serde(default)]
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    #[serde(default)]
    exporters: Vec<String>,
}

fn read_service(
    v: &Value,
    service: &mut ServiceSettings,
    pipelines: &mut Vec<PipelineDecl>,
    d: &mut Diagnostics,
) {
    let Value::Mapping(map) = v else {
        d.error("service", "`service` must be a mapping with `pipelines`");
        return;
    };
    let mut rest = map.clone();
    let pipes = rest.remove("pipelines");
    let mut rest = Value::Mapping(rest);
    // Every wrong key of `service` is reported, and none hides the pipelines.
    for e in errors_until_ok(&mut rest, |v| {
        decode::<ServiceSettings>(v).map(|s| *service = s)
    }) {
        d.error(&e.full_path("service"), e.message);
    }
    let Some(pipes) = pipes else {
        d.error("service", "`service` has no `pipelines`");
        return;
    };
    let Value::Mapping(pipes) = pipes else {
        d.error(
            "service.pipelines",
            "`pipelines` must be a mapping of pipeline ids",
        );
        return;
    };
    for (k, p) in &pipes {
        let Some(id) = k.as_str() else {
            d.error("service.pipelines", "pipeline ids must be strings");
            continue;
        };
        let path = format!("service.pipelines.{id}");
        let signal_name = id.split('/').next().unwrap_or(id);
        let Some(signal) = crate::signal::SignalKind::parse(signal_name) else {
            d.error(
                &path,
                if COLLECTOR_SIGNALS_NOT_CARRIED.contains(&signal_name) {
                    format!("pipeline `{id}`: celeriac does not carry {signal_name} (its signals are traces, metrics, logs and celery); remove this pipeline")
                } else {
                    format!("pipeline `{id}`: `{signal_name}` is not a signal; a pipeline id is traces, metrics, logs or celery, optionally followed by /name")
                },
            );
            continue;
        };
        let fields = match decode::<PipelineFields>(p) {
            Ok(f) => f,
            Err(e) => {
                d.error(&e.full_path(&path), e.message);
                continue;
            }
        };
        let refs = |list: Vec<String>, key: &str, d: &mut Diagnostics| -> Vec<ComponentRef> {
            list.into_iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let rpath = format!("{path}.{key}[{i}]");
                    match ComponentId::parse(&s) {
                        Ok(id) => Some(ComponentRef { id, path: rpath }),
                        Err(msg) => {
                            d.error(&rpath, msg);
                            None
                        }
                    }
                })
                .collect()
        };
        let receivers = refs(fields.receivers, "receivers", d);
        let processors = refs(fields.processors, "processors", d);
        let exporters = refs(fields.exporters, "exporters", d);
        pipelines.push(PipelineDecl {
            id: id.to_string(),
            signal,
            receivers,
            processors,
            exporters,
            path,
        });
    }
}

/// Signals the OpenTelemetry Collector has and celeriac does not.
pub const COLLECTOR_SIGNALS_NOT_CARRIED: &[&str] = &["profiles", "entities"];

/// A settings decode failure: where (relative key path) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

impl DecodeError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        DecodeError {
            path: path.into(),
            message: message.into(),
        }
    }
    /// The path under `base` (`receivers.celery_redis` + `endpoint`).
    pub fn full_path(&self, base: &str) -> String {
        match (base.is_empty(), self.path.is_empty()) {
            (_, true) => base.to_string(),
            (true, false) => self.path.clone(),
            (false, false) if self.path.starts_with('[') => format!("{base}{}", self.path),
            (false, false) => format!("{base}.{}", self.path),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Run `attempt` on `v`; while it fails at a key path, drop that key and try again, so every
/// wrong key of a component is reported at once, not only the first. Returns the errors (empty
/// when the first attempt succeeded).
pub fn errors_until_ok<T>(
    v: &mut Value,
    mut attempt: impl FnMut(&Value) -> Result<T, DecodeError>,
) -> Vec<DecodeError> {
    let mut errors: Vec<DecodeError> = Vec::new();
    for _ in 0..64 {
        match attempt(v) {
            Ok(_) => break,
            Err(e) => {
                let removable = !e.path.is_empty() && remove_path(v, &e.path);
                if !errors.contains(&e) {
                    errors.push(e);
                }
                if !removable {
                    break;
                }
            }
        }
    }
    errors
}

/// Give string settings that a `${…}` typed as a number or boolean the text that was read:
/// while `attempt` fails with "expected a string" at one of `originals`' paths, put the text
/// there and try again.
pub fn restore_originals<T>(
    v: &mut Value,
    originals: &[(String, String)],
    mut attempt: impl FnMut(&Value) -> Result<T, DecodeError>,
) {
    for _ in 0..=originals.len() {
        let Err(e) = attempt(v) else { return };
        if !e.message.contains("expected a string") {
            return;
        }
        let Some((_, text)) = originals.iter().find(|(p, _)| *p == e.path) else {
            return;
        };
        let Some(slot) = value_at(v, &e.path) else {
            return;
        };
        *slot = Value::String(text.clone());
    }
}

fn value_at<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path.split('.') {
        let (key, idx) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !key.is_empty() {
            cur = cur.as_mapping_mut()?.get_mut(key)?;
        }
        if let Some(i) = idx {
            cur = cur.as_sequence_mut()?.get_mut(i)?;
        }
    }
    Some(cur)
}

/// Remove the key (or item) at `path` (`a.b`, `a.list[2].c`) from `v`; `false` if absent.
pub fn remove_path(v: &mut Value, path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('.') {
        match seg.find('[') {
            Some(i) => {
                if i > 0 {
                    parts.push(&seg[..i]);
                }
                parts.extend(seg[i..].split_inclusive(']'));
            }
            None => parts.push(seg),
        }
    }
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut cur = v;
    for p in parents {
        let next = match p.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| match cur {
                Value::Sequence(s) => s.get_mut(i),
                _ => None,
            }),
            None => match cur {
                Value::Mapping(m) => m.get_mut(*p),
                _ => None,
            },
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (
        last.strip_prefix('[').and_then(|x| x.strip_suffix(']')),
        cur,
    ) {
        (Some(i), Value::Sequence(s)) => match i.parse::<usize>() {
            Ok(i) if i < s.len() => {
                s.remove(i);
                true
            }
            _ => false,
        },
        (None, Value::Mapping(m)) => m.remove(*last).is_some(),
        _ => false,
    }
}

/// Decode a component's settings into its typed config, keeping the path of the failing key.
/// `null` (a component declared with no settings) decodes as an empty mapping.
pub fn decode<T: DeserializeOwned>(v: &Value) -> Result<T, DecodeError> {
    let owned = match v {
        Value::Null => Value::Mapping(Default::default()),
        other => other.clone(),
    };
    serde_path_to_error::deserialize::<_, T>(owned).map_err(|e| {
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        let message = e.inner().to_string();
        // serde reports an unknown key at its parent: point at the key itself.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some((field, _)) = rest.split_once('`') {
                let already = path == field || path.ends_with(&format!(".{field}"));
                path = if already {
                    path
                } else if path.is_empty() {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
            }
        }
        DecodeError { path, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_ids() {
        let id = ComponentId::parse("otlp/tempo").unwrap();
        assert_eq!(id.type_name, "otlp");
        assert_eq!(id.name.as_deref(), Some("tempo"));
        assert_eq!(id.to_string(), "otlp/tempo");
        assert!(ComponentId::parse("Otlp").is_err());
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("a/b/c").is_err());
    }

    #[test]
    fn decode_reports_unknown_key_path() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            a: u32,
        }
        let v: Value = serde_yaml_ng::from_str("a: 1\nb: 2\n").unwrap();
        let e = decode::<S>(&v).unwrap_err();
        assert_eq!(e.path, "b");
        assert!(e.message.contains("unknown field `b`"));
        let v: Value = serde_yaml_ng::from_str("a: x\n").unwrap();
        assert_eq!(decode::<S>(&v).unwrap_err().path, "a");
    }

    #[test]
    fn shape_errors_are_all_reported() {
        let text = "receivers:\n  BAD: {}\nfoo: 1\nservice:\n  pipelines:\n    spans: { receivers: [a] }\n";
        let (cfg, d) = parse(text, "t.yaml");
        assert!(cfg.is_none());
        let out = d.render();
        assert!(out.contains("t.yaml:2:3: error:"), "{out}");
        assert!(
            out.contains("t.yaml:3:1: error: unknown top-level key `foo`"),
            "{out}"
        );
        assert!(out.contains("t.yaml:6:5: error: pipeline `spans`"), "{out}");
    }

    #[test]
    fn every_wrong_key_is_reported() {
        #[derive(Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            a: u32,
            #[serde(default)]
            b: Option<u32>,
        }
        let mut v: Value = serde_yaml_ng::from_str(
            "a: 1
x: 2
y: 3
b: nope
",
        )
        .unwrap();
        let errs = errors_until_ok(&mut v, decode::<S>);
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths.len(), 3, "{errs:?}");
        for p in ["x", "y", "b"] {
            assert!(paths.contains(&p), "{errs:?}");
        }
        let mut v: Value = serde_yaml_ng::from_str("l: [{a: 1}, {b: 2}]").unwrap();
        assert!(remove_path(&mut v, "l[1].b"));
        assert_eq!(
            v,
            serde_yaml_ng::from_str::<Value>("l: [{a: 1}, {}]").unwrap()
        );
    }

    #[test]
    fn service_errors_do_not_hide_the_rest() {
        let text = "receivers:
  nope_r: {}
service:
  telemetry: {bogus: 1}
  wrong: 2
  pipelines:
    profiles: {receivers: [nope_r], exporters: [x]}
";
        let (cfg, d) = parse(text, "t.yaml");
        assert!(cfg.is_none());
        let out = d.render();
        assert!(
            out.contains("t.yaml:4:15: error: unknown field `bogus`"),
            "{out}"
        );
        assert!(
            out.contains("t.yaml:5:3: error: unknown field `wrong`"),
            "{out}"
        );
        assert!(
            out.contains("t.yaml:7:5: error: pipeline `profiles`"),
            "{out}"
        );
    }

    /// Several `--config` sources: positions point into the source that has the key.
    #[test]
    fn merged_sources_keep_positions() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "receivers:\n  otlp:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [debug]}\n").unwrap();
        let b = dir.path().join("b.yaml");
        std::fs::write(&b, "exporters:\n  debug:\n    bogus: 1\n").unwrap();
        let (cfg, d) = load_uris(&[a.display().to_string(), b.display().to_string()]);
        assert!(cfg.is_some(), "{}", d.render());
        let (_, d) = load_uris(&[
            a.display().to_string(),
            "yaml:service::telemetry::nope: 1".to_string(),
        ]);
        assert!(
            d.render()
                .contains("yaml:service::telemetry::nope: 1:1:1: error:"),
            "{}",
            d.render()
        );
    }

    #[test]
    fn default_pipeline_parses() {
        let (cfg, d) = parse(DEFAULT_PIPELINE, "default.yaml");
        assert!(cfg.is_some(), "{}", d.render());
    }
}
