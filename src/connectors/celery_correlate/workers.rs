//! Worker registry: liveness as Celery computes it, active counts, and lost-event detection.
//!
//! A worker is alive while `now < last heartbeat + 2 × freq` (Celery's
//! `HEARTBEAT_EXPIRE_WINDOW` of 200 %), measured on the agent's clock at receipt, never on the
//! worker's timestamp (so worker time zones and clock drift cannot kill live workers).
//! `worker-offline` makes it dead at once. Any event from the worker refreshes it.
//!
//! Lost events: a heartbeat's `processed` counts the tasks the worker's pool accepted, one
//! `task-started` each. Heartbeat *k* is settled when heartbeat *k+1* arrives (by then every
//! `task-started` created before heartbeat *k* has been flushed): the events missed so far are
//! `processed_k − processed_base − task-started seen with timestamp ≤ heartbeat_k`, kept as a
//! running maximum so the exported counter is monotonic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::celery::event::CeleryEvent;

/// Events created this long after a heartbeat still count toward it (accept → event race).
const SETTLE_SLACK: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct Worker {
    /// The label value (`host` part of the node name, or the whole node name).
    pub label: Arc<str>,
    pub last_seen: f64,
    pub freq: f64,
    pub offline: bool,
    pub active: u64,
    pub processed: Option<u64>,
    pub pid: Option<u32>,
    pub sw: Option<String>,
    lost: Lost,
}

#[derive(Debug, Clone, Default)]
struct Lost {
    /// (worker timestamp, processed) of the baseline heartbeat.
    base: Option<(f64, u64)>,
    /// Latest unsettled heartbeat: (worker timestamp, processed − base).
    pending: Option<(f64, u64)>,
    /// task-started at or before the pending heartbeat (since the baseline).
    settled_seen: u64,
    /// task-started after the pending heartbeat.
    open_seen: u64,
    /// Highest deficit found: the missed-events estimate.
    missed: u64,
}

impl Lost {
    fn reset(&mut self) {
        let missed = self.missed;
        *self = Lost {
            missed,
            ..Lost::default()
        };
    }

    fn on_started(&mut self, ts: f64) {
        let Some((base_ts, _)) = self.base else {
            return;
        };
        if ts <= base_ts + SETTLE_SLACK {
            return;
        }
        match self.pending {
            Some((hb_ts, _)) if ts > hb_ts + SETTLE_SLACK => self.open_seen += 1,
            _ => self.settled_seen += 1,
        }
    }

    /// Returns how many newly missed events were found.
    fn on_heartbeat(&mut self, ts: f64, processed: u64) -> u64 {
        let Some((_, base_p)) = self.base else {
            self.base = Some((ts, processed));
            return 0;
        };
        if processed < base_p {
            // The worker restarted (counter reset): start over.
            self.reset();
            self.base = Some((ts, processed));
            return 0;
        }
        let mut found = 0;
        if let Some((_, expected)) = self.pending {
            let deficit = expected.saturating_sub(self.settled_seen);
            if deficit > self.missed {
                found = deficit - self.missed;
                self.missed = deficit;
            }
        }
        self.settled_seen += self.open_seen;
        self.open_seen = 0;
        self.pending = Some((ts, processed - base_p));
        found
    }
}

/// What the registry saw in one event, for the caller to log.
pub struct Observed {
    pub newly_missed: u64,
}

pub struct Workers {
    map: HashMap<Arc<str>, Worker>,
    /// `true`: label is the node name after `@` (celery-exporter's `hostname`).
    host_only: bool,
}

pub fn host_label(node: &str, host_only: bool) -> &str {
    if host_only {
        node.split_once('@').map_or(node, |(_, h)| h)
    } else {
        node
    }
}

impl Workers {
    pub fn new(host_only: bool) -> Self {
        Workers {
            map: HashMap::new(),
            host_only,
        }
    }

    fn entry(&mut self, node: &str, now: f64) -> &mut Worker {
        if !self.map.contains_key(node) {
            let label: Arc<str> = Arc::from(host_label(node, self.host_only));
            self.map.insert(
                Arc::from(node),
                Worker {
                    label,
                    last_seen: now,
                    freq: 2.0,
                    offline: false,
                    active: 0,
                    processed: None,
                    pid: None,
                    sw: None,
                    lost: Lost::default(),
                },
            );
        }
        self.map.get_mut(node).expect("inserted above")
    }

    /// Update from any event sent by a worker (`hostname` of a task event is its worker, except
    /// `task-sent`, which comes from the publisher and must not be passed here).
    pub fn observe(&mut self, ev: &CeleryEvent, now: f64) -> Observed {
        use crate::celery::event::EventKind::*;
        let mut newly_missed = 0;
        if ev.hostname.is_empty() {
            return Observed { newly_missed };
        }
        let w = self.entry(&ev.hostname, now);
        match ev.kind {
            WorkerOnline | WorkerHeartbeat => {
                if ev.kind == WorkerOnline && w.pid.is_some() && w.pid != ev.pid {
                    w.lost.reset();
                }
                w.offline = false;
                w.last_seen = now;
                w.pid = ev.pid.or(w.pid);
                if let Some(f) = &ev.worker {
                    if let Some(freq) = f.freq.filter(|x| x.is_finite() && *x > 0.0) {
                        w.freq = freq;
                    }
                    if let Some(a) = f.active {
                        w.active = a;
                    }
                    if let Some(p) = f.processed {
                        w.processed = Some(p);
                        newly_missed = w.lost.on_heartbeat(ev.timestamp, p);
                    }
                    if let (Some(i), Some(v)) = (&f.sw_ident, &f.sw_ver) {
                        if w.sw.is_none() {
                            w.sw = Some(format!("{i} {v}"));
                        }
                    }
                }
            }
            WorkerOffline => {
                w.offline = true;
                w.active = 0;
                w.last_seen = now;
            }
            TaskStarted => {
                w.last_seen = now;
                w.offline = false;
                w.lost.on_started(ev.timestamp);
            }
            _ => {
                w.last_seen = now;
                w.offline = false;
            }
        }
        Observed { newly_missed }
    }

    pub fn alive(w: &Worker, now: f64) -> bool {
        !w.offline && now < w.last_seen + 2.0 * w.freq
    }

    /// Forget workers not heard from since `cutoff` (their series disappear).
    pub fn forget_before(&mut self, cutoff: f64) {
        self.map.retain(|_, w| w.last_seen >= cutoff);
    }

    /// Per label: (up, active tasks, missed events). Workers sharing a label (two nodes on one
    /// host with `hostname_label: host`) are combined: up if any is, active and missed summed.
    pub fn by_label(&self, now: f64) -> Vec<(Arc<str>, bool, u64, u64)> {
        let mut out: HashMap<Arc<str>, (bool, u64, u64)> = HashMap::new();
        for w in self.map.values() {
            let alive = Self::alive(w, now);
            let e = out.entry(w.label.clone()).or_default();
            e.0 |= alive;
            if alive {
                e.1 += w.active;
            }
            e.2 += w.lost.missed;
        }
        let mut v: Vec<_> = out.into_iter().map(|(k, (a, b, c))| (k, a, b, c)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_one_heartbeat_late() {
        let mut l = Lost::default();
        assert_eq!(l.on_heartbeat(10.0, 5), 0); // baseline
        for ts in [10.5, 11.0, 11.5] {
            l.on_started(ts);
        }
        // processed says 4 since baseline, 3 seen so far; not settled yet.
        assert_eq!(l.on_heartbeat(12.0, 9), 0);
        // A late started event from before heartbeat 12.0 arrives.
        l.on_started(11.9);
        l.on_started(12.5);
        assert_eq!(l.on_heartbeat(14.0, 10), 0, "4 expected, 4 seen");
        // Three tasks run before the next heartbeat; their task-started events are lost.
        assert_eq!(l.on_heartbeat(16.0, 13), 0);
        assert_eq!(l.on_heartbeat(18.0, 13), 3);
        assert_eq!(l.missed, 3);
        // The estimate never goes down.
        l.on_started(17.0);
        assert_eq!(l.on_heartbeat(20.0, 13), 0);
        assert_eq!(l.missed, 3);
    }

    #[test]
    fn restart_resets_baseline() {
        let mut l = Lost::default();
        l.on_heartbeat(0.0, 100);
        l.on_heartbeat(2.0, 110);
        assert_eq!(l.on_heartbeat(4.0, 3), 0);
        assert_eq!(l.base, Some((4.0, 3)));
    }

    #[test]
    fn host_labels() {
        assert_eq!(host_label("w1@host1", true), "host1");
        assert_eq!(host_label("w1@host1", false), "w1@host1");
        assert_eq!(host_label("plain", true), "plain");
    }
}
