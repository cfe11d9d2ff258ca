//! `debug` exporter: one summary line per batch in the agent's own log, optionally every item.

use serde::{Deserialize, Serialize};

use crate::component::{BoxRun, Context, Exporter, Input};
use crate::component::{BuildResult, Factory, Registration};
use crate::config::{self, Value};
use crate::signal::{Signal, SignalKind};

pub const REGISTRATION: Registration = Registration {
    type_name: "debug",
    factory: Factory::Exporter {
        accepts: &SignalKind::ALL,
        build,
    },
    defaults: crate::component::defaults::<DebugConfig>,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    /// Counts only.
    #[default]
    Basic,
    /// Counts and every item, in Rust debug notation.
    Detailed,
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    pub verbosity: Verbosity,
}

fn build(v: &Value) -> BuildResult<dyn Exporter> {
    let cfg: DebugConfig = config::decode(v)?;
    Ok(Box::new(DebugExporter { cfg }))
}

pub struct DebugExporter {
    cfg: DebugConfig,
}

/// `"traces: 2 resources, 7 items"`.
pub fn summary(s: &Signal) -> String {
    let resources = match s {
        Signal::Traces(v) => v.len(),
        Signal::Metrics(v) => v.len(),
        Signal::Logs(v) => v.len(),
        Signal::Celery(_) => 0,
    };
    match s {
        Signal::Celery(ev) => format!("celery: {} events", ev.len()),
        _ => format!(
            "{}: {resources} resources, {} items",
            s.kind(),
            s.item_count()
        ),
    }
}

impl Exporter for DebugExporter {
    fn run(self: Box<Self>, ctx: Context, input: Input) -> BoxRun {
        Box::pin(async move {
            while let Some(batch) = input.recv().await {
                tracing::info!(component = %ctx.id, "{}", summary(&batch));
                if self.cfg.verbosity == Verbosity::Detailed {
                    tracing::info!(component = %ctx.id, "{batch:#?}");
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn summary_counts() {
        let s = Signal::Celery(Arc::new(vec![Default::default(), Default::default()]));
        assert_eq!(summary(&s), "celery: 2 events");
        assert!(build(&Value::Null).is_ok());
        let bad: Value = serde_yaml_ng::from_str("verbosity: loud").unwrap();
        assert_eq!(build(&bad).err().unwrap().path, "verbosity");
    }
}
