//! `call.completed`: how each call that went upstream ended, learned by watching its
//! answer stream past on the way to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::Value;

use super::Gateway;
use super::mcp;
use super::store::WriteOp;
use crate::api::{CallResult, EventBody};

/// The most of an answer kept to tell a tool error from success.
const MAX_WATCHED_BYTES: usize = 1024 * 1024;

/// Records how a call ended. Off the call's path: the client already has its answer.
pub fn record(
    gw: &Arc<Gateway>,
    call_id: String,
    result: CallResult,
    upstream_status: Option<u16>,
    started: Instant,
) {
    let body = EventBody::CallCompleted {
        call_id,
        result,
        upstream_status,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    gw.store.record(WriteOp::Event(Box::new(body)));
}

/// What an answer says about its call: a tool error, an upstream (JSON-RPC) error, or ok.
pub fn judge(content_type: &str, body: &[u8], id: &Value) -> CallResult {
    let answer = mcp::response_messages(content_type, body)
        .into_iter()
        .find(|m| {
            m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some())
        });
    match answer {
        Some(m) if m.get("error").is_some() => CallResult::UpstreamError,
        Some(m) if m.pointer("/result/isError") == Some(&Value::Bool(true)) => {
            CallResult::ToolError
        }
        Some(_) => CallResult::Ok,
        // Cut short, or too large to keep: it reached the client, so it counts as ok.
        None => CallResult::Ok,
    }
}

/// Relays an upstream answer unchanged, and records `call.completed` when it ends.
pub fn relay(
    gw: &Arc<Gateway>,
    call_id: String,
    id: Value,
    started: Instant,
    upstream: reqwest::Response,
) -> Response {
    let status = upstream.status();
    let mut head = Response::builder().status(status);
    for (name, value) in upstream.headers() {
        if !super::proxy::is_hop_by_hop(name) {
            head = head.header(name, value);
        }
    }
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let watch = Watch {
        expected_len: upstream.content_length(),
        inner: Box::pin(upstream.bytes_stream()),
        copy: Vec::new(),
        end: Some(Box::new({
            let gw = gw.clone();
            move |ended: Ended| {
                let result = match ended {
                    _ if !status.is_success() => CallResult::UpstreamError,
                    Ended::Complete(body) => judge(&content_type, &body, &id),
                    Ended::Failed => CallResult::UpstreamError,
                    Ended::ClientGone => CallResult::ClientGone,
                };
                record(&gw, call_id, result, Some(status.as_u16()), started);
            }
        })),
    };
    head.body(Body::from_stream(watch))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

enum Ended {
    Complete(Vec<u8>),
    Failed,
    ClientGone,
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

struct Watch {
    inner: ByteStream,
    /// hyper may stop polling once a Content-Length body is complete.
    expected_len: Option<u64>,
    copy: Vec<u8>,
    end: Option<Box<dyn FnOnce(Ended) + Send>>,
}

impl Watch {
    fn finish(&mut self, ended: Ended) {
        if let Some(end) = self.end.take() {
            end(ended);
        }
    }
}

impl Stream for Watch {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.copy.len() + chunk.len() <= MAX_WATCHED_BYTES {
                    self.copy.extend_from_slice(chunk);
                }
                self.expected_len = self
                    .expected_len
                    .map(|n| n.saturating_sub(chunk.len() as u64));
                if self.expected_len == Some(0) {
                    let body = std::mem::take(&mut self.copy);
                    self.finish(Ended::Complete(body));
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Ended::Failed),
            Poll::Ready(None) => {
                let body = std::mem::take(&mut self.copy);
                self.finish(Ended::Complete(body));
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.finish(Ended::ClientGone);
    }
}
