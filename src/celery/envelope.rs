//! Decoding of kombu envelopes (the payload of one Redis pub/sub message) into [`CeleryEvent`]s.
//!
//! Pipeline, in order (each step's failure is one [`DecodeError`] variant):
//!
//! 1. parse the envelope JSON (borrowed, with the strict scanner of `celery::scan`: only the
//!    fields below are read, everything else is skipped but syntax-checked)
//!    → [`DecodeError::MalformedEnvelope`];
//! 2. `properties.delivery_info.exchange` must be `"celeryev"` → else [`DecodeError::NotAnEvent`]
//!    (pidbox, anything else);
//! 3. a `compression` header → [`DecodeError::Compressed`] (Celery never compresses events);
//! 4. `content-type`: JSON only; pickle / msgpack / yaml / anything else → their own variant
//!    (pickle is never unpickled);
//! 5. `properties.body_encoding`: `"base64"` → standard base64 (`celery::b64`, into a reusable
//!    per-thread buffer),
//!    `null`/absent/`"utf-8"` → the body string as is;
//! 6. the body is one event object or a list of them (`task.multi`); each object is parsed in one
//!    streaming pass with typed, lenient field values and turned into an owned [`CeleryEvent`].
//!
//! ## Partially bad lists
//!
//! A list body is decoded element by element: a bad element (not an object, no `type`, a task
//! event without `uuid`, a known field with the wrong JSON type, …) is **skipped**, the good
//! elements are kept, and every skipped element is reported in [`Decoded::dropped`] as a
//! [`DecodeError::MalformedEvent`] / [`DecodeError::MissingField`] carrying its list index.
//! A body that is a single object (or a scalar) has nothing to keep, so a bad one is returned
//! as `Err`. A JSON *syntax* error anywhere in the body fails the whole envelope
//! ([`DecodeError::MalformedBody`]). On `Err`, nothing is appended to `out`.
//!
//! ## Leniency
//!
//! Tolerated: `freq`/`utcoffset`/`timestamp`/`runtime` as int or float; integer fields given as
//! integral floats; `signum` int, string or null; `null` for any optional field (incl. `clock`);
//! missing optional fields; unknown fields (ignored, whatever their content, including kombu's
//! `{"__type__": …, "__value__": …}` wrappers); such a wrapper around a known string field
//! (e.g. `eta`) is unwrapped. Only the fields relevant to the event's kind are type-checked
//! (common fields always; task fields for `task-*`; worker fields for `worker-*`).
//! Required: `type` (string), `timestamp` (number), and for `task-*` a non-empty string `uuid`.
//!
//! Not tolerated (strict JSON, in the envelope as in the body): raw control characters inside
//! strings, lone `\u` surrogates, numbers that overflow an `f64` in a known field (in an unknown
//! field they are only syntax-checked), values nested deeper than 128 levels in a known field.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use crate::celery::b64::{self, Base64Error};
use crate::celery::event::{CeleryEvent, EventKind, TaskFields, WorkerFields};
use crate::celery::scan::{self, Next, Number, ScanError, Scanner};

/// The exchange Celery publishes events to (`event_exchange` default).
pub const EVENT_EXCHANGE: &str = "celeryev";

/// Why a payload (or one element of a list body) could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is not a kombu envelope (not JSON, truncated, missing `body`/`properties`, …).
    #[error("malformed envelope: {0}")]
    MalformedEnvelope(#[source] ScanError),
    /// A kombu envelope for another exchange (e.g. `celery.pidbox` remote control).
    #[error("not a Celery event: exchange {} (expected \"celeryev\")", OptStr(.exchange))]
    NotAnEvent { exchange: Option<String> },
    /// The envelope has a `compression` header.
    #[error("compressed body (compression {compression:?}) is not supported for events")]
    Compressed { compression: String },
    /// `properties.body_encoding` is neither `base64` nor `utf-8`/null.
    #[error("unsupported body_encoding {0:?}")]
    UnsupportedBodyEncoding(String),
    /// `body_encoding` is base64 but the body is not valid standard base64.
    #[error("body is not valid base64: {0}")]
    BadBase64(#[source] Base64Error),
    /// Pickle-serialized events (`event_serializer='pickle'`); never unpickled.
    #[error("pickle-serialized event body (content-type {content_type:?}) is not decoded; configure event_serializer='json'")]
    Pickle { content_type: String },
    /// msgpack-serialized events.
    #[error("msgpack-serialized event body (content-type {content_type:?}) is not supported; configure event_serializer='json'")]
    Msgpack { content_type: String },
    /// YAML-serialized events.
    #[error("yaml-serialized event body (content-type {content_type:?}) is not supported; configure event_serializer='json'")]
    Yaml { content_type: String },
    /// Any other (or a missing) content type.
    #[error("unsupported content-type {}", OptStr(.content_type))]
    UnsupportedContentType { content_type: Option<String> },
    /// The (decoded) body is not valid JSON: syntax error, truncation, not UTF-8, nesting too deep.
    #[error("malformed event body: {0}")]
    MalformedBody(#[source] ScanError),
    /// One event (or list element) is not a valid event: not an object, or a field of the wrong type.
    #[error("malformed event{}: {detail}", At(.index))]
    MalformedEvent {
        /// Index in a list body; `None` for a single-object body.
        index: Option<usize>,
        detail: String,
    },
    /// One event lacks a required field (`type`, `timestamp`, or `uuid` for task events).
    #[error("event{}{}: missing required field `{field}`", At(.index), TypeSuffix(.event_type))]
    MissingField {
        /// Index in a list body; `None` for a single-object body.
        index: Option<usize>,
        field: &'static str,
        /// The event's `type`, when known.
        event_type: Option<String>,
    },
}

impl DecodeError {
    /// Short stable snake_case label, for a `reason` counter label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MalformedEnvelope(_) => "malformed_envelope",
            Self::NotAnEvent { .. } => "not_an_event",
            Self::Compressed { .. } => "compressed",
            Self::UnsupportedBodyEncoding(_) => "unsupported_body_encoding",
            Self::BadBase64(_) => "bad_base64",
            Self::Pickle { .. } => "pickle",
            Self::Msgpack { .. } => "msgpack",
            Self::Yaml { .. } => "yaml",
            Self::UnsupportedContentType { .. } => "unsupported_content_type",
            Self::MalformedBody(_) => "malformed_body",
            Self::MalformedEvent { .. } => "malformed_event",
            Self::MissingField { .. } => "missing_field",
        }
    }
}

struct OptStr<'a>(&'a Option<String>);
impl fmt::Display for OptStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "{s:?}"),
            None => f.write_str("<missing>"),
        }
    }
}

struct At<'a>(&'a Option<usize>);
impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(i) => write!(f, " (list element {i})"),
            None => Ok(()),
        }
    }
}

struct TypeSuffix<'a>(&'a Option<String>);
impl fmt::Display for TypeSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, " of type {t:?}"),
            None => Ok(()),
        }
    }
}

/// Outcome of decoding one envelope that was (at least partly) usable.
#[derive(Debug, Default)]
#[must_use = "`dropped` reports list elements that were skipped"]
pub struct Decoded {
    /// How many events were appended to `out`.
    pub appended: usize,
    /// List elements that were skipped, each a [`DecodeError::MalformedEvent`] or
    /// [`DecodeError::MissingField`] with its index. Empty (no allocation) in the normal case.
    pub dropped: Vec<DecodeError>,
}

impl Decoded {
    /// `true` when nothing was dropped.
    pub fn is_complete(&self) -> bool {
        self.dropped.is_empty()
    }
}

/// Decode one pub/sub payload (a kombu envelope) into events appended to `out`.
///
/// Returns how many were appended plus the list elements that were skipped (see the module
/// docs, "Partially bad lists"). On `Err` nothing is appended. Never panics.
pub fn decode_envelope(data: &[u8], out: &mut Vec<CeleryEvent>) -> Result<Decoded, DecodeError> {
    let env = Envelope::parse(data).map_err(DecodeError::MalformedEnvelope)?;
    let missing = |what| {
        DecodeError::MalformedEnvelope(ScanError {
            pos: data.len(),
            what,
        })
    };
    let Some(body) = env.body else {
        return Err(missing("missing field `body`"));
    };
    let Some(properties) = env.properties else {
        return Err(missing("missing field `properties`"));
    };

    let exchange = properties.exchange;
    match &exchange {
        Some(x) if **x == *EVENT_EXCHANGE.as_bytes() => {}
        _ => {
            return Err(DecodeError::NotAnEvent {
                exchange: exchange.map(|x| lossy(&x)),
            })
        }
    }

    let (header_host, compression) = match &env.headers {
        Some(h) => (h.hostname.as_str(), &h.compression),
        None => (None, &Val::Absent),
    };
    match compression {
        Val::Absent | Val::Null => {}
        other => {
            return Err(DecodeError::Compressed {
                compression: other
                    .as_str()
                    .map_or_else(|| other.kind().to_owned(), str::to_owned),
            })
        }
    }

    let base64 = match properties.body_encoding.as_deref() {
        None => false,
        Some(e) if e.eq_ignore_ascii_case(b"base64") => true,
        Some(e) if e.eq_ignore_ascii_case(b"utf-8") || e.eq_ignore_ascii_case(b"utf8") => false,
        Some(e) => return Err(DecodeError::UnsupportedBodyEncoding(lossy(e))),
    };

    check_content_type(env.content_type.as_deref())?;

    let start = out.len();
    let result = if base64 {
        with_buffer(|buf| {
            b64::decode_into(&body, buf).map_err(DecodeError::BadBase64)?;
            decode_body(buf, header_host, out)
        })
    } else {
        decode_body(&body, header_host, out)
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// What a transport without kombu's envelope (AMQP) carries beside the body: the message
/// properties and application headers the decoder reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct BareMeta<'a> {
    /// The `content_type` property.
    pub content_type: Option<&'a [u8]>,
    /// The `content_encoding` property (`utf-8` for JSON).
    pub content_encoding: Option<&'a [u8]>,
    /// The `compression` application header, when present.
    pub compression: Option<&'a str>,
    /// The `hostname` application header (the sender), used when an event lacks `hostname`.
    pub hostname: Option<&'a str>,
}

/// Decode one message body that is the event JSON itself (AMQP: no kombu envelope, no base64;
/// `task.multi` is a JSON list), with its properties in `meta`. Same steps, errors and
/// partial-list rule as [`decode_envelope`] from step 3 on; the caller has already checked the
/// exchange. On `Err` nothing is appended. Never panics.
pub fn decode_bare(
    body: &[u8],
    meta: &BareMeta<'_>,
    out: &mut Vec<CeleryEvent>,
) -> Result<Decoded, DecodeError> {
    if let Some(c) = meta.compression {
        return Err(DecodeError::Compressed {
            compression: c.to_owned(),
        });
    }
    check_content_type(meta.content_type)?;
    match meta.content_encoding {
        None => {}
        Some(e) if e.eq_ignore_ascii_case(b"utf-8") || e.eq_ignore_ascii_case(b"utf8") => {}
        Some(e) => return Err(DecodeError::UnsupportedBodyEncoding(lossy(e))),
    }
    let start = out.len();
    let result = decode_body(body, meta.hostname, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_content_type(ct: Option<&[u8]>) -> Result<(), DecodeError> {
    let Some(raw) = ct else {
        return Err(DecodeError::UnsupportedContentType { content_type: None });
    };
    let mime = raw
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if mime.eq_ignore_ascii_case(b"application/json") {
        return Ok(());
    }
    let content_type = lossy(raw);
    let is = |names: &[&str]| {
        names
            .iter()
            .any(|n| mime.eq_ignore_ascii_case(n.as_bytes()))
    };
    Err(
        if is(&[
            "application/x-python-serialize",
            "application/python-pickle",
        ]) {
            DecodeError::Pickle { content_type }
        } else if is(&[
            "application/x-msgpack",
            "application/msgpack",
            "application/vnd.msgpack",
        ]) {
            DecodeError::Msgpack { content_type }
        } else if is(&[
            "application/x-yaml",
            "application/yaml",
            "text/yaml",
            "text/x-yaml",
        ]) {
            DecodeError::Yaml { content_type }
        } else {
            DecodeError::UnsupportedContentType {
                content_type: Some(content_type),
            }
        },
    )
}

thread_local! {
    static BUF: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Above this capacity the per-thread buffer is released instead of kept.
const MAX_KEPT_BUFFER: usize = 64 * 1024;

/// Run `f` with a cleared, reusable per-thread byte buffer.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BUF.with(Cell::take);
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= MAX_KEPT_BUFFER {
        BUF.with(|c| c.set(buf));
    }
    r
}

fn decode_body(
    body: &[u8],
    header_host: Option<&str>,
    out: &mut Vec<CeleryEvent>,
) -> Result<Decoded, DecodeError> {
    let start = out.len();
    let mut sink = Sink {
        header_host,
        out,
        dropped: Vec::new(),
    };
    let mut s = Scanner::new(body);
    let single = sink
        .body(&mut s)
        .and_then(|single| s.end().map(|()| single))
        .map_err(DecodeError::MalformedBody)?;
    let mut dropped = sink.dropped;
    if single {
        if let Some(e) = dropped.pop() {
            return Err(e);
        }
    }
    Ok(Decoded {
        appended: out.len() - start,
        dropped,
    })
}

// ---------------------------------------------------------------------------------------------
// Envelope (borrowed)

/// The envelope fields the decoder reads; everything else is skipped (syntax-checked).
#[derive(Default)]
struct Envelope<'a> {
    body: Option<Cow<'a, [u8]>>,
    content_type: Option<Cow<'a, [u8]>>,
    headers: Option<Headers<'a>>,
    properties: Option<Properties<'a>>,
}

#[derive(Default)]
struct Headers<'a> {
    hostname: Val<'a>,
    compression: Val<'a>,
}

/// `properties`, with `delivery_info.exchange` flattened in.
#[derive(Default)]
struct Properties<'a> {
    body_encoding: Option<Cow<'a, [u8]>>,
    exchange: Option<Cow<'a, [u8]>>,
}

impl<'a> Envelope<'a> {
    /// Strings are taken as bytes (no UTF-8 check): the base64 decoder and the body's parser
    /// check the body anyway. A duplicated key: the last one wins. `null` reads as absent.
    fn parse(data: &'a [u8]) -> scan::Result<Self> {
        let mut s = Scanner::new(data);
        let mut env = Envelope::default();
        s.object(|s, key| {
            match key {
                b"body" => env.body = opt_bytes(s)?,
                b"content-type" => env.content_type = opt_bytes(s)?,
                b"headers" => {
                    env.headers = if s.null()? {
                        None
                    } else {
                        let mut h = Headers::default();
                        s.object(|s, key| match key {
                            b"hostname" => Val::parse(s, 0).map(|v| h.hostname = v),
                            b"compression" => Val::parse(s, 0).map(|v| h.compression = v),
                            _ => s.skip(),
                        })?;
                        Some(h)
                    }
                }
                b"properties" => {
                    env.properties = if s.null()? {
                        None
                    } else {
                        let mut p = Properties::default();
                        s.object(|s, key| {
                            match key {
                                b"body_encoding" => p.body_encoding = opt_bytes(s)?,
                                // A later `delivery_info` replaces an earlier one entirely.
                                b"delivery_info" => {
                                    p.exchange = None;
                                    if !s.null()? {
                                        s.object(|s, key| match key {
                                            b"exchange" => opt_bytes(s).map(|x| p.exchange = x),
                                            _ => s.skip(),
                                        })?;
                                    }
                                }
                                _ => s.skip()?,
                            }
                            Ok(())
                        })?;
                        Some(p)
                    }
                }
                _ => s.skip()?,
            }
            Ok(())
        })?;
        s.end()?;
        Ok(env)
    }
}

/// A string as bytes, or `null`.
fn opt_bytes<'a>(s: &mut Scanner<'a>) -> scan::Result<Option<Cow<'a, [u8]>>> {
    if s.null()? {
        return Ok(None);
    }
    s.string_bytes().map(Some)
}

// ---------------------------------------------------------------------------------------------
// Lenient JSON values: accept any JSON value without erroring, remember what it was.

/// One JSON value of a known field, captured without type errors (only syntax errors fail).
#[derive(Debug, Default)]
enum Val<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    /// An array of exactly three numbers (`loadavg`).
    Floats3([f64; 3]),
    /// Any other array or object; the payload is its kind for error messages.
    Other(&'static str),
}

impl<'a> Val<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Val::Absent => "nothing",
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::U64(_) | Val::I64(_) => "integer",
            Val::F64(_) => "float",
            Val::Str(_) => "string",
            Val::Floats3(_) => "array",
            Val::Other(k) => k,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            Val::U64(n) => Some(n as f64),
            Val::I64(n) => Some(n as f64),
            Val::F64(n) => Some(n),
            _ => None,
        }
    }
}

impl<'a> Val<'a> {
    /// Reads one value of a known field. Only syntax errors (and nesting deeper than
    /// [`scan::MAX_DEPTH`]) fail; any JSON value is captured as what it is.
    fn parse(s: &mut Scanner<'a>, depth: usize) -> scan::Result<Self> {
        Ok(match s.peek()? {
            Next::String => Val::Str(s.string()?),
            Next::Number => match s.number()? {
                Number::U64(n) => Val::U64(n),
                Number::I64(n) => Val::I64(n),
                Number::F64(n) => Val::F64(n),
            },
            Next::Null => {
                s.null()?;
                Val::Null
            }
            Next::Bool => Val::Bool(s.bool()?),
            Next::Array => {
                let depth = deeper(s, depth)?;
                let mut nums = [0.0; 3];
                let mut all_numbers = true;
                let mut n = 0;
                s.array(|s, i| {
                    let v = Val::parse(s, depth)?;
                    match v.as_f64() {
                        Some(x) if i < 3 => nums[i] = x,
                        _ => all_numbers = false,
                    }
                    n = i + 1;
                    Ok(())
                })?;
                if all_numbers && n == 3 {
                    Val::Floats3(nums)
                } else {
                    Val::Other("array")
                }
            }
            Next::Object => {
                // kombu's JSON encoder wraps non-JSON types as {"__type__": .., "__value__": ..}.
                let depth = deeper(s, depth)?;
                let mut has_type = false;
                let mut value = None;
                let mut other_keys = false;
                s.object(|s, key| {
                    match key {
                        b"__type__" => {
                            has_type = true;
                            s.skip()?;
                        }
                        b"__value__" => value = Some(Val::parse(s, depth)?),
                        _ => {
                            other_keys = true;
                            s.skip()?;
                        }
                    }
                    Ok(())
                })?;
                match value {
                    Some(v) if has_type && !other_keys => v,
                    _ => Val::Other("object"),
                }
            }
        })
    }
}

/// One more level of nesting, or an error past [`scan::MAX_DEPTH`].
fn deeper(s: &Scanner<'_>, depth: usize) -> scan::Result<usize> {
    if depth >= scan::MAX_DEPTH {
        return Err(ScanError {
            pos: s.pos(),
            what: "nesting too deep",
        });
    }
    Ok(depth + 1)
}

// ---------------------------------------------------------------------------------------------
// Event fields

macro_rules! event_keys {
    ($($name:literal / $field:ident,)*) => {
        /// Every known field of one event, as captured (not yet type-checked).
        #[derive(Default)]
        struct RawEvent<'a> { $($field: Val<'a>,)* }

        impl<'a> RawEvent<'a> {
            /// Reads one event object: known keys are captured (the last of duplicates wins),
            /// unknown ones skipped whatever their content.
            fn parse(s: &mut Scanner<'a>) -> scan::Result<Self> {
                let mut raw = RawEvent::default();
                s.object(|s, key| {
                    match key {
                        $($name => raw.$field = Val::parse(s, 0)?,)*
                        _ => s.skip()?,
                    }
                    Ok(())
                })?;
                Ok(raw)
            }
        }
    };
}

event_keys! {
    b"type" / type_,
    b"hostname" / hostname,
    b"timestamp" / timestamp,
    b"utcoffset" / utcoffset,
    b"pid" / pid,
    b"clock" / clock,
    b"uuid" / uuid,
    b"name" / name,
    b"args" / args,
    b"kwargs" / kwargs,
    b"retries" / retries,
    b"eta" / eta,
    b"expires" / expires,
    b"root_id" / root_id,
    b"parent_id" / parent_id,
    b"queue" / queue,
    b"exchange" / exchange,
    b"routing_key" / routing_key,
    b"result" / result,
    b"runtime" / runtime,
    b"exception" / exception,
    b"traceback" / traceback,
    b"terminated" / terminated,
    b"signum" / signum,
    b"expired" / expired,
    b"requeue" / requeue,
    b"freq" / freq,
    b"active" / active,
    b"processed" / processed,
    b"loadavg" / loadavg,
    b"sw_ident" / sw_ident,
    b"sw_ver" / sw_ver,
    b"sw_sys" / sw_sys,
}

/// Why one event could not be built (turned into a [`DecodeError`] with its index).
enum EventError {
    NotAnObject(&'static str),
    Missing(&'static str),
    WrongType {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
}

fn wrong(field: &'static str, expected: &'static str, v: &Val<'_>) -> EventError {
    EventError::WrongType {
        field,
        expected,
        got: v.kind(),
    }
}

fn opt_string(v: Val<'_>, field: &'static str) -> Result<Option<String>, EventError> {
    match v {
        Val::Absent | Val::Null => Ok(None),
        Val::Str(s) => Ok(Some(s.into_owned())),
        other => Err(wrong(field, "string", &other)),
    }
}

fn opt_f64(v: &Val<'_>, field: &'static str) -> Result<Option<f64>, EventError> {
    match v {
        Val::Absent | Val::Null => Ok(None),
        other => other
            .as_f64()
            .map(Some)
            .ok_or_else(|| wrong(field, "number", other)),
    }
}

/// Largest integer an f64 holds exactly.
const F64_EXACT_INT: f64 = 9_007_199_254_740_992.0;

fn opt_u64(v: &Val<'_>, field: &'static str) -> Result<Option<u64>, EventError> {
    const EXPECTED: &str = "non-negative integer";
    match *v {
        Val::Absent | Val::Null => Ok(None),
        Val::U64(n) => Ok(Some(n)),
        // Integral floats (e.g. `7.0`) are accepted; the cast is exact below 2^53.
        Val::F64(x) if x.fract() == 0.0 && (0.0..=F64_EXACT_INT).contains(&x) => Ok(Some(x as u64)),
        _ => Err(wrong(field, EXPECTED, v)),
    }
}

fn opt_u32(v: &Val<'_>, field: &'static str) -> Result<Option<u32>, EventError> {
    match opt_u64(v, field)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| EventError::WrongType {
                field,
                expected: "32-bit unsigned integer",
                got: "larger integer",
            }),
    }
}

fn opt_bool(v: &Val<'_>, field: &'static str) -> Result<Option<bool>, EventError> {
    match *v {
        Val::Absent | Val::Null => Ok(None),
        Val::Bool(b) => Ok(Some(b)),
        _ => Err(wrong(field, "bool", v)),
    }
}

fn opt_signum(v: Val<'_>) -> Result<Option<String>, EventError> {
    match v {
        Val::Absent | Val::Null => Ok(None),
        Val::Str(s) => Ok(Some(s.into_owned())),
        Val::U64(n) => Ok(Some(n.to_string())),
        Val::I64(n) => Ok(Some(n.to_string())),
        other => Err(wrong("signum", "integer or string", &other)),
    }
}

fn opt_loadavg(v: &Val<'_>) -> Result<Option<[f64; 3]>, EventError> {
    match *v {
        Val::Absent | Val::Null => Ok(None),
        Val::Floats3(a) => Ok(Some(a)),
        _ => Err(wrong("loadavg", "array of 3 numbers", v)),
    }
}

impl<'a> RawEvent<'a> {
    /// Type-check and convert into an owned event. Returns the `type` (if it was readable)
    /// alongside an error, for the error message.
    fn build(self, header_host: Option<&str>) -> Result<CeleryEvent, (EventError, Option<String>)> {
        let RawEvent {
            type_,
            hostname,
            timestamp,
            utcoffset,
            pid,
            clock,
            uuid,
            name,
            args,
            kwargs,
            retries,
            eta,
            expires,
            root_id,
            parent_id,
            queue,
            exchange,
            routing_key,
            result,
            runtime,
            exception,
            traceback,
            terminated,
            signum,
            expired,
            requeue,
            freq,
            active,
            processed,
            loadavg,
            sw_ident,
            sw_ver,
            sw_sys,
        } = self;

        let type_name = match type_ {
            Val::Str(s) => s,
            Val::Absent | Val::Null => return Err((EventError::Missing("type"), None)),
            other => return Err((wrong("type", "string", &other), None)),
        };
        let kind = EventKind::from_type(&type_name);
        let with_type = |e: EventError| (e, Some(type_name.to_string()));

        let build = || -> Result<CeleryEvent, EventError> {
            let timestamp = match timestamp {
                Val::Absent | Val::Null => return Err(EventError::Missing("timestamp")),
                ref other => other
                    .as_f64()
                    .ok_or_else(|| wrong("timestamp", "number", other))?,
            };
            let hostname = match hostname {
                Val::Str(s) => s.into_owned(),
                Val::Absent | Val::Null => header_host.unwrap_or_default().to_owned(),
                other => return Err(wrong("hostname", "string", &other)),
            };
            let utcoffset = opt_f64(&utcoffset, "utcoffset")?;
            let pid = opt_u32(&pid, "pid")?;
            let clock = opt_u64(&clock, "clock")?;

            let task = if kind.is_task() {
                let uuid = match uuid {
                    Val::Str(s) if !s.is_empty() => s.into_owned(),
                    Val::Absent | Val::Null | Val::Str(_) => {
                        return Err(EventError::Missing("uuid"))
                    }
                    other => return Err(wrong("uuid", "string", &other)),
                };
                Some(TaskFields {
                    uuid,
                    name: opt_string(name, "name")?,
                    args: opt_string(args, "args")?,
                    kwargs: opt_string(kwargs, "kwargs")?,
                    retries: opt_u32(&retries, "retries")?,
                    eta: opt_string(eta, "eta")?,
                    expires: opt_string(expires, "expires")?,
                    root_id: opt_string(root_id, "root_id")?,
                    parent_id: opt_string(parent_id, "parent_id")?,
                    queue: opt_string(queue, "queue")?,
                    exchange: opt_string(exchange, "exchange")?,
                    routing_key: opt_string(routing_key, "routing_key")?,
                    result: opt_string(result, "result")?,
                    runtime: opt_f64(&runtime, "runtime")?,
                    exception: opt_string(exception, "exception")?,
                    traceback: opt_string(traceback, "traceback")?,
                    terminated: opt_bool(&terminated, "terminated")?,
                    signum: opt_signum(signum)?,
                    expired: opt_bool(&expired, "expired")?,
                    requeue: opt_bool(&requeue, "requeue")?,
                })
            } else {
                None
            };

            let worker = if kind.is_worker() {
                Some(WorkerFields {
                    freq: opt_f64(&freq, "freq")?,
                    active: opt_u64(&active, "active")?,
                    processed: opt_u64(&processed, "processed")?,
                    loadavg: opt_loadavg(&loadavg)?,
                    sw_ident: opt_string(sw_ident, "sw_ident")?,
                    sw_ver: opt_string(sw_ver, "sw_ver")?,
                    sw_sys: opt_string(sw_sys, "sw_sys")?,
                })
            } else {
                None
            };

            Ok(CeleryEvent {
                kind,
                type_name: String::new(),
                hostname,
                timestamp,
                utcoffset,
                pid,
                clock,
                task,
                worker,
            })
        };

        match build() {
            Ok(mut ev) => {
                ev.type_name = type_name.into_owned();
                Ok(ev)
            }
            Err(e) => Err(with_type(e)),
        }
    }
}

fn to_decode_error(index: Option<usize>, e: EventError, event_type: Option<String>) -> DecodeError {
    match e {
        EventError::Missing(field) => DecodeError::MissingField {
            index,
            field,
            event_type,
        },
        EventError::NotAnObject(got) => DecodeError::MalformedEvent {
            index,
            detail: format!("expected an event object, got {got}"),
        },
        EventError::WrongType {
            field,
            expected,
            got,
        } => DecodeError::MalformedEvent {
            index,
            detail: match event_type {
                Some(t) => format!("{t:?}: field `{field}`: expected {expected}, got {got}"),
                None => format!("field `{field}`: expected {expected}, got {got}"),
            },
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Body: one event object, or a list of them. Streams straight into `out`.

struct Sink<'s> {
    header_host: Option<&'s str>,
    out: &'s mut Vec<CeleryEvent>,
    dropped: Vec<DecodeError>,
}

impl Sink<'_> {
    /// Reads the whole body value; `true` when it was a single value (not a list).
    fn body(&mut self, s: &mut Scanner<'_>) -> scan::Result<bool> {
        match s.peek()? {
            Next::Object => {
                self.event(s, None)?;
                Ok(true)
            }
            Next::Array => {
                s.array(|s, index| match s.peek()? {
                    Next::Object => self.event(s, Some(index)),
                    Next::Array => {
                        s.skip()?;
                        self.not_an_object(Some(index), "array");
                        Ok(())
                    }
                    _ => self.scalar(s, Some(index)),
                })?;
                Ok(false)
            }
            _ => {
                self.scalar(s, None)?;
                Ok(true)
            }
        }
    }

    fn event(&mut self, s: &mut Scanner<'_>, index: Option<usize>) -> scan::Result<()> {
        let raw = RawEvent::parse(s)?;
        match raw.build(self.header_host) {
            Ok(ev) => self.out.push(ev),
            Err((e, t)) => self.dropped.push(to_decode_error(index, e, t)),
        }
        Ok(())
    }

    /// A scalar where an event was expected: read (so its syntax is checked), then recorded
    /// as "not an object".
    fn scalar(&mut self, s: &mut Scanner<'_>, index: Option<usize>) -> scan::Result<()> {
        let v = Val::parse(s, 0)?;
        self.not_an_object(index, v.kind());
        Ok(())
    }

    fn not_an_object(&mut self, index: Option<usize>, got: &'static str) {
        self.dropped
            .push(to_decode_error(index, EventError::NotAnObject(got), None));
    }
}
#[cfg(test)]
mod tests;
