//! The typed Celery event model.
//!
//! This module owns the in-memory shape of one Celery event after decoding: [`CeleryEvent`] (the
//! common fields every event carries), [`TaskFields`] (the `task-*` fields) and [`WorkerFields`]
//! (the `worker-*` fields), plus [`EventKind`], the classification of the raw `type` string.
//!
//! It does not parse anything: turning a kombu envelope into these values is
//! [`crate::celery::envelope`]'s job. Field meanings follow the wire format as Celery 5.x sends it
//! (see `shared/research/celery-wire.md` §5–§6); values are kept as sent (no timezone
//! adjustment, `args`/`kwargs`/`result` are the Python `repr` strings and are never parsed).

/// What kind of event this is, derived from the raw `type` field with [`EventKind::from_type`].
///
/// The group of an event is the part of `type` before the first `-` (as in Celery's own
/// `State`), so `task-foo` is [`EventKind::TaskOther`] and `worker-elect` is
/// [`EventKind::WorkerOther`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum EventKind {
    TaskSent,
    TaskReceived,
    TaskStarted,
    TaskSucceeded,
    TaskFailed,
    TaskRetried,
    TaskRevoked,
    TaskRejected,
    TaskCancelled,
    /// any other task-* (custom via Task.send_event)
    TaskOther,
    WorkerOnline,
    WorkerHeartbeat,
    WorkerOffline,
    /// any other worker-* (e.g. worker-elect)
    WorkerOther,
    /// neither task-* nor worker-*
    #[default]
    Unknown,
}

impl EventKind {
    /// Classify a raw `type` string. Never fails: unrecognised types map to
    /// [`EventKind::TaskOther`], [`EventKind::WorkerOther`] or [`EventKind::Unknown`] by group.
    pub fn from_type(t: &str) -> Self {
        match t {
            "task-sent" => Self::TaskSent,
            "task-received" => Self::TaskReceived,
            "task-started" => Self::TaskStarted,
            "task-succeeded" => Self::TaskSucceeded,
            "task-failed" => Self::TaskFailed,
            "task-retried" => Self::TaskRetried,
            "task-revoked" => Self::TaskRevoked,
            "task-rejected" => Self::TaskRejected,
            "task-cancelled" => Self::TaskCancelled,
            "worker-online" => Self::WorkerOnline,
            "worker-heartbeat" => Self::WorkerHeartbeat,
            "worker-offline" => Self::WorkerOffline,
            _ => match t.split('-').next() {
                Some("task") => Self::TaskOther,
                Some("worker") => Self::WorkerOther,
                _ => Self::Unknown,
            },
        }
    }

    /// `true` for every `task-*` kind, including [`EventKind::TaskOther`].
    pub fn is_task(self) -> bool {
        matches!(
            self,
            Self::TaskSent
                | Self::TaskReceived
                | Self::TaskStarted
                | Self::TaskSucceeded
                | Self::TaskFailed
                | Self::TaskRetried
                | Self::TaskRevoked
                | Self::TaskRejected
                | Self::TaskCancelled
                | Self::TaskOther
        )
    }

    /// `true` for every `worker-*` kind, including [`EventKind::WorkerOther`].
    pub fn is_worker(self) -> bool {
        matches!(
            self,
            Self::WorkerOnline | Self::WorkerHeartbeat | Self::WorkerOffline | Self::WorkerOther
        )
    }

    /// Stable label: the wire type for known kinds (`"task-sent"`, …), `"task-other"`,
    /// `"worker-other"` or `"unknown"` otherwise. Suitable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskSent => "task-sent",
            Self::TaskReceived => "task-received",
            Self::TaskStarted => "task-started",
            Self::TaskSucceeded => "task-succeeded",
            Self::TaskFailed => "task-failed",
            Self::TaskRetried => "task-retried",
            Self::TaskRevoked => "task-revoked",
            Self::TaskRejected => "task-rejected",
            Self::TaskCancelled => "task-cancelled",
            Self::TaskOther => "task-other",
            Self::WorkerOnline => "worker-online",
            Self::WorkerHeartbeat => "worker-heartbeat",
            Self::WorkerOffline => "worker-offline",
            Self::WorkerOther => "worker-other",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded Celery event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CeleryEvent {
    pub kind: EventKind,
    /// The raw `type` field as sent (e.g. `"task-succeeded"`, `"task-my-progress"`).
    pub type_name: String,
    /// Body `hostname`, else the envelope's `headers.hostname`, else `""`.
    pub hostname: String,
    /// Sender's wall clock when the event was created, Unix epoch seconds, as sent
    /// (`utcoffset` is NOT applied: `time.time()` is already UTC).
    pub timestamp: f64,
    /// Hours *west* of UTC (`time.timezone / 3600`), as sent.
    pub utcoffset: Option<f64>,
    /// Sender process id (worker main process for worker task events).
    pub pid: Option<u32>,
    /// Sender's Lamport clock (null when sent blind). Only comparable within one sender.
    pub clock: Option<u64>,
    /// `Some` exactly for task kinds ([`EventKind::is_task`]).
    pub task: Option<TaskFields>,
    /// `Some` exactly for worker kinds ([`EventKind::is_worker`]).
    pub worker: Option<WorkerFields>,
}

impl CeleryEvent {
    /// The task uuid, for task events.
    pub fn task_uuid(&self) -> Option<&str> {
        self.task.as_ref().map(|t| t.uuid.as_str())
    }
}

/// Fields of `task-*` events. Only `uuid` is always present; which of the others appear
/// depends on the event type (see the wire notes §6).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskFields {
    pub uuid: String,
    /// Task name (`task-sent`, `task-received`).
    pub name: Option<String>,
    /// Python `repr` of the positional args (truncated by Celery to 1024 chars). Never JSON.
    pub args: Option<String>,
    /// Python `repr` of the keyword args. Never JSON.
    pub kwargs: Option<String>,
    pub retries: Option<u32>,
    /// ISO 8601 string as sent.
    pub eta: Option<String>,
    /// ISO 8601 string as sent.
    pub expires: Option<String>,
    pub root_id: Option<String>,
    pub parent_id: Option<String>,
    /// `task-sent` only.
    pub queue: Option<String>,
    /// `task-sent` only.
    pub exchange: Option<String>,
    /// `task-sent` only.
    pub routing_key: Option<String>,
    /// Python `repr` of the return value (`task-succeeded`).
    pub result: Option<String>,
    /// Seconds (`task-succeeded`).
    pub runtime: Option<f64>,
    /// Python `repr` of the exception (`task-failed`, `task-retried`).
    pub exception: Option<String>,
    /// Multi-line Python traceback (`task-failed`, `task-retried`).
    pub traceback: Option<String>,
    /// `task-revoked`.
    pub terminated: Option<bool>,
    /// `task-revoked`: an int or a string on the wire; ints are rendered in decimal (`"15"`).
    pub signum: Option<String>,
    /// `task-revoked`.
    pub expired: Option<bool>,
    /// `task-rejected`.
    pub requeue: Option<bool>,
}

/// Fields of `worker-*` events. The wake-up heartbeat (answer to a pidbox `heartbeat`
/// broadcast) carries only `freq` and `sw_*`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerFields {
    /// Heartbeat interval in seconds (int or float on the wire).
    pub freq: Option<f64>,
    pub active: Option<u64>,
    pub processed: Option<u64>,
    pub loadavg: Option<[f64; 3]>,
    pub sw_ident: Option<String>,
    pub sw_ver: Option<String>,
    pub sw_sys: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trip() {
        for t in [
            "task-sent",
            "task-received",
            "task-started",
            "task-succeeded",
            "task-failed",
            "task-retried",
            "task-revoked",
            "task-rejected",
            "task-cancelled",
            "worker-online",
            "worker-heartbeat",
            "worker-offline",
        ] {
            let k = EventKind::from_type(t);
            assert_eq!(k.as_str(), t);
            assert!(k.is_task() != k.is_worker());
        }
    }

    #[test]
    fn kind_groups() {
        assert_eq!(EventKind::from_type("task-progress"), EventKind::TaskOther);
        assert_eq!(EventKind::from_type("task-my-thing"), EventKind::TaskOther);
        assert_eq!(EventKind::from_type("worker-elect"), EventKind::WorkerOther);
        assert_eq!(
            EventKind::from_type("worker-elect-ack"),
            EventKind::WorkerOther
        );
        assert_eq!(EventKind::from_type("tasks-sent"), EventKind::Unknown);
        assert_eq!(EventKind::from_type("workers"), EventKind::Unknown);
        assert_eq!(EventKind::from_type(""), EventKind::Unknown);
        assert_eq!(EventKind::from_type("foo-bar"), EventKind::Unknown);
        assert!(EventKind::TaskOther.is_task());
        assert!(EventKind::WorkerOther.is_worker());
        assert!(!EventKind::Unknown.is_task() && !EventKind::Unknown.is_worker());
        assert_eq!(EventKind::TaskOther.as_str(), "task-other");
        assert_eq!(EventKind::WorkerOther.as_str(), "worker-other");
        assert_eq!(EventKind::Unknown.as_str(), "unknown");
        assert_eq!(EventKind::default(), EventKind::Unknown);
    }
}
