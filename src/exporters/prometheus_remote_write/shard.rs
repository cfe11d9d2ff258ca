//! A shard's queue: samples in order, bounded (a full queue drops its oldest), closed at the end.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::series::Queued;

struct ShardQueue {
    samples: VecDeque<Queued>,
    closed: bool,
}

pub(super) struct Shard {
    queue: Mutex<ShardQueue>,
    notify: Notify,
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            queue: Mutex::new(ShardQueue {
                samples: VecDeque::new(),
                closed: false,
            }),
            notify: Notify::new(),
        }
    }

    /// Append, dropping the oldest beyond `cap`; returns how many were dropped.
    pub(super) fn push(&self, items: &mut Vec<Queued>, cap: usize) -> usize {
        if items.is_empty() {
            return 0;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.samples.extend(items.drain(..));
        let over = q.samples.len().saturating_sub(cap);
        q.samples.drain(..over);
        drop(q);
        self.notify.notify_one();
        over
    }

    pub(super) fn close(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.notify.notify_one();
    }

    /// Up to `max` samples, waiting for some; `None` once closed and drained.
    pub(super) async fn take(&self, max: usize) -> Option<Vec<Queued>> {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !q.samples.is_empty() {
                    let n = q.samples.len().min(max);
                    return Some(q.samples.drain(..n).collect());
                }
                if q.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }
}
