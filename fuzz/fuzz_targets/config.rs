//! Configuration loading on any text: `${VAR}` substitution, YAML/JSON parsing, location of
//! errors and every validation rule. An operator's file must never crash `validate` or a
//! reload, only produce diagnostics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "PORT").then(|| "8080".to_owned());
    match gatehouse::config::load_str("fuzz.yaml", text, Path::new("/nonexistent"), &env) {
        Ok(loaded) => {
            let _ = gatehouse::config::summary(&loaded.config);
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty());
            for d in diagnostics {
                assert!(d.line >= 1, "{d}");
                let _ = d.to_string();
            }
        }
    }
});
