//! Helpers for the configuration tests: indented YAML literals and short diagnostics.

use std::path::Path;

use super::{Diagnostic, Loaded, load_str};

/// Removes the common indentation and the first line break, so tests can indent YAML.
pub(super) fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The test environment: `HOST` and `EMPTY` are set, nothing else.
pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "HOST" => Some("idp.example.com".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

pub(super) fn load_in(yaml: &str, dir: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    load_str("t.yaml", &dedent(yaml), dir, &env)
}

pub(super) fn load(yaml: &str) -> Result<Loaded, Vec<Diagnostic>> {
    load_in(yaml, Path::new("."))
}

fn short(d: &Diagnostic) -> String {
    format!("{}:{}: {}", d.line, d.column, d.message)
}

/// `LINE:COL: message` for every error (none when the file loads).
pub(super) fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.iter().map(short).collect(),
    }
}

/// `LINE:COL: message` for every warning; the file must load.
pub(super) fn warnings(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(loaded) => loaded.warnings.iter().map(short).collect(),
        Err(diagnostics) => panic!("expected the file to load, got {diagnostics:#?}"),
    }
}
