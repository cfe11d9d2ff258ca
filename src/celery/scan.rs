//! A small strict JSON scanner over a byte slice, built for the Celery envelope decoder.
//!
//! It owns the JSON syntax the decoder reads: whitespace, strings (found 16 bytes at a time
//! with SSE2 on x86_64, a word at a time elsewhere; borrowed raw when they hold no escape,
//! unescaped exactly otherwise; UTF-8 checked only when not all ASCII), numbers (integers as
//! `u64`/`i64`, the rest as `f64`, with serde_json's rules: `-0` and integers beyond 64 bits are
//! floats, a float that overflows to infinity is an error), the literals, objects read key by
//! key through a callback, arrays element by element, and skipping any value. It builds no
//! tree: the caller decides per key whether to read a value or skip it.
//!
//! Strictness: RFC 8259 grammar only (no comments, no trailing commas, no leading zeros, no
//! control characters inside strings, `\u` escapes with paired surrogates). A skipped value is
//! syntax-checked like a read one except that its strings are not checked for UTF-8 and its
//! numbers are not converted (as serde_json's `IgnoredAny` does). Skipping keeps its bracket
//! stack on the heap (one bit per level), so any nesting depth is skipped without recursion;
//! callers that recurse (reading nested values) bound their own depth with [`MAX_DEPTH`].

use std::borrow::Cow;

/// Nesting limit for values the caller reads recursively (serde_json's default is 128 too).
pub const MAX_DEPTH: usize = 128;

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };

    /// For 16 bytes: a bit per byte that is `"`, `\` or a control character (< 0x20), and a
    /// bit per byte above 0x7f.
    #[inline(always)]
    pub(super) fn special16(chunk: &[u8; 16]) -> (u32, u32) {
        // SAFETY: SSE2 is part of the x86_64 baseline (the intrinsics are only `unsafe`
        // because they are target-feature functions), and the unaligned load reads exactly
        // the 16 bytes `chunk` refers to.
        unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Unsigned `b < 0x20` is `max(b, 0x1f) == 0x1f`.
            let low = _mm_set1_epi8(0x1f);
            let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
            let hits = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), ctrl));
            (hits as u32, _mm_movemask_epi8(v) as u32)
        }
    }
}

/// A syntax error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {pos}")]
pub struct ScanError {
    /// Offset into the scanned slice.
    pub pos: usize,
    /// What was wrong.
    pub what: &'static str,
}

pub type Result<T> = std::result::Result<T, ScanError>;

/// A JSON number as read: integers that fit 64 bits stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    U64(u64),
    I64(i64),
    F64(f64),
}

/// The kind of the next value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

/// Cursor over one JSON text.
pub struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
}

const ONES: u64 = u64::MAX / 255;
const HIGHS: u64 = ONES << 7;

/// Bit 7 of each byte lane that is `"`, `\` or a control character (< 0x20). Lanes above the
/// first hit may hold false positives (borrows), the lowest set lane is exact.
#[inline(always)]
fn special_lanes(w: u64) -> u64 {
    let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (ctrl | quote | backslash) & HIGHS
}

impl<'a> Scanner<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Scanner { buf, pos: 0 }
    }

    /// Current byte offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    fn err<T>(&self, what: &'static str) -> Result<T> {
        Err(ScanError {
            pos: self.pos,
            what,
        })
    }

    #[inline]
    fn skip_ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    /// Skips whitespace and returns the next byte without consuming it.
    #[inline]
    fn peek_byte(&mut self) -> Option<u8> {
        self.skip_ws();
        self.buf.get(self.pos).copied()
    }

    /// Skips whitespace and tells what kind of value comes next.
    pub fn peek(&mut self) -> Result<Next> {
        match self.peek_byte() {
            Some(b'{') => Ok(Next::Object),
            Some(b'[') => Ok(Next::Array),
            Some(b'"') => Ok(Next::String),
            Some(b'-' | b'0'..=b'9') => Ok(Next::Number),
            Some(b't' | b'f') => Ok(Next::Bool),
            Some(b'n') => Ok(Next::Null),
            Some(_) => self.err("expected a value"),
            None => self.err("unexpected end of input, expected a value"),
        }
    }

    /// Only whitespace may follow.
    pub fn end(&mut self) -> Result<()> {
        match self.peek_byte() {
            None => Ok(()),
            Some(_) => self.err("trailing characters"),
        }
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<()> {
        if self
            .buf
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word))
        {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Reads `null` if it comes next; `false` (nothing consumed) otherwise.
    pub fn null(&mut self) -> Result<bool> {
        if self.peek_byte() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Reads `true` or `false`.
    pub fn bool(&mut self) -> Result<bool> {
        match self.peek_byte() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => self.err("expected a bool"),
        }
    }

    // ---- strings --------------------------------------------------------------------------

    /// Moves `pos` to the first `"`, `\` or control character at or after it (or to the end).
    /// Returns `true` when every byte it passed over is ASCII (it may say `false` for an ASCII
    /// run: it looks at whole blocks).
    ///
    /// On x86_64 the search goes 16 bytes at a time with SSE2 (part of the baseline); the
    /// word-at-a-time loop then only sees the last few bytes (elsewhere, all of them).
    #[inline(always)]
    fn find_special(&mut self) -> bool {
        let buf = self.buf;
        let mut i = self.pos;
        let mut seen = 0u64;
        #[cfg(target_arch = "x86_64")]
        {
            let mut high = 0u32;
            while let Some(chunk) = buf.get(i..i + 16) {
                let Ok(chunk) = <&[u8; 16]>::try_from(chunk) else {
                    break;
                };
                let (hits, h) = sse2::special16(chunk);
                if hits != 0 {
                    let at = hits.trailing_zeros();
                    self.pos = i + at as usize;
                    return (high | h & ((1u32 << at) - 1)) == 0;
                }
                high |= h;
                i += 16;
            }
            if high != 0 {
                seen = HIGHS;
            }
        }
        while let Some(chunk) = buf.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let w = u64::from_le_bytes(word);
            seen |= w;
            let hits = special_lanes(w);
            if hits != 0 {
                self.pos = i + (hits.trailing_zeros() / 8) as usize;
                return seen & HIGHS == 0;
            }
            i += 8;
        }
        self.find_special_tail(i, seen)
    }

    /// [`Scanner::find_special`] on the last few (< 8) bytes, one at a time.
    fn find_special_tail(&mut self, mut i: usize, mut seen: u64) -> bool {
        while let Some(&b) = self.buf.get(i) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            seen |= u64::from(b);
            i += 1;
        }
        self.pos = i;
        seen & HIGHS == 0
    }

    /// Reads a string (at `pos`, after whitespace) and returns its raw contents between the
    /// quotes, whether it holds escapes, and whether it is known to be all ASCII. Escapes are
    /// validated, not decoded.
    #[inline]
    fn raw_string(&mut self) -> Result<(&'a [u8], bool, bool)> {
        if self.peek_byte() != Some(b'"') {
            return self.err("expected a string");
        }
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            ascii &= self.find_special();
            match self.buf.get(self.pos) {
                Some(b'"') => {
                    let raw = &self.buf[start..self.pos];
                    self.pos += 1;
                    return Ok((raw, escaped, ascii));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    self.check_escape()?;
                }
                Some(_) => return self.err("control character in string"),
                None => return self.err("unexpected end of input in string"),
            }
        }
    }

    /// Validates the escape after a `\` (at `pos`) and moves past it.
    fn check_escape(&mut self) -> Result<()> {
        match self.buf.get(self.pos) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 1;
                Ok(())
            }
            Some(b'u') => {
                let ok = self
                    .buf
                    .get(self.pos + 1..self.pos + 5)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
                if !ok {
                    return self.err("invalid \\u escape");
                }
                self.pos += 5;
                Ok(())
            }
            Some(_) => self.err("invalid escape"),
            None => self.err("unexpected end of input in string"),
        }
    }

    /// Reads a string as bytes, unescaped; not checked for UTF-8.
    pub fn string_bytes(&mut self) -> Result<Cow<'a, [u8]>> {
        let start = self.pos;
        let (raw, escaped, _) = self.raw_string()?;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        unescape(raw).map(Cow::Owned).map_err(|what| ScanError {
            // Report at the opening quote: the escapes were syntactically valid.
            pos: start,
            what,
        })
    }

    /// Reads a string, unescaped and checked for UTF-8.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        let start = self.pos;
        let bad = |what| ScanError { pos: start, what };
        let (raw, escaped, ascii) = self.raw_string()?;
        if !escaped {
            if ascii {
                // SAFETY: `raw_string` saw every byte of `raw` and found none above 0x7f; an
                // all-ASCII byte string is valid UTF-8.
                return Ok(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(raw) }));
            }
            return std::str::from_utf8(raw)
                .map(Cow::Borrowed)
                .map_err(|_| bad("invalid UTF-8 in string"));
        }
        let bytes = unescape(raw).map_err(bad)?;
        if ascii {
            // SAFETY: the raw bytes were all ASCII and every escape decodes to ASCII or to a
            // `char`'s UTF-8 encoding, so the result is valid UTF-8.
            return Ok(Cow::Owned(unsafe { String::from_utf8_unchecked(bytes) }));
        }
        String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|_| bad("invalid UTF-8 in string"))
    }

    // ---- numbers --------------------------------------------------------------------------

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.buf.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Moves past a number (grammar only) and returns whether it had a fraction or exponent.
    fn number_span(&mut self) -> Result<bool> {
        if self.buf.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.buf.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        let mut float = false;
        if self.buf.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.err("invalid number: digit expected after `.`");
            }
            float = true;
        }
        if matches!(self.buf.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.buf.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number: digit expected in exponent");
            }
            float = true;
        }
        Ok(float)
    }

    /// Reads a number.
    pub fn number(&mut self) -> Result<Number> {
        self.skip_ws();
        let start = self.pos;
        let neg = self.buf.get(self.pos) == Some(&b'-');
        if neg {
            self.pos += 1;
        }
        // Decimal significand (integer and fraction digits) while it fits a u64.
        let mut m: u64 = 0;
        let mut exact = true;
        let mut digit = |m: &mut u64, d: u8| match m
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(d - b'0')))
        {
            Some(x) => *m = x,
            None => exact = false,
        };
        match self.buf.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = self.buf.get(self.pos) {
                    digit(&mut m, d);
                    self.pos += 1;
                }
            }
            _ => return self.err("invalid number"),
        }
        let mut float = false;
        let mut exp10: i64 = 0;
        if self.buf.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            let frac = self.pos;
            while let Some(&d @ b'0'..=b'9') = self.buf.get(self.pos) {
                digit(&mut m, d);
                exp10 -= 1;
                self.pos += 1;
            }
            if self.pos == frac {
                return self.err("invalid number: digit expected after `.`");
            }
            float = true;
        }
        if matches!(self.buf.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            let neg_exp = match self.buf.get(self.pos) {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let digits = self.pos;
            let mut e: i64 = 0;
            while let Some(&d @ b'0'..=b'9') = self.buf.get(self.pos) {
                e = e.saturating_mul(10).saturating_add(i64::from(d - b'0'));
                self.pos += 1;
            }
            if self.pos == digits {
                return self.err("invalid number: digit expected in exponent");
            }
            exp10 = exp10.saturating_add(if neg_exp { -e } else { e });
            float = true;
        }
        if exact && !float {
            if !neg {
                return Ok(Number::U64(m));
            }
            // `-0` and magnitudes beyond i64 become floats, as in serde_json.
            let n = (m as i64).wrapping_neg();
            if n < 0 {
                return Ok(Number::I64(n));
            }
            if m == 0 {
                return Ok(Number::F64(-0.0));
            }
        }
        // Exact fast path: significand and power of ten both exact in an f64, one rounding.
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        if exact && m <= 1 << 53 && (-22..=22).contains(&exp10) {
            let p = POW10[exp10.unsigned_abs() as usize];
            let x = if exp10 < 0 {
                m as f64 / p
            } else {
                m as f64 * p
            };
            return Ok(Number::F64(if neg { -x } else { x }));
        }
        // ASCII by construction (the grammar above admits only ASCII bytes).
        let text = &self.buf[start..self.pos];
        let parsed = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok());
        match parsed {
            Some(x) if x.is_finite() => Ok(Number::F64(x)),
            _ => Err(ScanError {
                pos: start,
                what: "number out of range",
            }),
        }
    }

    // ---- containers -----------------------------------------------------------------------

    /// Reads an object, calling `on_key` with the scanner positioned at each value; the callback
    /// must consume exactly that value (read it or [`Scanner::skip`] it). Keys are unescaped
    /// bytes, not checked for UTF-8.
    pub fn object(&mut self, mut on_key: impl FnMut(&mut Self, &[u8]) -> Result<()>) -> Result<()> {
        if self.peek_byte() != Some(b'{') {
            return self.err("expected an object");
        }
        self.pos += 1;
        if self.peek_byte() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.string_bytes()?;
            if self.peek_byte() != Some(b':') {
                return self.err("expected `:`");
            }
            self.pos += 1;
            on_key(self, &key)?;
            match self.peek_byte() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `}`"),
            }
        }
    }

    /// Reads an array, calling `on_element` with the scanner positioned at each element and its
    /// index; the callback must consume exactly that element.
    pub fn array(
        &mut self,
        mut on_element: impl FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        if self.peek_byte() != Some(b'[') {
            return self.err("expected an array");
        }
        self.pos += 1;
        if self.peek_byte() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            on_element(self, index)?;
            index += 1;
            match self.peek_byte() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("expected `,` or `]`"),
            }
        }
    }

    /// Moves past one value of any kind and depth, checking its syntax.
    pub fn skip(&mut self) -> Result<()> {
        // Open containers, innermost last: one bit per level, set for objects.
        let mut stack = Nesting::default();
        loop {
            // A value.
            match self.peek_byte() {
                Some(b'{') => {
                    self.pos += 1;
                    if self.peek_byte() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        stack.push(true);
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.peek_byte() == Some(b']') {
                        self.pos += 1;
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                Some(b'"') => {
                    self.raw_string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number_span()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(_) => return self.err("expected a value"),
                None => return self.err("unexpected end of input, expected a value"),
            }
            // After a value: close containers until one continues with `,`.
            loop {
                let Some(in_object) = stack.top() else {
                    return Ok(());
                };
                let close = if in_object { b'}' } else { b']' };
                match self.peek_byte() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.key()?;
                        }
                        break;
                    }
                    Some(c) if c == close => {
                        self.pos += 1;
                        stack.pop();
                    }
                    _ => {
                        return self.err(if in_object {
                            "expected `,` or `}`"
                        } else {
                            "expected `,` or `]`"
                        })
                    }
                }
            }
        }
    }

    /// A key and its `:` (inside a skipped object).
    fn key(&mut self) -> Result<()> {
        self.raw_string()?;
        if self.peek_byte() != Some(b':') {
            return self.err("expected `:`");
        }
        self.pos += 1;
        Ok(())
    }
}

/// Bit stack of open containers for [`Scanner::skip`]: the first 64 levels inline, deeper ones
/// on the heap.
#[derive(Default)]
struct Nesting {
    inline: u64,
    depth: usize,
    deep: Vec<bool>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.depth < 64 {
            self.inline = (self.inline & !(1 << self.depth)) | (u64::from(object) << self.depth);
        } else {
            self.deep.push(object);
        }
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 64 => Some(self.inline >> (d - 1) & 1 == 1),
            _ => self.deep.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 64 {
            self.deep.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

/// Decodes the escapes of a string's raw contents (already validated by
/// [`Scanner::raw_string`] apart from surrogate pairing). Lone surrogates are refused.
fn unescape(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + at]);
        i += at + 1;
        let Some(&c) = raw.get(i) else {
            return Err("invalid escape");
        };
        i += 1;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let hi = hex4(raw.get(i..i + 4))?;
                i += 4;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if raw.get(i..i + 2) != Some(b"\\u") {
                            return Err("lone leading surrogate in \\u escape");
                        }
                        let lo = hex4(raw.get(i + 2..i + 6))?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err("invalid trailing surrogate in \\u escape");
                        }
                        i += 6;
                        0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err("lone trailing surrogate in \\u escape"),
                    _ => u32::from(hi),
                };
                let ch = char::from_u32(code).ok_or("invalid \\u escape")?;
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
                continue;
            }
            _ => return Err("invalid escape"),
        };
        out.push(byte);
    }
    out.extend_from_slice(&raw[i..]);
    Ok(out)
}

fn hex4(h: Option<&[u8]>) -> std::result::Result<u16, &'static str> {
    let h = h.ok_or("invalid \\u escape")?;
    let mut n: u16 = 0;
    for &b in h {
        let d = (b as char).to_digit(16).ok_or("invalid \\u escape")?;
        n = n << 4 | d as u16;
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
