//! The bounded task table: one small record per task id, evicted least-recently-touched first
//! when `max_tasks` is reached and dropped after `task_ttl` without events.
//!
//! A record follows one task id across its attempts (a retry re-sends the message under the same
//! id with `retries + 1`). It holds the current [`Attempt`]'s phase timestamps and, because the
//! next attempt's `task-sent`/`task-received` arrive *before* the `task-retried` that ends the
//! current one, a [`Pending`] slot for them. Exception texts are not kept: a span is built at the
//! event that ends an attempt, from that event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Where a task is in its lifecycle, ranked as Celery ranks states (`celery.states.PRECEDENCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Received,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
    Rejected,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
            TaskState::Rejected => "REJECTED",
        }
    }

    /// Lower is stronger: Celery's PRECEDENCE list (SUCCESS, FAILURE, None, REVOKED, STARTED,
    /// RECEIVED, REJECTED, RETRY, PENDING).
    fn rank(self) -> u8 {
        match self {
            TaskState::Success => 0,
            TaskState::Failure => 1,
            TaskState::Revoked => 3,
            TaskState::Started => 4,
            TaskState::Received => 5,
            TaskState::Rejected => 6,
            TaskState::Retry => 7,
            TaskState::Pending => 8,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked | TaskState::Rejected
        )
    }

    /// Celery's rule: a new state wins unless it ranks lower and neither side is RETRY.
    pub fn merge(self, new: TaskState) -> TaskState {
        if self == TaskState::Retry || new == TaskState::Retry || new.rank() <= self.rank() {
            new
        } else {
            self
        }
    }
}

/// One execution attempt of a task (attempt `n` is the message sent with `retries = n`).
/// Timestamps are the events' own (Unix seconds on the sender's clock).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Attempt {
    pub n: u32,
    pub sent_ts: Option<f64>,
    pub received_ts: Option<f64>,
    pub started_ts: Option<f64>,
    /// Timestamp of the event that ended it (its span has been emitted).
    pub ended_ts: Option<f64>,
}

impl Attempt {
    fn new(n: u32) -> Attempt {
        Attempt {
            n,
            ..Attempt::default()
        }
    }

    /// Has any event of this attempt been seen?
    pub fn is_active(&self) -> bool {
        self.sent_ts.is_some() || self.received_ts.is_some() || self.started_ts.is_some()
    }

    /// When the message was first known to exist: sent, else received.
    pub fn queued_ts(&self) -> Option<f64> {
        self.sent_ts.or(self.received_ts)
    }
}

/// `task-sent`/`task-received` of the next attempt, seen before the current one ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    pub n: u32,
    pub sent_ts: Option<f64>,
    pub received_ts: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: Option<Arc<str>>,
    pub queue: Option<Arc<str>>,
    /// Worker node name (`w1@host1`) of the latest worker event.
    pub hostname: Option<Arc<str>>,
    /// Trace id from the canvas `root_id` (see `spans::trace_id`); `None` until a
    /// `task-sent`/`task-received` carried one.
    pub trace_id: Option<[u8; 16]>,
    /// Span id of the parent task's attempt span (`parent_id`, never the task itself).
    pub parent_span: Option<[u8; 8]>,
    pub cur: Attempt,
    pub next: Option<Pending>,
    pub eta_ts: Option<f64>,
    /// Highest `retries` seen.
    pub retries: u32,
    pub state: TaskState,
    /// Latest event timestamp (sender's clock), for closing lost attempts.
    pub last_ts: f64,
    /// Agent clock (Unix seconds) of the last event, for the TTL.
    pub last_seen: f64,
    generation: u64,
}

impl Task {
    fn new(now: f64) -> Task {
        Task {
            name: None,
            queue: None,
            hostname: None,
            trace_id: None,
            parent_span: None,
            cur: Attempt::default(),
            next: None,
            eta_ts: None,
            retries: 0,
            state: TaskState::Pending,
            last_ts: 0.0,
            last_seen: now,
            generation: 0,
        }
    }

    /// A `task-sent` (`received == false`) or `task-received` of attempt `retries` at `ts`.
    /// Out-of-order arrivals are placed by attempt number; stale ones are ignored.
    pub fn note_queued(&mut self, retries: Option<u32>, ts: f64, received: bool) {
        let r = retries.unwrap_or(self.cur.n);
        let set = |sent: &mut Option<f64>, recv: &mut Option<f64>| {
            let slot = if received { recv } else { sent };
            slot.get_or_insert(ts);
        };
        if r < self.cur.n {
            return;
        }
        if r == self.cur.n {
            match self.cur.ended_ts {
                // A late event of the attempt that already ended.
                Some(end) if ts <= end => {}
                // The same message again after its end (a replay or a redelivery).
                Some(_) => {
                    self.cur = Attempt::new(r);
                    set(&mut self.cur.sent_ts, &mut self.cur.received_ts);
                }
                None => set(&mut self.cur.sent_ts, &mut self.cur.received_ts),
            }
            return;
        }
        // A later attempt.
        if self.cur.ended_ts.is_some() || !self.cur.is_active() {
            self.cur = Attempt::new(r);
            self.next = None;
            set(&mut self.cur.sent_ts, &mut self.cur.received_ts);
        } else {
            if self.next.is_none_or(|p| p.n != r) {
                self.next = Some(Pending {
                    n: r,
                    sent_ts: None,
                    received_ts: None,
                });
            }
            if let Some(p) = &mut self.next {
                set(&mut p.sent_ts, &mut p.received_ts);
            }
        }
    }

    /// A `task-started` at `ts`. Returns an attempt that this start proves ended without its
    /// `task-retried` being seen (the next attempt was already queued), for a span.
    pub fn note_started(&mut self, ts: f64) -> Option<Attempt> {
        if let Some(end) = self.cur.ended_ts {
            if let Some(p) = self.next.take() {
                self.cur = from_pending(p);
            } else if ts > end {
                self.cur = Attempt::new(self.cur.n);
            } else {
                return None;
            }
            self.cur.started_ts = Some(ts);
            return None;
        }
        if self.cur.started_ts.is_none() {
            self.cur.started_ts = Some(ts);
            return None;
        }
        let p = self.next.take()?;
        let mut done = self.cur;
        done.ended_ts = Some(ts);
        self.cur = from_pending(p);
        self.cur.started_ts = Some(ts);
        Some(done)
    }

    /// The event ending the current attempt at `ts`; `retry` moves on to the next attempt.
    /// Returns the ended attempt, or `None` when it had already ended (e.g. `task-rejected`
    /// after `task-failed`).
    pub fn end_attempt(&mut self, ts: f64, retry: bool) -> Option<Attempt> {
        if self.cur.ended_ts.is_some() {
            return None;
        }
        self.cur.ended_ts = Some(ts);
        let done = self.cur;
        if retry {
            self.cur = match self.next.take() {
                Some(p) => from_pending(p),
                None => Attempt::new(done.n.saturating_add(1)),
            };
        }
        Some(done)
    }

    /// The attempt still open (seen but not ended), if any: what a lost worker leaves behind.
    pub fn open_attempt(&self) -> Option<Attempt> {
        (self.cur.ended_ts.is_none() && self.cur.is_active()).then_some(self.cur)
    }
}

fn from_pending(p: Pending) -> Attempt {
    Attempt {
        n: p.n,
        sent_ts: p.sent_ts,
        received_ts: p.received_ts,
        started_ts: None,
        ended_ts: None,
    }
}

/// Why a record left the table (for counters).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evictions {
    /// Evicted by `max_tasks` before reaching a final state.
    pub unfinished: u64,
    /// Evicted by `max_tasks` after finishing.
    pub finished: u64,
    /// Dropped by `task_ttl` before reaching a final state.
    pub expired_unfinished: u64,
}

pub struct TaskTable {
    /// Boxed, so the slots a hash table keeps empty after doubling cost 24 B, not a whole `Task`.
    map: HashMap<Arc<str>, Box<Task>>,
    /// Touch order; entries whose generation no longer matches the record are stale.
    order: TouchOrder,
    /// Records that reached a final state, in that order (stale entries as in `order`).
    finished: VecDeque<(Arc<str>, u64)>,
    next_gen: u64,
    max: usize,
    pub evictions: Evictions,
}

/// The touch order: one `(key, generation)` entry per touch, oldest first; an entry whose
/// generation no longer matches its record is stale. Stale entries are dropped by a compaction
/// that starts once the queue holds more than a limit (twice the table plus 1,024) and then
/// examines [`COMPACT_STEP`] entries per touch until it reaches the end, instead of walking the
/// whole queue in one touch (~21,000 lookups every ~11,000 events with a full table: a stall of
/// milliseconds in the middle of a batch). While it runs, the entries before `kept` are the live
/// ones it examined, in order; those from `kept` to `next` are stale; those from `next` on are
/// not examined yet. So the live entries stay in touch order throughout, which eviction and
/// `task_ttl` expiry rely on.
#[derive(Default)]
struct TouchOrder {
    queue: VecDeque<(Arc<str>, u64)>,
    /// `(kept, next)` while a compaction runs.
    compacting: Option<(usize, usize)>,
}

/// Entries a compaction examines per touch. The queue grows by one entry per touch, so a
/// compaction that started at `limit` entries ends before the queue passes
/// `limit · COMPACT_STEP / (COMPACT_STEP − 1)`.
const COMPACT_STEP: usize = 32;

impl TouchOrder {
    fn push_back(&mut self, entry: (Arc<str>, u64)) {
        self.queue.push_back(entry);
    }

    fn front(&self) -> Option<&(Arc<str>, u64)> {
        self.queue.front()
    }

    fn pop_front(&mut self) -> Option<(Arc<str>, u64)> {
        let entry = self.queue.pop_front()?;
        if let Some((kept, next)) = &mut self.compacting {
            *kept = kept.saturating_sub(1);
            *next = next.saturating_sub(1);
        }
        Some(entry)
    }

    /// Start a compaction if the queue holds more than `limit` entries, and advance the one
    /// running by up to [`COMPACT_STEP`] entries; `live` says whether an entry is current.
    fn compact_step(&mut self, limit: usize, live: impl Fn(&Arc<str>, u64) -> bool) {
        let (mut kept, mut next) = match self.compacting {
            Some(at) => at,
            None if self.queue.len() > limit => (0, 0),
            None => return,
        };
        let end = (next + COMPACT_STEP).min(self.queue.len());
        while next < end {
            let (key, generation) = &self.queue[next];
            if live(key, *generation) {
                self.queue.swap(kept, next);
                kept += 1;
            }
            next += 1;
        }
        if next == self.queue.len() {
            self.queue.truncate(kept);
            self.compacting = None;
        } else {
            self.compacting = Some((kept, next));
        }
    }
}

/// Finished records kept: a tenth of `max_tasks` (10 000 by default, Flower's own `max_tasks`).
/// They only serve late or duplicate events; the rest of the table is for tasks still in
/// flight, so a flood of completed tasks does not fill it (memory: about 1 KiB a record).
fn max_finished(max: usize) -> usize {
    (max / 10).max(1)
}

impl TaskTable {
    pub fn new(max: usize) -> Self {
        TaskTable {
            map: HashMap::new(),
            order: TouchOrder::default(),
            finished: VecDeque::new(),
            next_gen: 0,
            max: max.max(1),
            evictions: Evictions::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// A new `max_tasks` (config reload); a smaller table shrinks as new tasks arrive.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.map.get(id).map(|t| &**t)
    }

    /// The record for `id`, created if new, marked most recently used.
    pub fn touch(&mut self, id: &str, now: f64) -> &mut Task {
        self.next_gen += 1;
        let generation = self.next_gen;
        let key: Arc<str> = match self.map.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(id);
                self.map.insert(k.clone(), Box::new(Task::new(now)));
                k
            }
        };
        // The record takes its new generation before the queue is compacted, so the entry
        // pushed now is the live one (not the one it supersedes).
        let t = self
            .map
            .get_mut(&key)
            .expect("present: just inserted or found");
        t.generation = generation;
        t.last_seen = now;
        self.order.push_back((key.clone(), generation));
        if self.map.len() > self.max {
            self.evict_one(&key);
        }
        let map = &self.map;
        self.order.compact_step(2 * map.len() + 1024, |k, g| {
            map.get(k).is_some_and(|t| t.generation == g)
        });
        self.map
            .get_mut(&key)
            .expect("present: just inserted or found, never evicted")
    }

    /// `id` (just touched) reached a final state: keep at most [`max_finished`] such records,
    /// dropping the oldest finished ones (counted as evicted after finishing).
    pub fn finished(&mut self, id: &str) {
        let Some((k, t)) = self.map.get_key_value(id) else {
            return;
        };
        self.finished.push_back((k.clone(), t.generation));
        while self.finished.len() > max_finished(self.max) {
            let Some((k, g)) = self.finished.pop_front() else {
                break;
            };
            if self
                .map
                .get(&k)
                .is_some_and(|t| t.generation == g && t.state.is_final())
            {
                self.map.remove(&k);
                self.evictions.finished += 1;
            }
        }
    }

    fn evict_one(&mut self, keep: &Arc<str>) {
        while let Some((k, g)) = self.order.pop_front() {
            if Arc::ptr_eq(&k, keep) {
                self.order.push_back((k, g));
                continue;
            }
            let live = self.map.get(&k).is_some_and(|t| t.generation == g);
            if live {
                if let Some(t) = self.map.remove(&k) {
                    if t.state.is_final() {
                        self.evictions.finished += 1;
                    } else {
                        self.evictions.unfinished += 1;
                    }
                }
                return;
            }
        }
    }

    /// Drop records not touched since `cutoff` (agent clock); `dropped` sees each one.
    pub fn expire(&mut self, cutoff: f64, mut dropped: impl FnMut(&str, &Task)) {
        while let Some((k, g)) = self.order.front() {
            match self.map.get(k) {
                Some(t) if t.generation == *g => {
                    if t.last_seen >= cutoff {
                        break;
                    }
                    if !t.state.is_final() {
                        self.evictions.expired_unfinished += 1;
                    }
                    let k = k.clone();
                    if let Some(t) = self.map.remove(&k) {
                        dropped(&k, &t);
                    }
                    self.order.pop_front();
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_records_are_a_tenth_of_the_table() {
        let mut table = TaskTable::new(100);
        for i in 0..30 {
            table.touch(&format!("open-{i}"), 0.0);
        }
        for i in 0..500 {
            let id = format!("done-{i}");
            table.touch(&id, 1.0).state = TaskState::Success;
            table.finished(&id);
        }
        // 30 in flight kept, the newest 10 finished kept, the rest evicted and counted.
        assert_eq!(table.len(), 40);
        assert!((0..30).all(|i| table.get(&format!("open-{i}")).is_some()));
        assert!((490..500).all(|i| table.get(&format!("done-{i}")).is_some()));
        assert_eq!(table.evictions.finished, 490);
        assert_eq!(table.evictions.unfinished, 0);
    }

    #[test]
    fn precedence_follows_celery() {
        use TaskState::*;
        assert_eq!(Failure.merge(Rejected), Failure);
        assert_eq!(Success.merge(Received), Success);
        assert_eq!(Started.merge(Retry), Retry);
        assert_eq!(Retry.merge(Started), Started);
        assert_eq!(Received.merge(Started), Started);
    }

    #[test]
    fn retry_resend_before_retried_goes_to_the_next_attempt() {
        let mut t = Task::new(0.0);
        t.note_queued(Some(0), 1.0, false);
        t.note_queued(Some(0), 1.1, true);
        assert_eq!(t.note_started(1.2), None);
        // The retry's message is sent and received before task-retried of attempt 0.
        t.note_queued(Some(1), 1.3, false);
        t.note_queued(Some(1), 1.4, true);
        assert_eq!(t.cur.n, 0);
        let done = t.end_attempt(1.5, true).unwrap();
        assert_eq!(
            (done.n, done.started_ts, done.ended_ts),
            (0, Some(1.2), Some(1.5))
        );
        assert_eq!(
            (t.cur.n, t.cur.sent_ts, t.cur.received_ts),
            (1, Some(1.3), Some(1.4))
        );
        assert_eq!(t.note_started(1.6), None);
        let done = t.end_attempt(1.7, false).unwrap();
        assert_eq!((done.n, done.queued_ts()), (1, Some(1.3)));
        // A rejected after failed ends nothing more; a late received changes nothing.
        assert_eq!(t.end_attempt(1.8, false), None);
        t.note_queued(Some(1), 1.35, true);
        assert_eq!(t.open_attempt(), None);
    }

    #[test]
    fn a_lost_retried_event_is_inferred_from_the_next_start() {
        let mut t = Task::new(0.0);
        t.note_queued(Some(0), 1.0, true);
        t.note_started(1.1);
        t.note_queued(Some(1), 1.2, true);
        let done = t.note_started(1.3).unwrap();
        assert_eq!((done.n, done.ended_ts), (0, Some(1.3)));
        assert_eq!((t.cur.n, t.cur.started_ts), (1, Some(1.3)));
    }

    #[test]
    fn received_before_sent_and_end_without_start() {
        let mut t = Task::new(0.0);
        t.note_queued(None, 2.0, true);
        t.note_queued(None, 1.9, false);
        assert_eq!(t.cur.queued_ts(), Some(1.9));
        let done = t.end_attempt(3.0, false).unwrap();
        assert_eq!(done.started_ts, None);
        let mut u = Task::new(0.0);
        assert!(u.end_attempt(3.0, false).is_some());
    }

    #[test]
    fn evicts_least_recently_touched() {
        let mut t = TaskTable::new(2);
        t.touch("a", 0.0);
        t.touch("b", 0.0);
        t.touch("a", 1.0);
        t.touch("c", 2.0);
        assert!(t.get("a").is_some());
        assert!(t.get("b").is_none());
        assert_eq!(t.evictions.unfinished, 1);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn order_queue_stays_bounded() {
        let mut t = TaskTable::new(10);
        for i in 0..100_000 {
            t.touch(&format!("t{}", i % 5), i as f64);
        }
        assert_eq!(t.len(), 5);
        let limit = 2 * 5 + 1024;
        assert!(t.order.queue.len() <= limit * COMPACT_STEP / (COMPACT_STEP - 1) + 2);
    }

    /// Compaction runs a few entries per touch while evictions and expiry pop the queue's
    /// front: the live entries stay exactly one per record, in touch order.
    #[test]
    fn touch_order_stays_exact_while_compacting_step_by_step() {
        let mut t = TaskTable::new(300);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut compactions = 0;
        for i in 0..200_000u32 {
            // xorshift: deterministic ids; 9 touches in 10 go to 10 hot ids (stale entries
            // pile up behind the cold ones), the rest to 400 cold ids, so the table (300)
            // keeps evicting from the front too.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = if x % 10 == 0 {
                format!("cold{}", (x / 10) % 400)
            } else {
                format!("hot{}", x % 10)
            };
            let now = f64::from(i);
            t.touch(&id, now);
            if x % 7 == 0 {
                t.finished(&id);
            }
            if i % 5_000 == 4_999 {
                t.expire(now - 400.0, |_, _| {});
            }
            if t.order.compacting.is_some() {
                compactions += 1;
            }
            if i % 997 == 0 {
                let live: Vec<u64> = t
                    .order
                    .queue
                    .iter()
                    .filter(|(k, g)| t.map.get(k).is_some_and(|r| r.generation == *g))
                    .map(|(_, g)| *g)
                    .collect();
                assert_eq!(live.len(), t.map.len(), "one live entry per record at {i}");
                assert!(live.windows(2).all(|w| w[0] < w[1]), "touch order at {i}");
            }
        }
        assert!(
            compactions > 1_000,
            "compaction ran step by step: {compactions}"
        );
    }

    #[test]
    fn ttl_expires_old_records() {
        let mut t = TaskTable::new(100);
        t.touch("old", 0.0);
        t.touch("new", 100.0);
        let mut seen = Vec::new();
        t.expire(50.0, |k, _| seen.push(k.to_string()));
        assert_eq!(seen, ["old"]);
        assert!(t.get("old").is_none());
        assert!(t.get("new").is_some());
        assert_eq!(t.evictions.expired_unfinished, 1);
    }
}
