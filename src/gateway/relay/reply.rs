//! The answers toolgate gives itself, in place of an upstream's: denies as tool results,
//! JSON-RPC errors, and plain JSON.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::escape::Escaped;
use super::super::mcp::{self, ClientMessage, Era, INVALID_PARAMS};
use crate::api::DecisionEvent;

pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    // Our own types always serialize; an empty object beats a panic in a handler.
    let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned());
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// An SSE stream as the answer: what a held call's client and a stdio server's
/// streamed answers get.
pub fn sse_response(body: axum::body::Body) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// A tool result that reports an error, as toolgate answers a call it will not run.
pub fn error_result(message: &ClientMessage, text: &str) -> Value {
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": true});
    if message.era == Era::Modern {
        result["resultType"] = json!("complete");
    }
    let id = message.id().cloned().unwrap_or(Value::Null);
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A deny as the tool's own result: HTTP 200 with `isError`, so an agent reads the
/// reason the way it reads any tool failure.
pub(super) fn deny_response(message: &ClientMessage, text: &str) -> Response {
    json_response(StatusCode::OK, &error_result(message, text))
}

/// Where denied tools are hidden, a call to one looks like a call to no tool at all.
pub(super) fn unknown_tool_response(message: &ClientMessage, tool: &str) -> Response {
    let id = message.id().cloned().unwrap_or(Value::Null);
    json_response(
        StatusCode::OK,
        &mcp::error_body(&id, INVALID_PARAMS, &format!("Unknown tool: {tool}")),
    )
}

/// What a denied call's client reads: the deciding policy and its reason.
pub(super) fn denied_text(decision: &DecisionEvent) -> String {
    format!(
        "Denied by toolgate policy {}: {}",
        if decision.policy_ids.is_empty() {
            "default-deny".to_owned()
        } else {
            decision.policy_ids.join(",")
        },
        decision.reason
    )
}

pub(super) fn upstream_unreachable(name: &str, id: &Value, e: &reqwest::Error) -> Response {
    tracing::warn!(upstream = %Escaped(name), error = %e, "upstream unreachable");
    json_response(
        StatusCode::BAD_GATEWAY,
        &mcp::error_body(
            id,
            -32603,
            &format!("toolgate: upstream {name:?} unreachable"),
        ),
    )
}
