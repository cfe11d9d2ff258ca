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
    pub message: String,
}

/// The diagnostics of one file.
#[derive(Debug)]
pub struct Diagnostics {
    file: String,
    marks: Marks,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &str, text: &str) -> Self {
        Diagnostics {
            file: file.to_string(),
            marks: Marks::index(text),
            items: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    pub fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        let pos = if path.is_empty() {
            None
        } else {
            self.marks.find(path)
        };
        self.push_at(severity, path, pos, message);
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
        items.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)).unwrap_or((0, 0)));
        let mut out = String::new();
        for d in items {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = match d.pos {
                Some(p) => writeln!(
                    out,
                    "{}:{}:{}: {sev}: {}",
                    self.file, p.line, p.col, d.message
                ),
                None => writeln!(out, "{}: {sev}: {}", self.file, d.message),
            };
        }
        out
    }
}
