//! Reading MCP's JSON-RPC messages strictly, in both protocol eras.
//!
//! The gateway decides on what this module reads, and forwards the very bytes it read,
//! so anything ambiguous (duplicate keys, batches, wrong types, routing headers that
//! disagree with the body) is refused here before any decision or upstream I/O.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::{Map, Value};

use super::strict_json::{self, StrictJsonError};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// Routing headers disagree with the body (MCP 2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;

/// The longest tool name a call may carry. Every per-tool record and cache is keyed
/// by names, so they are bounded here; real tool names are short.
pub const MAX_TOOL_NAME_BYTES: usize = 256;
/// The longest string id a message may carry.
pub const MAX_ID_BYTES: usize = 256;

pub const HEADER_SESSION_ID: &str = "mcp-session-id";
pub const HEADER_PROTOCOL_VERSION: &str = "mcp-protocol-version";
pub const HEADER_METHOD: &str = "mcp-method";
pub const HEADER_NAME: &str = "mcp-name";
pub const HEADER_PARAM_PREFIX: &str = "mcp-param-";
/// Where a 2026-07-28 request carries its protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The first stateless protocol revision; versions are dates, so they order as strings.
pub const FIRST_MODERN_VERSION: &str = "2026-07-28";

/// Which protocol era a request belongs to. The gateway never translates between them;
/// it only needs to know so it can shape its own answers and apply the era's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25 and earlier: `initialize`, sessions, a GET stream.
    Legacy,
    /// 2026-07-28 and later: stateless, version in `_meta`, routing headers required.
    Modern,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    Request { id: Value, method: String },
    Notification { method: String },
    Response { id: Value },
}

/// A client-to-server message that passed every strict check.
#[derive(Debug, Clone)]
pub struct ClientMessage {
    pub body: Value,
    pub kind: MessageKind,
    pub era: Era,
}

impl ClientMessage {
    pub fn method(&self) -> Option<&str> {
        match &self.kind {
            MessageKind::Request { method, .. } | MessageKind::Notification { method } => {
                Some(method)
            }
            MessageKind::Response { .. } => None,
        }
    }

    pub fn id(&self) -> Option<&Value> {
        match &self.kind {
            MessageKind::Request { id, .. } | MessageKind::Response { id } => Some(id),
            MessageKind::Notification { .. } => None,
        }
    }

    /// The tool name and arguments of a `tools/call` request.
    pub fn tool_call(&self) -> Option<(&str, &Map<String, Value>)> {
        static EMPTY: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        if self.method() != Some("tools/call") {
            return None;
        }
        let params = self.body.get("params")?;
        let name = params.get("name")?.as_str()?;
        let args = params
            .get("arguments")
            .and_then(Value::as_object)
            .unwrap_or(&EMPTY);
        Some((name, args))
    }
}

/// Why a message was refused, shaped as the JSON-RPC error the client gets.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub status: StatusCode,
    pub code: i64,
    pub message: String,
    pub id: Value,
}

impl Rejection {
    fn new(status: StatusCode, code: i64, message: impl Into<String>, id: Value) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            id,
        }
    }

    pub fn body(&self) -> Value {
        error_body(&self.id, self.code, &self.message)
    }
}

pub fn error_body(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One `Mcp-Param-*` header a tool's input schema declares with `x-mcp-header`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamHeader {
    /// The chain of `properties` keys from the schema root to the annotated property.
    pub path: Vec<String>,
    /// The header name's suffix, as declared.
    pub token: String,
}

/// Reads one client-to-server POST body and checks it against its routing headers.
/// `param_headers` looks up the `Mcp-Param-*` declarations of a tool, when known.
pub fn read_client_message(
    bytes: &[u8],
    headers: &HeaderMap,
    param_headers: impl FnOnce(&str) -> Option<Vec<ParamHeader>>,
) -> Result<ClientMessage, Rejection> {
    let bad = |code, msg: String, id: &Value| {
        Rejection::new(StatusCode::BAD_REQUEST, code, msg, id.clone())
    };
    let body = strict_json::parse(bytes).map_err(|e| match e {
        StrictJsonError::Syntax(m) => bad(PARSE_ERROR, format!("Parse error: {m}"), &Value::Null),
        StrictJsonError::DuplicateKey(m) => bad(
            INVALID_REQUEST,
            format!("Invalid request: {m}; toolgate refuses ambiguous JSON"),
            &Value::Null,
        ),
    })?;
    let obj = match &body {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid request: JSON-RPC batches are not supported by MCP".into(),
                &Value::Null,
            ));
        }
        _ => {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid request: the body must be a JSON-RPC object".into(),
                &Value::Null,
            ));
        }
    };
    // Echo the id back only when it is one a client could have meant.
    let id = match obj.get("id") {
        Some(v @ (Value::String(_) | Value::Number(_))) => v.clone(),
        _ => Value::Null,
    };
    // Before anything reads a number: one the gateway would round is refused, so what
    // is decided, stored and hashed is what the upstream reads.
    if let Err(inexact) = super::exact::check_numbers(bytes) {
        return Err(bad(
            INVALID_PARAMS,
            format!("Invalid params: {inexact}"),
            &id,
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad(
            INVALID_REQUEST,
            "Invalid request: \"jsonrpc\" must be \"2.0\"".into(),
            &id,
        ));
    }
    // An id is echoed, stored with a hold and logged: a long one is refused like a long
    // tool name, so it cannot pin memory or bloat the store.
    if let Some(Value::String(raw_id)) = obj.get("id")
        && raw_id.len() > MAX_ID_BYTES
    {
        return Err(bad(
            INVALID_REQUEST,
            format!(
                "Invalid request: the id is {} bytes, over the {MAX_ID_BYTES} toolgate accepts",
                raw_id.len()
            ),
            &Value::Null,
        ));
    }
    if let Some(raw_id) = obj.get("id")
        && !matches!(raw_id, Value::String(_) | Value::Number(_))
    {
        return Err(bad(
            INVALID_REQUEST,
            "Invalid request: \"id\" must be a string or a number".into(),
            &id,
        ));
    }
    let kind = match obj.get("method") {
        Some(Value::String(m)) => match obj.get("id") {
            Some(_) => MessageKind::Request {
                id: id.clone(),
                method: m.clone(),
            },
            None => MessageKind::Notification { method: m.clone() },
        },
        Some(_) => {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid request: \"method\" must be a string".into(),
                &id,
            ));
        }
        None if obj.contains_key("id")
            && (obj.contains_key("result") ^ obj.contains_key("error")) =>
        {
            MessageKind::Response { id: id.clone() }
        }
        None => {
            return Err(bad(
                INVALID_REQUEST,
                "Invalid request: a message needs a \"method\", or an \"id\" with one \"result\" or \"error\"".into(),
                &id,
            ));
        }
    };
    if let Some(params) = obj.get("params")
        && !params.is_object()
    {
        return Err(bad(
            INVALID_REQUEST,
            "Invalid request: \"params\" must be an object".into(),
            &id,
        ));
    }
    let method = match &kind {
        MessageKind::Request { method, .. } | MessageKind::Notification { method } => {
            Some(method.as_str())
        }
        MessageKind::Response { .. } => None,
    };
    let params = obj.get("params").and_then(Value::as_object);
    if method == Some("tools/call") {
        check_tool_call_params(params, &id)?;
    }
    let era = detect_era(params, headers);
    let message = ClientMessage { body, kind, era };
    check_routing_headers(&message, headers, param_headers)?;
    Ok(message)
}

fn check_tool_call_params(
    params: Option<&Map<String, Value>>,
    id: &Value,
) -> Result<(), Rejection> {
    let bad = |msg: &str| Rejection::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, msg, id.clone());
    let Some(params) = params else {
        return Err(bad("Invalid request: tools/call needs \"params\""));
    };
    match params.get("name") {
        Some(Value::String(name)) if name.len() > MAX_TOOL_NAME_BYTES => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                INVALID_PARAMS,
                format!(
                    "Invalid params: the tool name is {} bytes, over the {MAX_TOOL_NAME_BYTES} toolgate accepts",
                    name.len()
                ),
                id.clone(),
            ));
        }
        Some(Value::String(_)) => {}
        Some(_) => {
            return Err(bad(
                "Invalid request: tools/call \"params.name\" must be a string",
            ));
        }
        None => return Err(bad("Invalid request: tools/call needs \"params.name\"")),
    }
    match params.get("arguments") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(bad(
            "Invalid request: tools/call \"params.arguments\" must be an object",
        )),
    }
}

/// A request is modern when it carries the per-request version envelope, or names a
/// modern version in its header.
pub fn detect_era(params: Option<&Map<String, Value>>, headers: &HeaderMap) -> Era {
    let in_meta = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        .is_some();
    let in_header = headers
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v >= FIRST_MODERN_VERSION);
    if in_meta || in_header {
        Era::Modern
    } else {
        Era::Legacy
    }
}

fn check_routing_headers(
    message: &ClientMessage,
    headers: &HeaderMap,
    param_headers: impl FnOnce(&str) -> Option<Vec<ParamHeader>>,
) -> Result<(), Rejection> {
    let id = message.id().cloned().unwrap_or(Value::Null);
    let mismatch =
        |msg: String| Rejection::new(StatusCode::BAD_REQUEST, HEADER_MISMATCH, msg, id.clone());
    for name in [HEADER_PROTOCOL_VERSION, HEADER_METHOD, HEADER_NAME] {
        if headers.get_all(name).iter().count() > 1 {
            return Err(mismatch(format!(
                "Header mismatch: {name} appears more than once"
            )));
        }
    }
    let modern = message.era == Era::Modern;
    let params = message.body.get("params").and_then(Value::as_object);

    if let Some(version) = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(META_PROTOCOL_VERSION))
        && let Some(header) = header_str(headers, HEADER_PROTOCOL_VERSION)
        && version.as_str() != Some(header)
    {
        return Err(mismatch(format!(
            "Header mismatch: {HEADER_PROTOCOL_VERSION} does not match the request's _meta protocol version"
        )));
    }

    let method = message.method();
    match (header_str(headers, HEADER_METHOD), method) {
        (Some(h), Some(m)) if h == m => {}
        (Some(_), _) => {
            return Err(mismatch(format!(
                "Header mismatch: {HEADER_METHOD} does not match the body's method"
            )));
        }
        (None, Some(_)) if modern => {
            return Err(mismatch(format!(
                "Header mismatch: {HEADER_METHOD} is required in protocol {FIRST_MODERN_VERSION} and later"
            )));
        }
        (None, _) => {}
    }

    let name_key = match method {
        Some("tools/call" | "prompts/get") => Some("name"),
        Some("resources/read") => Some("uri"),
        _ => None,
    };
    if let Some(key) = name_key {
        let body_value = params.and_then(|p| p.get(key)).and_then(Value::as_str);
        match (headers.get(HEADER_NAME), body_value) {
            (Some(raw), Some(b)) => {
                let decoded = raw.to_str().ok().and_then(decode_header_value);
                if decoded.as_deref() != Some(b) {
                    return Err(mismatch(format!(
                        "Header mismatch: {HEADER_NAME} does not match the body's params.{key}"
                    )));
                }
            }
            (None, Some(_)) if modern => {
                return Err(mismatch(format!(
                    "Header mismatch: {HEADER_NAME} is required for {} in protocol {FIRST_MODERN_VERSION} and later",
                    method.unwrap_or_default()
                )));
            }
            _ => {}
        }
    } else if headers.contains_key(HEADER_NAME) {
        return Err(mismatch(format!(
            "Header mismatch: {HEADER_NAME} is set but {} names nothing",
            method.unwrap_or("a response")
        )));
    }

    let has_param_headers = headers
        .keys()
        .any(|k| k.as_str().starts_with(HEADER_PARAM_PREFIX));
    if let Some((tool, args)) = message.tool_call()
        && (modern || has_param_headers)
        && let Some(declared) = param_headers(tool)
    {
        check_param_headers(&declared, args, headers).map_err(mismatch)?;
    }
    Ok(())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Compares each declared `Mcp-Param-*` header with the argument it mirrors: both
/// present and equal, or both absent.
fn check_param_headers(
    declared: &[ParamHeader],
    args: &Map<String, Value>,
    headers: &HeaderMap,
) -> Result<(), String> {
    for p in declared {
        let header = format!("{HEADER_PARAM_PREFIX}{}", p.token.to_ascii_lowercase());
        let shown = format!("Mcp-Param-{}", p.token);
        let values: Vec<_> = headers.get_all(header.as_str()).iter().collect();
        if values.len() > 1 {
            return Err(format!("Header mismatch: {shown} appears more than once"));
        }
        let raw = values
            .first()
            .map(|v| v.to_str().ok().and_then(decode_header_value));
        let argument = value_at_path(args, &p.path).filter(|v| !v.is_null());
        let arg_name = p.path.join(".");
        match (raw, argument) {
            (None, None) => {}
            (Some(_), None) => {
                return Err(format!(
                    "Header mismatch: {shown} is present but argument {arg_name:?} is absent"
                ));
            }
            (None, Some(v)) => {
                if render_scalar(v).is_some() {
                    return Err(format!(
                        "Header mismatch: {shown} is missing but argument {arg_name:?} is present"
                    ));
                }
            }
            (Some(decoded), Some(v)) => {
                let ok = match (decoded, v) {
                    (Some(h), Value::Number(n)) => super::exact::same_value(&h, n),
                    (Some(h), v) => render_scalar(v).as_deref() == Some(h.as_str()),
                    (None, _) => false,
                };
                if !ok {
                    return Err(format!(
                        "Header mismatch: {shown} does not match argument {arg_name:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn value_at_path<'a>(args: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut node = args.get(first)?;
    for key in rest {
        node = node.as_object()?.get(key)?;
    }
    Some(node)
}

fn render_scalar(v: &Value) -> Option<String> {
    match v {
        Value::Bool(b) => Some(b.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Decodes an MCP header value: verbatim, or `=?base64?...?=` for values that would
/// not survive as an HTTP field. A malformed sentinel decodes to nothing, so it can
/// never match a body value by accident.
pub fn decode_header_value(raw: &str) -> Option<String> {
    let Some(payload) = raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(raw.to_owned());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The `Mcp-Param-*` headers a tool's input schema declares with `x-mcp-header`, found
/// along plain `properties` chains as the spec allows. `None` when an annotation is
/// malformed: conforming clients then send no headers, so there is nothing to check.
pub fn declared_param_headers(input_schema: &Value) -> Option<Vec<ParamHeader>> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) -> bool {
        let Some(obj) = schema.as_object() else {
            return true;
        };
        if let Some(token) = obj.get("x-mcp-header") {
            let Some(token) = token.as_str() else {
                return false;
            };
            let primitive = matches!(
                obj.get("type").and_then(Value::as_str),
                Some("string" | "integer" | "boolean")
            );
            if path.is_empty() || !primitive || token.is_empty() {
                return false;
            }
            out.push(ParamHeader {
                path: path.clone(),
                token: token.to_owned(),
            });
        }
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, sub) in props {
                path.push(name.clone());
                let ok = walk(sub, path, out);
                path.pop();
                if !ok {
                    return false;
                }
            }
        }
        true
    }
    let mut out = Vec::new();
    walk(input_schema, &mut Vec::new(), &mut out).then_some(out)
}

/// The JSON-RPC messages in a server's answer: the body itself when it is JSON, or each
/// event's data when it is an SSE stream.
pub fn response_messages(content_type: &str, body: &[u8]) -> Vec<Value> {
    if content_type.starts_with("text/event-stream") {
        sse_data(body)
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect()
    } else {
        serde_json::from_slice(body).ok().into_iter().collect()
    }
}

/// The data payload of each event in an SSE body, read as a browser's `EventSource`
/// reads it (the WHATWG rules): lines end at CRLF, LF or a lone CR, a leading byte-order
/// mark is skipped, and an event counts only once the blank line that ends it has come,
/// so the gateway never acts on an event a client would drop.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let mut rest = text;
    // Only whole lines: what follows the last line end is cut off, and dropped.
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(d);
            }
            continue;
        }
        if let Some(after) = line.strip_prefix("data") {
            let value = match after.strip_prefix(':') {
                Some(v) => v.strip_prefix(' ').unwrap_or(v),
                None if after.is_empty() => "",
                None => continue,
            };
            match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn read(body: &str, h: &[(&str, &str)]) -> Result<ClientMessage, Rejection> {
        read_client_message(body.as_bytes(), &headers(h), |_| None)
    }

    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#;

    #[test]
    fn a_legacy_tool_call_is_read() {
        let m = read(CALL, &[]).unwrap();
        assert_eq!(m.era, Era::Legacy);
        assert_eq!(m.method(), Some("tools/call"));
        let (name, args) = m.tool_call().unwrap();
        assert_eq!(name, "echo");
        assert_eq!(args["message"], "hi");
    }

    #[test]
    fn duplicate_name_key_is_an_invalid_request() {
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","name":"delete"}}"#;
        let r = read(body, &[]).unwrap_err();
        assert_eq!(
            (r.status, r.code),
            (StatusCode::BAD_REQUEST, INVALID_REQUEST)
        );
    }

    #[test]
    fn wrong_types_are_invalid_requests() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#""just a string""#,
        ] {
            let r = read(body, &[]).unwrap_err();
            assert_eq!(r.code, INVALID_REQUEST, "{body}");
        }
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        let r = read(r#"{"jsonrpc":"2.0","#, &[]).unwrap_err();
        assert_eq!((r.status, r.code), (StatusCode::BAD_REQUEST, PARSE_ERROR));
    }

    #[test]
    fn responses_and_notifications_are_read() {
        let m = read(r#"{"jsonrpc":"2.0","id":"s1","result":{}}"#, &[]).unwrap();
        assert_eq!(m.kind, MessageKind::Response { id: "s1".into() });
        let m = read(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            m.kind,
            MessageKind::Notification {
                method: "notifications/initialized".into()
            }
        );
    }

    fn modern_call(name: &str, args: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{args},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        )
    }

    #[test]
    fn modern_requests_need_matching_routing_headers() {
        let body = modern_call("echo", "{}");
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ];
        assert_eq!(read(&body, &ok).unwrap().era, Era::Modern);
        for broken in [
            vec![("mcp-protocol-version", "2026-07-28"), ("mcp-name", "echo")],
            vec![("mcp-method", "tools/list"), ("mcp-name", "echo")],
            vec![("mcp-method", "tools/call"), ("mcp-name", "delete")],
            vec![("mcp-method", "tools/call")],
            vec![
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
                ("mcp-name", "echo"),
            ],
            vec![
                ("mcp-protocol-version", "2027-01-01"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "echo"),
            ],
        ] {
            let r = read(&body, &broken).unwrap_err();
            assert_eq!(
                (r.status, r.code),
                (StatusCode::BAD_REQUEST, HEADER_MISMATCH),
                "{broken:?}"
            );
        }
    }

    #[test]
    fn base64_header_values_are_decoded() {
        let body = modern_call("é", "{}");
        let h = [
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?w6k=?="),
        ];
        read(&body, &h).unwrap();
        assert_eq!(decode_header_value("=?base64?!!?="), None);
    }

    #[test]
    fn param_headers_must_mirror_their_arguments() {
        let schema = serde_json::json!({"type":"object","properties":{
            "project":{"type":"string","x-mcp-header":"Project"},
            "count":{"type":"integer","x-mcp-header":"Count"}}});
        let declared = declared_param_headers(&schema).unwrap();
        assert_eq!(declared.len(), 2);
        let body = modern_call("t", r#"{"project":"OPS","count":3}"#);
        let base = [("mcp-method", "tools/call"), ("mcp-name", "t")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut h = base.to_vec();
            h.extend_from_slice(extra);
            read_client_message(body.as_bytes(), &headers(&h), |_| Some(declared.clone()))
        };
        with(&[("mcp-param-project", "OPS"), ("mcp-param-count", "3")]).unwrap();
        for bad in [
            vec![("mcp-param-project", "DEV"), ("mcp-param-count", "3")],
            vec![("mcp-param-count", "3")],
            vec![("mcp-param-project", "OPS"), ("mcp-param-count", "4")],
        ] {
            let r = with(&bad).unwrap_err();
            assert_eq!(r.code, HEADER_MISMATCH, "{bad:?}");
        }
    }

    #[test]
    fn sse_bodies_yield_their_messages() {
        let body = b"event: message\r\nid: 1\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: {\"b\":\ndata: 2}\n\n";
        let msgs = response_messages("text/event-stream", body);
        assert_eq!(
            msgs,
            vec![serde_json::json!({"a":1}), serde_json::json!({"b":2})]
        );
    }

    #[test]
    fn sse_is_read_as_a_browser_reads_it() {
        // Lone CRs end lines; a leading byte order mark is skipped.
        assert_eq!(
            sse_data(b"\xef\xbb\xbfdata: a\r\rdata: b\r\n\r\n"),
            vec!["a", "b"]
        );
        // An event the body ends in the middle of is not an event.
        assert_eq!(sse_data(b"data: a\n\ndata: cut"), vec!["a"]);
        assert_eq!(sse_data(b"data: a\n\ndata: cut\n"), vec!["a"]);
        // `data` alone is an empty data line; `dataX` is another field.
        assert_eq!(sse_data(b"data\ndataX: no\ndata: y\n\n"), vec!["\ny"]);
    }
}
