//! Unknown keys: every key the file shape does not know, each located at the key itself.
//!
//! Serde stops at the first problem, and `deny_unknown_fields` would make the first unknown
//! key that problem. Instead the loader walks the location tree ([`super::locate::Index`])
//! against the shape below and reports every unknown key in one go, even when the file also
//! has a type error that stops deserialization. The key names themselves are not repeated
//! here: [`fields_of`] asks each type's `Deserialize` impl for its list (serde passes it to
//! `deserialize_struct`), so a renamed or added field can never drift out of sync. What is
//! written here is only which key holds which struct, and a test loads `config/full.yaml`
//! with every key to keep that honest. The loader also runs the deserializer through
//! `serde_ignored` and reports anything it ignored that this walk missed (keys brought in by
//! `<<` merges), so the two together cover what serde would silently drop.

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::file::{
    AdminFile, AuthorizerConfiguration, CedarFile, ClaimMatchValue, ClaimMatchValueUnion, CorsFile,
    CustomClaim, CustomJwtAuthorizer, FileConfig, JwtFile, LimitsFile, McpFile, McpMatchFile,
    McpRuleFile, OtlpFile, OutboundAuthFile, QuotaMatchFile, QuotaRuleFile, QuotaStoreFile,
    QuotasFile, RouteFile, RouteQuotasFile, SessionBindingFile, TelemetryFile, TlsFile,
    TokenCacheFile, UpstreamFile,
};
use super::locate::{Index, Kind, Node, YPath};

/// The struct types of the file shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Struct {
    Root,
    Tls,
    Admin,
    Limits,
    Jwt,
    TokenCache,
    Telemetry,
    Otlp,
    Cors,
    Route,
    AuthorizerConfiguration,
    CustomJwt,
    CustomClaim,
    ClaimMatchValue,
    ClaimMatchValueUnion,
    Upstream,
    SessionBinding,
    Quotas,
    RouteQuotas,
    QuotaStore,
    QuotaRule,
    QuotaMatch,
    OutboundAuth,
    Mcp,
    McpRule,
    McpMatch,
    Cedar,
}

/// Every struct, for tests that go through all of them.
#[cfg(test)]
pub(super) const ALL: [Struct; 27] = [
    Struct::Root,
    Struct::Tls,
    Struct::Admin,
    Struct::Limits,
    Struct::Jwt,
    Struct::TokenCache,
    Struct::Telemetry,
    Struct::Otlp,
    Struct::Cors,
    Struct::Route,
    Struct::AuthorizerConfiguration,
    Struct::CustomJwt,
    Struct::CustomClaim,
    Struct::ClaimMatchValue,
    Struct::ClaimMatchValueUnion,
    Struct::Upstream,
    Struct::SessionBinding,
    Struct::Quotas,
    Struct::RouteQuotas,
    Struct::QuotaStore,
    Struct::QuotaRule,
    Struct::QuotaMatch,
    Struct::OutboundAuth,
    Struct::Mcp,
    Struct::McpRule,
    Struct::McpMatch,
    Struct::Cedar,
];

/// What a key holds, as far as unknown keys are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Struct(Struct),
    SeqOf(Struct),
    /// Scalars, free-form maps (`claimsToHeaders`) and opaque values (`privateEndpoint`).
    Any,
}

/// Which key of which struct holds another struct.
fn child(parent: Struct, key: &str) -> Shape {
    use Shape::{Any, SeqOf, Struct as S};
    use Struct as T;
    match (parent, key) {
        (T::Root, "tls") => S(T::Tls),
        (T::Root, "admin") => S(T::Admin),
        (T::Root, "limits") => S(T::Limits),
        (T::Root | T::Route, "jwt") => S(T::Jwt),
        (T::Root, "telemetry") => S(T::Telemetry),
        (T::Root | T::Route, "cors") => S(T::Cors),
        (T::Root, "routes") => SeqOf(T::Route),
        (T::Jwt, "verifiedTokenCache") => S(T::TokenCache),
        (T::Telemetry, "otlp") => S(T::Otlp),
        (T::Route, "authorizerConfiguration") => S(T::AuthorizerConfiguration),
        (T::Route, "upstream") => S(T::Upstream),
        (T::Route, "sessionBinding") => S(T::SessionBinding),
        (T::Root, "quotas") => S(T::Quotas),
        (T::Route, "quotas") => S(T::RouteQuotas),
        (T::Quotas, "store") => S(T::QuotaStore),
        (T::Quotas | T::RouteQuotas, "rules") => SeqOf(T::QuotaRule),
        (T::QuotaRule, "match") => S(T::QuotaMatch),
        (T::Route, "outboundAuth") => S(T::OutboundAuth),
        (T::Route, "mcp") => S(T::Mcp),
        (T::Mcp, "rules") => SeqOf(T::McpRule),
        (T::Mcp, "cedar") => S(T::Cedar),
        (T::McpRule, "match") => S(T::McpMatch),
        (T::McpRule, "customClaims") => SeqOf(T::CustomClaim),
        (T::AuthorizerConfiguration, "customJwtAuthorizer" | "customJWTAuthorizer") => {
            S(T::CustomJwt)
        }
        (T::CustomJwt, "customClaims") => SeqOf(T::CustomClaim),
        (T::CustomClaim, "authorizingClaimMatchValue") => S(T::ClaimMatchValue),
        (T::ClaimMatchValue, "claimMatchValue") => S(T::ClaimMatchValueUnion),
        _ => Any,
    }
}

/// The keys a struct accepts, in declaration order, as its `Deserialize` impl lists them
/// (aliases included).
pub(super) fn fields(s: Struct) -> &'static [&'static str] {
    match s {
        Struct::Root => fields_of::<FileConfig>(),
        Struct::Tls => fields_of::<TlsFile>(),
        Struct::Admin => fields_of::<AdminFile>(),
        Struct::Limits => fields_of::<LimitsFile>(),
        Struct::Jwt => fields_of::<JwtFile>(),
        Struct::TokenCache => fields_of::<TokenCacheFile>(),
        Struct::Telemetry => fields_of::<TelemetryFile>(),
        Struct::Otlp => fields_of::<OtlpFile>(),
        Struct::Cors => fields_of::<CorsFile>(),
        Struct::Route => fields_of::<RouteFile>(),
        Struct::AuthorizerConfiguration => fields_of::<AuthorizerConfiguration>(),
        Struct::CustomJwt => fields_of::<CustomJwtAuthorizer>(),
        Struct::CustomClaim => fields_of::<CustomClaim>(),
        Struct::ClaimMatchValue => fields_of::<ClaimMatchValue>(),
        Struct::ClaimMatchValueUnion => fields_of::<ClaimMatchValueUnion>(),
        Struct::Upstream => fields_of::<UpstreamFile>(),
        Struct::SessionBinding => fields_of::<SessionBindingFile>(),
        Struct::Quotas => fields_of::<QuotasFile>(),
        Struct::RouteQuotas => fields_of::<RouteQuotasFile>(),
        Struct::QuotaStore => fields_of::<QuotaStoreFile>(),
        Struct::QuotaRule => fields_of::<QuotaRuleFile>(),
        Struct::QuotaMatch => fields_of::<QuotaMatchFile>(),
        Struct::OutboundAuth => fields_of::<OutboundAuthFile>(),
        Struct::Mcp => fields_of::<McpFile>(),
        Struct::McpRule => fields_of::<McpRuleFile>(),
        Struct::McpMatch => fields_of::<McpMatchFile>(),
        Struct::Cedar => fields_of::<CedarFile>(),
    }
}

/// Asks `T`'s derived `Deserialize` for its field list: the derive passes it to
/// `deserialize_struct`, where this deserializer records it and stops.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    // The probe always "fails": it only records the list.
    let _ = T::deserialize(FieldsProbe(&mut found));
    found
}

struct FieldsProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// One unknown key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UnknownKey {
    pub(super) path: YPath,
    pub(super) message: String,
}

/// Unknown keys reported at most: past that, the file is not a gatehouse configuration.
pub(super) const MAX_REPORTED: usize = 500;

/// Walks the whole document and returns every unknown key (up to [`MAX_REPORTED`]), in file
/// order.
pub(super) fn unknown_keys(index: &Index) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    if let Some(root) = index.root() {
        walk(
            index,
            root,
            Shape::Struct(Struct::Root),
            &YPath::root(),
            &mut found,
        );
    }
    found
}

fn walk(index: &Index, node: &Node, shape: Shape, path: &YPath, found: &mut Vec<UnknownKey>) {
    match (shape, &node.kind) {
        (Shape::Struct(s), Kind::Map(entries)) => {
            let known = fields(s);
            for (key, id) in entries {
                let Some(child_node) = index.node(*id) else {
                    continue;
                };
                let child_path = path.key(key);
                // `<<` is a YAML merge, resolved by the parser; "?" stands for a complex key,
                // which serde reports as a type error.
                if key == "<<" || key == "?" {
                    continue;
                }
                if known.contains(&key.as_str()) {
                    walk(index, child_node, child(s, key), &child_path, found);
                } else if found.len() < MAX_REPORTED {
                    let message = unknown_key_message(&child_path, key, known);
                    found.push(UnknownKey {
                        path: child_path,
                        message,
                    });
                }
            }
        }
        (Shape::SeqOf(s), Kind::Seq(items)) => {
            for (i, id) in items.iter().enumerate() {
                if let Some(item) = index.node(*id) {
                    walk(index, item, Shape::Struct(s), &path.index(i), found);
                }
            }
        }
        // Anything else is either free-form or a type error serde will report.
        _ => {}
    }
}

/// Every (struct, known key) the document writes; for the test that `config/full.yaml`
/// shows every key.
#[cfg(test)]
pub(super) fn keys_written(index: &Index) -> Vec<(Struct, String)> {
    fn collect(index: &Index, node: &Node, shape: Shape, out: &mut Vec<(Struct, String)>) {
        match (shape, &node.kind) {
            (Shape::Struct(s), Kind::Map(entries)) => {
                for (key, id) in entries {
                    if let Some(child_node) = index.node(*id) {
                        out.push((s, key.clone()));
                        collect(index, child_node, child(s, key), out);
                    }
                }
            }
            (Shape::SeqOf(s), Kind::Seq(items)) => {
                for id in items {
                    if let Some(item) = index.node(*id) {
                        collect(index, item, Shape::Struct(s), out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(root) = index.root() {
        collect(index, root, Shape::Struct(Struct::Root), &mut out);
    }
    out
}

/// `routes[1].upstream.uri: unknown key (expected one of: url, urls, ...); did you mean "url"?`
pub(super) fn unknown_key_message(path: &YPath, key: &str, known: &[&str]) -> String {
    let mut message = format!(
        "{path}: unknown key (expected one of: {})",
        known.join(", ")
    );
    if let Some(suggestion) = closest(key, known) {
        message.push_str(&format!("; did you mean \"{suggestion}\"?"));
    }
    message
}

/// The expected keys at `path` (a path from `serde_ignored`), if it is inside a struct.
pub(super) fn expected_at(parent: &YPath) -> Option<&'static [&'static str]> {
    use super::locate::Seg;
    let mut shape = Shape::Struct(Struct::Root);
    for seg in &parent.0 {
        shape = match (shape, seg) {
            (Shape::Struct(s), Seg::Key(k)) => child(s, k),
            (Shape::SeqOf(s), Seg::Index(_)) => Shape::Struct(s),
            _ => return None,
        };
    }
    match shape {
        Shape::Struct(s) => Some(fields(s)),
        _ => None,
    }
}

/// A known key close enough to be a likely typo: same letters ignoring case and `_`/`-`
/// (`discovery_url` → `discoveryUrl`), or at most two edits away.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let squashed = squash(key);
    if let Some(same) = known.iter().find(|k| squash(k) == squashed) {
        return Some(same);
    }
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&key.to_lowercase(), &k.to_lowercase()), *k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance; keys are short, so the quadratic table is fine. Keys longer than 64
/// characters are never close to a real key and skip the computation.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_serde() {
        assert!(fields(Struct::Root).contains(&"routes"));
        assert!(fields(Struct::Root).contains(&"publicUrl"));
        assert_eq!(fields(Struct::Tls), ["certFile", "keyFile"]);
        // Aliases are accepted keys too.
        assert_eq!(
            fields(Struct::AuthorizerConfiguration),
            ["customJWTAuthorizer", "customJwtAuthorizer"]
        );
        for s in ALL {
            assert!(!fields(s).is_empty(), "{s:?}");
        }
    }

    #[test]
    fn suggests_close_keys() {
        let known = ["url", "urls", "path", "discoveryUrl", "allowedClients"];
        assert_eq!(closest("uri", &known), Some("url"));
        assert_eq!(closest("discovery_url", &known), Some("discoveryUrl"));
        assert_eq!(closest("allowedClient", &known), Some("allowedClients"));
        assert_eq!(closest("zzzzzz", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
