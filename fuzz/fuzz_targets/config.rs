//! The config parser on arbitrary text: YAML, env expansion, shape checks and diagnostics
//! never panic, and a refused file always says why.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cfg, diags) = celeriac::config::parse(text, "fuzz.yaml");
    if cfg.is_none() {
        assert!(diags.has_errors());
    }
});
