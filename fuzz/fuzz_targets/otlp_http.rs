//! OTLP/HTTP bodies as the receiver decodes them (protobuf or JSON, optionally gzip with the
//! size cap), for each signal: never panics, never inflates past the cap.
#![no_main]

use celeriac::receivers::otlp::decode_http_body;
use celeriac::signal::SignalKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let kind = match mode % 3 {
        0 => SignalKind::Traces,
        1 => SignalKind::Metrics,
        _ => SignalKind::Logs,
    };
    let _ = decode_http_body(kind, mode & 4 != 0, mode & 8 != 0, body, 1 << 20);
});
