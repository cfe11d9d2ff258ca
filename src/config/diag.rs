//! Diagnostics: every problem found in a config, with its position, reported together.

use std::fmt::Write as _;

use super::marks::{Marks, Pos};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Key path (`service.pipelines.traces.exporters[1]`), empty for the whole file.
    pub path: String,
    pub pos: Option<Pos>,
    /// Index of the source (`--config` file or URI) `pos` is in.
    pub source: usize,
    pub message: String,
}

/// The diagnostics of one config, which may be merged from several sources (`--config` given
/// more than once): a key's position is looked up in the last source that has it.
#[derive(Debug, Default)]
pub struct Diagnostics {
    sources: Vec<(String, Marks)>,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &str, text: &str) -> Self {
        let mut d = Diagnostics::empty();
        d.add_source(file, text);
        d
    }

    /// No source yet (see [`Diagnostics::add_source`]).
    pub fn empty() -> Self {
        Diagnostics::default()
    }

    /// One more source; diagnostics without a key path are reported against the latest.
    pub fn add_source(&mut self, name: &str, text: &str) {
        self.sources.push((name.to_string(), Marks::index(text)));
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    pub fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        let found = if path.is_empty() {
            None
        } else {
            self.sources
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, (_, m))| m.find_exact(path).map(|p| (i, p)))
                .or_else(|| {
                    self.sources
                        .iter()
                        .enumerate()
                        .rev()
                        .find_map(|(i, (_, m))| m.find(path).map(|p| (i, p)))
                })
        };
        match found {
            Some((source, pos)) => self.items.push(Diagnostic {
                severity,
                path: path.to_string(),
                pos: Some(pos),
                source,
                message: message.into(),
            }),
            None => self.push_at(severity, path, None, message),
        }
    }

    pub fn push_at(
        &mut self,
        severity: Severity,
        path: &str,
        pos: Option<Pos>,
        message: impl Into<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            path: path.to_string(),
            pos,
            source: self.sources.len().saturating_sub(1),
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn errors(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// Move `other`'s items into `self` (same file).
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// One line per diagnostic, in file order: `file:line:col: error: message`.
    pub fn render(&self) -> String {
        let mut items: Vec<&Diagnostic> = self.items.iter().collect();
        items.sort_by_key(|d| (d.source, d.pos.map(|p| (p.line, p.col)).unwrap_or((0, 0))));
        let mut out = String::new();
        for d in items {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let file = self
                .sources
                .get(d.source)
                .map_or("config", |(name, _)| name.as_str());
            let _ = match d.pos {
                Some(p) => writeln!(out, "{file}:{}:{}: {sev}: {}", p.line, p.col, d.message),
                None => writeln!(out, "{file}: {sev}: {}", d.message),
            };
        }
        out
    }
}
