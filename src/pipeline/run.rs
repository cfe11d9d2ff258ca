//! Wiring and lifecycle of a built [`Graph`].
//!
//! Each pipeline gets an entry channel in front of its first processor (or feeds its exporters
//! directly when it has none); every exporter and connector owns one input channel shared by
//! all pipelines that list it. All channels are bounded by `service.channel_capacity`.
//! Start order: extensions, exporters, connectors, processors, then receivers. Stop: cancel receivers; each
//! channel closes when its last sender is dropped, so stages drain in order with no control
//! messages. Whatever is still running at the deadline is aborted and named in the log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::graph::{Graph, Node};
use crate::component::{BoxRun, ComponentError, Context, Input, Output};
use crate::config::ServiceSettings;
use crate::signal::{Signal, SignalKind};
use crate::telemetry::Telemetry;

type Tx = async_channel::Sender<Signal>;
type Rx = async_channel::Receiver<Signal>;

/// How a run ended.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("component {id} failed: {source}")]
    Component { id: String, source: ComponentError },
    #[error("shutdown did not finish within {timeout:?}; aborted: {pending}")]
    Deadline { timeout: Duration, pending: String },
}

/// Run `graph` until `stop` is cancelled (or a component fails), then shut down in order.
pub async fn run(
    graph: Graph,
    settings: &ServiceSettings,
    telemetry: Telemetry,
    stop: CancellationToken,
) -> Result<(), RunError> {
    let cap = settings.channel_capacity.max(1);
    let receivers_stop = CancellationToken::new();
    let ctx = |label: String| Context {
        id: Arc::from(label.as_str()),
        shutdown: receivers_stop.clone(),
        telemetry: telemetry.clone(),
    };
    let input = |label: &str, rx: Rx| {
        Input::new(rx, telemetry.counter("celeriac_component_received_items_total", "Items (spans, data points, log records, Celery events) a component took from its input.", &[("component", label)]))
    };

    // Input channels of exporters and connectors.
    let mut inputs: BTreeMap<Node, (Tx, Rx)> = BTreeMap::new();
    for (id, _) in &graph.exporters {
        inputs.insert(Node::Exporter(id.clone()), async_channel::bounded(cap));
    }
    for (id, _) in &graph.connectors {
        inputs.insert(Node::Connector(id.clone()), async_channel::bounded(cap));
    }

    // Per pipeline: processor chain, and the entry senders its sources write to.
    let mut producer_targets: BTreeMap<Node, BTreeMap<SignalKind, Vec<Tx>>> = BTreeMap::new();
    let mut tasks: JoinSet<(String, Result<(), ComponentError>)> = JoinSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut spawn = |tasks: &mut JoinSet<_>, label: String, fut: BoxRun| {
        running.insert(label.clone());
        tasks.spawn(async move { (label, fut.await) });
    };

    let mut processor_runs = Vec::new();
    for p in graph.pipelines {
        let sinks: Vec<Tx> = p
            .sinks
            .iter()
            .filter_map(|n| inputs.get(n).map(|(tx, _)| tx.clone()))
            .collect();
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
                let out = output(&telemetry, &label, vec![(p.signal, out_targets)]);
                let inp = input(&label, rx.clone());
                processor_runs.push((label.clone(), proc_.run(ctx(label), inp, out)));
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
                .extend(entry.iter().cloned());
        }
    }

    // Extensions first, as in the collector; they stop with the receivers.
    for (id, ext) in graph.extensions {
        let label = format!("extension/{id}");
        let fut = ext.run(ctx(label.clone()), graph.host.clone());
        spawn(&mut tasks, label, fut);
    }

    // Start downstream first.
    for (id, exp) in graph.exporters {
        let node = Node::Exporter(id);
        let label = node.label();
        let rx = inputs
            .get(&node)
            .map(|(_, rx)| rx.clone())
            .unwrap_or_else(|| async_channel::bounded(1).1);
        let fut = exp.run(ctx(label.clone()), input(&label, rx));
        spawn(&mut tasks, label, fut);
    }
    for (id, con) in graph.connectors {
        let node = Node::Connector(id);
        let label = node.label();
        let rx = inputs
            .get(&node)
            .map(|(_, rx)| rx.clone())
            .unwrap_or_else(|| async_channel::bounded(1).1);
        let targets = producer_targets
            .remove(&node)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let fut = con.run(
            ctx(label.clone()),
            input(&label, rx),
            output(&telemetry, &label, targets),
        );
        spawn(&mut tasks, label, fut);
    }
    for (label, fut) in processor_runs {
        spawn(&mut tasks, label, fut);
    }
    // The graph's own ends of the input channels must go, or they would never close.
    drop(inputs);
    for (id, rec) in graph.receivers {
        let node = Node::Receiver(id);
        let label = node.label();
        let targets = producer_targets
            .remove(&node)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let fut = rec.run(ctx(label.clone()), output(&telemetry, &label, targets));
        spawn(&mut tasks, label, fut);
    }
    drop(producer_targets);
    telemetry.set_ready(true);
    tracing::info!(components = running.len(), "Pipelines started.");

    // Run until asked to stop or a component fails.
    let mut failure: Option<RunError> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok((label, Ok(())))) => {
                    running.remove(&label);
                    tracing::debug!(component = %label, "Component finished.");
                }
                Some(Ok((label, Err(e)))) => {
                    running.remove(&label);
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

    // Ordered shutdown within the deadline.
    telemetry.set_ready(false);
    tracing::info!(timeout = ?settings.shutdown_timeout, "Shutting down: stopping receivers, draining, flushing exporters.");
    receivers_stop.cancel();
    let deadline = tokio::time::Instant::now() + settings.shutdown_timeout;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((label, res)))) => {
                running.remove(&label);
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
                let mut pending: Vec<_> = running.iter().cloned().collect();
                pending.sort();
                tasks.abort_all();
                return Err(RunError::Deadline {
                    timeout: settings.shutdown_timeout,
                    pending: pending.join(", "),
                });
            }
        }
    }
    tracing::info!("Shutdown complete.");
    failure.map_or(Ok(()), Err)
}

fn output(telemetry: &Telemetry, label: &str, targets: Vec<(SignalKind, Vec<Tx>)>) -> Output {
    Output::new(
        targets,
        telemetry.counter("celeriac_component_sent_items_total", "Items a component handed to the next stage.", &[("component", label)]),
        telemetry.counter("celeriac_component_refused_items_total", "Items a component could not hand over because the next stage was full (dropped by producers that cannot wait).", &[("component", label)]),
    )
}
