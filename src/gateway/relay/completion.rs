//! `call.completed`: how each call that went upstream ended, learned by watching its
//! answer stream past on the way to the client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::Value;

use super::super::Gateway;
use super::super::store::WriteOp;
use super::observe::{AnswerFinder, Found};
use super::upstream::{content_type_of, response_head};
use crate::api::{CallResult, EventBody};

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
    let mut finder = AnswerFinder::new(content_type, id.clone());
    finder.feed(body);
    verdict(finder.end())
}

pub fn verdict(found: Option<&Found>) -> CallResult {
    match found {
        Some(Found::Message(m)) if m.get("error").is_some() => CallResult::UpstreamError,
        Some(Found::Message(m)) if m.pointer("/result/isError") == Some(&Value::Bool(true)) => {
            CallResult::ToolError
        }
        Some(Found::Message(_)) => CallResult::Ok,
        // Too large to read, but it reached the client whole.
        Some(Found::TooLarge) => CallResult::Ok,
        None => CallResult::NoAnswer,
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
    let head = response_head(&upstream);
    let watch = Watch {
        expected_len: upstream.content_length(),
        finder: AnswerFinder::new(&content_type_of(&upstream), id),
        answered: false,
        inner: Box::pin(upstream.bytes_stream()),
        end: Some(Box::new({
            let gw = gw.clone();
            move |result: CallResult| {
                let result = if status.is_success() {
                    result
                } else {
                    CallResult::UpstreamError
                };
                record(&gw, call_id, result, Some(status.as_u16()), started);
            }
        })),
    };
    head.body(Body::from_stream(watch))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

struct Watch {
    inner: ByteStream,
    /// hyper may stop polling once a Content-Length body is complete.
    expected_len: Option<u64>,
    finder: AnswerFinder,
    /// The chunk that completed the response went out: once hyper asks for more, the
    /// client has its answer, whenever the upstream ends its stream.
    answered: bool,
    end: Option<Box<dyn FnOnce(CallResult) + Send>>,
}

impl Watch {
    fn finish(&mut self, result: CallResult) {
        if let Some(end) = self.end.take() {
            end(result);
        }
    }

    fn finish_with_answer(&mut self) {
        let result = verdict(self.finder.end());
        self.finish(result);
    }
}

impl Stream for Watch {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.answered {
            self.finish_with_answer();
        }
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                self.answered = self.finder.feed(chunk);
                self.expected_len = self
                    .expected_len
                    .map(|n| n.saturating_sub(chunk.len() as u64));
                if self.expected_len == Some(0) {
                    self.finish_with_answer();
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(CallResult::UpstreamError),
            Poll::Ready(None) => self.finish_with_answer(),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.finish(CallResult::ClientGone);
    }
}
