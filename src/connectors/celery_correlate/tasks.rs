//! The bounded task table: one small record per task id, evicted least-recently-touched first
//! when `max_tasks` is reached and dropped after `task_ttl` without events.

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

#[derive(Debug, Clone)]
pub struct Task {
    pub name: Option<Arc<str>>,
    pub queue: Option<Arc<str>>,
    pub sent_ts: Option<f64>,
    pub received_ts: Option<f64>,
    pub started_ts: Option<f64>,
    pub eta_ts: Option<f64>,
    pub retries: u32,
    pub state: TaskState,
    /// Agent clock (Unix seconds) of the last event, for the TTL.
    pub last_seen: f64,
    generation: u64,
}

impl Task {
    fn new(now: f64) -> Task {
        Task {
            name: None,
            queue: None,
            sent_ts: None,
            received_ts: None,
            started_ts: None,
            eta_ts: None,
            retries: 0,
            state: TaskState::Pending,
            last_seen: now,
            generation: 0,
        }
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
    map: HashMap<Arc<str>, Task>,
    /// Touch order; entries whose generation no longer matches the record are stale.
    order: VecDeque<(Arc<str>, u64)>,
    next_gen: u64,
    max: usize,
    pub evictions: Evictions,
}

impl TaskTable {
    pub fn new(max: usize) -> Self {
        TaskTable {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_gen: 0,
            max: max.max(1),
            evictions: Evictions::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.map.get(id)
    }

    /// The record for `id`, created if new, marked most recently used.
    pub fn touch(&mut self, id: &str, now: f64) -> &mut Task {
        self.next_gen += 1;
        let generation = self.next_gen;
        let key: Arc<str> = match self.map.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = Arc::from(id);
                self.map.insert(k.clone(), Task::new(now));
                k
            }
        };
        self.order.push_back((key.clone(), generation));
        if self.map.len() > self.max {
            self.evict_one(&key);
        }
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|t| t.generation == *g));
        }
        let t = self
            .map
            .get_mut(&key)
            .expect("present: just inserted or found");
        t.generation = generation;
        t.last_seen = now;
        t
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

    /// Drop records not touched since `cutoff` (agent clock).
    pub fn expire(&mut self, cutoff: f64) {
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
                    self.map.remove(&k);
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
    fn precedence_follows_celery() {
        use TaskState::*;
        assert_eq!(Failure.merge(Rejected), Failure);
        assert_eq!(Success.merge(Received), Success);
        assert_eq!(Started.merge(Retry), Retry);
        assert_eq!(Retry.merge(Started), Started);
        assert_eq!(Received.merge(Started), Started);
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
        assert!(t.order.len() <= 2 * 5 + 1025);
    }

    #[test]
    fn ttl_expires_old_records() {
        let mut t = TaskTable::new(100);
        t.touch("old", 0.0);
        t.touch("new", 100.0);
        t.expire(50.0);
        assert!(t.get("old").is_none());
        assert!(t.get("new").is_some());
        assert_eq!(t.evictions.expired_unfinished, 1);
    }
}
