//! Loading: from bytes on disk to a checked [`FileConfig`], or every problem as a located
//! [`Diagnostic`] (`FILE:LINE:COL: message`, what `gatehouse validate` prints).
//!
//! The steps, each refusing hostile input before the next one spends effort on it:
//!
//! 1. **Size and encoding.** Files over 4 MiB, invalid UTF-8 and NUL bytes (binary files) are
//!    refused with a located error. A leading byte-order mark is dropped.
//! 2. **Substitution** of `${VAR}`, `${VAR:-default}` and `$$` (`super::env`); every unset
//!    variable is reported at its `${`. Line numbers never change.
//! 3. **Location index** (`super::locate`): one pass over the parser's events builds a tree of
//!    positions, without expanding aliases. YAML syntax errors stop here, located.
//! 4. **Unknown keys** (`super::schema`): the tree is walked against the file shape and every
//!    unknown key is reported, not only the first.
//! 5. **Deserialization** with `serde-saphyr` under a tight [`serde_saphyr::Budget`] (alias
//!    bombs, deep nesting and huge documents fail fast). The deserializer is wrapped in
//!    `serde_path_to_error`, so a type error names its path, and in `serde_ignored`, which
//!    catches anything the tree walk could not see (keys merged in with `<<`).
//! 6. **Rules** of SPEC §3 (`super::validate`), all checked, each located by its path.
//!
//! Paths, not spans, are the common currency: serde values carry no positions, so every
//! diagnostic names a path (`routes[0].upstream.url`) and the index turns it into a line and
//! column, falling back to the nearest enclosing value when a path was not written out.
//!
//! ```
//! use std::path::Path;
//! use gatehouse::config::load_str;
//!
//! let yaml = "
//! listen: 127.0.0.1:8080
//! routes:
//!   - name: echo
//!     authorizerType: NONE
//!     upstream: { url: \"${ECHO_URL:-http://127.0.0.1:9000}\" }
//! ";
//! let env = |_: &str| None;
//! let loaded = load_str("edge.yaml", yaml, Path::new("."), &env).unwrap();
//! assert_eq!(loaded.config.routes[0].name, "echo");
//!
//! let errors = load_str("edge.yaml", "listen: 127.0.0.1:8080\nroutes: []\nlisten2: x\n", Path::new("."), &env)
//!     .unwrap_err();
//! assert_eq!(errors[0].to_string(), "edge.yaml:2:9: routes: at least one route is required: add one under routes");
//! assert!(errors[1].to_string().starts_with("edge.yaml:3:1: listen2: unknown key"));
//! ```

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_saphyr::{DefaultMessageFormatter, Error as YamlError, MessageFormatter};

use super::env;
use super::file::FileConfig;
use super::locate::{Index, Pos, Seg, YPath};
use super::schema;
use super::validate;

/// Files larger than this are refused before parsing: configurations are a few KiB.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// One located problem. Display: `{file}:{line}:{column}: {message}` (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for Diagnostic {}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: FileConfig,
    /// Accepted but worth telling the operator (ignored AgentCore-only fields and the like).
    pub warnings: Vec<Diagnostic>,
    /// The directory of the configuration file: relative paths in it (TLS files) are
    /// relative to this, not to the working directory.
    pub base_dir: PathBuf,
}

/// Reads, substitutes (from the process environment), parses and validates a file.
pub fn load_path(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let fail = |message: String| vec![diagnostic(&file, Pos::START, message)];
    let handle = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    // Read one byte past the limit instead of trusting metadata: the file may be a pipe or
    // grow while being read.
    let mut bytes = Vec::new();
    handle
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(fail(too_large()));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
            let (line, column) = env::position(&prefix, prefix.len());
            return Err(vec![Diagnostic {
                file,
                line,
                column,
                message: "the file is not valid UTF-8: save it as UTF-8 (YAML and JSON are text)"
                    .to_owned(),
            }]);
        }
    };
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let env = |name: &str| std::env::var(name).ok();
    load_str(&file, &text, &base_dir, &env)
}

/// Substitutes from `env`, parses and validates `text`. `file` names it in diagnostics and
/// `base_dir` resolves relative paths (TLS files, which are read to check them).
pub fn load_str(
    file: &str,
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let (substituted, index) = substituted(file, text, env)?;

    let mut errors = both_authorizer_spellings(file, &index);
    if !errors.is_empty() {
        // serde would only say "duplicate field", without a location.
        return Err(errors);
    }

    let unknown = schema::unknown_keys(&index);
    let mut reported: HashSet<String> = unknown.iter().map(|u| u.path.to_string()).collect();
    errors.extend(
        unknown
            .into_iter()
            .map(|u| diagnostic(file, index.key_pos(&u.path), u.message)),
    );

    let mut ignored = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let parsed: Result<FileConfig, YamlError> =
        serde_saphyr::with_deserializer_from_str_with_options(
            &substituted,
            parse_options(),
            |de| {
                let de = serde_path_to_error::Deserializer::new(de, &mut track);
                serde_ignored::deserialize(de, |path| ignored.push(from_ignored(&path)))
            },
        );
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let path = from_track(&track.path());
            errors.push(serde_error(file, &e, &path, &index, &substituted));
            return Err(sorted(errors));
        }
    };
    report_ignored(file, &index, ignored, &mut reported, &mut errors);
    validated(file, config, &index, base_dir, errors)
}

/// The text after the checks that need no parser (size, NUL bytes, a byte-order mark) and
/// `${VAR}` substitution, with its position index.
fn substituted(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Index), Vec<Diagnostic>> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(vec![diagnostic(file, Pos::START, too_large())]);
    }
    if let Some(nul) = text.find('\0') {
        let (line, column) = env::position(text, nul);
        return Err(vec![Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message:
                "the file contains NUL bytes: it looks binary, not YAML or JSON; check the path"
                    .to_owned(),
        }]);
    }
    // The parser would skip a byte-order mark too, but columns on line 1 would then count it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let (substituted, map) = env::substitute(text, env).map_err(|errors| {
        let positions = env::Positions::new(text);
        errors
            .into_iter()
            .map(|e| {
                let (line, column) = positions.of(text, e.offset);
                Diagnostic {
                    file: file.to_owned(),
                    line,
                    column,
                    message: e.message,
                }
            })
            .collect::<Vec<_>>()
    })?;

    let index =
        Index::build(&substituted, map).map_err(|e| vec![diagnostic(file, e.pos, e.message)])?;
    Ok((substituted, index))
}

/// Whatever serde skipped that the tree walk did not already report (a bounded number: the
/// walk already stops at its own limit).
fn report_ignored(
    file: &str,
    index: &Index,
    ignored: Vec<YPath>,
    reported: &mut HashSet<String>,
    errors: &mut Vec<Diagnostic>,
) {
    for path in ignored {
        if reported.len() >= schema::MAX_REPORTED {
            break;
        }
        if !reported.insert(path.to_string()) {
            continue;
        }
        let message = match (path.0.split_last(), path.0.len()) {
            (Some((Seg::Key(key), parent)), _) => {
                let known = schema::expected_at(&YPath(parent.to_vec())).unwrap_or(&[]);
                schema::unknown_key_message(&path, key, known)
            }
            _ => format!("{path}: unknown key"),
        };
        errors.push(diagnostic(file, index.key_pos(&path), message));
    }
}

/// The parsed file after semantic validation: loaded with its warnings, or every error
/// (sorted, with a count of those not shown).
fn validated(
    file: &str,
    config: FileConfig,
    index: &Index,
    base_dir: &Path,
    mut errors: Vec<Diagnostic>,
) -> Result<Loaded, Vec<Diagnostic>> {
    let report = validate::validate(&config, index, base_dir);
    errors.extend(
        report
            .errors
            .into_iter()
            .map(|(pos, m)| diagnostic(file, pos, m)),
    );
    let in_other_files: Vec<Diagnostic> = report
        .in_other_files
        .into_iter()
        .map(|p| Diagnostic {
            file: p.file,
            line: p.line,
            column: p.column,
            message: p.message,
        })
        .collect();
    if !errors.is_empty() || !in_other_files.is_empty() {
        let mut errors = sorted(errors);
        // Problems in policy files follow the configuration's own, in their files' order.
        errors.extend(in_other_files);
        if report.omitted > 0 {
            let message = format!(
                "{} more problems are not shown: fix the ones above and run again",
                report.omitted
            );
            errors.push(diagnostic(file, Pos::START, message));
        }
        return Err(errors);
    }
    let warnings = report
        .warnings
        .into_iter()
        .map(|(pos, m)| diagnostic(file, pos, m))
        .collect();
    Ok(Loaded {
        config,
        warnings: sorted(warnings),
        base_dir: base_dir.to_path_buf(),
    })
}

/// Limits well above any real configuration and far below what would hurt: a config has a
/// few hundred nodes, rarely an alias.
fn parse_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 400_000;
    budget.max_nodes = super::locate::MAX_NODES;
    budget.max_depth = super::locate::MAX_DEPTH;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES;
    budget.max_merge_keys = 1_000;
    budget.max_recorded_anchor_events = 100_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.alias_limits.max_replay_stack_depth = super::locate::MAX_DEPTH;
    // Diagnostics are one line each; the caller prints them.
    options.with_snippet = false;
    options
}

/// Turns a serde-saphyr error into a diagnostic. Its own location is used when it has one
/// (the exact scalar); otherwise the path serde_path_to_error tracked locates it.
fn serde_error(
    file: &str,
    e: &YamlError,
    path: &YPath,
    index: &Index,
    substituted: &str,
) -> Diagnostic {
    let inner = innermost(e);
    let mut message = DefaultMessageFormatter.format_message(inner).into_owned();
    let mut pos = e
        .location()
        .filter(|l| l.line() > 0 && l.column() > 0)
        .map(|l| {
            let line = usize::try_from(l.line()).unwrap_or(usize::MAX);
            let col0 = usize::try_from(l.column() - 1).unwrap_or(usize::MAX);
            let (line, column) = index.map().original_position(substituted, line, col0);
            Pos { line, column }
        });
    match inner {
        YamlError::SerdeMissingField { field, .. } => {
            // serde-saphyr points at the mapping's last key; the mapping itself reads better.
            pos = Some(index.value_pos(path));
            message = format!("missing required key `{field}`: add it");
        }
        YamlError::InvalidScalar { ty, .. } => {
            message = match *ty {
                "floating point" => "expected a number (e.g. 0.5)".to_owned(),
                "bool" | "boolean" => "expected true or false".to_owned(),
                ty if ty.starts_with(['u', 'i']) => {
                    format!("expected a whole number that fits in {ty}")
                }
                _ => message,
            };
        }
        YamlError::Budget { .. }
        | YamlError::AliasReplayCounterOverflow { .. }
        | YamlError::AliasReplayLimitExceeded { .. }
        | YamlError::AliasExpansionLimitExceeded { .. }
        | YamlError::AliasReplayStackDepthExceeded { .. } => {
            message = format!(
                "refused: {message}; a gatehouse configuration is small, so this is a limit on YAML aliases, nesting or size (check for an alias bomb or the wrong file)"
            );
        }
        _ => {}
    }
    let pos = pos.unwrap_or_else(|| index.value_pos(path));
    let message = if path.0.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    };
    diagnostic(file, pos, message)
}

fn innermost(mut e: &YamlError) -> &YamlError {
    while let YamlError::WithSnippet { error, .. } | YamlError::AliasError { error, .. } = e {
        e = error;
    }
    e
}

/// `serde_ignored` paths are the file's keys and indices, with `Option`/newtype steps that
/// the file does not show.
fn from_ignored(path: &serde_ignored::Path<'_>) -> YPath {
    use serde_ignored::Path as P;
    let mut segs = Vec::new();
    let mut cur = path;
    loop {
        cur = match cur {
            P::Root => break,
            P::Seq { parent, index } => {
                segs.push(Seg::Index(*index));
                parent
            }
            P::Map { parent, key } => {
                segs.push(Seg::Key(key.clone()));
                parent
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                parent
            }
        };
    }
    segs.reverse();
    YPath(segs)
}

fn from_track(path: &serde_path_to_error::Path) -> YPath {
    use serde_path_to_error::Segment;
    YPath(
        path.iter()
            .filter_map(|seg| match seg {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                Segment::Unknown => None,
            })
            .collect(),
    )
}

/// AgentCore's model spells it `customJWTAuthorizer`, its SDKs `customJwtAuthorizer`; both are
/// accepted, but one block cannot hold two authorizers.
fn both_authorizer_spellings(file: &str, index: &Index) -> Vec<Diagnostic> {
    let routes = YPath::root().key("routes");
    let count = match index.get(&routes).map(|n| &n.kind) {
        Some(super::locate::Kind::Seq(items)) => items.len(),
        _ => 0,
    };
    (0..count)
        .filter_map(|i| {
            let config = routes.index(i).key("authorizerConfiguration");
            let upper = config.key("customJWTAuthorizer");
            (index.has(&upper) && index.has(&config.key("customJwtAuthorizer"))).then(|| {
                diagnostic(
                    file,
                    index.key_pos(&upper),
                    format!(
                        "{config}: has both customJwtAuthorizer and customJWTAuthorizer: they are two spellings of the same block; keep one"
                    ),
                )
            })
        })
        .collect()
}

fn too_large() -> String {
    format!(
        "the file is larger than {} MiB: a gatehouse configuration is a few KiB; check the path",
        MAX_CONFIG_BYTES / (1024 * 1024)
    )
}

fn diagnostic(file: &str, pos: Pos, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        message,
    }
}

/// File order, so the output reads top to bottom; ties keep the order they were found in.
fn sorted(mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics
}
