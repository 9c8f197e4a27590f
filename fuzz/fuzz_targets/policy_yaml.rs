//! Any policy file: diagnostics or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phasegate::config::{compile, SourceFile};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let source = SourceFile::new("/nonexistent/policy.yaml".into(), text.to_string());
        let _ = compile(&[source]);
    }
});
