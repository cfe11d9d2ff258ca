//! Flower 2.2's task search (`/api/tasks?search=`): its query syntax and matching rules.
//!
//! Terms are case-insensitive substrings (at least 3 characters) of a task's uuid, name,
//! state, worker, args, kwargs or result; `name:`, `worker:`, `args:`, `kwargs:`, `result:`
//! limit a term to one field; `state:` matches the state exactly; `kwargs:key=value` matches
//! one keyword argument exactly. Terms next to each other (or joined by `AND`) must all match,
//! `OR` takes either, parentheses group (5 levels deep at most), `"quoted phrases"` keep
//! spaces. `NOT` and `-term` are refused, as Flower refuses them, with Flower's messages.
//!
//! Matching runs over the view's task records without copying them: a query over 100 000 tasks
//! is one pass (see `benches/ui_search.rs`).

use crate::connectors::celery_correlate::view::TaskRecord;

const MIN_SUBSTRING: usize = 3;
const MAX_LENGTH: usize = 2048;
const MAX_TOKENS: usize = 128;
const MAX_DEPTH: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    State,
    Worker,
    Args,
    Kwargs,
    Result,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    All,
    /// A field (or every field), the casefolded value.
    Term(Option<Field>, String),
    /// `kwargs:key=value`, casefolded.
    KwargsPair(String, String),
    And(Vec<Query>),
    Or(Vec<Query>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Term(String),
    Eof,
}

fn err(msg: &str, pos: Option<usize>) -> String {
    match pos {
        Some(p) => format!("{msg} at position {p}."),
        None => format!("{msg}."),
    }
}

fn tokenize(q: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let push = |out: &mut Vec<(Tok, usize)>, t: Tok, p: usize| {
        out.push((t, p));
        if out.len() > MAX_TOKENS {
            return Err(err(&format!("Query exceeds {MAX_TOKENS} tokens"), None));
        }
        Ok(())
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let pos = i;
        if c == '(' || c == ')' {
            push(
                &mut out,
                if c == '(' { Tok::LParen } else { Tok::RParen },
                pos,
            )?;
            i += 1;
            continue;
        }
        let (mut value, mut quoted, mut in_quote) = (String::new(), false, false);
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' && i + 1 < chars.len() && matches!(chars[i + 1], '"' | '\\') {
                value.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                quoted = true;
                in_quote = !in_quote;
                i += 1;
                continue;
            }
            if !in_quote && (c.is_whitespace() || c == '(' || c == ')') {
                break;
            }
            value.push(c);
            i += 1;
        }
        if in_quote {
            return Err(err("Unterminated quoted phrase", Some(pos)));
        }
        if value.is_empty() {
            return Err(err("Empty search term", Some(pos)));
        }
        let tok = match value.as_str() {
            "AND" if !quoted => Tok::And,
            "OR" if !quoted => Tok::Or,
            "NOT" if !quoted => return Err(err("NOT is not supported", Some(pos))),
            _ => Tok::Term(value),
        };
        push(&mut out, tok, pos)?;
    }
    out.push((Tok::Eof, chars.len()));
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser {
    fn cur(&self) -> &(Tok, usize) {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn unexpected(&self) -> String {
        let (t, p) = self.cur();
        let v = match t {
            Tok::LParen => "(".to_string(),
            Tok::RParen => ")".to_string(),
            Tok::And => "AND".to_string(),
            Tok::Or => "OR".to_string(),
            Tok::Term(s) => s.clone(),
            Tok::Eof => String::new(),
        };
        err(&format!("Unexpected '{v}'"), Some(*p))
    }

    fn or(&mut self, depth: usize) -> Result<Query, String> {
        let mut children = vec![self.and(depth)?];
        while self.cur().0 == Tok::Or {
            let p = self.cur().1;
            self.i += 1;
            if matches!(self.cur().0, Tok::Eof | Tok::RParen | Tok::And | Tok::Or) {
                return Err(err("OR must be followed by a search term", Some(p)));
            }
            children.push(self.and(depth)?);
        }
        Ok(combine(children, true))
    }

    fn and(&mut self, depth: usize) -> Result<Query, String> {
        let mut children = vec![self.primary(depth)?];
        loop {
            match self.cur().0 {
                Tok::Eof | Tok::RParen | Tok::Or => break,
                Tok::And => {
                    let p = self.cur().1;
                    self.i += 1;
                    if matches!(self.cur().0, Tok::Eof | Tok::RParen | Tok::And | Tok::Or) {
                        return Err(err("AND must be followed by a search term", Some(p)));
                    }
                }
                Tok::Term(_) | Tok::LParen => {}
            }
            children.push(self.primary(depth)?);
        }
        Ok(combine(children, false))
    }

    fn primary(&mut self, depth: usize) -> Result<Query, String> {
        let (tok, pos) = self.cur().clone();
        match tok {
            Tok::LParen => {
                if depth >= MAX_DEPTH {
                    return Err(err(
                        &format!("Query nesting exceeds {MAX_DEPTH} levels"),
                        Some(pos),
                    ));
                }
                self.i += 1;
                if self.cur().0 == Tok::RParen {
                    return Err(err("Empty group", Some(pos)));
                }
                let e = self.or(depth + 1)?;
                if self.cur().0 != Tok::RParen {
                    return Err(err("Missing closing parenthesis", Some(pos)));
                }
                self.i += 1;
                Ok(e)
            }
            Tok::Term(v) => {
                self.i += 1;
                term(&v, pos)
            }
            _ => Err(err("Expected a search term", Some(pos))),
        }
    }
}

fn combine(children: Vec<Query>, or: bool) -> Query {
    let mut flat: Vec<Query> = Vec::new();
    for c in children {
        let inner = match (c, or) {
            (Query::Or(v), true) | (Query::And(v), false) => v,
            (c, _) => vec![c],
        };
        for x in inner {
            if !flat.contains(&x) {
                flat.push(x);
            }
        }
    }
    if flat.len() == 1 {
        return flat.pop().unwrap_or(Query::All);
    }
    if or {
        Query::Or(flat)
    } else {
        Query::And(flat)
    }
}

fn term(raw: &str, pos: usize) -> Result<Query, String> {
    let mut field = None;
    let mut value = raw;
    if let Some((f, v)) = raw.split_once(':') {
        field = match f.to_lowercase().as_str() {
            "name" => Some(Field::Name),
            "state" => Some(Field::State),
            "worker" => Some(Field::Worker),
            "args" => Some(Field::Args),
            "kwargs" => Some(Field::Kwargs),
            "result" => Some(Field::Result),
            _ => None,
        };
        if field.is_some() {
            value = v;
        }
    }
    if field.is_none() && value.starts_with('-') {
        return Err(err("Negation with '-' is not supported", Some(pos)));
    }
    if value.is_empty() {
        return Err(err("Search qualifier requires a value", Some(pos)));
    }
    let folded = value.to_lowercase();
    if field == Some(Field::Kwargs) {
        if let Some((k, v)) = folded.split_once('=') {
            return Ok(Query::KwargsPair(
                k.trim().to_string(),
                v.trim().to_string(),
            ));
        }
    }
    if field != Some(Field::State) && value.trim().chars().count() < MIN_SUBSTRING {
        return Err(err(
            &format!("Substring search terms must contain at least {MIN_SUBSTRING} characters"),
            Some(pos),
        ));
    }
    Ok(Query::Term(field, folded))
}

/// Parse a `search=` value; an empty one matches every task.
pub fn parse(q: &str) -> Result<Query, String> {
    let q = q.trim();
    if q.chars().count() > MAX_LENGTH {
        return Err(err(&format!("Query exceeds {MAX_LENGTH} characters"), None));
    }
    let toks = tokenize(q)?;
    if toks.len() == 1 {
        return Ok(Query::All);
    }
    let mut p = Parser { toks, i: 0 };
    let e = p.or(0)?;
    if p.cur().0 != Tok::Eof {
        return Err(p.unexpected());
    }
    Ok(e)
}

/// Case-insensitive substring test; `needle` is already lowercase.
fn contains(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        if n.len() > h.len() {
            return false;
        }
        let first = n[0];
        return h
            .windows(n.len())
            .any(|w| w[0].to_ascii_lowercase() == first && w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}

/// The `key=value` pairs of a kwargs repr (`{'a': 1, 'b': 'x'}`), lowercase, values unquoted
/// (Python's `str` of each value).
fn kwargs_has(repr: &str, key: &str, value: &str) -> bool {
    let inner = repr.trim();
    let Some(inner) = inner.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
        return false;
    };
    // Split at top-level commas (outside quotes and brackets).
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0usize);
    let mut parts = Vec::new();
    let mut prev = '\0';
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q && prev != '\\' => quote = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quote = Some(c),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
        prev = c;
    }
    parts.push(&inner[start..]);
    let unquote = |s: &str| -> String {
        let s = s.trim();
        let b = s.as_bytes();
        if b.len() >= 2 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
            s[1..s.len() - 1].to_lowercase()
        } else {
            s.to_lowercase()
        }
    };
    parts.iter().any(|p| {
        p.split_once(':')
            .is_some_and(|(k, v)| unquote(k) == key && unquote(v) == value)
    })
}

fn field_of(t: &TaskRecord, f: Field) -> &str {
    match f {
        Field::Name => t.name.as_deref().unwrap_or(""),
        Field::State => t.state.as_str(),
        Field::Worker => t.worker.as_deref().unwrap_or(""),
        Field::Args => t.args.as_deref().unwrap_or(""),
        Field::Kwargs => t.kwargs.as_deref().unwrap_or(""),
        Field::Result => t.result.as_deref().unwrap_or(""),
    }
}

/// Does `t` match `q`?
pub fn matches(q: &Query, t: &TaskRecord) -> bool {
    match q {
        Query::All => true,
        Query::Term(Some(Field::State), v) => t.state.as_str().eq_ignore_ascii_case(v),
        Query::Term(Some(f), v) => contains(field_of(t, *f), v),
        Query::Term(None, v) => {
            contains(&t.uuid, v)
                || [
                    Field::Name,
                    Field::State,
                    Field::Worker,
                    Field::Args,
                    Field::Kwargs,
                    Field::Result,
                ]
                .iter()
                .any(|f| contains(field_of(t, *f), v))
        }
        Query::KwargsPair(k, v) => t.kwargs.as_deref().is_some_and(|kw| kwargs_has(kw, k, v)),
        Query::And(c) => c.iter().all(|x| matches(x, t)),
        Query::Or(c) => c.iter().any(|x| matches(x, t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::celery_correlate::view::tests_support::record;

    fn task(name: &str, args: &str, kwargs: &str, result: &str) -> TaskRecord {
        let mut t = record("4f1c-uuid");
        t.name = Some(name.into());
        t.args = Some(args.into());
        t.kwargs = Some(kwargs.into());
        t.result = Some(result.into());
        t.worker = Some("celery@Host-A".into());
        t
    }

    #[test]
    fn flowers_syntax_and_rules() {
        let t = task(
            "shop.charge_card",
            "(1001, 10.0)",
            "{'order': 7, 'who': 'Ann'}",
            "{'status': 'charged'}",
        );
        let m = |q: &str| matches(&parse(q).unwrap(), &t);
        assert!(m(""));
        assert!(m("CHARGE"));
        assert!(m("name:charge worker:host-a"));
        assert!(m("state:pending"));
        assert!(!m("state:pend"));
        assert!(m("args:1001 AND result:charged"));
        assert!(!m("args:1001 result:nothing"));
        assert!(m("args:9999 OR result:charged"));
        assert!(m("(args:9999 OR kwargs:who=ann) name:shop"));
        assert!(m("kwargs:order=7"));
        assert!(!m("kwargs:order=8"));
        assert!(m("\"charge_card\""));
        assert!(m("uuid"));
        assert!(!m("name:uuid"));
        for (bad, msg) in [
            (
                "ab",
                "Substring search terms must contain at least 3 characters at position 0.",
            ),
            ("NOT x", "NOT is not supported at position 0."),
            ("-abc", "Negation with '-' is not supported at position 0."),
            ("(abc", "Missing closing parenthesis at position 0."),
            (
                "abc OR",
                "OR must be followed by a search term at position 4.",
            ),
            ("\"abc", "Unterminated quoted phrase at position 0."),
            ("state:", "Search qualifier requires a value at position 0."),
            ("abc )", "Unexpected ')' at position 4."),
        ] {
            assert_eq!(parse(bad).unwrap_err(), msg, "{bad}");
        }
        assert!(parse("((((((abc))))))").is_err());
    }
}
