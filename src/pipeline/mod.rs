//! From a checked config to running tasks.
//!
//! [`graph`] validates the whole configuration and builds every component (pure, no I/O);
//! [`run`] wires the built components with bounded channels, starts them downstream-first and
//! stops them upstream-first within the shutdown deadline, and swaps in a reloaded graph while
//! running ([`run_with_reloads`]).

pub mod graph;
pub mod run;

pub use graph::Graph;
pub use run::{run, run_with_reloads, Reload, ReloadSummary};
