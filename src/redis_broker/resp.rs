//! RESP2, the Redis wire protocol, as far as celeriac's own Redis clients need it: commands out,
//! frames in, parsed straight out of a read buffer (bulk strings borrow from it).
//!
//! Everything read from the network is bounded: a frame (a pub/sub message with its channel
//! names, a reply) may not exceed `max` bytes, announced or received, and nesting is limited.
//! Past that the connection is out of step or hostile, and the reader says so
//! ([`RespError::TooLarge`]) instead of buffering without end. Arrays are parsed whatever their
//! length (so the reader never loses its place), but only the first [`KEEP_ELEMENTS`] elements
//! of one are kept: no reply celeriac reads has more.

/// Elements of an array kept in a [`Frame::Array`]; longer arrays are consumed and reported as
/// [`Frame::LongArray`].
pub const KEEP_ELEMENTS: usize = 64;
/// Arrays inside arrays, at most.
const MAX_DEPTH: usize = 8;

/// One RESP2 value, borrowing bulk strings from the read buffer.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<&'a [u8]>),
    /// An array of at most [`KEEP_ELEMENTS`]; the null array (`*-1`) is empty.
    Array(Vec<Frame<'a>>),
    /// An array with more elements than [`KEEP_ELEMENTS`] (their number): consumed, not kept.
    LongArray(usize),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RespError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("protocol error: a frame larger than {max} bytes (max_message_size_mib)")]
    TooLarge { max: usize },
}

/// Parses one frame from the start of `buf`: `Ok(Some((frame, length)))`, or `Ok(None)` when
/// `buf` holds only the beginning of one. A frame longer than `max` bytes is an error as soon as
/// its header says so or `buf` holds more than `max` bytes of it without its end.
pub fn parse(buf: &[u8], max: usize) -> Result<Option<(Frame<'_>, usize)>, RespError> {
    match frame(buf, 0, 0, max)? {
        Some((f, n)) if n > max => {
            let _ = f;
            Err(RespError::TooLarge { max })
        }
        Some(done) => Ok(Some(done)),
        // The header of a frame is a few bytes: anything this long without an end is not one.
        None if buf.len() > max => Err(RespError::TooLarge { max }),
        None => Ok(None),
    }
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let i = memchr::memmem::find(rest, b"\r\n")?;
    Some((&rest[..i], at + i + 2))
}

fn int(s: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Protocol("bad integer"))
}

fn frame(
    buf: &[u8],
    at: usize,
    depth: usize,
    max: usize,
) -> Result<Option<(Frame<'_>, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(RespError::Protocol("nesting too deep"));
    }
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    if !matches!(tag, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(RespError::Protocol("unknown frame type"));
    }
    let Some((l, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    Ok(Some(match tag {
        b'+' => (Frame::Simple(l), next),
        b'-' => (Frame::Error(l), next),
        b':' => (Frame::Int(int(l)?), next),
        b'$' => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Frame::Bulk(None), next)));
            }
            // Refused on the announcement: never wait for (and buffer) a bulk past the cap.
            if n as u64 > max as u64 {
                return Err(RespError::TooLarge { max });
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::Protocol("bulk string without its CRLF"));
            }
            (Frame::Bulk(Some(&buf[next..end])), end + 2)
        }
        _ => {
            let n = int(l)?;
            if n < 0 {
                return Ok(Some((Frame::Array(Vec::new()), next)));
            }
            // Each element takes at least 3 bytes (`:0\r\n` is 4): more than fit is a lie.
            if n as u64 > max as u64 / 3 {
                return Err(RespError::TooLarge { max });
            }
            let n = n as usize;
            let mut items = Vec::with_capacity(n.min(KEEP_ELEMENTS));
            let mut pos = next;
            for _ in 0..n {
                match frame(buf, pos, depth + 1, max)? {
                    Some((f, p)) => {
                        if n <= KEEP_ELEMENTS {
                            items.push(f);
                        }
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            if n > KEEP_ELEMENTS {
                (Frame::LongArray(n), pos)
            } else {
                (Frame::Array(items), pos)
            }
        }
    }))
}

/// A command as a RESP array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn parses_pmessage_and_partial_frames() {
        let msg = b"*4\r\n$8\r\npmessage\r\n$3\r\na/*\r\n$3\r\na/b\r\n$5\r\nhello\r\n";
        let (f, n) = parse(msg, MAX).unwrap().unwrap();
        assert_eq!(n, msg.len());
        assert_eq!(
            f,
            Frame::Array(vec![
                Frame::Bulk(Some(b"pmessage")),
                Frame::Bulk(Some(b"a/*")),
                Frame::Bulk(Some(b"a/b")),
                Frame::Bulk(Some(b"hello"))
            ])
        );
        for cut in 0..msg.len() {
            assert!(parse(&msg[..cut], MAX).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(parse(b":3\r\n", MAX).unwrap().unwrap().0, Frame::Int(3));
        assert!(parse(b"?x\r\n", MAX).is_err());
        assert!(parse(b"$x\r\n", MAX).is_err());
        assert!(
            parse(b"$1\r\nabc\r\n", MAX).is_err(),
            "bulk longer than announced"
        );
    }

    #[test]
    fn a_huge_bulk_is_refused_on_its_header() {
        // Seen: a pub/sub message announcing a 1 GiB payload was buffered while it trickled in.
        let msg = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1073741824\r\nxxxx";
        assert_eq!(
            parse(msg, 4 << 20).unwrap_err(),
            RespError::TooLarge { max: 4 << 20 }
        );
        assert_eq!(
            parse(b"$1073741824\r\n", 4 << 20).unwrap_err(),
            RespError::TooLarge { max: 4 << 20 }
        );
    }

    #[test]
    fn many_small_parts_past_the_cap_are_refused() {
        // Each bulk is small, the frame is not: refused once the buffer holds more than the cap.
        let mut msg = b"*50\r\n".to_vec();
        for _ in 0..50 {
            msg.extend_from_slice(b"$100\r\n");
            msg.extend_from_slice(&[b'x'; 100]);
            msg.extend_from_slice(b"\r\n");
        }
        assert!(parse(&msg, 1 << 20).unwrap().is_some());
        assert_eq!(
            parse(&msg, 1000).unwrap_err(),
            RespError::TooLarge { max: 1000 }
        );
        // Still incomplete, already past the cap.
        assert_eq!(
            parse(&msg[..2000], 1000).unwrap_err(),
            RespError::TooLarge { max: 1000 }
        );
        // A line that never ends.
        assert!(parse(&[b'+'; 2000], 1000).is_err());
        assert!(parse(&[b'+'; 999], 1000).unwrap().is_none());
    }

    #[test]
    fn a_long_array_is_consumed_whole() {
        // Seen: an array of more than 64 elements came back empty after its header only, and its
        // elements were then read as frames of their own (here: 65 messages that were never sent).
        let pm = b"*4\r\n$8\r\npmessage\r\n$1\r\np\r\n$1\r\nc\r\n$1\r\nx\r\n";
        let mut msg = b"*65\r\n".to_vec();
        for _ in 0..65 {
            msg.extend_from_slice(pm);
        }
        let whole = msg.len();
        msg.extend_from_slice(pm);
        let (f, n) = parse(&msg, MAX).unwrap().unwrap();
        assert_eq!((f, n), (Frame::LongArray(65), whole));
        let (f, n) = parse(&msg[n..], MAX).unwrap().unwrap();
        assert_eq!(n, pm.len());
        assert!(matches!(f, Frame::Array(v) if v.len() == 4));
        // Incomplete long arrays wait for the rest.
        assert!(parse(&msg[..whole - 1], MAX).unwrap().is_none());
        // A count that cannot fit under the cap is refused at once.
        assert!(parse(b"*1000000000\r\n", MAX).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert_eq!(
            parse(deep.as_bytes(), MAX).unwrap_err(),
            RespError::Protocol("nesting too deep")
        );
    }

    /// Frames (as text) and the final error of `buf` read as one piece, or in pieces of `piece`.
    fn read_all(buf: &[u8], piece: usize, max: usize) -> (Vec<String>, Option<RespError>) {
        let (mut held, mut out) = (Vec::new(), Vec::new());
        for chunk in buf.chunks(piece.max(1)) {
            held.extend_from_slice(chunk);
            loop {
                match parse(&held, max) {
                    Ok(Some((f, n))) => {
                        assert!(n <= max);
                        out.push(format!("{f:?}"));
                        held.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
            assert!(held.len() <= max);
        }
        (out, None)
    }

    /// The property the `resp` fuzz target checks, on a deterministic sample of mutated streams:
    /// the same frames, and an error at the same place, whatever the pieces the bytes arrive in.
    #[test]
    fn pieces_do_not_change_what_is_read() {
        let pm: &[u8] = b"*4\r\n$8\r\npmessage\r\n$1\r\np\r\n$1\r\nc\r\n$5\r\nhello\r\n";
        let mut stream = b"*3\r\n$10\r\npsubscribe\r\n$1\r\np\r\n:1\r\n+PONG\r\n".to_vec();
        for _ in 0..20 {
            stream.extend_from_slice(pm);
        }
        stream.extend_from_slice(b"*-1\r\n$-1\r\n-ERR bye\r\n");
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..1000 {
            let mut s = stream.clone();
            for _ in 0..(round % 4) {
                let i = next() as usize % s.len();
                let alphabet = b"*$:+-\r\n0123456789x";
                s[i] = alphabet[next() as usize % alphabet.len()];
            }
            let max = [64, 200, 4096][round % 3];
            let whole = read_all(&s, s.len(), max);
            for piece in [1, 2, 7, 64] {
                let got = read_all(&s, piece, max);
                // Which error may differ (a frame can pass the cap in pieces before its bad
                // byte arrives); that there is one, and where, may not.
                assert_eq!(
                    (&got.0, got.1.is_some()),
                    (&whole.0, whole.1.is_some()),
                    "round {round} piece {piece} max {max}: {:?}",
                    String::from_utf8_lossy(&s)
                );
            }
        }
    }
}
