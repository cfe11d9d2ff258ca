//! The three roles and what the runtime hands each of them.
//!
//! * a [`Receiver`] produces signals into an [`Output`] until its shutdown token is cancelled;
//! * a [`Processor`] reads an [`Input`] and writes an [`Output`] until its input closes (a
//!   connector is a processor whose output spans several pipelines and signals);
//! * an [`Exporter`] reads an [`Input`] until it closes, then flushes and returns.
//!
//! Shutdown therefore needs no control messages: cancelling receivers drops their senders, the
//! channels close stage after stage, and every stage drains what it holds before it returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::signal::{Signal, SignalKind};
use crate::telemetry::{Counter, Telemetry};

/// What a running component returns.
pub type RunResult = Result<(), ComponentError>;
pub type BoxRun = Pin<Box<dyn Future<Output = RunResult> + Send>>;

/// A component failed at run time (the agent logs it and marks itself unhealthy).
#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub trait Receiver: Send {
    fn run(self: Box<Self>, ctx: Context, out: Output) -> BoxRun;
}

pub trait Processor: Send {
    fn run(self: Box<Self>, ctx: Context, input: Input, out: Output) -> BoxRun;

    /// A gate this processor closes to refuse data at its pipeline's entry (memory_limiter);
    /// the runtime puts it in front of every producer feeding the pipeline.
    fn admission(&self) -> Option<Admission> {
        None
    }
}

/// A pipeline's admission gate. While it is closed, producers' [`Output`]s refuse new data for
/// that pipeline: [`Output::try_send`] answers [`SendError::Refused`], [`Output::send`] skips
/// the pipeline; either way the items are counted.
#[derive(Clone, Default)]
pub struct Admission {
    refusing: Arc<AtomicBool>,
    refused: Counter,
}

impl Admission {
    /// `refused` counts the items turned away at this gate.
    pub fn new(refused: Counter) -> Self {
        Admission {
            refusing: Arc::default(),
            refused,
        }
    }

    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::Relaxed);
    }

    pub fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Relaxed)
    }
}

pub trait Exporter: Send {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun;
}

/// Per-component runtime context.
#[derive(Clone)]
pub struct Context {
    /// `receivers/celery_redis`, `processors/batch@traces`, ... for logs and metrics.
    pub id: Arc<str>,
    /// Cancelled when receivers must stop. Processors and exporters stop when their input closes
    /// and may use it only to cut short waits (retries) during shutdown.
    pub shutdown: CancellationToken,
    pub telemetry: Telemetry,
}

/// The receiving end of a component's input channel; counts what it hands out.
pub struct Input {
    rx: async_channel::Receiver<Signal>,
    received: Counter,
}

impl Input {
    pub fn new(rx: async_channel::Receiver<Signal>, received: Counter) -> Self {
        Input { rx, received }
    }

    /// The next batch, or `None` once every upstream sender is gone and the channel is drained.
    pub async fn recv(&self) -> Option<Signal> {
        let s = self.rx.recv().await.ok()?;
        self.received.add(s.item_count() as u64);
        Some(s)
    }

    /// Batches waiting in the channel.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// One downstream target: a pipeline's entry channel and the gates in front of it.
#[derive(Clone)]
struct Target {
    tx: async_channel::Sender<Signal>,
    gates: Vec<Admission>,
}

impl Target {
    /// The gate refusing data now, if any.
    fn closed_gate(&self) -> Option<&Admission> {
        self.gates.iter().find(|g| g.is_refusing())
    }
}

/// Downstream targets per signal: the entry channels of every pipeline a producer feeds.
#[derive(Clone)]
pub struct Output {
    targets: Vec<(SignalKind, Vec<Target>)>,
    sent: Counter,
    refused: Counter,
}

/// A channel with the admission gates of its pipeline, for [`Output::gated`].
pub type GatedSender = (async_channel::Sender<Signal>, Vec<Admission>);

/// Returned by [`Output::try_send`] when a batch could not be handed over at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("downstream is full")]
    Full,
    #[error("downstream is closed")]
    Closed,
    /// An admission gate (memory_limiter) refused the data; retry later.
    #[error("refused: memory limit")]
    Refused,
}

impl Output {
    pub fn new(
        targets: Vec<(SignalKind, Vec<async_channel::Sender<Signal>>)>,
        sent: Counter,
        refused: Counter,
    ) -> Self {
        let targets = targets
            .into_iter()
            .map(|(k, txs)| (k, txs.into_iter().map(|tx| (tx, Vec::new())).collect()))
            .collect();
        Output::gated(targets, sent, refused)
    }

    /// Like [`Output::new`], with the admission gates of each target.
    pub fn gated(
        targets: Vec<(SignalKind, Vec<GatedSender>)>,
        sent: Counter,
        refused: Counter,
    ) -> Self {
        let targets = targets
            .into_iter()
            .map(|(k, txs)| {
                let txs = txs
                    .into_iter()
                    .map(|(tx, gates)| Target { tx, gates })
                    .collect();
                (k, txs)
            })
            .collect();
        Output {
            targets,
            sent,
            refused,
        }
    }

    /// Is an admission gate refusing `kind` for any pipeline this producer feeds?
    pub fn refusing(&self, kind: SignalKind) -> bool {
        self.senders(kind).iter().any(|t| t.closed_gate().is_some())
    }

    /// Does any pipeline take `kind` from this producer?
    pub fn wants(&self, kind: SignalKind) -> bool {
        self.targets
            .iter()
            .any(|(k, t)| *k == kind && !t.is_empty())
    }

    fn senders(&self, kind: SignalKind) -> &[Target] {
        self.targets
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, s)| s.as_slice())
            .unwrap_or(&[])
    }

    /// Send to every target, waiting for room (backpressure). A target whose admission gate is
    /// closed is skipped and the refusal counted. Fails only when every target has closed,
    /// which happens during shutdown.
    pub async fn send(&self, signal: Signal) -> Result<(), SendError> {
        let senders = self.senders(signal.kind());
        if senders.is_empty() || signal.is_empty() {
            return Ok(());
        }
        let n = signal.item_count() as u64;
        let mut refused = false;
        let open: Vec<&Target> = senders
            .iter()
            .filter(|t| match t.closed_gate() {
                Some(g) => {
                    g.refused.add(n);
                    self.refused.add(n);
                    refused = true;
                    false
                }
                None => true,
            })
            .collect();
        let mut delivered = false;
        if let Some((last, rest)) = open.split_last() {
            for t in rest {
                delivered |= t.tx.send(signal.clone()).await.is_ok();
            }
            delivered |= last.tx.send(signal).await.is_ok();
        }
        if delivered {
            self.sent.add(n);
            Ok(())
        } else if refused {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    /// Send without waiting, for producers that cannot apply backpressure (pub/sub): a target
    /// that is full misses this batch and the drop is counted.
    pub fn try_send(&self, signal: Signal) -> Result<(), SendError> {
        let senders = self.senders(signal.kind());
        if senders.is_empty() || signal.is_empty() {
            return Ok(());
        }
        let n = signal.item_count() as u64;
        let mut full = false;
        let mut refused = false;
        let mut delivered = false;
        for s in senders {
            if let Some(g) = s.closed_gate() {
                g.refused.add(n);
                self.refused.add(n);
                refused = true;
                continue;
            }
            match s.tx.try_send(signal.clone()) {
                Ok(()) => delivered = true,
                Err(async_channel::TrySendError::Full(_)) => {
                    full = true;
                    self.refused.add(n);
                }
                Err(async_channel::TrySendError::Closed(_)) => {}
            }
        }
        if delivered {
            self.sent.add(n);
        }
        match (full, refused, delivered) {
            (true, _, _) => Err(SendError::Full),
            (false, true, _) => Err(SendError::Refused),
            (false, false, true) => Ok(()),
            (false, false, false) => Err(SendError::Closed),
        }
    }
}
