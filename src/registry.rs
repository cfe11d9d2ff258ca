//! Config `type` name → builder. Adding a component is one file and one line in [`COMPONENTS`].
//!
//! A builder only decodes and checks settings; it performs no I/O, so `celeriac validate`
//! builds every component to check it and `celeriac run` reuses what was built.

use crate::component::{Exporter, Extension, Processor, Receiver};
use crate::config::{DecodeError, Section, Value};
use crate::signal::SignalKind;

pub type BuildResult<T> = Result<Box<T>, DecodeError>;

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
}

/// Every component type celeriac knows.
pub static COMPONENTS: &[Registration] = &[
    crate::connectors::celery_correlate::REGISTRATION,
    crate::exporters::debug::REGISTRATION,
    crate::exporters::logs::REGISTRATION,
    crate::exporters::otlp::REGISTRATION,
    crate::exporters::prometheus::REGISTRATION,
    crate::exporters::prometheus_remote_write::REGISTRATION,
    crate::processors::batch::REGISTRATION,
    crate::receivers::celery_redis::REGISTRATION,
    crate::receivers::otlp::REGISTRATION,
    crate::receivers::redis_queues::REGISTRATION,
    crate::extensions::celery_ui::REGISTRATION,
];

/// The registration of `type_name` in `section` (`otlp` is both a receiver and an exporter).
pub fn lookup(section: Section, type_name: &str) -> Option<&'static Registration> {
    COMPONENTS
        .iter()
        .find(|r| r.type_name == type_name && r.factory.section() == section)
}

/// Sections other than the one asked for that know `type_name`, for "declare it under" hints.
pub fn sections_of(type_name: &str) -> Vec<Section> {
    COMPONENTS
        .iter()
        .filter(|r| r.type_name == type_name)
        .map(|r| r.factory.section())
        .collect()
}

/// Type names registered for `section`, for "expected one of" messages.
pub fn names(section: Section) -> Vec<&'static str> {
    let mut v: Vec<_> = COMPONENTS
        .iter()
        .filter(|r| r.factory.section() == section)
        .map(|r| r.type_name)
        .collect();
    v.sort_unstable();
    v
}
