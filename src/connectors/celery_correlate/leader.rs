//! Leader election for a hot-standby pair of agents, and the gate on `celery_correlate`'s output.
//!
//! It owns the Redis lease (acquire, compare-and-renew, compare-and-delete), the fencing clock,
//! the `celeriac_leader` gauge and the standby's replay buffer. Every agent of the pair reads the
//! same Celery events and keeps full state; only the one holding the lease lets its output out
//! ([`Gate::send`]); the others drop it, counted, keeping the last stretch of spans and logs to
//! replay when they take over.
//!
//! ```yaml
//! connectors:
//!   celery_correlate:
//!     leader_election:
//!       endpoint: redis://redis:6379/0   # rediss:// with `tls` as for redis_queues
//!       lease: 15s                       # time-to-live of the lock
//!       key: celeriac:leader             # one key per pair
//! ```
//!
//! # Protocol (Redis)
//!
//! * acquire: `SET key token NX PX lease` (one Lua script that also answers the holder's `PTTL`
//!   when the key is taken, and re-extends a lease already ours whose reply was lost); a standby
//!   tries every [`poll_every`] (`min(lease/4, 250ms)`), so a released lock is taken within that;
//! * renew: every `lease/4`, by the holder only: `if GET key == token then PEXPIRE key lease`
//!   in one Lua script;
//! * release on clean shutdown, after the final flush: `if GET key == token then DEL key`;
//!   the standby takes over at its next poll.
//!
//! # Fencing
//!
//! The holder measures its lease on the monotonic clock from the moment it *sent* the command
//! that set or renewed it (Redis starts its `PX` timer later, when it receives it), and stops
//! letting output out at `sent + lease − lease/4`. Redis cannot have expired the key before
//! `sent + lease`, so a leader that cannot renew (Redis unreachable, process paused, slow
//! network) is silent for at least `lease/4` (3.75 s with a 15 s lease) before anyone else can
//! hold the lock. That margin absorbs clock rate differences between the agent and Redis (both
//! monotonic-driven; drift is parts per million) and output already past the gate (a batch
//! processor's buffer, an exporter's retry) — keep such buffers shorter than the margin if two
//! writers for a moment matter to you. The gate checks the clock on every send, so a stalled
//! election task cannot keep a stale leader emitting.
//!
//! # Takeover
//!
//! Counters are cumulative and both agents have been counting all along, so the new leader's
//! first metrics batch continues the series (no reset, no jump). Spans and logs are one-shot, so
//! a standby keeps what it built during the last `2 × lease` (at most [`MAX_REPLAY_ITEMS`]
//! items; older or excess ones dropped, counted) and, on taking over, sends what was built since
//! the old holder's last renewal (learnt from the `PTTL` answers, minus one renewal period of
//! slack for what the old leader had built but not yet exported). Duplicates are possible around
//! the handover and carry the same ids (span ids are deterministic).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::component::Output;
use crate::config::{types, DecodeError};
use crate::redis_broker::OwnedSettings;
use crate::signal::{Signal, SignalKind};
use crate::telemetry::{Counter, Telemetry, Throttle};
use crate::tls::ClientTlsConfig;

/// Spans and log records a standby keeps for replay.
pub const MAX_REPLAY_ITEMS: usize = 100_000;
/// The shortest lease accepted.
const MIN_LEASE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// `redis://` or `rediss://` URL of the Redis holding the lock (usually the broker).
    pub endpoint: String,
    /// `rediss://` only: as for `redis_queues`.
    pub tls: ClientTlsConfig,
    /// Time-to-live of the lock; renewed every quarter of it.
    #[serde(with = "types::duration")]
    pub lease: Duration,
    /// The Redis key: one per pair of agents.
    pub key: String,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            endpoint: String::new(),
            tls: ClientTlsConfig::default(),
            lease: Duration::from_secs(15),
            key: "celeriac:leader".into(),
        }
    }
}

impl LeaderElectionConfig {
    /// Checks the settings and builds the Redis client (no I/O).
    pub fn client(&self) -> Result<redis::Client, DecodeError> {
        let prefix = |e: DecodeError| {
            DecodeError::new(format!("leader_election.{}", e.path), e.message.clone())
        };
        if self.endpoint.is_empty() {
            return Err(DecodeError::new(
                "leader_election.endpoint",
                "must be a redis:// or rediss:// URL",
            ));
        }
        if self.endpoint.starts_with("amqp://") || self.endpoint.starts_with("amqps://") {
            return Err(DecodeError::new(
                "leader_election.endpoint",
                "amqp:// leader election is not supported yet: use the Redis of the pair",
            ));
        }
        if self.lease < MIN_LEASE {
            return Err(DecodeError::new(
                "leader_election.lease",
                "must be at least 500ms",
            ));
        }
        if self.key.is_empty() {
            return Err(DecodeError::new("leader_election.key", "must not be empty"));
        }
        let broker = OwnedSettings {
            endpoint: vec![self.endpoint.clone()],
            tls: self.tls.clone(),
            ..OwnedSettings::default()
        }
        .broker()
        .map_err(prefix)?;
        match broker.first_client() {
            Some(Ok((client, _))) => Ok(client),
            Some(Err(e)) => Err(DecodeError::new(
                "leader_election.endpoint",
                format!("cannot make a Redis client: {e}"),
            )),
            None => Err(DecodeError::new(
                "leader_election.endpoint",
                "sentinel:// is not supported for the leader lock: name the Redis node",
            )),
        }
    }
}

/// How often the holder renews.
pub fn renew_every(lease: Duration) -> Duration {
    lease / 4
}

/// How long before the lease could expire the holder stops emitting.
pub fn fence_margin(lease: Duration) -> Duration {
    lease / 4
}

/// How often a standby tries to take the lock.
pub fn poll_every(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_millis(250))
}

/// The lease as this process knows it, shared by the election task and the gate.
pub struct LeaseState {
    base: Instant,
    /// Monotonic nanoseconds (since `base`) until which this agent may emit; 0: not leader.
    valid_until: AtomicU64,
    /// Earliest time the current holder may have last renewed (from its `PTTL`); 0: unknown.
    holder_renewed: AtomicU64,
}

impl Default for LeaseState {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaseState {
    /// Not leading, no holder known.
    pub fn new() -> Self {
        LeaseState {
            base: Instant::now(),
            valid_until: AtomicU64::new(0),
            holder_renewed: AtomicU64::new(0),
        }
    }

    fn ns(&self, t: Instant) -> u64 {
        // +1 so that 0 keeps meaning "none".
        t.saturating_duration_since(self.base).as_nanos() as u64 + 1
    }

    fn at(&self, ns: u64) -> Option<Instant> {
        (ns != 0).then(|| self.base + Duration::from_nanos(ns - 1))
    }

    /// May this agent emit now?
    pub fn leading(&self) -> bool {
        let until = self.valid_until.load(Ordering::Acquire);
        until != 0 && self.ns(Instant::now()) < until
    }

    /// Lead until `t` (`None`: stop now). The election task's job; public for benchmarks.
    pub fn set_valid_until(&self, t: Option<Instant>) {
        let v = t.map_or(0, |t| self.ns(t));
        self.valid_until.store(v, Ordering::Release);
    }

    fn holder_renewed_at(&self) -> Option<Instant> {
        self.at(self.holder_renewed.load(Ordering::Acquire))
    }
}

/// A unique token for this agent's lock value: host, process and a random part.
fn token() -> String {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut r);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "agent".into());
    format!(
        "{host}/{}/{:016x}",
        std::process::id(),
        u64::from_le_bytes(r)
    )
}

const ACQUIRE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end \
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return -1 end \
return redis.call('PTTL', KEYS[1])";
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

fn eval(script: &str, key: &str, token: &str, lease_ms: Option<u64>) -> redis::Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key).arg(token);
    if let Some(ms) = lease_ms {
        c.arg(ms);
    }
    c
}

/// The election task: takes, renews and finally releases the lock.
pub struct Elector {
    client: redis::Client,
    endpoint: String,
    key: String,
    lease: Duration,
    token: String,
    state: Arc<LeaseState>,
    component: Arc<str>,
    errors: Counter,
}

/// What the correlator holds: the gate, plus the handles to stop the election.
pub struct Leadership {
    pub gate: Gate,
    /// Cancel when shutdown starts: renewals stop (the lease then runs out or is released).
    pub stop_renewing: CancellationToken,
    /// Cancel after the final flush: the lock is released and the task ends.
    pub release: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Start the election for `component` and the gate in front of `out`.
    pub fn start(
        cfg: &LeaderElectionConfig,
        client: redis::Client,
        component: Arc<str>,
        telemetry: &Telemetry,
        out: Output,
    ) -> Leadership {
        let state = Arc::new(LeaseState::new());
        let label = [("component", &*component)];
        let s = state.clone();
        telemetry.set_leadership(&component, Arc::new(move || s.leading()));
        let s = state.clone();
        telemetry.observe(
            "celeriac_leader",
            "1 while this agent holds the leader lease (its correlator's output goes out), else 0.",
            &label,
            move || i64::from(s.leading()),
        );
        let errors = telemetry.counter(
            "celeriac_leader_election_errors_total",
            "Failed Redis round trips of the leader election (connect, timeout, server).",
            &label,
        );
        let info = client.get_connection_info();
        let endpoint = format!("{}/{}", info.addr(), info.redis_settings().db());
        let elector = Elector {
            client,
            endpoint,
            key: cfg.key.clone(),
            lease: cfg.lease,
            token: token(),
            state: state.clone(),
            component: component.clone(),
            errors,
        };
        let stop_renewing = CancellationToken::new();
        let release = CancellationToken::new();
        let task = tokio::spawn(elector.run(stop_renewing.clone(), release.clone()));
        let gate = Gate::elected(out, state, cfg.lease, component, telemetry);
        Leadership {
            gate,
            stop_renewing,
            release,
            task,
        }
    }
}

impl Elector {
    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let t = renew_every(self.lease);
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        tokio::time::timeout(
            t,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connect timed out",
            )))
        })
    }

    /// One round trip of `cmd`, bounded by a quarter lease; a failure drops the connection.
    async fn call(
        &self,
        conn: &mut Option<MultiplexedConnection>,
        cmd: redis::Cmd,
        warn: &mut Throttle,
    ) -> Option<i64> {
        let t = renew_every(self.lease);
        let r = async {
            if conn.is_none() {
                *conn = Some(self.connect().await?);
            }
            let c = conn.as_mut().expect("connected above");
            tokio::time::timeout(t, cmd.query_async::<i64>(c))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
                })
        }
        .await;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                *conn = None;
                self.errors.inc();
                if let Some(suppressed) = warn.ready() {
                    tracing::warn!(component = %self.component, endpoint = %self.endpoint, error = %e, suppressed, "Leader election: Redis round trip failed; retrying.");
                }
                None
            }
        }
    }

    async fn run(self, stop_renewing: CancellationToken, release: CancellationToken) {
        let lease_ms = self.lease.as_millis() as u64;
        let margin = fence_margin(self.lease);
        let mut conn: Option<MultiplexedConnection> = None;
        let mut warn = Throttle::new(Duration::from_secs(30));
        // Whether we believe we hold the lock (until the fence or a refused renewal).
        let mut held = false;
        tracing::info!(component = %self.component, endpoint = %self.endpoint, key = %self.key, lease = ?self.lease, "Leader election: standing by until the lock is free.");
        loop {
            let wait = if held {
                renew_every(self.lease)
            } else {
                poll_every(self.lease)
            };
            tokio::select! {
                _ = release.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            if held && !self.state.leading() {
                held = false;
                tracing::warn!(component = %self.component, "Leader election: lease not renewed in time; this agent stops exporting (standby).");
            }
            if stop_renewing.is_cancelled() {
                // Shutting down: neither renew nor take the lock; wait for the release.
                continue;
            }
            let sent = Instant::now();
            if held {
                match self
                    .call(
                        &mut conn,
                        eval(RENEW, &self.key, &self.token, Some(lease_ms)),
                        &mut warn,
                    )
                    .await
                {
                    Some(1) => self.state.set_valid_until(Some(sent + self.lease - margin)),
                    Some(_) => {
                        held = false;
                        self.state.set_valid_until(None);
                        tracing::warn!(component = %self.component, "Leader election: the lock is no longer ours; this agent is now standby.");
                    }
                    // Keep the old deadline: the gate fences on it.
                    None => {}
                }
            } else {
                match self
                    .call(
                        &mut conn,
                        eval(ACQUIRE, &self.key, &self.token, Some(lease_ms)),
                        &mut warn,
                    )
                    .await
                {
                    Some(-1) => {
                        held = true;
                        self.state.set_valid_until(Some(sent + self.lease - margin));
                        tracing::info!(component = %self.component, key = %self.key, "Leader election: this agent is now the leader; its correlator's output goes out.");
                    }
                    Some(pttl) if pttl > 0 => {
                        // The holder renewed at the latest `lease - pttl` before Redis answered,
                        // so no earlier than that before we sent.
                        let ago = self
                            .lease
                            .saturating_sub(Duration::from_millis(pttl as u64));
                        if let Some(t) = sent.checked_sub(ago) {
                            self.state
                                .holder_renewed
                                .store(self.state.ns(t), Ordering::Release);
                        }
                    }
                    _ => {}
                }
            }
        }
        // Release after the final flush, so the standby takes over at once.
        let was = self.state.leading() || held;
        self.state.set_valid_until(None);
        if was {
            let mut warn = Throttle::new(Duration::ZERO);
            match self
                .call(
                    &mut conn,
                    eval(RELEASE, &self.key, &self.token, None),
                    &mut warn,
                )
                .await
            {
                Some(1) => {
                    tracing::info!(component = %self.component, "Leader election: lock released; the standby takes over.")
                }
                _ => {
                    tracing::warn!(component = %self.component, "Leader election: could not release the lock; the standby takes over when the lease expires.")
                }
            }
        }
    }
}

/// The output boundary of the correlator: passes everything through when there is no election
/// or this agent leads; otherwise drops (counted) and keeps spans and logs for replay.
pub struct Gate {
    out: Output,
    election: Option<(Arc<LeaseState>, Duration)>,
    inner: Mutex<GateInner>,
    component: Arc<str>,
    dropped: [Counter; 3],
    replayed: Counter,
    replay_dropped: Counter,
}

struct GateInner {
    was_leading: bool,
    /// What a standby built: (when, signal), oldest first.
    kept: VecDeque<(Instant, Signal)>,
    kept_items: usize,
}

fn kind_index(k: SignalKind) -> usize {
    match k {
        SignalKind::Traces => 0,
        SignalKind::Metrics => 1,
        _ => 2,
    }
}

impl Gate {
    /// The gate of an elected correlator: output goes out while `state` says this agent leads.
    pub fn elected(
        out: Output,
        state: Arc<LeaseState>,
        lease: Duration,
        component: Arc<str>,
        telemetry: &Telemetry,
    ) -> Gate {
        Gate::new(out, Some((state, lease)), component, telemetry)
    }

    fn new(
        out: Output,
        election: Option<(Arc<LeaseState>, Duration)>,
        component: Arc<str>,
        telemetry: &Telemetry,
    ) -> Gate {
        // Registered only under election: an agent alone shows no standby series.
        let elected = election.is_some();
        let counter = |name, help, labels: &[(&'static str, &str)]| {
            if elected {
                telemetry.counter(name, help, labels)
            } else {
                Counter::default()
            }
        };
        let dropped = ["traces", "metrics", "logs"].map(|s| {
            counter(
                "celeriac_correlate_standby_dropped_items_total",
                "Spans, metric points and log records a standby agent did not send (the leader sends them).",
                &[("component", &component), ("signal", s)],
            )
        });
        let label = [("component", &*component)];
        Gate {
            out,
            election,
            inner: Mutex::new(GateInner {
                was_leading: false,
                kept: VecDeque::new(),
                kept_items: 0,
            }),
            replayed: counter(
                "celeriac_correlate_replayed_items_total",
                "Spans and log records a new leader sent from what it kept while standby.",
                &label,
            ),
            replay_dropped: counter(
                "celeriac_correlate_replay_dropped_items_total",
                "Spans and log records a standby could not keep for replay (too old or too many).",
                &label,
            ),
            component,
            dropped,
        }
    }

    /// No election: everything goes out.
    pub fn open(out: Output, component: Arc<str>, telemetry: &Telemetry) -> Gate {
        Gate::new(out, None, component, telemetry)
    }

    /// Does this agent emit now?
    pub fn leading(&self) -> bool {
        self.election.as_ref().is_none_or(|(s, _)| s.leading())
    }

    /// Send `signal` if this agent leads; otherwise drop it (counted) and keep spans and logs.
    /// The first call after becoming leader first sends what was kept since the old holder's
    /// last renewal.
    pub async fn send(&self, signal: Signal) {
        if signal.is_empty() {
            return;
        }
        if self.take_over().await {
            let _ = self.out.send(signal).await;
            return;
        }
        let n = signal.item_count();
        self.dropped[kind_index(signal.kind())].add(n as u64);
        if signal.kind() == SignalKind::Metrics {
            return;
        }
        let Some((_, lease)) = &self.election else {
            return;
        };
        let now = Instant::now();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.kept.push_back((now, signal));
        g.kept_items += n;
        let keep_for = *lease * 2;
        while let Some((t, s)) = g.kept.front() {
            let old = now.saturating_duration_since(*t) > keep_for;
            if !old && g.kept_items <= MAX_REPLAY_ITEMS {
                break;
            }
            let m = s.item_count();
            g.kept_items -= m;
            self.replay_dropped.add(m as u64);
            g.kept.pop_front();
        }
    }

    /// Notice a change of role (logging it); on becoming leader send what was kept.
    /// Returns whether this agent leads. Also called on every tick, so a replay does not wait
    /// for new output.
    pub async fn take_over(&self) -> bool {
        let Some((state, lease)) = &self.election else {
            return true;
        };
        let leading = state.leading();
        let replay = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if leading == g.was_leading {
                return leading;
            }
            g.was_leading = leading;
            if !leading {
                tracing::warn!(component = %self.component, "Standby: this agent's correlator output is dropped (the leader sends it).");
                return false;
            }
            // Since the old holder's last renewal, minus one renewal period of slack.
            let since = state
                .holder_renewed_at()
                .and_then(|t| t.checked_sub(renew_every(*lease)));
            let kept = std::mem::take(&mut g.kept);
            g.kept_items = 0;
            kept.into_iter()
                .filter(|(t, _)| since.is_none_or(|s| *t >= s))
                .map(|(_, s)| s)
                .collect::<Vec<_>>()
        };
        let n: usize = replay.iter().map(Signal::item_count).sum();
        tracing::info!(component = %self.component, replayed = n, "Leader: this agent's correlator output goes out; replaying what finished since the previous leader's last renewal.");
        for s in replay {
            self.replayed.add(s.item_count() as u64);
            let _ = self.out.send(s).await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_follow_the_lease() {
        let l = Duration::from_secs(15);
        assert_eq!(renew_every(l), Duration::from_millis(3750));
        assert_eq!(fence_margin(l), Duration::from_millis(3750));
        assert_eq!(poll_every(l), Duration::from_millis(250));
        assert_eq!(
            poll_every(Duration::from_millis(600)),
            Duration::from_millis(150)
        );
    }

    #[test]
    fn settings_are_checked() {
        let ok = LeaderElectionConfig {
            endpoint: "redis://127.0.0.1:6379/0".into(),
            ..Default::default()
        };
        assert!(ok.client().is_ok());
        let e = LeaderElectionConfig::default().client().unwrap_err();
        assert_eq!(e.path, "leader_election.endpoint");
        let short = LeaderElectionConfig {
            lease: Duration::from_millis(100),
            ..ok.clone()
        };
        assert_eq!(short.client().unwrap_err().path, "leader_election.lease");
        let amqp = LeaderElectionConfig {
            endpoint: "amqp://guest:guest@127.0.0.1:5672/".into(),
            ..ok.clone()
        };
        assert!(amqp.client().unwrap_err().message.contains("amqp"));
        let bad = LeaderElectionConfig {
            endpoint: "http://x".into(),
            ..ok
        };
        assert!(bad
            .client()
            .unwrap_err()
            .path
            .starts_with("leader_election."));
    }

    fn spans_signal(name: &str) -> Signal {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        Signal::Traces(Arc::new(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: name.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]))
    }

    fn span_name(s: &Signal) -> String {
        match s {
            Signal::Traces(rs) => rs[0].scope_spans[0].spans[0].name.clone(),
            _ => String::new(),
        }
    }

    #[tokio::test]
    async fn standby_keeps_and_replays_what_finished_since_the_holders_renewal() {
        let t = Telemetry::new();
        let (tx, rx) = async_channel::bounded(16);
        let out = Output::new(
            vec![(SignalKind::Traces, vec![tx])],
            Counter::default(),
            Counter::default(),
        );
        let lease = Duration::from_millis(400);
        let state = Arc::new(LeaseState::new());
        let gate = Gate::new(out, Some((state.clone(), lease)), "c".into(), &t);
        // Standby: nothing goes out, everything is counted.
        gate.send(spans_signal("old")).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        // The holder renewed now; one renewal period (100 ms) of slack goes before it.
        state
            .holder_renewed
            .store(state.ns(Instant::now()), Ordering::Release);
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.send(spans_signal("slack")).await;
        gate.send(spans_signal("handover")).await;
        assert!(rx.is_empty());
        assert_eq!(gate.dropped[0].get(), 3);
        // Leader: the kept spans since the renewal (minus slack) go out first, then new ones.
        state.set_valid_until(Some(Instant::now() + Duration::from_secs(5)));
        gate.send(spans_signal("new")).await;
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|s| span_name(&s))
            .collect();
        assert_eq!(got, ["slack", "handover", "new"]);
        assert_eq!(gate.replayed.get(), 2);
        // Fenced again: standby, output dropped.
        state.set_valid_until(None);
        gate.send(spans_signal("late")).await;
        assert!(rx.is_empty());
        assert_eq!(gate.dropped[0].get(), 4);
    }

    #[tokio::test]
    async fn replay_buffer_is_bounded_by_age() {
        let t = Telemetry::new();
        let (tx, _rx) = async_channel::bounded(16);
        let out = Output::new(
            vec![(SignalKind::Traces, vec![tx])],
            Counter::default(),
            Counter::default(),
        );
        let lease = Duration::from_millis(50);
        let state = Arc::new(LeaseState::new());
        let gate = Gate::new(out, Some((state, lease)), "c".into(), &t);
        gate.send(spans_signal("a")).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        gate.send(spans_signal("b")).await;
        assert_eq!(gate.replay_dropped.get(), 1, "older than 2 x lease");
        assert_eq!(gate.inner.lock().unwrap().kept.len(), 1);
    }

    #[test]
    fn fencing_reads_the_monotonic_clock() {
        let s = LeaseState::new();
        assert!(!s.leading());
        s.set_valid_until(Some(Instant::now() + Duration::from_millis(50)));
        assert!(s.leading());
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !s.leading(),
            "fenced once the deadline passed, with no renewal"
        );
    }
}
