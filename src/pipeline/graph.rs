//! Config → validated graph of built components.
//!
//! The collector's rules: receivers, exporters and connectors run one instance per id and are
//! shared by every pipeline that lists them; processors run one instance per (pipeline, id).
//! Every problem is collected into the [`Diagnostics`] before anything starts.

use std::collections::{BTreeMap, BTreeSet};

use crate::component::{Exporter, Extension, Factory, Host, Processor, Receiver};
use crate::config::{self, ComponentDecl, ComponentId, ComponentRef, Config, Diagnostics, Section};
use crate::registry;
use crate::signal::SignalKind;

/// A component a pipeline draws from or feeds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    Receiver(ComponentId),
    Connector(ComponentId),
    Exporter(ComponentId),
}

impl Node {
    /// `receiver/celery_redis` etc., used in logs and metric labels.
    pub fn label(&self) -> String {
        match self {
            Node::Receiver(id) => format!("receiver/{id}"),
            Node::Connector(id) => format!("connector/{id}"),
            Node::Exporter(id) => format!("exporter/{id}"),
        }
    }
}

pub struct PipelinePlan {
    pub id: String,
    pub signal: SignalKind,
    pub sources: Vec<Node>,
    pub processors: Vec<(ComponentId, Box<dyn Processor>)>,
    pub sinks: Vec<Node>,
}

/// Everything `run` needs, already built.
pub struct Graph {
    pub receivers: Vec<(ComponentId, Box<dyn Receiver>)>,
    pub connectors: Vec<(ComponentId, Box<dyn Processor>)>,
    pub exporters: Vec<(ComponentId, Box<dyn Exporter>)>,
    pub pipelines: Vec<PipelinePlan>,
    /// Extensions listed in `service.extensions`, in that order.
    pub extensions: Vec<(ComponentId, Box<dyn Extension>)>,
    /// What the extensions see of the graph.
    pub host: Host,
}

impl Graph {
    /// Validate `config` and build its components. `None` when any error was found.
    pub fn build(config: &Config, d: &mut Diagnostics) -> Option<Graph> {
        let Built {
            factories,
            receivers,
            connectors,
            exporters,
            mut extensions,
            fixed_settings,
        } = Built::components(config, d);
        let Plans {
            pipelines,
            mut used,
            connector_as_exporter,
            connector_as_receiver,
        } = Plans::pipelines(config, &factories, &fixed_settings, d);
        let enabled = enabled_extensions(config, &mut used, d);
        warn_unused(config, &factories, &used, d);
        check_connector_sides(&connector_as_exporter, &connector_as_receiver, d);

        // 5. Cycles through connectors.
        if let Some(cycle) = find_cycle(&pipelines) {
            d.error(
                "service.pipelines",
                format!(
                    "pipelines form a cycle through connectors: {}",
                    cycle.join(" → ")
                ),
            );
        }

        let connectors = keep_used(connectors, Section::Connectors, &used);
        // 6. What extensions see, and their own checks against it.
        let host = Host::new(
            receivers
                .iter()
                .filter_map(|(id, r)| r.shared().map(|s| (id.clone(), s)))
                .chain(
                    connectors
                        .iter()
                        .filter_map(|(id, c)| c.shared().map(|s| (id.clone(), s))),
                )
                .collect(),
            config.components.clone(),
        )
        .with_service(
            config.pipelines.clone(),
            enabled.iter().map(|id| id.to_string()).collect(),
        );
        let mut ordered = Vec::new();
        for id in &enabled {
            if let Some(i) = extensions.iter().position(|(x, _)| x == id) {
                let (id, ext) = extensions.swap_remove(i);
                if let Err(msg) = ext.validate(&host) {
                    d.error(
                        &format!("extensions.{id}"),
                        format!("extension {id}: {msg}"),
                    );
                }
                ordered.push((id, ext));
            }
        }

        if d.has_errors() {
            return None;
        }
        Some(Graph {
            receivers: keep_used(receivers, Section::Receivers, &used),
            connectors,
            exporters: keep_used(exporters, Section::Exporters, &used),
            pipelines,
            extensions: ordered,
            host,
        })
    }
}

/// Step 1 of [`Graph::build`]: every declared component built once.
struct Built {
    factories: BTreeMap<(Section, ComponentId), &'static Factory>,
    receivers: Vec<(ComponentId, Box<dyn Receiver>)>,
    connectors: Vec<(ComponentId, Box<dyn Processor>)>,
    exporters: Vec<(ComponentId, Box<dyn Exporter>)>,
    extensions: Vec<(ComponentId, Box<dyn Extension>)>,
    /// Processors' settings, for their per-pipeline builds.
    fixed_settings: BTreeMap<ComponentId, config::Value>,
}

impl Built {
    /// 1. Every declared component: known type, right section, settings decode.
    fn components(config: &Config, d: &mut Diagnostics) -> Built {
        let mut factories: BTreeMap<(Section, ComponentId), &'static Factory> = BTreeMap::new();
        let mut receivers = Vec::new();
        let mut connectors = Vec::new();
        let mut exporters = Vec::new();
        let mut extensions = Vec::new();
        let mut fixed_settings: BTreeMap<ComponentId, config::Value> = BTreeMap::new();
        // Exporters' `sending_queue.storage: <file_storage id>` and every `auth: {authenticator}`
        // as celeriac's own settings.
        let components = crate::extensions::file_storage::resolve_storage(config, d);
        let components = crate::extensions::auth::resolve_auth(config, components, d);
        for decl in &components {
            let Some(factory) = factory_for(decl, d) else {
                continue;
            };
            factories.insert((decl.section, decl.id.clone()), factory);
            // (`fixed_settings` keeps the processors' for their per-pipeline builds below.)
            // Every wrong key is reported: drop a failing key and build again, until it builds
            // or the error is not about one key.
            let mut fixed = decl.settings.clone();
            config::restore_originals(&mut fixed, &decl.originals, |v| build_only(factory, v));
            if decl.section == Section::Processors {
                fixed_settings.insert(decl.id.clone(), fixed.clone());
            }
            let mut settings = fixed.clone();
            let errors = config::errors_until_ok(&mut settings, |v| build_only(factory, v));
            if !errors.is_empty() {
                for e in errors {
                    d.error(
                        &e.full_path(&decl.path),
                        format!("{} {}: {}", decl.section.noun(), decl.id, e.message),
                    );
                }
                continue;
            }
            let built = match factory {
                Factory::Receiver { build, .. } => {
                    build(&fixed).map(|r| receivers.push((decl.id.clone(), r)))
                }
                Factory::Exporter { build, .. } => {
                    build(&fixed).map(|e| exporters.push((decl.id.clone(), e)))
                }
                Factory::Connector { build, .. } => {
                    build(&fixed).map(|c| connectors.push((decl.id.clone(), c)))
                }
                // Built per pipeline below; decode once here so errors are reported even when unused.
                Factory::Processor { build, .. } => build(&fixed).map(drop),
                Factory::Extension { build } => {
                    build(&fixed).map(|x| extensions.push((decl.id.clone(), x)))
                }
            };
            if let Err(e) = built {
                d.error(
                    &e.full_path(&decl.path),
                    format!("{} {}: {}", decl.section.noun(), decl.id, e.message),
                );
            }
        }
        Built {
            factories,
            receivers,
            connectors,
            exporters,
            extensions,
            fixed_settings,
        }
    }
}

/// Step 2 of [`Graph::build`]: the pipelines planned, and which components they use.
struct Plans {
    pipelines: Vec<PipelinePlan>,
    used: BTreeSet<(Section, ComponentId)>,
    connector_as_exporter: BTreeSet<ComponentId>,
    connector_as_receiver: BTreeSet<ComponentId>,
}

impl Plans {
    /// 2. Pipelines: references, signals, shape.
    fn pipelines(
        config: &Config,
        factories: &BTreeMap<(Section, ComponentId), &'static Factory>,
        fixed_settings: &BTreeMap<ComponentId, config::Value>,
        d: &mut Diagnostics,
    ) -> Plans {
        let mut used: BTreeSet<(Section, ComponentId)> = BTreeSet::new();
        let mut connector_as_exporter: BTreeSet<ComponentId> = BTreeSet::new();
        let mut connector_as_receiver: BTreeSet<ComponentId> = BTreeSet::new();
        let mut pipelines = Vec::new();
        for p in &config.pipelines {
            let sig = p.signal;
            if p.receivers.is_empty() {
                d.error(&p.path, format!("pipeline `{}` has no receivers", p.id));
            }
            if p.exporters.is_empty() {
                d.error(&p.path, format!("pipeline `{}` has no exporters", p.id));
            }
            let mut sources = Vec::new();
            for r in &p.receivers {
                let (section, f) =
                    match resolve(factories, r, &[Section::Receivers, Section::Connectors]) {
                        Some(x) => x,
                        None => {
                            undeclared(d, r, "receiver", &p.id, config);
                            continue;
                        }
                    };
                used.insert((section, r.id.clone()));
                if !f.produces().contains(&sig) {
                    d.error(
                        &r.path,
                        format!(
                            "{} {} cannot produce {sig}; pipeline `{}` needs {sig}",
                            section.noun(),
                            r.id,
                            p.id
                        ),
                    );
                }
                sources.push(if section == Section::Connectors {
                    connector_as_receiver.insert(r.id.clone());
                    Node::Connector(r.id.clone())
                } else {
                    Node::Receiver(r.id.clone())
                });
            }
            let mut processors = Vec::new();
            for r in &p.processors {
                let Some(decl) = config.component(Section::Processors, &r.id) else {
                    undeclared(d, r, "processor", &p.id, config);
                    continue;
                };
                used.insert((Section::Processors, r.id.clone()));
                let Some(Factory::Processor { signals, build }) =
                    factories.get(&(Section::Processors, r.id.clone()))
                else {
                    continue;
                };
                if !signals.contains(&sig) {
                    d.error(&r.path, format!("processor {} does not accept {sig}", r.id));
                    continue;
                }
                let settings = fixed_settings.get(&r.id).unwrap_or(&decl.settings);
                if let Ok(proc_) = build(settings) {
                    processors.push((r.id.clone(), proc_));
                }
            }
            let mut sinks = Vec::new();
            for r in &p.exporters {
                let (section, f) =
                    match resolve(factories, r, &[Section::Exporters, Section::Connectors]) {
                        Some(x) => x,
                        None => {
                            undeclared(d, r, "exporter", &p.id, config);
                            continue;
                        }
                    };
                used.insert((section, r.id.clone()));
                if !f.accepts().contains(&sig) {
                    d.error(
                        &r.path,
                        format!("{} {} does not accept {sig}", section.noun(), r.id),
                    );
                }
                sinks.push(if section == Section::Connectors {
                    connector_as_exporter.insert(r.id.clone());
                    Node::Connector(r.id.clone())
                } else {
                    Node::Exporter(r.id.clone())
                });
            }
            for dup in duplicates(&p.receivers)
                .into_iter()
                .chain(duplicates(&p.exporters))
            {
                d.error(
                    &dup.path,
                    format!("{} is listed twice in pipeline `{}`", dup.id, p.id),
                );
            }
            pipelines.push(PipelinePlan {
                id: p.id.clone(),
                signal: sig,
                sources,
                processors,
                sinks,
            });
        }
        Plans {
            pipelines,
            used,
            connector_as_exporter,
            connector_as_receiver,
        }
    }
}

/// 3. Extensions enabled by `service.extensions`, in that order (each marked used).
fn enabled_extensions(
    config: &Config,
    used: &mut BTreeSet<(Section, ComponentId)>,
    d: &mut Diagnostics,
) -> Vec<ComponentId> {
    let mut enabled: Vec<ComponentId> = Vec::new();
    for (i, s) in config.service.extensions.iter().enumerate() {
        let path = format!("service.extensions[{i}]");
        match ComponentId::parse(s) {
            Ok(id) if enabled.contains(&id) => {
                d.error(&path, format!("extension {id} is listed twice"))
            }
            Ok(id) => {
                if config.component(Section::Extensions, &id).is_none() {
                    d.error(
                        &path,
                        format!(
                            "service.extensions lists {id}, which is not declared under extensions"
                        ),
                    );
                }
                used.insert((Section::Extensions, id.clone()));
                enabled.push(id);
            }
            Err(msg) => d.error(&path, msg),
        }
    }
    enabled
}

/// 4. Declared but unused.
fn warn_unused(
    config: &Config,
    factories: &BTreeMap<(Section, ComponentId), &'static Factory>,
    used: &BTreeSet<(Section, ComponentId)>,
    d: &mut Diagnostics,
) {
    for decl in &config.components {
        if !used.contains(&(decl.section, decl.id.clone()))
            && factories.contains_key(&(decl.section, decl.id.clone()))
        {
            let msg = if decl.section == Section::Extensions {
                format!(
                        "extension {} is declared but not listed in service.extensions, so it does not run",
                        decl.id
                    )
            } else {
                format!(
                    "{} {} is declared but no pipeline uses it",
                    decl.section.noun(),
                    decl.id
                )
            };
            d.warn(&decl.path, msg);
        }
    }
}

/// 4. Connectors used on one side only.
fn check_connector_sides(
    connector_as_exporter: &BTreeSet<ComponentId>,
    connector_as_receiver: &BTreeSet<ComponentId>,
    d: &mut Diagnostics,
) {
    for id in connector_as_exporter.symmetric_difference(connector_as_receiver) {
        let path = format!("connectors.{id}");
        if connector_as_exporter.contains(id) {
            d.warn(
                &path,
                format!(
                    "connector {id} is an exporter of a pipeline but no pipeline receives from it"
                ),
            );
        } else {
            d.error(
                &path,
                format!("connector {id} is a receiver of a pipeline but no pipeline exports to it"),
            );
        }
    }
}

/// Build a component only to see whether its settings are right.
fn build_only(factory: &Factory, v: &config::Value) -> Result<(), config::DecodeError> {
    match factory {
        Factory::Receiver { build, .. } => build(v).map(drop),
        Factory::Exporter { build, .. } => build(v).map(drop),
        Factory::Connector { build, .. } | Factory::Processor { build, .. } => build(v).map(drop),
        Factory::Extension { build } => build(v).map(drop),
    }
}

fn keep_used<T: ?Sized>(
    v: Vec<(ComponentId, Box<T>)>,
    s: Section,
    used: &BTreeSet<(Section, ComponentId)>,
) -> Vec<(ComponentId, Box<T>)> {
    v.into_iter()
        .filter(|(id, _)| used.contains(&(s, id.clone())))
        .collect()
}

fn factory_for(decl: &ComponentDecl, d: &mut Diagnostics) -> Option<&'static Factory> {
    let t = &decl.id.type_name;
    if let Some(reg) = registry::lookup(decl.section, t) {
        return Some(&reg.factory);
    }
    match registry::sections_of(t).first() {
        Some(other) => d.error(
            &decl.path,
            format!(
                "unknown {} type `{t}` (`{t}` is {} {}, not {} {}: declare it under `{}`)",
                decl.section.noun(),
                article(other.noun()),
                other.noun(),
                article(decl.section.noun()),
                decl.section.noun(),
                other.key()
            ),
        ),
        None => {
            let known = registry::names(decl.section);
            d.error(
                &decl.path,
                format!(
                    "unknown {} type `{t}`; known {}s: {}",
                    decl.section.noun(),
                    decl.section.noun(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        }
    }
    None
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn resolve(
    factories: &BTreeMap<(Section, ComponentId), &'static Factory>,
    r: &ComponentRef,
    sections: &[Section],
) -> Option<(Section, &'static Factory)> {
    sections
        .iter()
        .find_map(|s| factories.get(&(*s, r.id.clone())).map(|f| (*s, *f)))
}

fn undeclared(d: &mut Diagnostics, r: &ComponentRef, role: &str, pipeline: &str, config: &Config) {
    // Declared but failed to build (already reported) → stay quiet.
    if config
        .components
        .iter()
        .any(|c| c.id == r.id && registry::lookup(c.section, &c.id.type_name).is_none())
    {
        return;
    }
    let section = if role == "receiver" {
        "receivers (or connectors)"
    } else if role == "exporter" {
        "exporters (or connectors)"
    } else {
        "processors"
    };
    d.error(
        &r.path,
        format!(
            "pipeline `{pipeline}` uses {role} {} which is not declared under {section}",
            r.id
        ),
    );
}

fn duplicates(refs: &[ComponentRef]) -> Vec<&ComponentRef> {
    let mut seen = BTreeSet::new();
    refs.iter().filter(|r| !seen.insert(&r.id)).collect()
}

/// A pipeline feeds another when it exports to a connector the other receives from.
fn find_cycle(pipelines: &[PipelinePlan]) -> Option<Vec<String>> {
    let edges: Vec<Vec<usize>> = pipelines
        .iter()
        .map(|p| {
            pipelines
                .iter()
                .enumerate()
                .filter(|(_, q)| {
                    p.sinks
                        .iter()
                        .any(|s| matches!(s, Node::Connector(_)) && q.sources.contains(s))
                })
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on stack, 2 = done.
    fn dfs(
        i: usize,
        edges: &[Vec<usize>],
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for &j in &edges[i] {
            if state[j] == 1 {
                let start = stack.iter().position(|&x| x == j).unwrap_or(0);
                let mut cyc = stack[start..].to_vec();
                cyc.push(j);
                return Some(cyc);
            }
            if state[j] == 0 {
                if let Some(c) = dfs(j, edges, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; pipelines.len()];
    for i in 0..pipelines.len() {
        if state[i] == 0 {
            if let Some(c) = dfs(i, &edges, &mut state, &mut Vec::new()) {
                return Some(c.into_iter().map(|k| pipelines[k].id.clone()).collect());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn check(text: &str) -> (bool, String) {
        let (cfg, mut d) = config::parse(text, "t.yaml");
        let ok = match cfg {
            Some(c) => Graph::build(&c, &mut d).is_some(),
            None => false,
        };
        (ok, d.render())
    }

    /// A `${env:…}` that reads like a number stays text in a string setting (the collector's
    /// ExpandedValue.Original), and is a number in a numeric one.
    #[test]
    fn expanded_numbers_keep_their_text_for_strings() {
        std::env::set_var("CELERIAC_T_USER_0123", "1.50");
        std::env::set_var("CELERIAC_T_SAMPLES", "750");
        let (ok, out) = check(
            "receivers:\n  otlp:\nexporters:\n  prometheusremotewrite:\n    endpoint: http://127.0.0.1:9/api/v1/write\n    max_samples_per_send: ${env:CELERIAC_T_SAMPLES}\n    basic_auth: { username: \"${env:CELERIAC_T_USER_0123}\", password: x }\nservice:\n  pipelines:\n    metrics: { receivers: [otlp], exporters: [prometheusremotewrite] }\n",
        );
        assert!(ok, "{out}");
    }

    #[test]
    fn minimal_graph_is_valid() {
        let (ok, out) = check("processors:\n  batch:\nexporters:\n  debug:\nreceivers: {}\nservice:\n  pipelines:\n    logs:\n      receivers: []\n      exporters: [debug]\n");
        assert!(!ok);
        assert!(out.contains("has no receivers"), "{out}");
        assert!(
            out.contains("warning: processor batch is declared but no pipeline uses it"),
            "{out}"
        );
    }

    #[test]
    fn reports_every_problem_with_positions() {
        let text = "exporters:\n  logs:\n    pth: stdout\n  debug/x:\n  nosuch: {}\nservice:\n  pipelines:\n    logs:\n      receivers: [debug/x]\n      exporters: [logs, missing]\n";
        let (ok, out) = check(text);
        assert!(!ok);
        assert!(
            out.contains("t.yaml:3:5: error: exporter logs: unknown field `pth`"),
            "{out}"
        );
        assert!(
            out.contains("t.yaml:5:3: error: unknown exporter type `nosuch`"),
            "{out}"
        );
        assert!(
            out.contains(
                "t.yaml:9:19: error: pipeline `logs` uses receiver debug/x which is not declared"
            ),
            "{out}"
        );
        assert!(
            out.contains("t.yaml:10:25: error: pipeline `logs` uses exporter missing"),
            "{out}"
        );
    }

    #[test]
    fn signal_mismatch() {
        let text = "exporters:\n  logs:\nprocessors:\n  batch:\nservice:\n  pipelines:\n    metrics:\n      receivers: []\n      processors: [batch]\n      exporters: [logs]\n";
        let (_, out) = check(text);
        assert!(
            out.contains("exporter logs does not accept metrics"),
            "{out}"
        );
    }

    const CELERY: &str =
        "receivers:\n  celery_redis:\nconnectors:\n  celery_correlate:\nexporters:\n  debug:\n";
    const PIPES: &str = "  pipelines:\n    celery: { receivers: [celery_redis], exporters: [celery_correlate] }\n    metrics: { receivers: [celery_correlate], exporters: [debug] }\n";

    #[test]
    fn extensions_run_when_listed() {
        let text = format!("{CELERY}extensions:\n  celery_ui:\n    endpoint: 127.0.0.1:0\nservice:\n  extensions: [celery_ui]\n{PIPES}");
        let (cfg, mut d) = config::parse(&text, "t.yaml");
        let g = Graph::build(&cfg.unwrap(), &mut d).expect("valid");
        assert_eq!(g.extensions.len(), 1, "{}", d.render());
        assert_eq!(d.render(), "");

        // Declared, not listed: a warning, and it does not run.
        let text = format!("{CELERY}extensions:\n  celery_ui:\nservice:\n{PIPES}");
        let (cfg, mut d) = config::parse(&text, "t.yaml");
        let g = Graph::build(&cfg.unwrap(), &mut d).expect("valid");
        assert!(g.extensions.is_empty());
        assert!(d.render().contains("t.yaml:8:3: warning: extension celery_ui is declared but not listed in service.extensions"), "{}", d.render());
    }

    #[test]
    fn extension_errors_have_positions() {
        let text = format!("{CELERY}extensions:\n  celery_ui:\n    correlator: celery_correlate/other\nservice:\n  extensions: [celery_ui, health]\n{PIPES}");
        let (ok, out) = check(&text);
        assert!(!ok);
        assert!(
            out.contains(
                "error: service.extensions lists health, which is not declared under extensions"
            ),
            "{out}"
        );
        assert!(out.contains("t.yaml:8:3: error: extension celery_ui: `correlator: celery_correlate/other` names no celery_correlate connector in use"), "{out}");

        // No correlator at all, no broker for inspect.
        let text = "exporters:\n  debug:\nreceivers:\n  otlp:\nextensions:\n  celery_ui/a:\n  celery_ui/b: { inspect: { enabled: false }, bogus: 1 }\nservice:\n  extensions: [celery_ui/a, celery_ui/b]\n  pipelines:\n    traces: { receivers: [otlp], exporters: [debug] }\n";
        let (ok, out) = check(text);
        assert!(!ok);
        assert!(
            out.contains("extension celery_ui/a: needs a celery_correlate connector in a pipeline"),
            "{out}"
        );
        assert!(
            out.contains("t.yaml:7:47: error: extension celery_ui/b: unknown field `bogus`"),
            "{out}"
        );

        // Two brokers: which one to inspect must be said.
        let text = format!("receivers:\n  celery_redis/b:\n{CELERY}extensions:\n  celery_ui:\nservice:\n  extensions: [celery_ui]\n  pipelines:\n    celery: {{ receivers: [celery_redis, celery_redis/b], exporters: [celery_correlate] }}\n    metrics: {{ receivers: [celery_correlate], exporters: [debug] }}\n").replacen("receivers:\n  celery_redis:\n", "  celery_redis:\n", 1);
        let (ok, out) = check(&text);
        assert!(
            !ok && out.contains("several celery_redis receivers"),
            "{out}"
        );
    }

    #[test]
    fn flower_pipeline_is_valid() {
        let text = include_str!("../../pipelines/flower.yaml");
        let (ok, out) = check(text);
        assert!(ok, "{out}");
        // Its commented-out auth, enabled with an empty password, is refused.
        let (ok, out) = check(
            &text
                .replace("# auth:", "auth:")
                .replace("${env:CELERIAC_UI_PASSWORD}", ""),
        );
        assert!(!ok && out.contains("basic auth needs both"), "{out}");
    }
}
