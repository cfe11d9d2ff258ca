//! The RESP reader of celeriac's Redis clients on arbitrary bytes, as they arrive from a
//! socket in pieces: never panics, never accepts a frame over the cap, and reads the same
//! frames (and stops with an error at the same place) whatever the pieces, so it never loses its place.
#![no_main]

use celeriac::redis_broker::resp::{parse, RespError};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

/// Frames (as text) and the error that stopped the reading, if any, parsing `buf` as one piece.
fn whole(buf: &[u8]) -> (Vec<String>, Option<RespError>) {
    let (mut out, mut at) = (Vec::new(), 0);
    loop {
        match parse(&buf[at..], MAX) {
            Ok(Some((f, n))) => {
                assert!(n > 0 && n <= MAX && at + n <= buf.len());
                out.push(format!("{f:?}"));
                at += n;
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, data)) = data.split_first() else {
        return;
    };
    let expected = whole(data);
    // The same bytes in pieces of `piece + 1` bytes, parsed as far as possible after each.
    let (mut buf, mut got, mut err) = (Vec::new(), Vec::new(), None);
    'feed: for chunk in data.chunks(piece as usize + 1) {
        buf.extend_from_slice(chunk);
        loop {
            match parse(&buf, MAX) {
                Ok(Some((f, n))) => {
                    got.push(format!("{f:?}"));
                    buf.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'feed;
                }
            }
        }
        assert!(buf.len() <= MAX, "buffered {} bytes past the cap", buf.len());
    }
    // Which error may differ (a frame can pass the cap in pieces before its bad byte arrives);
    // that there is one, after the same frames, may not.
    assert_eq!((got, err.is_some()), (expected.0, expected.1.is_some()));
});
