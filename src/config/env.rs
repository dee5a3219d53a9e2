//! `${VAR}` and `${VAR:-default}` substitution, done on the raw text before YAML parsing (SPEC §3).
//!
//! Substitution never changes the number of lines: a value with a line break is an error. That
//! keeps every later line number true to the file the operator edits. Columns can still shift
//! when a value is longer or shorter than its `${...}`, so substitution also returns a
//! [`PosMap`] that turns a position in the substituted text back into the original one.
//!
//! Rules, in the spirit of POSIX shells and Docker Compose:
//! - `${NAME}` is the variable's value (an empty value stays empty); unset is an error located
//!   at the `${`.
//! - `${NAME:-default}` uses `default` when the variable is unset or empty. The default is
//!   literal text up to the first `}`; it cannot contain another `${`.
//! - `$$` is a literal `$`; a `$` followed by anything else is kept as is.
//! - Full-line comments (first non-blank character `#`) are left alone, so commented-out
//!   examples may mention variables that are not set. Trailing comments are substituted like
//!   any other text, because telling them apart from `#` inside values needs a YAML parser.

/// A variable lookup; `None` means unset.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A substitution problem at a 0-based byte offset of the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubstError {
    pub(super) offset: usize,
    pub(super) message: String,
}

/// One replaced span: `in_*` in the original text, `out_*` in the substituted text.
#[derive(Debug, Clone, Copy)]
struct Replacement {
    in_start: usize,
    in_end: usize,
    out_start: usize,
    out_end: usize,
}

/// Maps positions in the substituted text back to the original text, and byte offsets of
/// the original to lines and (character) columns.
///
/// Every YAML node's position goes through here, so lookups must not scan the text: a
/// hostile file can be one 4 MiB line with a hundred thousand values on it. Line starts are
/// found by binary search, and character columns from checkpoints of the character count
/// every [`CHECKPOINT`] bytes, so a lookup scans at most that much text.
#[derive(Debug, Clone)]
pub(super) struct PosMap {
    original: String,
    original_positions: Positions,
    substituted_line_starts: Vec<usize>,
    replacements: Vec<Replacement>,
}

/// Line starts and character-count checkpoints of one text.
#[derive(Debug, Clone)]
pub(super) struct Positions {
    line_starts: Vec<usize>,
    /// `(byte offset, characters before it)`, every [`CHECKPOINT`] bytes.
    checkpoints: Vec<(usize, usize)>,
}

impl Positions {
    pub(super) fn new(text: &str) -> Self {
        Self {
            line_starts: line_starts(text),
            checkpoints: checkpoints(text),
        }
    }

    /// 1-based line and character column of byte `offset` of `text` (the text given to `new`).
    pub(super) fn of(&self, text: &str, offset: usize) -> (u32, u32) {
        let offset = floor_char_boundary(text, offset);
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self.chars_before(text, offset) - self.chars_before(text, start);
        (to_u32(line), to_u32(column + 1))
    }

    /// Characters of `text` before byte `offset` (a char boundary).
    fn chars_before(&self, text: &str, offset: usize) -> usize {
        let i = self
            .checkpoints
            .partition_point(|&(at, _)| at <= offset)
            .max(1);
        let (at, count) = self.checkpoints.get(i - 1).copied().unwrap_or((0, 0));
        count
            + text
                .get(at..offset)
                .map_or(0, |between| between.chars().count())
    }
}

/// Substitution problems reported at most.
const MAX_ERRORS: usize = 100;

/// Distance between character-count checkpoints.
const CHECKPOINT: usize = 4096;

fn checkpoints(text: &str) -> Vec<(usize, usize)> {
    let mut points = vec![(0, 0)];
    let mut next = CHECKPOINT;
    for (chars, (i, _)) in text.char_indices().enumerate() {
        if i >= next {
            points.push((i, chars));
            next = i + CHECKPOINT;
        }
    }
    points
}

impl PosMap {
    /// The original 1-based line and 1-based character column for a 1-based line and 0-based
    /// character column of the substituted text (the parser's convention).
    pub(super) fn original_position(
        &self,
        substituted: &str,
        line: usize,
        col0: usize,
    ) -> (u32, u32) {
        let out = self.substituted_offset(substituted, line, col0);
        self.position_of(self.original_offset(out))
    }

    /// The byte offset of a 1-based line and 0-based character column of the substituted text.
    pub(super) fn substituted_offset(&self, substituted: &str, line: usize, col0: usize) -> usize {
        let Some(&line_start) = self.substituted_line_starts.get(line.saturating_sub(1)) else {
            return substituted.len();
        };
        let line_text = substituted.get(line_start..).unwrap_or("");
        line_start
            + line_text
                .char_indices()
                .take_while(|&(_, c)| c != '\n')
                .nth(col0)
                .map_or_else(
                    || line_text.find('\n').unwrap_or(line_text.len()),
                    |(i, _)| i,
                )
    }

    /// The original byte offset for a byte offset of the substituted text. Inside a replaced
    /// value it is the value's `${`: the operator wrote that, not the value.
    pub(super) fn original_offset(&self, out: usize) -> usize {
        let before = self.replacements.partition_point(|r| r.out_start <= out);
        match before.checked_sub(1).and_then(|i| self.replacements.get(i)) {
            None => out,
            Some(r) if out < r.out_end => r.in_start,
            Some(r) => r.in_end + (out - r.out_end),
        }
    }

    /// 1-based line and character column of a byte offset of the original text.
    pub(super) fn position_of(&self, offset: usize) -> (u32, u32) {
        self.original_positions.of(&self.original, offset)
    }
}

/// The largest char boundary at or below `offset` (parser offsets always are; this is a guard).
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Byte offsets at which each line starts.
fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The 1-based line and column of a byte offset, for a single error found before any
/// substitution.
pub(super) fn position(text: &str, offset: usize) -> (u32, u32) {
    Positions::new(text).of(text, offset)
}

/// Substitutes every `${...}` outside full-line comments. Returns every problem, not just the
/// first, so one run shows all the variables that need setting.
pub(super) fn substitute(text: &str, env: Lookup<'_>) -> Result<(String, PosMap), Vec<SubstError>> {
    let mut out = String::with_capacity(text.len());
    let mut replacements = Vec::new();
    let mut errors = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut at_line_start = true;
    let mut in_comment_line = false;
    // Copied verbatim since the last replacement; flushed in one go.
    let mut copied_from = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            at_line_start = true;
            in_comment_line = false;
            i += 1;
            continue;
        }
        if at_line_start && b != b' ' && b != b'\t' {
            at_line_start = false;
            in_comment_line = b == b'#';
        }
        if b != b'$' || in_comment_line {
            i += 1;
            continue;
        }
        let (replacement, consumed) = match bytes.get(i + 1) {
            Some(b'$') => (Ok("$".to_owned()), 2),
            Some(b'{') => expand(text, i, env),
            _ => {
                i += 1;
                continue;
            }
        };
        match replacement {
            Ok(value) => {
                out.push_str(&text[copied_from..i]);
                let out_start = out.len();
                out.push_str(&value);
                replacements.push(Replacement {
                    in_start: i,
                    in_end: i + consumed,
                    out_start,
                    out_end: out.len(),
                });
            }
            Err(message) => {
                errors.push(SubstError { offset: i, message });
                // Enough to act on; a file full of them is not worth scanning further.
                if errors.len() >= MAX_ERRORS {
                    return Err(errors);
                }
            }
        }
        i += consumed;
        copied_from = i;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.push_str(&text[copied_from..]);
    let map = PosMap {
        original: text.to_owned(),
        original_positions: Positions::new(text),
        substituted_line_starts: line_starts(&out),
        replacements,
    };
    Ok((out, map))
}

/// Expands the `${...}` starting at byte `start`; returns the value and the bytes consumed.
fn expand(text: &str, start: usize, env: Lookup<'_>) -> (Result<String, String>, usize) {
    let body_start = start + 2;
    let rest = &text[body_start..];
    let Some(close) = rest
        .find(['}', '\n'])
        .filter(|&c| rest.as_bytes()[c] == b'}')
    else {
        let line_end = rest.find('\n').unwrap_or(rest.len());
        return (
            Err(
                "unterminated \"${\": close it with \"}\", or write \"$$\" for a literal \"$\""
                    .to_owned(),
            ),
            2 + line_end,
        );
    };
    let consumed = 2 + close + 1;
    let body = &rest[..close];
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    if !is_var_name(name) {
        let message = if let Some((name, _)) = body.split_once(['-', ':', '?', '=', '+']) {
            if is_var_name(name) {
                format!(
                    "unsupported form \"${{{body}}}\": only ${{NAME}} and ${{NAME:-default}} are supported"
                )
            } else {
                bad_name(body)
            }
        } else {
            bad_name(body)
        };
        return (Err(message), consumed);
    }
    if let Some(default) = default
        && default.contains("${")
    {
        return (
            Err(format!(
                "the default of ${{{name}:-...}} contains \"${{\": nested substitution is not supported"
            )),
            consumed,
        );
    }
    let value = match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => default.to_owned(),
        (Some(value), _) => value,
        (None, Some(default)) => default.to_owned(),
        (None, None) => {
            return (
                Err(format!(
                    "environment variable {name} is not set: set it, or give a default with ${{{name}:-value}}"
                )),
                consumed,
            );
        }
    };
    if value.contains(['\n', '\r']) {
        return (
            Err(format!(
                "environment variable {name} contains a line break: values are substituted into one line of the file; remove the line break"
            )),
            consumed,
        );
    }
    (Ok(value), consumed)
}

fn bad_name(body: &str) -> String {
    format!(
        "\"${{{body}}}\" is not a variable reference: names are letters, digits and \"_\", not starting with a digit (write \"$$\" for a literal \"$\")"
    )
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.com".to_owned()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".to_owned()),
            "LONG" => Some("0123456789".to_owned()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<(usize, String)>> {
        substitute(text, &env)
            .map(|(out, _)| out)
            .map_err(|errors| errors.into_iter().map(|e| (e.offset, e.message)).collect())
    }

    #[test]
    fn substitutes_values_and_defaults() {
        assert_eq!(run("a: ${HOST}\n").unwrap(), "a: example.com\n");
        assert_eq!(run("a: ${NOPE:-x y}\n").unwrap(), "a: x y\n");
        assert_eq!(run("a: ${EMPTY:-d}\n").unwrap(), "a: d\n");
        assert_eq!(run("a: ${EMPTY}\n").unwrap(), "a: \n");
        assert_eq!(run("a: ${NOPE:-}\n").unwrap(), "a: \n");
        assert_eq!(run("a: $$HOME $x $\n").unwrap(), "a: $HOME $x $\n");
        assert_eq!(run("a: $${HOST}\n").unwrap(), "a: ${HOST}\n");
    }

    #[test]
    fn leaves_full_line_comments_alone() {
        assert_eq!(
            run("  # key: ${UNSET}\na: ${HOST} # ${HOST}\n").unwrap(),
            "  # key: ${UNSET}\na: example.com # example.com\n"
        );
    }

    #[test]
    fn reports_every_problem_at_its_dollar() {
        let errors = run(
            "a: ${UNSET}\nb: ${OTHER}\nc: ${MULTI}\nd: ${1X}\ne: ${A-b}\nf: ${A:-${B}}\ng: ${X\n",
        )
        .unwrap_err();
        let offsets: Vec<usize> = errors.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [3, 15, 27, 39, 48, 58, 72]);
        assert!(errors[0].1.starts_with(
            "environment variable UNSET is not set: set it, or give a default with ${UNSET:-value}"
        ));
        assert!(errors[2].1.contains("line break"));
        assert!(errors[3].1.contains("not a variable reference"));
        assert!(errors[4].1.contains("only ${NAME} and ${NAME:-default}"));
        assert!(errors[5].1.contains("nested substitution"));
        assert!(errors[6].1.starts_with("unterminated"));
    }

    #[test]
    fn maps_positions_back_to_the_original() {
        let text = "a: ${LONG} x\nb: ${HOST:-y} z\n";
        let (out, map) = substitute(text, &env).unwrap();
        assert_eq!(out, "a: 0123456789 x\nb: example.com z\n");
        // "x" is at column 14 (0-based 13) after substitution and 12 in the original.
        assert_eq!(map.original_position(&out, 1, 14), (1, 12));
        // Inside a value: the "${".
        assert_eq!(map.original_position(&out, 1, 5), (1, 4));
        assert_eq!(map.original_position(&out, 2, 15), (2, 15));
        assert_eq!(map.original_position(&out, 2, 0), (2, 1));
        assert_eq!(map.original_position(&out, 9, 0), (3, 1));
        assert_eq!(position("ab\ncé d", 7), (2, 4));
    }

    #[test]
    fn positions_on_long_lines_use_checkpoints() {
        let line = "é".repeat(5000) + "x";
        let text = format!("a: 1\n{line}\n");
        let (out, map) = substitute(&text, &env).unwrap();
        let x = out.find('x').unwrap();
        assert_eq!(map.position_of(map.original_offset(x)), (2, 5001));
        assert_eq!(map.position_of(text.len()), (3, 1));
    }
}
