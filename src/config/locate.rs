//! Where each value of the file is: a tree of YAML nodes with their line and column, built
//! from the parser's events, and the [`YPath`] that names a node (`routes[1].upstream.url`).
//!
//! serde hands the validator plain values without positions, so every diagnostic is located
//! by looking its path up here. The tree mirrors the YAML as written: a value reached through
//! an alias or a `<<` merge is not under its own path, and lookups fall back to the nearest
//! ancestor that is (the alias or the mapping holding the merge), which is still the right
//! neighbourhood. Building the tree walks raw parser events once and never expands aliases,
//! so it is linear in the file size and safe on alias bombs.

use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser, ScanError};

use super::env::PosMap;

/// A 1-based line and column in the original file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Pos {
    pub(super) line: u32,
    pub(super) column: u32,
}

impl Pos {
    pub(super) const START: Pos = Pos { line: 1, column: 1 };
}

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root, displayed the way operators read it:
/// `routes[1].claimsToBaggage["enduser.id"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct YPath(pub(super) Vec<Seg>);

impl YPath {
    pub(super) fn root() -> Self {
        Self(Vec::new())
    }

    pub(super) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    pub(super) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }
}

impl fmt::Display for YPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<root>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

/// Keys that read unambiguously after a `.`; others (`enduser.id`, `api://x`) are bracketed.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The shape of one node in the location tree.
#[derive(Debug)]
pub(super) enum Kind {
    Scalar,
    /// Entries in file order; a duplicate key (itself an error) keeps both.
    Map(Vec<(String, usize)>),
    Seq(Vec<usize>),
    /// An alias (`*name`): no children to look into.
    Opaque,
}

/// Positions are byte offsets into the original text, turned into lines and columns only
/// for the few nodes a diagnostic mentions.
#[derive(Debug)]
pub(super) struct Node {
    /// Where the key is, for a mapping value.
    key: Option<usize>,
    value: usize,
    pub(super) kind: Kind,
}

/// The location tree of one YAML document.
#[derive(Debug)]
pub(super) struct Index {
    nodes: Vec<Node>,
    map: PosMap,
}

/// Nodes beyond this are refused: a real configuration has a few hundred.
pub(super) const MAX_NODES: usize = 100_000;
/// Nesting beyond this is refused: the deepest real key is about eight levels down.
pub(super) const MAX_DEPTH: usize = 64;

/// A problem found while indexing: the YAML syntax error or a resource limit.
#[derive(Debug)]
pub(super) struct IndexError {
    pub(super) pos: Pos,
    pub(super) message: String,
}

/// What the walk is inside of.
enum Frame {
    Map {
        node: usize,
        /// The key just read, waiting for its value.
        pending_key: Option<(String, usize)>,
    },
    Seq {
        node: usize,
    },
    /// A mapping or sequence used as a key: skipped with its contents.
    ComplexKey {
        parent: usize,
        key_pos: usize,
        depth: usize,
    },
}

impl Index {
    /// Indexes the first document of `text` (the substituted text; `map` turns its positions
    /// back into the original's, and stays with the index for that).
    pub(super) fn build(text: &str, map: PosMap) -> Result<Self, IndexError> {
        let options = serde_saphyr::granit_parser::options! {
            flow_nesting_limit: MAX_DEPTH,
            block_nesting_limit: MAX_DEPTH,
        };
        let mut index = Index {
            nodes: Vec::new(),
            map,
        };
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str_with_options(text, options) {
            let (event, span) = event.map_err(|e| scan_error(&e, text, &index.map))?;
            // String input always has byte offsets; the line/column route is a fallback.
            let out = span.start.byte_offset().unwrap_or_else(|| {
                index
                    .map
                    .substituted_offset(text, span.start.line(), span.start.col())
            });
            let pos = index.map.original_offset(out);
            let kind = match event {
                Event::DocumentEnd => break,
                Event::Scalar(value, ..) => {
                    // A scalar in key position is the key of the next value, not a node.
                    if let Some(Frame::Map {
                        pending_key: pending @ None,
                        ..
                    }) = stack.last_mut()
                    {
                        *pending = Some((value.into_owned(), pos));
                        continue;
                    }
                    Kind::Scalar
                }
                Event::MappingStart(..) => Kind::Map(Vec::new()),
                Event::SequenceStart(..) => Kind::Seq(Vec::new()),
                Event::Alias(..) => Kind::Opaque,
                Event::MappingEnd | Event::SequenceEnd => {
                    match stack.pop() {
                        Some(Frame::ComplexKey {
                            parent,
                            key_pos,
                            depth,
                        }) if depth > 1 => stack.push(Frame::ComplexKey {
                            parent,
                            key_pos,
                            depth: depth - 1,
                        }),
                        Some(Frame::ComplexKey {
                            parent, key_pos, ..
                        }) => {
                            stack.push(Frame::Map {
                                node: parent,
                                pending_key: Some(("?".to_owned(), key_pos)),
                            });
                        }
                        _ => {}
                    }
                    continue;
                }
                _ => continue,
            };
            let opens = matches!(kind, Kind::Map(_) | Kind::Seq(_));
            // Inside a complex key everything is skipped; only nesting is counted.
            if let Some(Frame::ComplexKey { depth, .. }) = stack.last_mut() {
                if opens {
                    *depth += 1;
                }
                continue;
            }
            if let Some(Frame::Map {
                node,
                pending_key: None,
            }) = stack.last()
            {
                // A mapping or sequence where a key belongs.
                let parent = *node;
                stack.pop();
                if opens {
                    stack.push(Frame::ComplexKey {
                        parent,
                        key_pos: pos,
                        depth: 1,
                    });
                } else {
                    stack.push(Frame::Map {
                        node: parent,
                        pending_key: Some(("?".to_owned(), pos)),
                    });
                }
                continue;
            }
            if index.nodes.len() >= MAX_NODES {
                return Err(IndexError {
                    pos: index.pos(pos),
                    message: format!(
                        "the file has more than {MAX_NODES} YAML values: a gatehouse configuration is far smaller; check that this is the right file"
                    ),
                });
            }
            let id = index.nodes.len();
            let key = index.attach(stack.last_mut(), id);
            index.nodes.push(Node {
                key,
                value: pos,
                kind,
            });
            if opens {
                stack.push(match index.nodes[id].kind {
                    Kind::Map(_) => Frame::Map {
                        node: id,
                        pending_key: None,
                    },
                    _ => Frame::Seq { node: id },
                });
            }
        }
        Ok(index)
    }

    /// Links node `id` into its parent; returns the key position for a mapping value.
    fn attach(&mut self, parent: Option<&mut Frame>, id: usize) -> Option<usize> {
        match parent {
            Some(Frame::Map { node, pending_key }) => {
                let (key, key_pos) = pending_key.take()?;
                if let Some(Node {
                    kind: Kind::Map(entries),
                    ..
                }) = self.nodes.get_mut(*node)
                {
                    entries.push((key, id));
                }
                Some(key_pos)
            }
            Some(Frame::Seq { node }) => {
                if let Some(Node {
                    kind: Kind::Seq(items),
                    ..
                }) = self.nodes.get_mut(*node)
                {
                    items.push(id);
                }
                None
            }
            _ => None,
        }
    }

    pub(super) fn node(&self, id: usize) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// The root node, if the document has one.
    pub(super) fn root(&self) -> Option<&Node> {
        self.nodes.first()
    }

    /// The node at exactly `path`.
    pub(super) fn get(&self, path: &YPath) -> Option<&Node> {
        let mut node = self.root()?;
        for seg in &path.0 {
            let child = match (&node.kind, seg) {
                (Kind::Map(entries), Seg::Key(k)) => {
                    entries.iter().find(|(key, _)| key == k).map(|&(_, id)| id)
                }
                (Kind::Seq(items), Seg::Index(i)) => items.get(*i).copied(),
                _ => None,
            }?;
            node = self.node(child)?;
        }
        Some(node)
    }

    /// Whether the file spells out `path` (as opposed to a default or an alias).
    pub(super) fn has(&self, path: &YPath) -> bool {
        self.get(path).is_some()
    }

    /// The position of the value at `path`, or of its nearest written ancestor.
    pub(super) fn value_pos(&self, path: &YPath) -> Pos {
        self.nearest(path).map_or(Pos::START, |n| self.pos(n.value))
    }

    /// The position of the key of `path` (for unknown or misplaced keys), falling back like
    /// [`Self::value_pos`].
    pub(super) fn key_pos(&self, path: &YPath) -> Pos {
        match self.get(path) {
            Some(node) => self.pos(node.key.unwrap_or(node.value)),
            None => self.value_pos(path),
        }
    }

    /// The line and column of a byte offset of the original text.
    fn pos(&self, offset: usize) -> Pos {
        let (line, column) = self.map.position_of(offset);
        Pos { line, column }
    }

    /// Maps positions of the substituted text back to the original (for serde's errors).
    pub(super) fn map(&self) -> &PosMap {
        &self.map
    }

    fn nearest(&self, path: &YPath) -> Option<&Node> {
        (0..=path.0.len())
            .rev()
            .find_map(|len| self.get(&YPath(path.0[..len].to_vec())))
    }
}

fn scan_error(e: &ScanError, text: &str, map: &PosMap) -> IndexError {
    let marker = e.marker();
    let (line, column) = map.original_position(text, marker.line(), marker.col());
    IndexError {
        pos: Pos { line, column },
        message: format!("YAML syntax error: {}", e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::substitute;
    use super::*;

    fn index(text: &str) -> Index {
        let (out, map) = substitute(text, &|_| None).unwrap();
        Index::build(&out, map).unwrap()
    }

    fn at(index: &Index, path: &YPath) -> (u32, u32) {
        let p = index.value_pos(path);
        (p.line, p.column)
    }

    #[test]
    fn locates_keys_and_values() {
        let text =
            "a:\n  b: 1\n  c: [x, {d: e}]\nl:\n  - k: v\n  - w\n? [complex]\n: z\nafter: 2\n";
        let ix = index(text);
        let root = YPath::root();
        assert_eq!(at(&ix, &root.key("a").key("b")), (2, 6));
        let d = root.key("a").key("c").index(1).key("d");
        assert_eq!(at(&ix, &d), (3, 14));
        assert_eq!(
            ix.key_pos(&d),
            Pos {
                line: 3,
                column: 11
            }
        );
        assert_eq!(at(&ix, &root.key("l").index(0).key("k")), (5, 8));
        assert_eq!(at(&ix, &root.key("l").index(1)), (6, 5));
        assert_eq!(at(&ix, &root.key("after")), (9, 8));
        // Missing: nearest ancestor.
        assert_eq!(at(&ix, &root.key("l").index(0).key("nope")), (5, 5));
        assert_eq!(at(&ix, &root.key("zzz")), (1, 1));
    }

    #[test]
    fn displays_paths() {
        let p = YPath::root()
            .key("routes")
            .index(1)
            .key("claimsToBaggage")
            .key("enduser.id");
        assert_eq!(p.to_string(), "routes[1].claimsToBaggage[\"enduser.id\"]");
        assert_eq!(YPath::root().to_string(), "<root>");
    }

    #[test]
    fn reports_syntax_errors_and_limits() {
        let (out, map) = substitute("a: [1\n", &|_| None).unwrap();
        let err = Index::build(&out, map).unwrap_err();
        assert!(
            err.message.starts_with("YAML syntax error"),
            "{}",
            err.message
        );
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let (out, map) = substitute(&deep, &|_| None).unwrap();
        assert!(Index::build(&out, map).is_err());
    }
}
