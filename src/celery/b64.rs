//! Standard base64 decoding (RFC 4648 alphabet, `=` padding required and canonical, no
//! whitespace) for the envelope's `body`, the form kombu's Redis transport writes.
//!
//! Table driven: four 256-entry tables give each symbol's six bits already shifted to their
//! place in a 24-bit group, and an invalid symbol sets a high bit, so a group of four symbols
//! costs four lookups, three ORs and one shared validity test. It accepts and refuses exactly
//! what the `base64` crate's `STANDARD` engine does (a unit test compares the two on valid,
//! mutated and random inputs) and yields the same bytes.

/// Set (above bit 23) by every invalid symbol's table entry.
const INVALID: u32 = 0xFF00_0000;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

const fn table(shift: u32) -> [u32; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = (i as u32) << shift;
        i += 1;
    }
    t
}

static T0: [u32; 256] = table(18);
static T1: [u32; 256] = table(12);
static T2: [u32; 256] = table(6);
static T3: [u32; 256] = table(0);

/// Why a body is not valid standard base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("length {0} is not a multiple of 4")]
    Length(usize),
    #[error("invalid symbol {byte:#04x} at offset {offset}")]
    Symbol { offset: usize, byte: u8 },
    #[error("non-zero trailing bits in the last symbol (offset {0})")]
    TrailingBits(usize),
}

/// One group of four symbols as 24 bits (with [`INVALID`] bits set if any symbol is invalid).
#[inline(always)]
fn group(s: &[u8]) -> u32 {
    T0[usize::from(s[0])] | T1[usize::from(s[1])] | T2[usize::from(s[2])] | T3[usize::from(s[3])]
}

/// The first invalid symbol of `chunk`, which starts at `offset` in the input.
#[cold]
fn bad_symbol(chunk: &[u8], offset: usize) -> Base64Error {
    let at = chunk
        .iter()
        .position(|&b| T3[usize::from(b)] & INVALID != 0)
        .unwrap_or(0);
    Base64Error::Symbol {
        offset: offset + at,
        byte: chunk.get(at).copied().unwrap_or(0),
    }
}

/// Decodes `input` and appends the bytes to `out`. On error `out` is left as it was.
pub fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), Base64Error> {
    let start = out.len();
    let r = decode_inner(input, out, start);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn decode_inner(input: &[u8], out: &mut Vec<u8>, start: usize) -> Result<(), Base64Error> {
    if input.len() % 4 != 0 {
        return Err(Base64Error::Length(input.len()));
    }
    let Some(last_at) = input.len().checked_sub(4) else {
        return Ok(()); // empty
    };
    let (body, last) = input.split_at(last_at);
    out.resize(start + body.len() / 4 * 3, 0);
    let dst = &mut out[start..];

    // Two groups (8 symbols → 6 bytes) per step, one validity test for both.
    let mut src8 = body.chunks_exact(8);
    let mut dst6 = dst.chunks_exact_mut(6);
    let mut offset = 0;
    for (s, d) in (&mut src8).zip(&mut dst6) {
        let a = group(&s[..4]);
        let b = group(&s[4..]);
        if (a | b) & INVALID != 0 {
            return Err(bad_symbol(s, offset));
        }
        let ab = (u64::from(a) << 24 | u64::from(b)).to_be_bytes();
        d.copy_from_slice(&ab[2..]);
        offset += 8;
    }
    let rest = src8.remainder();
    if !rest.is_empty() {
        let n = group(rest);
        if n & INVALID != 0 {
            return Err(bad_symbol(rest, offset));
        }
        let d = dst6.into_remainder();
        d.copy_from_slice(&n.to_be_bytes()[1..]);
    }

    // The last group carries the padding.
    let pad = match last {
        [.., b'=', b'='] => 2,
        [.., b'='] => 1,
        _ => 0,
    };
    let n = match pad {
        0 => group(last),
        1 => T0[usize::from(last[0])] | T1[usize::from(last[1])] | T2[usize::from(last[2])],
        _ => T0[usize::from(last[0])] | T1[usize::from(last[1])],
    };
    if n & INVALID != 0 {
        return Err(bad_symbol(&last[..4 - pad], last_at));
    }
    // The bits below the last whole byte must be zero (canonical encoding).
    let trailing = [0, 0xff, 0xffff][pad];
    if n & trailing != 0 {
        return Err(Base64Error::TrailingBits(last_at + 3 - pad));
    }
    out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn ours(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
        let mut out = b"keep".to_vec();
        let r = decode_into(input, &mut out);
        match r {
            Ok(()) => Ok(out.split_off(4)),
            Err(e) => {
                assert_eq!(out, b"keep", "untouched on error");
                Err(e)
            }
        }
    }

    fn agree(input: &[u8]) {
        let theirs = base64::engine::general_purpose::STANDARD.decode(input);
        match (ours(input), theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{:?}", String::from_utf8_lossy(input)),
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "{:?}: ours {a:?}, base64 crate {b:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }

    /// xorshift64: deterministic pseudo-random bytes for the differential tests.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(ours(b""), Ok(vec![]));
        assert_eq!(ours(b"eA=="), Ok(b"x".to_vec()));
        assert_eq!(ours(b"eHk="), Ok(b"xy".to_vec()));
        assert_eq!(ours(b"eHl6"), Ok(b"xyz".to_vec()));
        assert_eq!(ours(b"+/+/"), Ok(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(ours(b"eA="), Err(Base64Error::Length(3)));
        assert_eq!(
            ours(b"eHl6e!=="),
            Err(Base64Error::Symbol {
                offset: 5,
                byte: b'!'
            })
        );
        assert_eq!(ours(b"eB=="), Err(Base64Error::TrailingBits(1)));
        assert_eq!(ours(b"eHl="), Err(Base64Error::TrailingBits(2)));
        for bad in [
            &b"===="[..],
            b"e===",
            b"eA==eA==",
            b"eA=A",
            b"eHl6\neHl6",
            b"eHl6eHl6eH=6",
        ] {
            assert!(ours(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn same_as_base64_crate() {
        let mut next = rng(0x9E37_79B9_7F4A_7C15);
        let engine = base64::engine::general_purpose::STANDARD;
        for len in 0..80 {
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let enc = engine.encode(&data);
            agree(enc.as_bytes());
            // Every single-symbol corruption, including padding and alphabet edges.
            let mut buf = enc.into_bytes();
            for i in 0..buf.len() {
                for b in [b'=', b'A', b'/', b'+', b'z', b'-', b'_', 0, 0xff, b' '] {
                    let orig = buf[i];
                    buf[i] = b;
                    agree(&buf);
                    buf[i] = orig;
                }
            }
            agree(&buf[..buf.len().saturating_sub(1)]);
        }
        // Random strings over the alphabet plus `=`: mostly invalid in varied ways.
        let symbols = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
        for _ in 0..20_000 {
            let len = (next() % 13) as usize;
            let s: Vec<u8> = (0..len)
                .map(|_| symbols[(next() % symbols.len() as u64) as usize])
                .collect();
            agree(&s);
        }
    }
}
