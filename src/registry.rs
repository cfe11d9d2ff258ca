//! The one list of component types ([`COMPONENTS`]) and the lookups over it. Adding a component
//! is one file and one line here. Only `main` and `pipeline` import this module; components
//! describe themselves with the factory types of [`crate::component`], so nothing imports back.

use crate::component::{Factory, Registration};
use crate::config::{Section, Value};
use crate::signal::SignalKind;

/// Every component type celeriac knows.
pub static COMPONENTS: &[Registration] = &[
    crate::connectors::celery_correlate::REGISTRATION,
    crate::exporters::debug::REGISTRATION,
    crate::exporters::debug::LOGGING_REGISTRATION,
    crate::exporters::logs::REGISTRATION,
    crate::exporters::otlp::REGISTRATION,
    crate::exporters::otlp::http::REGISTRATION,
    crate::exporters::otlp::http::OTLP_HTTP_REGISTRATION,
    crate::exporters::prometheus::REGISTRATION,
    crate::exporters::prometheus_remote_write::REGISTRATION,
    crate::processors::batch::REGISTRATION,
    crate::processors::memory_limiter::REGISTRATION,
    crate::receivers::amqp_queues::REGISTRATION,
    crate::receivers::celery_amqp::REGISTRATION,
    crate::receivers::celery_redis::REGISTRATION,
    crate::receivers::filelog::REGISTRATION,
    crate::receivers::otlp::REGISTRATION,
    crate::receivers::prometheus::REGISTRATION,
    crate::receivers::redis_queues::REGISTRATION,
    crate::receivers::internal_metrics::REGISTRATION,
    crate::extensions::celery_ui::REGISTRATION,
    crate::extensions::health_check::REGISTRATION,
    crate::extensions::zpages::REGISTRATION,
    crate::extensions::pprof::REGISTRATION,
    crate::extensions::file_storage::REGISTRATION,
    crate::extensions::bearertokenauth::REGISTRATION,
    crate::extensions::basicauth::REGISTRATION,
];

/// Other names of registered types: `(section, alias, type)`. The OpenTelemetry Collector's
/// names of the components celeriac has under its own name; both are accepted and listed by
/// `celeriac components`.
pub static ALIASES: &[(Section, &str, &str)] = &[
    (Section::Exporters, "otlp_grpc", "otlp"),
    (
        Section::Exporters,
        "prometheusremotewrite",
        "prometheus_remote_write",
    ),
];

/// The registration of `type_name` (or an alias of it) in `section` (`otlp` is both a receiver
/// and an exporter).
pub fn lookup(section: Section, type_name: &str) -> Option<&'static Registration> {
    let name = ALIASES
        .iter()
        .find(|(s, alias, _)| *s == section && *alias == type_name)
        .map_or(type_name, |(_, _, t)| *t);
    COMPONENTS
        .iter()
        .find(|r| r.type_name == name && r.factory.section() == section)
}

/// Is `type_name` (or an alias) known in any section?
pub fn is_known(section: Section, type_name: &str) -> bool {
    lookup(section, type_name).is_some()
}

/// Sections other than the one asked for that know `type_name`, for "declare it under" hints.
pub fn sections_of(type_name: &str) -> Vec<Section> {
    COMPONENTS
        .iter()
        .filter(|r| r.type_name == type_name)
        .map(|r| r.factory.section())
        .chain(
            ALIASES
                .iter()
                .filter(|(_, a, _)| *a == type_name)
                .map(|(s, _, _)| *s),
        )
        .collect()
}

/// Type names registered for `section`, for "expected one of" messages.
pub fn names(section: Section) -> Vec<&'static str> {
    let mut v: Vec<_> = COMPONENTS
        .iter()
        .filter(|r| r.factory.section() == section)
        .map(|r| r.type_name)
        .chain(
            ALIASES
                .iter()
                .filter(|(s, _, _)| *s == section)
                .map(|(_, a, _)| *a),
        )
        .collect();
    v.sort_unstable();
    v
}

/// The text of `celeriac components`: per section, every component type with the signals it
/// takes and gives and all its settings at their defaults, as YAML that can be pasted into a
/// config file.
pub fn catalog() -> String {
    use std::fmt::Write as _;
    let kinds = |k: &[SignalKind]| {
        k.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    for section in Section::ALL.into_iter().chain([Section::Extensions]) {
        let mut regs: Vec<_> = COMPONENTS
            .iter()
            .filter(|r| r.factory.section() == section)
            .collect();
        if regs.is_empty() {
            continue;
        }
        regs.sort_by_key(|r| r.type_name);
        let _ = writeln!(out, "{}:", section.key());
        for r in regs {
            let signals = match &r.factory {
                Factory::Receiver { produces, .. } => format!("produces {}", kinds(produces)),
                Factory::Processor { signals, .. } => format!("any of {}", kinds(signals)),
                Factory::Exporter { accepts, .. } => format!("accepts {}", kinds(accepts)),
                Factory::Connector {
                    accepts, produces, ..
                } => format!("accepts {}; produces {}", kinds(accepts), kinds(produces)),
                Factory::Extension { .. } => {
                    "beside the pipelines (service.extensions)".to_string()
                }
            };
            let _ = writeln!(out, "  # {}: {signals}", r.type_name);
            let mut one = serde_yaml_ng::Mapping::new();
            match (r.defaults)() {
                Ok(v) => {
                    one.insert(Value::String(r.type_name.to_string()), v);
                }
                Err(e) => {
                    let _ = writeln!(out, "  # (cannot show the defaults: {e})");
                    one.insert(Value::String(r.type_name.to_string()), Value::Null);
                }
            }
            let text = serde_yaml_ng::to_string(&one).unwrap_or_default();
            for line in text.lines() {
                let _ = writeln!(out, "  {line}");
            }
            for (_, alias, _) in ALIASES
                .iter()
                .filter(|(s, _, t)| *s == section && *t == r.type_name)
            {
                let _ = writeln!(
                    out,
                    "  # {alias}: the OpenTelemetry Collector's name for {}; same settings\n  {alias}: {{}}",
                    r.type_name
                );
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shown defaults are real: every component builds from exactly what
    /// `celeriac components` prints for it.
    #[test]
    fn every_component_builds_from_its_printed_defaults() {
        for r in COMPONENTS {
            let v = (r.defaults)().unwrap_or_else(|e| panic!("{}: {e}", r.type_name));
            let text = serde_yaml_ng::to_string(&v).unwrap();
            let reparsed: Value = serde_yaml_ng::from_str(&text).unwrap();
            let built = match &r.factory {
                Factory::Receiver { build, .. } => build(&reparsed).map(drop),
                Factory::Processor { build, .. } | Factory::Connector { build, .. } => {
                    build(&reparsed).map(drop)
                }
                Factory::Exporter { build, .. } => build(&reparsed).map(drop),
                Factory::Extension { build } => build(&reparsed).map(drop),
            };
            if let Err(e) = built {
                panic!("{}: {e}\n{text}", r.type_name);
            }
        }
    }

    #[test]
    fn catalog_lists_every_component_with_its_keys() {
        let text = catalog();
        for r in COMPONENTS {
            assert!(
                text.contains(&format!("  {}:", r.type_name)),
                "{} missing:\n{text}",
                r.type_name
            );
        }
        assert!(text.contains("    send_batch_size: 8192\n"), "{text}");
        assert!(text.contains("    timeout: 200ms\n"), "{text}");
        assert!(text.contains("      initial_interval: 5s\n"), "{text}");
        assert!(text.contains("    endpoint: 127.0.0.1:9540\n"), "{text}");
        for (section, alias, t) in ALIASES {
            assert!(
                text.contains(&format!("  {alias}: {{}}")),
                "{alias} missing:\n{text}"
            );
            assert_eq!(lookup(*section, alias).map(|r| r.type_name), Some(*t));
        }
    }
}
