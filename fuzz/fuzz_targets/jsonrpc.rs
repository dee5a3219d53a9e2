//! The MCP JSON-RPC reader on any bytes (SPEC §11), checked against a second parser: whatever
//! it accepts, serde_json reads the same method, name and id (no duplicate-key or escape
//! trick makes the two disagree); then the list filter rewrites the same bytes as a response
//! and must produce JSON again.
#![no_main]

use std::sync::Arc;

use gatehouse::mcp::filter::{Keep, ListFilter, ListKind};
use gatehouse::mcp::read::parse;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

struct NoAdmin;
impl Keep for NoAdmin {
    fn keeps(&self, _: ListKind, name: &str) -> bool {
        !name.starts_with("admin")
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = parse(data) {
        // The reader skips nesting it does not look at without a depth limit; serde_json's
        // Value stops at 128 levels, so only compare when it could read the message too.
        if let Ok(value) = serde_json::from_slice::<Value>(data) {
            assert_eq!(value["jsonrpc"], "2.0");
            assert_eq!(value.get("method").and_then(Value::as_str), message.method.as_deref());
            if let Some(name) = &message.name {
                let params = &value["params"];
                let named = params
                    .get("name")
                    .or_else(|| params.get("uri"))
                    .and_then(Value::as_str);
                assert_eq!(named, Some(name.as_str()));
                assert!(!name.chars().any(char::is_control));
            }
            if let Some(id) = &message.id {
                let ours: Value = serde_json::from_str(id.get()).unwrap_or(Value::Null);
                assert_eq!(value.get("id"), Some(&ours));
            }
        }
        let _ = message.tool();
    }
    for kind in [ListKind::Tools, ListKind::Prompts, ListKind::Resources] {
        let filter = ListFilter {
            kind,
            id: Value::from(1),
            keep: Arc::new(NoAdmin),
        };
        if let Some(out) = filter.rewrite(data) {
            // Kept entries keep their bytes: where serde_json reads the response (numbers
            // within its range, nesting within its limit), it reads the rewrite too.
            let Ok(value) = serde_json::from_slice::<Value>(&out) else {
                assert!(
                    serde_json::from_slice::<Value>(data).is_err(),
                    "the rewrite of a readable response is readable"
                );
                continue;
            };
            if let Some(entries) = value["result"]["tools"].as_array().filter(|_| kind == ListKind::Tools) {
                for entry in entries {
                    let name = entry["name"].as_str().expect("kept entries have a name");
                    assert!(!name.starts_with("admin"));
                }
            }
        }
    }
});
