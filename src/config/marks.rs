//! Source positions for config keys.
//!
//! serde gives typed values without positions, so the file is parsed a second time with a
//! marked YAML parser and every key path (`receivers.celery_redis.endpoint`) is mapped to the
//! line and column where its key (or sequence item) starts. Diagnostics look paths up here.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// Key path → position index for one YAML document.
#[derive(Debug, Default)]
pub struct Marks {
    index: HashMap<String, Pos>,
}

impl Marks {
    /// Index `text`. A document the marked parser rejects yields an empty index (the typed parse
    /// reports the syntax error with its own position).
    pub fn index(text: &str) -> Marks {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Marks::default();
        }
        // `a::b: x` (a `yaml:` URI, or any key with the collector's `::` delimiter) is `a.b`.
        let index = builder
            .index
            .into_iter()
            .map(|(k, v)| (k.replace("::", "."), v))
            .collect();
        Marks { index }
    }

    /// Position of exactly `path`.
    pub fn find_exact(&self, path: &str) -> Option<Pos> {
        self.index.get(path).copied()
    }

    /// Position of `path` or, failing that, of its closest indexed ancestor.
    pub fn find(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.index.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    /// In a mapping; `key` is the pending key (None while waiting for one).
    Map {
        key: Option<String>,
    },
    Seq {
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Path of each open container, parallel to `stack`.
    paths: Vec<String>,
    index: HashMap<String, Pos>,
}

impl Builder {
    fn pos(mark: &Marker) -> Pos {
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    /// Path for the value that is about to start in the current container, advancing it.
    fn value_path(&mut self, mark: &Marker) -> Option<String> {
        let base = self.paths.last().cloned().unwrap_or_default();
        match self.stack.last_mut()? {
            Frame::Map { key } => key.take().map(|k| {
                if base.is_empty() {
                    k
                } else {
                    format!("{base}.{k}")
                }
            }),
            Frame::Seq { next } => {
                let p = format!("{base}[{next}]");
                *next += 1;
                self.index.insert(p.clone(), Self::pos(mark));
                Some(p)
            }
        }
    }

    /// A scalar in key position: record the key and its position.
    fn key(&mut self, k: &str, mark: &Marker) -> bool {
        let base = self.paths.last().cloned().unwrap_or_default();
        if let Some(Frame::Map { key }) = self.stack.last_mut() {
            if key.is_none() {
                let path = if base.is_empty() {
                    k.to_string()
                } else {
                    format!("{base}.{k}")
                };
                self.index.insert(path, Self::pos(mark));
                *key = Some(k.to_string());
                return true;
            }
        }
        false
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref s, ..) if self.key(s, &mark) => {}
            Event::Scalar(..) | Event::Alias(_) => {
                self.value_path(&mark);
            }
            Event::MappingStart(..) => {
                let path = if self.stack.is_empty() {
                    String::new()
                } else {
                    self.value_path(&mark).unwrap_or_default()
                };
                self.stack.push(Frame::Map { key: None });
                self.paths.push(path);
            }
            Event::SequenceStart(..) => {
                let path = self.value_path(&mark).unwrap_or_default();
                self.stack.push(Frame::Seq { next: 0 });
                self.paths.push(path);
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.paths.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_items() {
        let text = "receivers:\n  celery_redis:\n    endpoint: redis://x\nservice:\n  pipelines:\n    celery:\n      receivers: [a, b]\n      exporters:\n        - logs\n";
        let m = Marks::index(text);
        assert_eq!(m.find("receivers"), Some(Pos { line: 1, col: 1 }));
        assert_eq!(
            m.find("receivers.celery_redis.endpoint"),
            Some(Pos { line: 3, col: 5 })
        );
        assert_eq!(
            m.find("service.pipelines.celery.receivers[1]"),
            Some(Pos { line: 7, col: 22 })
        );
        assert_eq!(
            m.find("service.pipelines.celery.exporters[0]"),
            Some(Pos { line: 9, col: 11 })
        );
        // Unknown child falls back to the closest ancestor.
        assert_eq!(
            m.find("receivers.celery_redis.nope"),
            Some(Pos { line: 2, col: 3 })
        );
    }
}
