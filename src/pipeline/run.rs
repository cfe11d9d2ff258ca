//! Wiring and lifecycle of a built [`Graph`], and swapping it for another on a config reload.
//!
//! Each pipeline gets an entry channel in front of its first processor (or feeds its exporters
//! directly when it has none); every exporter and connector owns one input channel shared by
//! all pipelines that list it. All channels are bounded by `service.channel_capacity`.
//! Start order: extensions, exporters, connectors, processors, then receivers. Stop: cancel receivers; each
//! channel closes when its last sender is dropped, so stages drain in order with no control
//! messages. Whatever is still running at the deadline is aborted and named in the log.
//!
//! A reload ([`Reload`]) replaces the running graph with a new one built from a checked config,
//! without a stop: receivers, connectors and exporters whose settings (and, for producers, the
//! signals they feed) did not change **keep running**, with their input channel and their state
//! (the correlator's tasks and counters, the scrape page's series). Everything else is new:
//! every pipeline's processors, and each component whose settings changed. A kept producer is
//! pointed at the new pipelines' channels ([`Output::replace_targets`]); what the old ones hold
//! drains to the old exporters as in a shutdown, so no batch is lost. A changed component's new
//! instance starts only once the old one has drained and returned (it may bind the same port);
//! meanwhile its input channel fills and applies backpressure upstream as usual. A changed pub/sub
//! receiver cannot wait that way: events published between the old one's stop and the new one's
//! subscription are missed, and not counted. Service settings that a running agent cannot
//! change (`service.telemetry`) need a restart and are reported as such. A replaced component
//! may leave state to its successor through [`Telemetry::hand_over`] (the correlator does).
//!
//! Readiness: a component is ready (status `Ok`) when it has started, or, if it reports its
//! readiness itself ([`crate::component::Receiver::reports_ready`]: those that bind listeners),
//! when it says so; a replaced component's new instance only once the old one has finished. The
//! agent is ready (`/healthz`, `health_check`) while every component it runs is: not before its
//! listeners accept connections, never when one fails to start, and not while a reload's new
//! instance waits for its predecessor to drain or is binding its port (as the collector, which
//! is not ready while a reload restarts its pipelines).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::graph::{Graph, Node};
use crate::component::{
    Admission, BoxRun, ComponentError, ComponentStatus, Context, GatedSender, Input, Output, Ready,
    StatusBoard,
};
use crate::config::{Config, Section, ServiceSettings, Value};
use crate::signal::{Batch, Carry, SignalKind};
use crate::telemetry::Telemetry;

type Tx = async_channel::Sender<Batch>;
type Rx = async_channel::Receiver<Batch>;

/// How a run ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("component {id} failed: {source}")]
    Component { id: String, source: ComponentError },
    #[error("shutdown did not finish within {timeout:?}; aborted: {pending}")]
    Deadline { timeout: Duration, pending: String },
}

/// A checked config and the graph built from it, to replace the running graph.
pub struct Reload {
    pub config: Config,
    pub graph: Graph,
    /// What the swap did.
    pub done: oneshot::Sender<ReloadSummary>,
}

/// Components kept running, started new, and retired by a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: Vec<String>,
    pub started: Vec<String>,
    pub stopped: Vec<String>,
}

/// Run `graph` until `stop` is cancelled (or a component fails), then shut down in order.
pub async fn run(
    graph: Graph,
    settings: &ServiceSettings,
    telemetry: Telemetry,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let (_keep, reloads) = mpsc::channel(1);
    run_with_reloads(graph, &[], settings, telemetry, stop, reloads).await
}

/// [`run`], also applying every [`Reload`] received on `reloads`. `components` are the
/// declarations `graph` was built from (their settings decide what a reload keeps).
pub async fn run_with_reloads(
    graph: Graph,
    components: &[crate::config::ComponentDecl],
    settings: &ServiceSettings,
    telemetry: Telemetry,
    stop: CancellationToken,
    mut reloads: mpsc::Receiver<Reload>,
) -> Result<(), RunError> {
    // Each component task that was not ready when spawned sends its number once it is.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut rt = Runtime {
        telemetry: telemetry.clone(),
        settings: settings.clone(),
        receivers_stop: CancellationToken::new(),
        tasks: JoinSet::new(),
        running: BTreeMap::new(),
        next_task: 0,
        live: BTreeMap::new(),
        status: graph.host.status().clone(),
        pending: BTreeSet::new(),
        ready_tx,
    };
    // Extensions first, as in the collector, and stopped last, once everything else has
    // drained (health_check answers 503 meanwhile). A reload does not restart them (they keep
    // reading the state the connectors hand over to their successors).
    let mut graph = graph;
    let extensions = std::mem::take(&mut graph.extensions);
    let extension_ids: Vec<String> = extensions.iter().map(|(id, _)| id.to_string()).collect();
    let extensions_stop = CancellationToken::new();
    let mut extension_tasks = BTreeSet::new();
    for (id, ext) in extensions {
        let label = format!("extension/{id}");
        let ctx = rt.ctx(&label, extensions_stop.clone());
        let ready = ext.reports_ready().then(|| ctx.ready.clone());
        let fut = ext.run(ctx, graph.host.clone());
        extension_tasks.insert(rt.next_task);
        rt.spawn(label, fut, None, ready);
    }
    rt.apply(graph, &settings_of(components));
    tracing::info!(components = rt.running.len(), "Pipelines started.");
    rt.update_ready();

    // Run until asked to stop or a component fails.
    let mut failure: Option<RunError> = None;
    let mut reloads_open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            reload = reloads.recv(), if reloads_open => match reload {
                None => reloads_open = false,
                Some(r) => {
                    warn_unchangeable(&rt.settings, &r.config.service);
                    let wanted: Vec<String> = r.graph.extensions.iter().map(|(id, _)| id.to_string()).collect();
                    if wanted != extension_ids
                        || extension_settings(components) != extension_settings(&r.config.components)
                    {
                        tracing::warn!(running = ?extension_ids, "Extensions changed: they keep running as they were until a restart.");
                    }
                    rt.settings = r.config.service.clone();
                    let summary = rt.apply(r.graph, &settings_of(&r.config.components));
                    tracing::info!(kept = ?summary.kept, started = ?summary.started, stopped = ?summary.stopped, "Configuration reloaded.");
                    rt.update_ready();
                    let _ = r.done.send(summary);
                }
            },
            Some(task) = ready_rx.recv() => {
                rt.pending.remove(&task);
                rt.update_ready();
            }
            done = rt.tasks.join_next() => match done {
                None => break,
                Some(Ok((task, Ok(())))) => {
                    let label = rt.running.remove(&task).unwrap_or_default();
                    tracing::debug!(component = %label, "Component finished.");
                    rt.pending.remove(&task);
                    rt.update_ready();
                }
                Some(Ok((task, Err(e)))) => {
                    let label = rt.running.remove(&task).unwrap_or_default();
                    tracing::error!(component = %label, error = %e, "Component failed; shutting down.");
                    telemetry.set_failed();
                    failure = Some(RunError::Component { id: label, source: e });
                    break;
                }
                Some(Err(join)) => {
                    tracing::error!(error = %join, "Component task panicked; shutting down.");
                    telemetry.set_failed();
                    break;
                }
            }
        }
    }

    // Ordered shutdown within the deadline. The runtime's own senders and output handles go
    // first, or the channels would never close.
    telemetry.set_ready(false);
    rt.status.set_ready(false);
    for label in rt.running.values() {
        rt.status.set(label, ComponentStatus::Stopping);
    }
    let timeout = rt.settings.shutdown_timeout;
    tracing::info!(
        ?timeout,
        "Shutting down: stopping receivers, draining, flushing exporters."
    );
    rt.live.clear();
    rt.receivers_stop.cancel();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Only extensions left (a panicked task is gone from the set but not from `running`).
        let extensions_left = extension_tasks
            .iter()
            .filter(|t| rt.running.contains_key(t))
            .count();
        if rt.tasks.len() <= extensions_left {
            extensions_stop.cancel();
        }
        match tokio::time::timeout_at(deadline, rt.tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((task, res)))) => {
                let label = rt.running.remove(&task).unwrap_or_default();
                if let Err(e) = res {
                    tracing::error!(component = %label, error = %e, "Component failed during shutdown.");
                    failure.get_or_insert(RunError::Component {
                        id: label,
                        source: e,
                    });
                }
            }
            Ok(Some(Err(join))) => {
                tracing::error!(error = %join, "Component task panicked during shutdown.")
            }
            Err(_) => {
                let mut pending: Vec<_> = rt.running.values().cloned().collect();
                pending.sort();
                pending.dedup();
                rt.tasks.abort_all();
                return Err(RunError::Deadline {
                    timeout,
                    pending: pending.join(", "),
                });
            }
        }
    }
    tracing::info!("Shutdown complete.");
    failure.map_or(Ok(()), Err)
}

/// Settings by node, for deciding what a reload keeps.
/// Settings of the declared extensions, to tell whether a reload changed them.
fn extension_settings(components: &[crate::config::ComponentDecl]) -> Vec<(String, Value)> {
    components
        .iter()
        .filter(|c| c.section == Section::Extensions)
        .map(|c| (c.id.to_string(), c.settings.clone()))
        .collect()
}

fn settings_of(components: &[crate::config::ComponentDecl]) -> BTreeMap<Node, Value> {
    components
        .iter()
        .filter_map(|c| {
            let node = match c.section {
                Section::Receivers => Node::Receiver(c.id.clone()),
                Section::Connectors => Node::Connector(c.id.clone()),
                Section::Exporters => Node::Exporter(c.id.clone()),
                _ => return None,
            };
            Some((node, c.settings.clone()))
        })
        .collect()
}

fn warn_unchangeable(old: &ServiceSettings, new: &ServiceSettings) {
    if old.telemetry.endpoint != new.telemetry.endpoint
        || old.telemetry.log_level != new.telemetry.log_level
    {
        tracing::warn!(
            "service.telemetry changed: it takes effect at the next restart, not on reload."
        );
    }
}

/// A receiver, connector or exporter that is serving.
struct Live {
    /// Its settings when it started (`None` when unknown: never kept by a reload).
    settings: Option<Value>,
    /// The sending side of its input channel (exporters, connectors).
    input: Option<Tx>,
    /// A handle on its output, to re-point it (receivers, connectors).
    output: Option<Output>,
    /// The signals its output feeds.
    signals: BTreeSet<SignalKind>,
    /// Stops it (receivers).
    stop: Option<CancellationToken>,
    /// Cancelled once its task has returned.
    finished: CancellationToken,
}

struct Runtime {
    telemetry: Telemetry,
    settings: ServiceSettings,
    /// Parent of every receiver's own stop token.
    receivers_stop: CancellationToken,
    tasks: JoinSet<(u64, Result<(), ComponentError>)>,
    /// Task number → component label, for the log and the deadline report.
    running: BTreeMap<u64, String>,
    next_task: u64,
    live: BTreeMap<Node, Live>,
    /// Every component's status, for the extensions (health_check, zpages). The first graph's
    /// board is kept across reloads: extensions keep the host they started with.
    status: StatusBoard,
    /// Tasks not ready yet (the agent is ready when none is).
    pending: BTreeSet<u64>,
    /// Where a task sends its number once it is ready.
    ready_tx: mpsc::UnboundedSender<u64>,
}

impl Runtime {
    fn ctx(&self, label: &str, shutdown: CancellationToken) -> Context {
        Context {
            id: Arc::from(label),
            shutdown,
            telemetry: self.telemetry.clone(),
            ready: Ready::default(),
        }
    }

    /// Tell `/healthz` and the extensions whether every component is ready.
    fn update_ready(&self) {
        let ready = self.pending.is_empty();
        if ready && self.status.ready_since().is_none() {
            tracing::info!("Every component is ready.");
        }
        self.telemetry.set_ready(ready);
        self.status.set_ready(ready);
    }

    /// Spawn `fut` as `label`, after `after` (a replaced instance) has finished. It is ready
    /// then, or once `ready` is set when it reports readiness itself. Returns the token
    /// cancelled when it returns.
    fn spawn(
        &mut self,
        label: String,
        fut: BoxRun,
        after: Option<CancellationToken>,
        ready: Option<Ready>,
    ) -> CancellationToken {
        let finished = CancellationToken::new();
        let done = finished.clone();
        let task = self.next_task;
        self.next_task += 1;
        let status = self.status.clone();
        let at_once = after.is_none() && ready.is_none();
        if at_once {
            status.set(&label, ComponentStatus::Ok);
        } else {
            status.set(&label, ComponentStatus::Starting);
            self.pending.insert(task);
        }
        self.running.insert(task, label.clone());
        let ready_tx = self.ready_tx.clone();
        self.tasks.spawn(async move {
            let mut fut = fut;
            if let Some(previous) = after {
                previous.cancelled().await;
                // The previous instance, under the same label, has just marked itself stopped.
                status.set(&label, ComponentStatus::Starting);
            }
            // It may return before it is ready (a listener it cannot bind).
            let early = match ready {
                Some(ready) => tokio::select! {
                    res = &mut fut => Some(res),
                    _ = ready.wait() => None,
                },
                None => None,
            };
            let res = match early {
                Some(res) => res,
                None => {
                    if !at_once {
                        status.set(&label, ComponentStatus::Ok);
                        let _ = ready_tx.send(task);
                    }
                    fut.await
                }
            };
            status.set(
                &label,
                match &res {
                    Ok(()) => ComponentStatus::Stopped,
                    Err(e) => ComponentStatus::PermanentError(e.to_string()),
                },
            );
            done.cancel();
            (task, res)
        });
        finished
    }

    fn input(&self, kind: Kind, label: &str, rx: Rx) -> Input {
        let names = kind.names();
        let t = &self.telemetry;
        let labels = [("component", label)];
        let weak = rx.downgrade();
        t.observe(
            names.queue_size,
            "Batches waiting in a component's input channel.",
            &labels,
            move || weak.upgrade().map_or(0, |rx| rx.len() as i64),
        );
        let cap = rx.capacity().unwrap_or(0) as i64;
        t.observe(
            names.queue_capacity,
            "Capacity, in batches, of a component's input channel (service.channel_capacity).",
            &labels,
            move || cap,
        );
        Input::new(
            rx,
            t.counter(
                names.incoming,
                "Items (spans, data points, log records, Celery events) a component took from its input.",
                &labels,
            ),
        )
        .counting_undecodable(t.counter(
            "celeriac_component_undecodable_items_total",
            "Items of OTLP batches forwarded undecoded that did not decode when this component needed them typed (dropped).",
            &labels,
        ))
    }

    /// Start `graph`, keeping what is already running and unchanged (see the module docs).
    fn apply(&mut self, graph: Graph, settings: &BTreeMap<Node, Value>) -> ReloadSummary {
        let cap = self.settings.channel_capacity.max(1);
        let mut old = std::mem::take(&mut self.live);
        let mut summary = ReloadSummary::default();

        // The signals each producer feeds in the new graph.
        let mut signals: BTreeMap<Node, BTreeSet<SignalKind>> = BTreeMap::new();
        for p in &graph.pipelines {
            for src in &p.sources {
                signals.entry(src.clone()).or_default().insert(p.signal);
            }
        }
        // Kept: same settings, and a producer feeds the same signals (it may have decided at
        // start what to produce).
        let keep = |node: &Node, old: &BTreeMap<Node, Live>| -> bool {
            old.get(node).is_some_and(|l| {
                l.settings.is_some()
                    && l.settings.as_ref() == settings.get(node)
                    && l.signals == signals.get(node).cloned().unwrap_or_default()
            })
        };

        // Input channels of exporters and connectors: the kept ones' own, new ones otherwise.
        let mut inputs: BTreeMap<Node, (Tx, Option<Rx>)> = BTreeMap::new();
        let sink_nodes = graph
            .exporters
            .iter()
            .map(|(id, _)| Node::Exporter(id.clone()))
            .chain(
                graph
                    .connectors
                    .iter()
                    .map(|(id, _)| Node::Connector(id.clone())),
            );
        for node in sink_nodes {
            let kept_tx = keep(&node, &old)
                .then(|| old.get(&node).and_then(|l| l.input.clone()))
                .flatten();
            let entry = match kept_tx {
                Some(tx) => (tx, None),
                None => {
                    let (tx, rx) = async_channel::bounded(cap);
                    (tx, Some(rx))
                }
            };
            inputs.insert(node, entry);
        }

        // Per pipeline: a new processor chain, and the entry senders its sources write to.
        let mut producer_targets: BTreeMap<Node, BTreeMap<SignalKind, Vec<GatedSender>>> =
            BTreeMap::new();
        let mut processor_runs = Vec::new();
        // Exporters that take batches in their wire form: a pipeline ending only in them, with
        // only processors that take it too, lets its receivers forward requests undecoded.
        let encoded_sinks: Vec<Node> = graph
            .exporters
            .iter()
            .filter(|(_, exp)| exp.takes_encoded())
            .map(|(id, _)| Node::Exporter(id.clone()))
            .collect();
        for p in graph.pipelines {
            let encoded = p.processors.iter().all(|(_, proc_)| proc_.takes_encoded())
                && p.sinks.iter().all(|n| encoded_sinks.contains(n));
            let sinks: Vec<Tx> = p
                .sinks
                .iter()
                .filter_map(|n| inputs.get(n).map(|(tx, _)| tx.clone()))
                .collect();
            // Gates (memory_limiter) guard the pipeline's entry, wherever the processor sits.
            let gates: Vec<Admission> = p
                .processors
                .iter()
                .filter_map(|(_, proc_)| proc_.admission())
                .collect();
            let latency = Some(self.telemetry.histogram(
                "celeriac_pipeline_latency_seconds",
                "Seconds from the moment a receiver had an item's bytes (or a connector produced it) to the moment the pipeline's exporter handed it to the network (or a connector or pull exporter took it); each item counts with the age of the oldest in its batch.",
                &[("pipeline", &p.id.to_string())],
            ));
            let link = |tx: &Tx, gates: Vec<Admission>| GatedSender {
                tx: tx.clone(),
                gates,
                latency: latency.clone(),
                encoded,
            };
            let entry = if p.processors.is_empty() {
                sinks
            } else {
                let (head_tx, mut rx) = async_channel::bounded(cap);
                let n = p.processors.len();
                for (i, (id, proc_)) in p.processors.into_iter().enumerate() {
                    let label = format!("processor/{id}@{}", p.id);
                    let (out_targets, next_rx) = if i + 1 == n {
                        (sinks.clone(), None)
                    } else {
                        let (tx, rx2) = async_channel::bounded(cap);
                        (vec![tx], Some(rx2))
                    };
                    let out_targets = out_targets.iter().map(|tx| link(tx, Vec::new())).collect();
                    let carry = Carry::default();
                    let out = output(
                        &self.telemetry,
                        Kind::Processor,
                        &label,
                        vec![(p.signal, out_targets)],
                    )
                    .carrying(carry.clone());
                    let inp = self
                        .input(Kind::Processor, &label, rx.clone())
                        .carrying(carry)
                        .taking_encoded(proc_.takes_encoded());
                    let ctx = self.ctx(&label, self.receivers_stop.clone());
                    processor_runs.push((label, proc_.run(ctx, inp, out)));
                    if let Some(r) = next_rx {
                        rx = r;
                    }
                }
                vec![head_tx]
            };
            for src in &p.sources {
                producer_targets
                    .entry(src.clone())
                    .or_default()
                    .entry(p.signal)
                    .or_default()
                    .extend(entry.iter().map(|tx| link(tx, gates.clone())));
            }
        }

        let mut place = Placing {
            old: &mut old,
            live: BTreeMap::new(),
            summary: &mut summary,
            settings,
            signals: &signals,
        };

        // Start downstream first.
        for (id, exp) in graph.exporters {
            let node = Node::Exporter(id);
            let (tx, rx) = take_input(&mut inputs, &node, cap);
            match rx {
                None => {
                    place.keep(&node, Some(tx), None);
                }
                Some(rx) => {
                    let label = node.label();
                    let ctx = self.ctx(&label, self.receivers_stop.clone());
                    let input = self
                        .input(Kind::Exporter, &label, rx)
                        .taking_encoded(exp.takes_encoded());
                    let ready = exp.reports_ready().then(|| ctx.ready.clone());
                    let fut = exp.run(ctx, input);
                    place.start(self, node, fut, ready, Some(tx), None, None);
                }
            }
        }
        for (id, con) in graph.connectors {
            let node = Node::Connector(id);
            let label = node.label();
            let targets = producer_targets
                .remove(&node)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let out = output(&self.telemetry, Kind::Connector, &label, targets);
            let (tx, rx) = take_input(&mut inputs, &node, cap);
            match rx {
                None => {
                    place.keep(&node, Some(tx), Some(&out));
                }
                Some(rx) => {
                    let ctx = self.ctx(&label, self.receivers_stop.clone());
                    let fut = con.run(ctx, self.input(Kind::Connector, &label, rx), out.clone());
                    place.start(self, node, fut, None, Some(tx), Some(out), None);
                }
            }
        }
        for (label, fut) in processor_runs {
            self.spawn(label, fut, None, None);
        }
        drop(inputs);
        for (id, rec) in graph.receivers {
            let node = Node::Receiver(id);
            let label = node.label();
            let targets = producer_targets
                .remove(&node)
                .unwrap_or_default()
                .into_iter()
                .collect();
            let out = output(&self.telemetry, Kind::Receiver, &label, targets);
            if keep(&node, place.old) && place.keep(&node, None, Some(&out)) {
                continue;
            }
            let stop = self.receivers_stop.child_token();
            let ctx = self.ctx(&label, stop.clone());
            let ready = rec.reports_ready().then(|| ctx.ready.clone());
            let fut = rec.run(ctx, out.clone());
            place.start(self, node, fut, ready, None, Some(out), Some(stop));
        }
        let live = place.live;
        drop(producer_targets);

        // Retire what the new graph does not keep: receivers are stopped; exporters and
        // connectors drain once their last producer lets go of their input. A replaced
        // component's old instance retires the same way (its successor waits for it).
        for (node, l) in old {
            if let Some(stop) = &l.stop {
                stop.cancel();
            }
            if !live.contains_key(&node) {
                summary.stopped.push(node.label());
            }
        }
        self.live = live;
        summary
    }
}

/// The input channel of exporter or connector `node`: `(sender, None)` when the running instance
/// is kept with its channel, `(sender, Some(receiver))` for a new instance.
fn take_input(
    inputs: &mut BTreeMap<Node, (Tx, Option<Rx>)>,
    node: &Node,
    cap: usize,
) -> (Tx, Option<Rx>) {
    inputs.remove(node).unwrap_or_else(|| {
        let (tx, rx) = async_channel::bounded(cap);
        (tx, Some(rx))
    })
}

/// How [`Runtime::apply`] places each receiver, connector and exporter of the new graph: its
/// running instance kept, or a new one started once the old one has finished.
struct Placing<'a> {
    old: &'a mut BTreeMap<Node, Live>,
    live: BTreeMap<Node, Live>,
    summary: &'a mut ReloadSummary,
    settings: &'a BTreeMap<Node, Value>,
    signals: &'a BTreeMap<Node, BTreeSet<SignalKind>>,
}

impl Placing<'_> {
    /// Keep `node`'s running instance, with `input` as its input channel (unchanged when
    /// `None`) and pointing its output at `out`'s targets. `false` when nothing runs to keep.
    fn keep(&mut self, node: &Node, input: Option<Tx>, out: Option<&Output>) -> bool {
        let Some(mut l) = self.old.remove(node) else {
            return false;
        };
        if let (Some(o), Some(new)) = (&l.output, out) {
            o.replace_targets(new);
        }
        if input.is_some() {
            l.input = input;
        }
        self.summary.kept.push(node.label());
        self.live.insert(node.clone(), l);
        true
    }

    /// Spawn `fut` as `node`'s new instance, after the instance it replaces has finished
    /// (`ready`: see [`Runtime::spawn`]).
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        rt: &mut Runtime,
        node: Node,
        fut: BoxRun,
        ready: Option<Ready>,
        input: Option<Tx>,
        output: Option<Output>,
        stop: Option<CancellationToken>,
    ) {
        let label = node.label();
        let after = self.old.get(&node).map(|l| l.finished.clone());
        let finished = rt.spawn(label.clone(), fut, after, ready);
        self.summary.started.push(label);
        let live = Live {
            settings: self.settings.get(&node).cloned(),
            input,
            output,
            signals: self.signals.get(&node).cloned().unwrap_or_default(),
            stop,
            finished,
        };
        self.live.insert(node, live);
    }
}

/// The role of a component, which names its runtime counters the way the collector does. (A
/// receiver has no input and an exporter no output, so those names are never registered.)
#[derive(Clone, Copy)]
enum Kind {
    Receiver,
    Processor,
    Connector,
    Exporter,
}

struct Names {
    incoming: &'static str,
    outgoing: &'static str,
    refused: &'static str,
    queue_size: &'static str,
    queue_capacity: &'static str,
}

impl Kind {
    fn names(self) -> Names {
        match self {
            Kind::Receiver => Names {
                incoming: "celeriac_receiver_incoming_items_total",
                outgoing: "celeriac_receiver_accepted_items_total",
                refused: "celeriac_receiver_refused_items_total",
                queue_size: "celeriac_receiver_queue_size",
                queue_capacity: "celeriac_receiver_queue_capacity",
            },
            Kind::Processor => Names {
                incoming: "celeriac_processor_incoming_items_total",
                outgoing: "celeriac_processor_outgoing_items_total",
                refused: "celeriac_processor_refused_items_total",
                queue_size: "celeriac_processor_queue_size",
                queue_capacity: "celeriac_processor_queue_capacity",
            },
            Kind::Connector => Names {
                incoming: "celeriac_connector_incoming_items_total",
                outgoing: "celeriac_connector_outgoing_items_total",
                refused: "celeriac_connector_refused_items_total",
                queue_size: "celeriac_connector_queue_size",
                queue_capacity: "celeriac_connector_queue_capacity",
            },
            Kind::Exporter => Names {
                incoming: "celeriac_exporter_incoming_items_total",
                outgoing: "celeriac_exporter_outgoing_items_total",
                refused: "celeriac_exporter_refused_items_total",
                queue_size: "celeriac_exporter_queue_size",
                queue_capacity: "celeriac_exporter_queue_capacity",
            },
        }
    }
}

/// A producer's output, counted per signal: `celeriac_receiver_accepted_items_total` and
/// `celeriac_receiver_refused_items_total` for receivers (refused = the pipeline was full and
/// the receiver could not wait, so the items were dropped), `..._outgoing_items_total` for
/// processors and connectors.
fn output(
    telemetry: &Telemetry,
    kind: Kind,
    label: &str,
    targets: Vec<(SignalKind, Vec<GatedSender>)>,
) -> Output {
    let names = kind.names();
    Output::gated(targets, |signal| {
        let labels = [("component", label), ("signal", signal.as_str())];
        (
            telemetry.counter(
                names.outgoing,
                "Items a component handed to the next stage.",
                &labels,
            ),
            telemetry.counter(
                names.refused,
                "Items a component could not hand over because the next stage was full (dropped by producers that cannot wait).",
                &labels,
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::graph::PipelinePlan;
    use super::*;
    use crate::component::{Exporter, Host, Receiver};
    use crate::config::ComponentId;

    /// A receiver that binds when the test says so: then it reports ready (`true`) and serves
    /// until stopped, or it fails as a bind would (`false`).
    struct Binding(oneshot::Receiver<bool>);

    impl Receiver for Binding {
        fn reports_ready(&self) -> bool {
            true
        }

        fn run(self: Box<Self>, ctx: Context, _out: Output) -> BoxRun {
            Box::pin(async move {
                if !self.0.await.unwrap_or(false) {
                    return Err(ComponentError::Other("cannot bind".into()));
                }
                ctx.ready.set();
                ctx.shutdown.cancelled().await;
                Ok(())
            })
        }
    }

    /// An exporter that does not report readiness: ready once started.
    struct Sink;

    impl Exporter for Sink {
        fn run(self: Box<Self>, _ctx: Context, input: Input) -> BoxRun {
            Box::pin(async move {
                while input.recv().await.is_some() {}
                Ok(())
            })
        }
    }

    fn id(s: &str) -> ComponentId {
        ComponentId::parse(s).expect("component id")
    }

    /// `receiver/binding` → `exporter/sink`; `bind` tells the receiver when to bind.
    fn graph(bind: oneshot::Receiver<bool>) -> Graph {
        Graph {
            receivers: vec![(id("binding"), Box::new(Binding(bind)))],
            connectors: Vec::new(),
            exporters: vec![(id("sink"), Box::new(Sink))],
            pipelines: vec![PipelinePlan {
                id: "traces".into(),
                signal: SignalKind::Traces,
                sources: vec![Node::Receiver(id("binding"))],
                processors: Vec::new(),
                sinks: vec![Node::Exporter(id("sink"))],
            }],
            extensions: Vec::new(),
            host: Host::default(),
        }
    }

    struct Started {
        board: StatusBoard,
        telemetry: Telemetry,
        stop: CancellationToken,
        reloads: mpsc::Sender<Reload>,
        run: tokio::task::JoinHandle<Result<(), RunError>>,
    }

    fn start(bind: oneshot::Receiver<bool>) -> Started {
        let g = graph(bind);
        let board = g.host.status().clone();
        let (telemetry, stop) = (Telemetry::new(), CancellationToken::new());
        let (reloads, rx) = mpsc::channel(1);
        let run = tokio::spawn({
            let (telemetry, stop) = (telemetry.clone(), stop.clone());
            async move {
                run_with_reloads(g, &[], &ServiceSettings::default(), telemetry, stop, rx).await
            }
        });
        Started {
            board,
            telemetry,
            stop,
            reloads,
            run,
        }
    }

    impl Started {
        fn status(&self, label: &str) -> Option<ComponentStatus> {
            self.board.get(label).map(|e| e.status)
        }

        fn ready(&self) -> bool {
            self.telemetry.healthy() && self.board.healthy()
        }

        /// Lets every task run until it waits, then checks the agent is not ready.
        async fn assert_waiting_for_the_receiver(&self) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                self.status("receiver/binding"),
                Some(ComponentStatus::Starting)
            );
            assert!(!self.ready() && self.board.ready_since().is_none());
        }

        async fn await_ready(&self) {
            let ready = async {
                while !self.ready() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(5), ready)
                .await
                .expect("ready");
            assert_eq!(self.status("receiver/binding"), Some(ComponentStatus::Ok));
        }
    }

    /// The agent is ready once the component that reports its own readiness is; the one that
    /// does not is ready as soon as it starts.
    #[tokio::test]
    async fn ready_once_every_component_is() {
        let (bind, bound) = oneshot::channel();
        let agent = start(bound);
        agent.assert_waiting_for_the_receiver().await;
        assert_eq!(agent.status("exporter/sink"), Some(ComponentStatus::Ok));
        let _ = bind.send(true);
        agent.await_ready().await;
        agent.stop.cancel();
        agent.run.await.expect("run").expect("clean stop");
        assert!(!agent.telemetry.healthy() && agent.board.ready_since().is_none());
    }

    /// A component that fails before it is ready (a port it cannot bind) never lets the agent
    /// say it is ready.
    #[tokio::test]
    async fn never_ready_when_a_component_fails_to_start() {
        let (bind, bound) = oneshot::channel();
        let agent = start(bound);
        agent.assert_waiting_for_the_receiver().await;
        let _ = bind.send(false);
        let res = agent.run.await.expect("run");
        assert!(
            matches!(&res, Err(RunError::Component { id, .. }) if id == "receiver/binding"),
            "{res:?}"
        );
        assert!(!agent.telemetry.healthy() && agent.board.ready_since().is_none());
        assert!(matches!(
            agent.board.get("receiver/binding").map(|e| e.status),
            Some(ComponentStatus::PermanentError(_))
        ));
    }

    /// A reload's new instance starts after the old one has finished, and the agent is not
    /// ready until the new one is.
    #[tokio::test]
    async fn a_reloaded_component_is_waited_for() {
        let (bind, bound) = oneshot::channel();
        let agent = start(bound);
        let _ = bind.send(true);
        agent.await_ready().await;

        let (bind, bound) = oneshot::channel();
        let (done, summary) = oneshot::channel();
        let reload = Reload {
            config: Config {
                components: Vec::new(),
                pipelines: Vec::new(),
                service: ServiceSettings::default(),
            },
            graph: graph(bound),
            done,
        };
        agent.reloads.send(reload).await.expect("reload sent");
        let summary = summary.await.expect("reloaded");
        assert!(summary.started.contains(&"receiver/binding".to_string()));
        agent.assert_waiting_for_the_receiver().await;
        let _ = bind.send(true);
        agent.await_ready().await;
        agent.stop.cancel();
        agent.run.await.expect("run").expect("clean stop");
    }
}
