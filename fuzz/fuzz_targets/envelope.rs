//! The Celery envelope decoder on arbitrary bytes: never panics, and whatever it accepts
//! it accounts for (each input is either refused or yields events and/or counted drops).
#![no_main]

use celeriac::celery::envelope::decode_envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    match decode_envelope(data, &mut out) {
        Err(e) => assert!(!e.reason().is_empty()),
        Ok(d) => assert!(!out.is_empty() || !d.dropped.is_empty()),
    }
});
