//! The three roles and what the runtime hands each of them.
//!
//! * a [`Receiver`] produces signals into an [`Output`] until its shutdown token is cancelled;
//! * a [`Processor`] reads an [`Input`] and writes an [`Output`] until its input closes (a
//!   connector is a processor whose output spans several pipelines and signals);
//! * an [`Exporter`] reads an [`Input`] until it closes, then flushes and returns.
//!
//! * an [`Extension`] runs beside the pipelines until its shutdown token is cancelled.
//!
//! Each component type describes itself with a [`Registration`] (its [`Factory`]: which signals
//! it takes and gives, how to build it from its settings); `crate::registry` lists them all.
//!
//! Shutdown therefore needs no control messages: cancelling receivers drops their senders, the
//! channels close stage after stage, and every stage drains what it holds before it returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::config::{DecodeError, Section, Value};
use crate::signal::{Batch, Carry, Signal, SignalKind, Stamp};
use crate::telemetry::{Counter, Histogram, Telemetry};

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

    /// Does this component tell the runtime itself when it is ready ([`Context::ready`]), e.g.
    /// once its listeners are bound? Otherwise it is ready as soon as it starts.
    fn reports_ready(&self) -> bool {
        false
    }

    /// State this component offers to extensions (see [`Host`]); most offer none.
    fn shared(&self) -> Option<SharedState> {
        None
    }
}

pub trait Processor: Send {
    fn run(self: Box<Self>, ctx: Context, input: Input, out: Output) -> BoxRun;

    /// State this component offers to extensions (see [`Host`]); most offer none.
    fn shared(&self) -> Option<SharedState> {
        None
    }

    /// A gate this processor closes to refuse data at its pipeline's entry (memory_limiter);
    /// the runtime puts it in front of every producer feeding the pipeline.
    fn admission(&self) -> Option<Admission> {
        None
    }

    /// Does this processor take batches still in their wire form ([`Signal::Encoded`])? A
    /// receiver forwards a request undecoded only to pipelines whose every component does.
    fn takes_encoded(&self) -> bool {
        false
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

/// A channel a producer feeds: a pipeline's entry with the admission gates in front of it, or
/// the next stage inside a pipeline; with the latency histogram of that pipeline.
#[derive(Clone)]
pub struct GatedSender {
    pub tx: async_channel::Sender<Batch>,
    pub gates: Vec<Admission>,
    /// `celeriac_pipeline_latency_seconds{pipeline}` of the pipeline this channel belongs to.
    pub latency: Option<Histogram>,
    /// Every component behind this channel takes [`Signal::Encoded`] batches.
    pub encoded: bool,
}

impl GatedSender {
    /// The gate refusing data now, if any.
    fn closed_gate(&self) -> Option<&Admission> {
        self.gates.iter().find(|g| g.is_refusing())
    }
}

pub trait Exporter: Send {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun;

    /// See [`Receiver::reports_ready`].
    fn reports_ready(&self) -> bool {
        false
    }

    /// Does this exporter take batches still in their wire form ([`Signal::Encoded`])?
    fn takes_encoded(&self) -> bool {
        false
    }
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
    /// Set by a component that reports its own readiness ([`Receiver::reports_ready`]) once it
    /// serves: every listener bound.
    pub ready: Ready,
}

/// A component's signal to the runtime that it is ready (see [`Receiver::reports_ready`]). The
/// agent is ready (`/healthz`, `health_check`) once every component of its graph is. Clones
/// share the signal.
#[derive(Clone, Default)]
pub struct Ready(CancellationToken);

impl Ready {
    /// Ready from now on (setting it again does nothing).
    pub fn set(&self) {
        self.0.cancel();
    }

    /// Returns once the component is ready.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }
}

/// The receiving end of a component's input channel; counts what it hands out. A processor's
/// input hands each batch's stamp to its output (through a [`Carry`]); any other component's
/// input is where its pipelines end, and observes their latency as it hands a batch out
/// (unless the component takes the stamp itself, [`Input::recv_batch`]). Unless its component
/// takes them ([`Input::taking_encoded`]), it decodes [`Signal::Encoded`] batches before handing
/// them out.
pub struct Input {
    rx: async_channel::Receiver<Batch>,
    received: Counter,
    carry: Option<Carry>,
    encoded: bool,
    /// Items of forwarded batches that did not decode when this component needed them typed.
    undecodable: Counter,
}

impl Input {
    pub fn new(rx: async_channel::Receiver<Batch>, received: Counter) -> Self {
        Input {
            rx,
            received,
            carry: None,
            encoded: false,
            undecodable: Counter::default(),
        }
    }

    /// Counts the items of forwarded batches dropped because they did not decode here.
    pub fn counting_undecodable(self, undecodable: Counter) -> Self {
        Input {
            undecodable,
            ..self
        }
    }

    /// An input whose component takes [`Signal::Encoded`] batches as they are (`encoded`).
    pub fn taking_encoded(self, encoded: bool) -> Self {
        Input { encoded, ..self }
    }

    /// A processor's input, handing stamps on to the output holding the same `carry`.
    pub fn carrying(self, carry: Carry) -> Self {
        Input {
            carry: Some(carry),
            ..self
        }
    }

    /// The next batch, or `None` once every upstream sender is gone and the channel is drained.
    pub async fn recv(&self) -> Option<Signal> {
        let b = self.recv_batch().await?;
        if let Some(stamp) = &b.stamp {
            match &self.carry {
                Some(carry) => carry.took(stamp),
                None => stamp.observe(b.signal.item_count() as u64),
            }
        }
        Some(b.signal)
    }

    /// The next batch with its stamp, for an exporter that observes the latency itself when it
    /// hands the batch to the network ([`Stamp::observe`]).
    pub async fn recv_batch(&self) -> Option<Batch> {
        loop {
            let mut b = self.rx.recv().await.ok()?;
            self.received.add(b.signal.item_count() as u64);
            let Signal::Encoded(e) = &b.signal else {
                return Some(b);
            };
            if self.encoded {
                return Some(b);
            }
            match e.decode() {
                Ok(typed) => {
                    b.signal = typed;
                    return Some(b);
                }
                Err(err) => {
                    // Only framing was checked when it was received; its content is not OTLP.
                    self.undecodable.add(e.items);
                    tracing::warn!(items = e.items, error = %err, "Dropped an undecodable OTLP batch.");
                }
            }
        }
    }

    /// Batches waiting in the channel.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Downstream targets per signal: the entry channels of every pipeline a producer feeds, each
/// signal with its own `sent`/`refused` counters. Clones share the targets, which a config
/// reload may replace while the producer runs ([`Output::replace_targets`]).
#[derive(Clone)]
pub struct Output {
    targets: Arc<RwLock<Arc<[Target]>>>,
    /// A processor's: where the stamps of what it sends come from. Others stamp what they send
    /// with the time it was produced.
    carry: Option<Carry>,
}

#[derive(Clone)]
struct Target {
    kind: SignalKind,
    senders: Vec<GatedSender>,
    sent: Counter,
    refused: Counter,
}

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
    /// Targets whose items are all counted in one `sent` and one `refused` counter.
    pub fn new(
        targets: Vec<(SignalKind, Vec<async_channel::Sender<Batch>>)>,
        sent: Counter,
        refused: Counter,
    ) -> Self {
        Self::counted(targets, |_| (sent.clone(), refused.clone()))
    }

    /// Targets counted per signal: `counters(kind)` gives that signal's `(sent, refused)`.
    pub fn counted(
        targets: Vec<(SignalKind, Vec<async_channel::Sender<Batch>>)>,
        counters: impl Fn(SignalKind) -> (Counter, Counter),
    ) -> Self {
        let targets = targets
            .into_iter()
            .map(|(k, txs)| {
                let senders = txs
                    .into_iter()
                    .map(|tx| GatedSender {
                        tx,
                        gates: Vec::new(),
                        latency: None,
                        encoded: false,
                    })
                    .collect();
                (k, senders)
            })
            .collect();
        Self::gated(targets, counters)
    }

    /// Like [`Output::counted`], with the admission gates in front of each channel.
    pub fn gated(
        targets: Vec<(SignalKind, Vec<GatedSender>)>,
        counters: impl Fn(SignalKind) -> (Counter, Counter),
    ) -> Self {
        let targets: Arc<[Target]> = targets
            .into_iter()
            .map(|(kind, senders)| {
                let (sent, refused) = counters(kind);
                Target {
                    kind,
                    senders,
                    sent,
                    refused,
                }
            })
            .collect();
        Output {
            targets: Arc::new(RwLock::new(targets)),
            carry: None,
        }
    }

    /// A processor's output, stamping what it sends as its input (holding the same `carry`)
    /// took it.
    pub fn carrying(self, carry: Carry) -> Self {
        Output {
            carry: Some(carry),
            ..self
        }
    }

    /// The stamp of a batch sent now to `to`, which entered the pipeline at `since` (default:
    /// now, or what the processor's input took).
    fn stamp(&self, to: &GatedSender, since: &mut Option<Instant>) -> Option<Stamp> {
        let latency = to.latency.as_ref()?;
        let at = *since.get_or_insert_with(|| {
            self.carry
                .as_ref()
                .and_then(Carry::giving)
                .unwrap_or_else(Instant::now)
        });
        Some(Stamp::new(at, latency.clone()))
    }

    /// Point this output (and every clone of it) at `other`'s targets. The old targets are
    /// dropped once a send in progress finishes with them, so the channels they feed close and
    /// drain as usual.
    pub fn replace_targets(&self, other: &Output) {
        let new = other.current();
        *self.targets.write().unwrap_or_else(|e| e.into_inner()) = new;
    }

    fn current(&self) -> Arc<[Target]> {
        self.targets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Does any pipeline take `kind` from this producer?
    pub fn wants(&self, kind: SignalKind) -> bool {
        self.current()
            .iter()
            .any(|t| t.kind == kind && !t.senders.is_empty())
    }

    /// Does every pipeline this producer feeds with `kind` take it in its wire form
    /// ([`Signal::Encoded`])? `false` when none takes `kind`.
    pub fn takes_encoded(&self, kind: SignalKind) -> bool {
        self.current()
            .iter()
            .filter(|t| t.kind == kind && !t.senders.is_empty())
            .fold(None, |all, t| {
                Some(all.unwrap_or(true) && t.senders.iter().all(|s| s.encoded))
            })
            .unwrap_or(false)
    }

    /// Is an admission gate refusing `kind` for any pipeline this producer feeds?
    pub fn refusing(&self, kind: SignalKind) -> bool {
        self.current()
            .iter()
            .filter(|t| t.kind == kind)
            .flat_map(|t| t.senders.iter())
            .any(|s| s.closed_gate().is_some())
    }

    /// Where `signal` goes: `None` when no pipeline takes its kind or it is empty. Channels
    /// behind a closed admission gate are left out, their refusal counted.
    fn route(&self, signal: &Signal) -> Option<Route> {
        let targets = self.current();
        let kind = signal.kind();
        let index = targets
            .iter()
            .position(|t| t.kind == kind && !t.senders.is_empty())?;
        if signal.is_empty() {
            return None;
        }
        let target = &targets[index];
        let items = signal.item_count() as u64;
        let mut open = Vec::with_capacity(target.senders.len());
        for (i, s) in target.senders.iter().enumerate() {
            match s.closed_gate() {
                Some(g) => {
                    g.refused.add(items);
                    target.refused.add(items);
                }
                None => open.push(i),
            }
        }
        let refused = open.len() < target.senders.len();
        Some(Route {
            targets,
            index,
            items,
            open,
            refused,
        })
    }

    /// Send to every target, waiting for room (backpressure). A channel whose admission gate is
    /// closed is skipped and the refusal counted. Fails only when every target has closed,
    /// which happens during shutdown.
    pub async fn send(&self, signal: Signal) -> Result<(), SendError> {
        self.send_since(signal, None).await
    }

    /// [`Output::send`] of a batch whose first item's bytes arrived at `since` (a receiver that
    /// reads ahead of what it decodes counts the wait in its buffer and the decoding in its
    /// pipelines' latency).
    pub async fn send_since(
        &self,
        signal: Signal,
        since: Option<Instant>,
    ) -> Result<(), SendError> {
        let Some(route) = self.route(&signal) else {
            return Ok(());
        };
        let open: Vec<&GatedSender> = route.open().collect();
        let mut since = since;
        let mut delivered = false;
        if let Some((last, rest)) = open.split_last() {
            for s in rest {
                let batch = Batch {
                    signal: signal.clone(),
                    stamp: self.stamp(s, &mut since),
                };
                delivered |= s.tx.send(batch).await.is_ok();
            }
            let stamp = self.stamp(last, &mut since);
            delivered |= last.tx.send(Batch { signal, stamp }).await.is_ok();
        }
        route.delivered(delivered);
        if delivered || route.refused {
            Ok(())
        } else {
            Err(SendError::Closed)
        }
    }

    /// Send without waiting, for producers that cannot apply backpressure (pub/sub): a target
    /// that is full misses this batch and the drop is counted.
    pub fn try_send(&self, signal: Signal) -> Result<(), SendError> {
        self.try_send_since(signal, None)
    }

    /// [`Output::try_send`] of a batch whose bytes arrived at `since` (a receiver that decodes
    /// before it sends counts the decoding in its pipelines' latency).
    pub fn try_send_since(&self, signal: Signal, since: Option<Instant>) -> Result<(), SendError> {
        let Some(route) = self.route(&signal) else {
            return Ok(());
        };
        let mut since = since;
        let mut full = false;
        let mut delivered = false;
        for s in route.open() {
            let batch = Batch {
                signal: signal.clone(),
                stamp: self.stamp(s, &mut since),
            };
            match s.tx.try_send(batch) {
                Ok(()) => delivered = true,
                Err(async_channel::TrySendError::Full(_)) => {
                    full = true;
                    route.target().refused.add(route.items);
                }
                Err(async_channel::TrySendError::Closed(_)) => {}
            }
        }
        route.delivered(delivered);
        match (full, route.refused, delivered) {
            (true, _, _) => Err(SendError::Full),
            (false, true, _) => Err(SendError::Refused),
            (false, false, true) => Ok(()),
            (false, false, false) => Err(SendError::Closed),
        }
    }
}

/// One send's way out (see [`Output::route`]).
struct Route {
    targets: Arc<[Target]>,
    index: usize,
    items: u64,
    /// Indices of the senders whose gates are open.
    open: Vec<usize>,
    /// A gate refused the batch for some channel.
    refused: bool,
}

impl Route {
    fn target(&self) -> &Target {
        &self.targets[self.index]
    }

    fn open(&self) -> impl Iterator<Item = &GatedSender> {
        self.open.iter().map(|&i| &self.target().senders[i])
    }

    /// Count the items sent when at least one channel took them.
    fn delivered(&self, delivered: bool) {
        if delivered {
            self.target().sent.add(self.items);
        }
    }
}

/// A component outside the pipelines (the collector's extensions): it serves something beside
/// the data flow, such as the `celery_ui` dashboard. It runs until its shutdown token is
/// cancelled and sees the running graph only through a [`Host`].
pub trait Extension: Send {
    /// Checks against the built graph (e.g. that a component it reads exists), before anything
    /// starts. The error is reported at the extension's declaration.
    fn validate(&self, _host: &Host) -> Result<(), String> {
        Ok(())
    }
    fn run(self: Box<Self>, ctx: Context, host: Host) -> BoxRun;

    /// See [`Receiver::reports_ready`].
    fn reports_ready(&self) -> bool {
        false
    }
}

/// Read-only state a component offers to extensions (for example the `celery_correlate`
/// connector's task view), as returned by [`Processor::shared`].
pub type SharedState = Arc<dyn std::any::Any + Send + Sync>;

/// What an extension can see of the graph: the states components chose to share, by component
/// id, the declared settings of every component (to find, e.g., the broker URL of a
/// receiver), the pipelines and enabled extensions, and the live [`StatusBoard`].
#[derive(Clone, Default)]
pub struct Host {
    shared: Arc<Vec<(crate::config::ComponentId, SharedState)>>,
    components: Arc<Vec<crate::config::ComponentDecl>>,
    pipelines: Arc<Vec<crate::config::PipelineDecl>>,
    extensions: Arc<Vec<String>>,
    status: StatusBoard,
}

impl Host {
    pub fn new(
        shared: Vec<(crate::config::ComponentId, SharedState)>,
        components: Vec<crate::config::ComponentDecl>,
    ) -> Host {
        Host {
            shared: Arc::new(shared),
            components: Arc::new(components),
            ..Host::default()
        }
    }

    /// This host, also showing the declared `pipelines` and the enabled `extensions` (ids, in
    /// `service.extensions` order).
    pub fn with_service(
        mut self,
        pipelines: Vec<crate::config::PipelineDecl>,
        extensions: Vec<String>,
    ) -> Host {
        self.pipelines = Arc::new(pipelines);
        self.extensions = Arc::new(extensions);
        self
    }

    /// The pipelines as declared under `service.pipelines`.
    pub fn pipelines(&self) -> &[crate::config::PipelineDecl] {
        &self.pipelines
    }

    /// Ids of the extensions listed in `service.extensions`.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The status of every running component, kept up to date by the pipeline runtime.
    pub fn status(&self) -> &StatusBoard {
        &self.status
    }

    /// Shared states of type `T`, with the id of the component that offers each.
    pub fn shared<T: std::any::Any + Send + Sync>(
        &self,
    ) -> Vec<(&crate::config::ComponentId, Arc<T>)> {
        self.shared
            .iter()
            .filter_map(|(id, s)| s.clone().downcast::<T>().ok().map(|t| (id, t)))
            .collect()
    }

    /// Declarations of components of `type_name` in `section`.
    pub fn declared(
        &self,
        section: crate::config::Section,
        type_name: &str,
    ) -> Vec<&crate::config::ComponentDecl> {
        self.components
            .iter()
            .filter(|c| c.section == section && c.id.type_name == type_name)
            .collect()
    }
}

/// A component's state as the runtime last saw it (the collector's component status events,
/// `componentstatus.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentStatus {
    /// Spawned, not ready yet: waiting for the instance it replaces to finish, or binding its
    /// listeners ([`Receiver::reports_ready`]).
    Starting,
    /// Running and ready.
    Ok,
    /// Asked to stop; draining.
    Stopping,
    /// Returned without an error.
    Stopped,
    /// Returned an error (the agent shuts down).
    PermanentError(String),
}

impl ComponentStatus {
    /// The collector's name for the status (`StatusOK`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ComponentStatus::Starting => "StatusStarting",
            ComponentStatus::Ok => "StatusOK",
            ComponentStatus::Stopping => "StatusStopping",
            ComponentStatus::Stopped => "StatusStopped",
            ComponentStatus::PermanentError(_) => "StatusPermanentError",
        }
    }
}

/// One component's entry on the [`StatusBoard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// `receiver/otlp`, `processor/batch@traces`, `exporter/debug`, `extension/zpages`.
    pub label: String,
    pub status: ComponentStatus,
    /// When it entered this status.
    pub since: std::time::SystemTime,
}

/// The runtime's record of every component's status and of whether the pipelines are up (the
/// collector's `Ready`/`NotReady` notifications to pipeline watchers). The runtime writes it;
/// extensions (health_check, zpages) read it through their [`Host`]. Clones share the record.
#[derive(Clone, Default)]
pub struct StatusBoard {
    inner: Arc<RwLock<BoardInner>>,
}

#[derive(Default)]
struct BoardInner {
    components: std::collections::BTreeMap<String, StatusEntry>,
    ready_since: Option<std::time::SystemTime>,
}

impl StatusBoard {
    pub fn set(&self, label: &str, status: ComponentStatus) {
        let mut b = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let entry = StatusEntry {
            label: label.to_string(),
            status,
            since: std::time::SystemTime::now(),
        };
        b.components.insert(label.to_string(), entry);
    }

    /// Every component ready (`true`), or not: starting, a reloaded component starting, or
    /// shutting down (`false`).
    pub fn set_ready(&self, ready: bool) {
        let mut b = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match (ready, b.ready_since) {
            (true, None) => b.ready_since = Some(std::time::SystemTime::now()),
            (false, _) => b.ready_since = None,
            (true, Some(_)) => {}
        }
    }

    /// Since when every component has been ready, if it is.
    pub fn ready_since(&self) -> Option<std::time::SystemTime> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .ready_since
    }

    /// Every component's entry, by label.
    pub fn snapshot(&self) -> Vec<StatusEntry> {
        let b = self.inner.read().unwrap_or_else(|e| e.into_inner());
        b.components.values().cloned().collect()
    }

    /// The entry of `label`, if the runtime has seen it.
    pub fn get(&self, label: &str) -> Option<StatusEntry> {
        let b = self.inner.read().unwrap_or_else(|e| e.into_inner());
        b.components.get(label).cloned()
    }

    /// Up: every component ready and none failed.
    pub fn healthy(&self) -> bool {
        let b = self.inner.read().unwrap_or_else(|e| e.into_inner());
        b.ready_since.is_some()
            && !b
                .components
                .values()
                .any(|e| matches!(e.status, ComponentStatus::PermanentError(_)))
    }
}

// ---- Factories: how a component type is built from its settings --------------------------------
//
// A builder only decodes and checks settings; it performs no I/O, so `celeriac validate` builds
// every component to check it and `celeriac run` reuses what was built.

pub type BuildResult<T> = Result<Box<T>, DecodeError>;

/// For unit tests of builders: the key `build` rejects in `yaml`, `None` when it builds.
#[cfg(test)]
pub(crate) fn rejected_key<T: ?Sized>(
    build: fn(&Value) -> BuildResult<T>,
    yaml: &str,
) -> Option<String> {
    let v: Value = serde_yaml_ng::from_str(yaml).expect("test YAML");
    build(&v).err().map(|e| e.path)
}

/// How to build one component type, and which signals it takes and gives.
pub enum Factory {
    Receiver {
        produces: &'static [SignalKind],
        build: fn(&Value) -> BuildResult<dyn Receiver>,
    },
    Processor {
        signals: &'static [SignalKind],
        build: fn(&Value) -> BuildResult<dyn Processor>,
    },
    Exporter {
        accepts: &'static [SignalKind],
        build: fn(&Value) -> BuildResult<dyn Exporter>,
    },
    /// Exporter of some pipelines, receiver of others; runs as a processor whose output
    /// reaches every pipeline that lists it as a receiver.
    Connector {
        accepts: &'static [SignalKind],
        produces: &'static [SignalKind],
        build: fn(&Value) -> BuildResult<dyn Processor>,
    },
    /// Runs beside the pipelines (declared under `extensions`, enabled by `service.extensions`).
    Extension {
        build: fn(&Value) -> BuildResult<dyn Extension>,
    },
}

impl Factory {
    pub fn section(&self) -> Section {
        match self {
            Factory::Receiver { .. } => Section::Receivers,
            Factory::Processor { .. } => Section::Processors,
            Factory::Exporter { .. } => Section::Exporters,
            Factory::Connector { .. } => Section::Connectors,
            Factory::Extension { .. } => Section::Extensions,
        }
    }

    /// Signals this component can emit into a pipeline (receivers, connectors).
    pub fn produces(&self) -> &'static [SignalKind] {
        match self {
            Factory::Receiver { produces, .. } | Factory::Connector { produces, .. } => produces,
            Factory::Processor { signals, .. } => signals,
            Factory::Exporter { .. } | Factory::Extension { .. } => &[],
        }
    }

    /// Signals this component can take from a pipeline (processors, exporters, connectors).
    pub fn accepts(&self) -> &'static [SignalKind] {
        match self {
            Factory::Exporter { accepts, .. } | Factory::Connector { accepts, .. } => accepts,
            Factory::Processor { signals, .. } => signals,
            Factory::Receiver { .. } | Factory::Extension { .. } => &[],
        }
    }
}

pub struct Registration {
    pub type_name: &'static str,
    pub factory: Factory,
    /// Every setting with its default value, as the YAML a user would write
    /// (`celeriac components` prints it; a test builds the component from it).
    pub defaults: fn() -> Result<Value, String>,
}

/// The settings of a component whose config is `T`, all at their defaults.
pub fn defaults<T: Default + serde::Serialize>() -> Result<Value, String> {
    serde_yaml_ng::to_value(T::default()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod input_tests {
    use super::*;
    use crate::signal::{Encoded, SignalKind};

    /// A forwarded batch whose framing is sound but whose span name is not UTF-8: a component
    /// that needs it typed drops it, counts its items, and gets the next batch.
    #[tokio::test]
    async fn an_undecodable_forwarded_batch_is_counted_and_skipped() {
        // request.1 (ResourceSpans) { 2 (ScopeSpans) { 2 (Span) { 5 (name): 0xff } } }
        let body = bytes::Bytes::from_static(&[0x0a, 7, 0x12, 5, 0x12, 3, 0x2a, 1, 0xff]);
        let bad = Encoded::read(SignalKind::Traces, body).expect("well framed");
        let (tx, rx) = async_channel::bounded(4);
        let dropped = Counter::default();
        let input = Input::new(rx, Counter::default()).counting_undecodable(dropped.clone());
        for signal in [Signal::Encoded(bad), Signal::Traces(Arc::new(Vec::new()))] {
            tx.send(Batch {
                signal,
                stamp: None,
            })
            .await
            .expect("send");
        }
        let next = input.recv().await.expect("the good batch");
        assert!(matches!(next, Signal::Traces(_)));
        assert_eq!(dropped.get(), 1);
    }
}
