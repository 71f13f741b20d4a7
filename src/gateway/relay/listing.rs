//! A `tools/list`: relayed unchanged while the catalog learns from a copy, or, with
//! `hide_denied_tools`, read whole and filtered to what the caller may call.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use super::super::identity::Identity;
use super::super::mcp;
use super::super::policy::CallFacts;
use super::super::{Gateway, to_completion};
use super::observe::AnswerFinder;
use super::reply::{json_response, upstream_unreachable};
use super::request::Post;
use super::upstream::{ReadError, read_bounded};
use super::upstream::{Upstream, content_type_of, relay_response, response_head};
use crate::api::Outcome;

/// Relays a listing, teaching the catalog from it on the way.
pub async fn relay(post: Post<'_>) -> Response {
    let response = match post.forward().await {
        Ok(r) => r,
        Err(failure) => {
            return json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&post.id(), -32603, &failure.text),
            );
        }
    };
    let id = post.id();
    if !response.status().is_success() {
        return relay_response(response);
    }
    if post.upstream.config.hide_denied_tools {
        filtered_listing(post.gw, post.upstream, &post.identity, id, response).await
    } else {
        learn_from_listing(post.gw, post.upstream, id, response)
    }
}

/// The most of a `tools/list` answer kept aside for the catalog; a bigger one still
/// reaches the client, but is not learned from.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

/// Relays a `tools/list` answer unchanged while keeping a copy. The catalog learns
/// from the copy before the answer's last bytes go out, so a client that lists and
/// then calls at once is decided with what it was shown.
pub(super) fn learn_from_listing(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    id: Value,
    response: reqwest::Response,
) -> Response {
    let head = response_head(&response);
    let content_type = content_type_of(&response);
    let finder = content_type
        .starts_with("text/event-stream")
        .then(|| AnswerFinder::new(&content_type, id.clone()));
    let gw = gw.clone();
    let name = upstream.config.name.clone();
    let learn = move |body: Vec<u8>| -> BoxFuture<'static, ()> {
        // Its own task, so a client that hangs up cannot cut learning short.
        let task = tokio::spawn(async move {
            learn_listing(&gw, &name, &content_type, &body, &id).await;
        });
        Box::pin(async move {
            let _ = task.await;
        })
    };
    let tee = Tee {
        expected_len: response.content_length(),
        finder,
        inner: Box::pin(response.bytes_stream()),
        copy: Vec::new(),
        overflowed: false,
        learn: Some(Box::new(learn)),
        learning: None,
    };
    head.body(Body::from_stream(tee))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Teaches the catalog one complete `tools/list` answer.
pub(super) async fn learn_listing(
    gw: &Gateway,
    upstream: &str,
    content_type: &str,
    body: &[u8],
    id: &Value,
) {
    let Some(upstream) = gw.upstreams.get(upstream) else {
        return;
    };
    let messages = mcp::response_messages(content_type, body);
    let Some(tools) = listed_tools(&messages, id) else {
        tracing::debug!(upstream = %upstream.config.name, "tools/list answer carried no tools");
        return;
    };
    match gw.catalog.learn(&upstream.config, &tools).await {
        Ok(n) => {
            tracing::debug!(upstream = %upstream.config.name, listed = tools.len(), recorded = n, "catalog learned")
        }
        Err(e) => {
            tracing::error!(upstream = %upstream.config.name, error = %e, "catalog not recorded")
        }
    }
}

/// With `hide_denied_tools`, a listing shows only the tools this identity may call
/// (decided without arguments). The answer is read whole and re-framed, the one place
/// the relay re-encodes, and only where the operator asked for it.
pub(super) async fn filtered_listing(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    identity: &Identity,
    id: Value,
    response: reqwest::Response,
) -> Response {
    // Re-framed, so its length is not the upstream's.
    let mut head = response_head(&response);
    if let Some(headers) = head.headers_mut() {
        headers.remove(header::CONTENT_LENGTH);
    }
    let content_type = content_type_of(&response);
    let body = match read_bounded(response, gw.config.gateway.max_response_bytes).await {
        Ok(b) => b,
        Err(ReadError::TooLarge(max)) => {
            tracing::warn!(upstream = %upstream.config.name, max, "tools/list answer too large to filter");
            let text = format!(
                "toolgate: the upstream's tools/list answer is over max_response_bytes ({max} bytes), too large to filter"
            );
            return json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&id, -32603, &text),
            );
        }
        Err(ReadError::Upstream(e)) => {
            return upstream_unreachable(&upstream.config.name, &id, &e);
        }
    };
    // Its own task, so a client that hangs up cannot cut learning short; the body goes
    // there and comes back, uncopied.
    let body = {
        let (gw, name, content_type, id) = (
            gw.clone(),
            upstream.config.name.clone(),
            content_type.clone(),
            id.clone(),
        );
        to_completion(async move {
            learn_listing(&gw, &name, &content_type, &body, &id).await;
            body
        })
        .await
    };
    let mut messages = mcp::response_messages(&content_type, &body);
    let engine = gw.policy();
    let no_args = Map::new();
    let now = chrono::Utc::now();
    for m in &mut messages {
        if m.get("id") != Some(&id) {
            continue;
        }
        if let Some(Value::Array(tools)) = m.pointer_mut("/result/tools") {
            tools.retain(|t| {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    return false;
                };
                let decision = engine.decide(&CallFacts {
                    identity,
                    upstream: &upstream.config.name,
                    tool: name,
                    risk: gw.catalog.risk(&upstream.config.name, name),
                    args: &no_args,
                    target: None,
                    workflow: None,
                    now,
                });
                decision.outcome != Outcome::Deny
            });
        }
    }
    let out = if content_type.starts_with("text/event-stream") {
        messages
            .iter()
            .map(|m| format!("event: message\ndata: {m}\n\n"))
            .collect::<String>()
    } else {
        messages.first().map(Value::to_string).unwrap_or_default()
    };
    head.body(Body::from(out))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

pub(super) fn listed_tools(messages: &[Value], id: &Value) -> Option<Vec<Value>> {
    messages
        .iter()
        .find(|m| m.get("id") == Some(id) && m.get("result").is_some())
        .and_then(|m| {
            m.pointer("/result/tools")
                .and_then(Value::as_array)
                .cloned()
        })
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

type Learn = Box<dyn FnOnce(Vec<u8>) -> BoxFuture<'static, ()> + Send>;

pub(super) struct Tee {
    inner: ByteStream,
    /// hyper stops polling once a Content-Length body is complete, so the end of the
    /// stream may never be seen; reaching the declared length counts as the end.
    expected_len: Option<u64>,
    /// For an SSE answer: watches for the response to the listing's request id, which
    /// ends the listing. A client may hang up as soon as it has it, before the stream's end.
    finder: Option<AnswerFinder>,
    copy: Vec<u8>,
    overflowed: bool,
    learn: Option<Learn>,
    /// Learning in progress, and the final item held back until it is done.
    learning: Option<(BoxFuture<'static, ()>, Option<Bytes>)>,
}

impl Stream for Tee {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some((learning, _)) = self.learning.as_mut() {
                std::task::ready!(learning.as_mut().poll(cx));
                let (_, held) = self.learning.take().expect("learning");
                return Poll::Ready(held.map(Ok));
            }
            let polled = self.inner.as_mut().poll_next(cx);
            match polled {
                // Learning has started (or is done): nothing more to keep.
                Poll::Ready(Some(Ok(chunk))) if !self.overflowed && self.learn.is_some() => {
                    if self.copy.len() + chunk.len() > MAX_LISTING_BYTES {
                        self.overflowed = true;
                        self.copy = Vec::new();
                        tracing::warn!(
                            "tools/list answer over {MAX_LISTING_BYTES} bytes; not learned"
                        );
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    self.copy.extend_from_slice(&chunk);
                    let answered = self.finder.as_mut().is_some_and(|f| f.feed(&chunk));
                    if self.expected_len == Some(self.copy.len() as u64) || answered {
                        self.start_learning(Some(chunk));
                        continue;
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(None) if !self.overflowed && self.learn.is_some() => {
                    self.start_learning(None);
                    continue;
                }
                other => return other,
            }
        }
    }
}

impl Tee {
    fn start_learning(&mut self, held: Option<Bytes>) {
        match self.learn.take() {
            Some(learn) => self.learning = Some((learn(std::mem::take(&mut self.copy)), held)),
            // Already learned: pass the item straight through on the next poll.
            None => self.learning = Some((Box::pin(std::future::ready(())), held)),
        }
    }
}
