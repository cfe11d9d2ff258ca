//! Wiring and lifecycle of a built [`Graph`].
//!
//! Each pipeline gets an entry channel in front of its first processor (or feeds its exporters
//! directly when it has none); every exporter and connector owns one input channel shared by
//! all pipelines that list it. All channels are bounded by `service.channel_capacity`.
//! Start order: exporters, connectors, processors, then receivers. Stop: cancel receivers; each
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
    let input = |kind: Kind, label: &str, rx: Rx| {
        let names = kind.names();
        telemetry.observe(names.queue_size, "Batches waiting in a component's input channel.", &[("component", label)], {
            let weak = rx.downgrade();
            move || weak.upgrade().map_or(0, |rx| rx.len() as i64)
        });
        telemetry.observe(names.queue_capacity, "Capacity, in batches, of a component's input channel (service.channel_capacity).", &[("component", label)], move || cap as i64);
        Input::new(rx, telemetry.counter(names.incoming, "Items (spans, data points, log records, Celery events) a component took from its input.", &[("component", label)]))
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
                let out = output(&telemetry, Kind::Processor, &label, vec![(p.signal, out_targets)]);
                let inp = input(Kind::Processor, &label, rx.clone());
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

    // Start downstream first.
    for (id, exp) in graph.exporters {
        let node = Node::Exporter(id);
        let label = node.label();
        let rx = inputs
            .get(&node)
            .map(|(_, rx)| rx.clone())
            .unwrap_or_else(|| async_channel::bounded(1).1);
        let fut = exp.run(ctx(label.clone()), input(Kind::Exporter, &label, rx));
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
            input(Kind::Connector, &label, rx),
            output(&telemetry, Kind::Connector, &label, targets),
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
        let fut = rec.run(
            ctx(label.clone()),
            output(&telemetry, Kind::Receiver, &label, targets),
        );
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
    targets: Vec<(SignalKind, Vec<Tx>)>,
) -> Output {
    let names = kind.names();
    Output::counted(targets, |signal| {
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
