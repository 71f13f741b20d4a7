//! Speaking MCP 2026-07-28 to clients for a stdio server that speaks the handshake era.
//!
//! The gateway is the HTTP server for a stdio child, so it owes a 2026-07-28 client that
//! era's answers whatever the child speaks. The child is initialised by the gateway (with
//! the client's declared version, capabilities and identity); requests go to it as they
//! came, and answers are completed with what 2026-07-28 requires and a handshake-era
//! server does not send: `resultType`, the caching fields of cacheable results, and the
//! `serverInfo` stamp. `server/discover` is answered from the child's `initialize`
//! result. docs/architecture.md has the whole mapping.

use serde_json::{Map, Value, json};

use super::super::mcp::FIRST_MODERN_VERSION;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// Results that carry `ttlMs` and `cacheScope` in 2026-07-28.
fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// What a 2026-07-28 request declares about its client, as the child's `initialize`
/// asks it; also what tells one pool of children from another.
pub struct Declared {
    pub version: String,
    pub capabilities: Value,
    pub client_info: Value,
}

impl Declared {
    pub fn of(request: &Value, header_version: Option<&str>) -> Self {
        let meta = request.pointer("/params/_meta");
        let get = |key: &str| meta.and_then(|m| m.get(key)).cloned();
        Self {
            version: get(META_VERSION)
                .and_then(|v| v.as_str().map(str::to_owned))
                .or_else(|| header_version.map(str::to_owned))
                .unwrap_or_else(|| FIRST_MODERN_VERSION.to_owned()),
            capabilities: get(META_CAPABILITIES)
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({})),
            client_info: get(META_CLIENT_INFO)
                .filter(|i| i.get("name").is_some_and(Value::is_string))
                .unwrap_or_else(
                    || json!({"name": "toolgate", "version": env!("CARGO_PKG_VERSION")}),
                ),
        }
    }

    /// Children initialised alike serve alike.
    pub fn pool_key(&self, principal: &str) -> String {
        // Debug-quoted, so no part can pass for another.
        format!("{principal:?} {:?} {}", self.version, self.capabilities)
    }

    /// The `server/discover` that asks a new pooled child whether it speaks 2026-07-28
    /// itself: in the gateway's version, with the client's capabilities and identity.
    pub fn discover(&self) -> Value {
        json!({"jsonrpc": "2.0", "id": "toolgate-discover", "method": "server/discover", "params": {"_meta": {
            META_VERSION: FIRST_MODERN_VERSION,
            META_CAPABILITIES: self.capabilities,
            META_CLIENT_INFO: self.client_info,
        }}})
    }

    /// The `initialize` the gateway sends a pooled child.
    pub fn initialize(&self) -> Value {
        json!({"jsonrpc": "2.0", "id": "toolgate-initialize", "method": "initialize", "params": {
            "protocolVersion": self.version,
            "capabilities": self.capabilities,
            "clientInfo": self.client_info,
        }})
    }
}

/// Whether a child's answer to `Declared::discover` says it speaks 2026-07-28.
pub fn speaks_modern(answer: &Value) -> bool {
    answer
        .pointer("/result/supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|versions| versions.iter().any(|v| v == FIRST_MODERN_VERSION))
}

/// A child's answer to a 2026-07-28 client's request, completed as that era requires.
/// A result that has what is asked keeps it; an error is relayed as it came.
pub fn modern_answer(raw: &[u8], method: &str, init: &Value) -> Vec<u8> {
    let Ok(mut answer) = serde_json::from_slice::<Value>(raw) else {
        return raw.to_vec();
    };
    let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) else {
        return raw.to_vec();
    };
    complete(result, method, init);
    serde_json::to_vec(&answer).unwrap_or_else(|_| raw.to_vec())
}

fn complete(result: &mut Map<String, Value>, method: &str, init: &Value) {
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if is_cacheable(method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
    if let Some(info) = init.get("serverInfo") {
        let meta = result.entry("_meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut()
            && meta.get(META_SERVER_INFO).is_none_or(Value::is_null)
        {
            meta.insert(META_SERVER_INFO.to_owned(), info.clone());
        }
    }
}

/// `server/discover`, from the child's `initialize` result.
pub fn discover_answer(id: &Value, init: &Value) -> Vec<u8> {
    let mut result = Map::new();
    result.insert("supportedVersions".into(), json!([FIRST_MODERN_VERSION]));
    result.insert(
        "capabilities".into(),
        init.get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    if let Some(instructions) = init.get("instructions").filter(|i| i.is_string()) {
        result.insert("instructions".into(), instructions.clone());
    }
    complete(&mut result, "server/discover", init);
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        .expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init() -> Value {
        json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": true}},
               "serverInfo": {"name": "files", "version": "1.0"}, "instructions": "Read files."})
    }

    #[test]
    fn a_handshake_era_result_gets_what_2026_07_28_requires() {
        let listed = br#"{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}"#;
        let shaped: Value =
            serde_json::from_slice(&modern_answer(listed, "tools/list", &init())).unwrap();
        assert_eq!(
            shaped,
            json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": [], "resultType": "complete",
                "ttlMs": 0, "cacheScope": "private",
                "_meta": {META_SERVER_INFO: {"name": "files", "version": "1.0"}}}})
        );
        // A call's result is not cacheable; what the child set is kept.
        let called = br#"{"jsonrpc":"2.0","id":4,"result":{"content":[],"resultType":"complete","_meta":{"k":1}}}"#;
        let shaped: Value =
            serde_json::from_slice(&modern_answer(called, "tools/call", &init())).unwrap();
        assert_eq!(shaped["result"].get("ttlMs"), None);
        assert_eq!(shaped["result"]["_meta"]["k"], 1);
        assert_eq!(shaped["result"]["_meta"][META_SERVER_INFO]["name"], "files");
        // An error goes as it came.
        let error = br#"{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"no"}}"#;
        assert_eq!(modern_answer(error, "tools/call", &init()), error.to_vec());
    }

    #[test]
    fn discover_is_answered_from_the_childs_initialize() {
        let answer: Value = serde_json::from_slice(&discover_answer(&json!("d"), &init())).unwrap();
        let result = &answer["result"];
        assert_eq!(result["supportedVersions"], json!(["2026-07-28"]));
        assert_eq!(result["capabilities"]["tools"]["listChanged"], true);
        assert_eq!(result["instructions"], "Read files.");
        assert_eq!(result["resultType"], "complete");
        assert_eq!(result["cacheScope"], "private");
        assert_eq!(answer["id"], "d");
    }

    #[test]
    fn the_initialize_carries_what_the_client_declared() {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            META_VERSION: "2026-07-28", META_CAPABILITIES: {"sampling": {}},
            META_CLIENT_INFO: {"name": "agent", "version": "2"}}}});
        let declared = Declared::of(&request, None);
        let init = declared.initialize();
        assert_eq!(init["params"]["protocolVersion"], "2026-07-28");
        assert_eq!(init["params"]["capabilities"], json!({"sampling": {}}));
        assert_eq!(init["params"]["clientInfo"]["name"], "agent");
        // Another principal, or other capabilities: another pool.
        let other = Declared::of(&json!({"params": {}}), Some("2026-07-28"));
        assert_ne!(declared.pool_key("a"), other.pool_key("a"));
        assert_ne!(declared.pool_key("a"), declared.pool_key("b"));
        assert_eq!(other.client_info["name"], "toolgate");
    }
}
