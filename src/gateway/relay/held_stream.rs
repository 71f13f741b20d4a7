//! A held call's open stream: the wait phase of a hold.
//!
//! The client is answered at once with an SSE stream that carries keep-alives (and
//! progress, when it asked for progress) while a person decides. An approval in time
//! sends the original bytes upstream and re-frames the answer onto this stream;
//! otherwise the stream ends with a deny, or with the pending notice that says how
//! to retry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::super::Gateway;
use super::super::holds::Verdict;
use super::super::mcp::ClientMessage;
use super::completion;
use super::observe::{AnswerFinder, SseEvents};
use super::reply::error_result;
use super::upstream::{ReadError, content_type_of, read_bounded};
use super::upstream::{Upstream, forward_to};
use crate::api::{CallResult, Resolution};

/// How often a waiting stream shows it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Everything the wait needs to run the call later, unchanged.
pub struct HeldRequest {
    pub upstream: String,
    pub message: ClientMessage,
    pub bytes: Bytes,
    pub headers: HeaderMap,
    pub call_id: String,
    pub expires_at: String,
    pub wait: Duration,
}

pub fn respond(
    gw: Arc<Gateway>,
    held: HeldRequest,
    verdict: oneshot::Receiver<Verdict>,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let call_id = held.call_id.clone();
        wait(&gw, held, verdict, &tx).await;
        // Whatever ended the wait, no client is waiting on this hold any more.
        gw.holds.release_waiter(&call_id).await;
    });
    let body = Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    }));
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

async fn wait(
    gw: &Arc<Gateway>,
    held: HeldRequest,
    mut verdict: oneshot::Receiver<Verdict>,
    tx: &mpsc::Sender<Bytes>,
) {
    let progress_token = held
        .message
        .body
        .pointer("/params/_meta/progressToken")
        .cloned();
    let opened = format!(": toolgate: held for approval as {}\n\n", held.call_id);
    if tx.send(Bytes::from(opened)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(held.wait);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let mut progress = 0u64;
    loop {
        tokio::select! {
            biased;
            v = &mut verdict => {
                if let Ok(v) = v {
                    answer(gw, &held, v, progress, tx).await;
                }
                return;
            }
            () = tx.closed() => return,
            () = gw.stopped() => {
                // Nobody can approve it now: the client hears a deny, and the hold stays
                // pending, so the identical call can pick up its decision later.
                let text = format!(
                    "Denied by toolgate: the gateway is shutting down before {} was decided, \
                     so the call did not run. It stays held until {}; retry the identical call later.",
                    held.call_id, held.expires_at
                );
                send_result(&held.message, &text, tx).await;
                return;
            }
            () = &mut deadline => {
                // A hold whose approval time ends with its wait expires now, so the
                // client hears so rather than being told to retry.
                let now = chrono::Utc::now();
                if chrono::DateTime::parse_from_rfc3339(&held.expires_at).is_ok_and(|e| e <= now)
                    && let Err(e) = gw.holds.expire_due(now).await
                {
                    tracing::error!(error = %e, "expiring a hold failed");
                }
                // An approval or expiry may have landed at this very instant.
                match verdict.try_recv() {
                    Ok(v) => answer(gw, &held, v, progress, tx).await,
                    Err(_) => {
                        let text = format!(
                            "Held for approval as {} until {}. Retry the identical call after approval.",
                            held.call_id, held.expires_at
                        );
                        send_result(&held.message, &text, tx).await;
                    }
                }
                return;
            }
            _ = ticks.tick() => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                if let Some(token) = &progress_token {
                    progress += 1;
                    let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {
                        "progressToken": token, "progress": progress,
                        "message": format!("waiting for an operator to approve {}", held.call_id)}});
                    if tx.send(sse_message(&note.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// `progress_sent`: how many progress notifications the wait sent.
async fn answer(
    gw: &Arc<Gateway>,
    held: &HeldRequest,
    verdict: Verdict,
    progress_sent: u64,
    tx: &mpsc::Sender<Bytes>,
) {
    match verdict {
        Verdict::Approved => run_approved(gw, held, progress_sent, tx).await,
        Verdict::Denied { by, reason } => {
            let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
            let text = format!(
                "Denied by toolgate: {by} denied the held call {}{why}",
                held.call_id
            );
            send_result(&held.message, &text, tx).await;
        }
        Verdict::Expired => {
            let text = format!(
                "Denied by toolgate: the held call {} expired without approval",
                held.call_id
            );
            send_result(&held.message, &text, tx).await;
        }
        // The client withdrew the call; there is nobody to answer.
        Verdict::Cancelled => {}
    }
}

/// Sends the original bytes upstream, and re-frames the answer onto the open stream.
async fn run_approved(
    gw: &Arc<Gateway>,
    held: &HeldRequest,
    progress_sent: u64,
    tx: &mpsc::Sender<Bytes>,
) {
    // A client that is gone never has its call run; the approval waits for a retry.
    if tx.is_closed() {
        return;
    }
    match gw.holds.consume(&held.call_id).await {
        Ok(Ok(())) => {}
        // An identical retry took the approval first: the call ran once, there. This
        // stream still gets its one answer, saying so.
        Ok(Err(now)) => {
            let what = match (now.resolution, now.reason) {
                (Some(Resolution::Consumed), Some(reason)) => {
                    format!("it was approved and {reason}")
                }
                (Some(resolution), _) => format!("it is {}", resolution.as_str()),
                (None, _) => "it is not approved any more".to_owned(),
            };
            let text = format!(
                "toolgate: the held call {} did not run on this request: {what}",
                held.call_id
            );
            send_result(&held.message, &text, tx).await;
            return;
        }
        Err(e) => {
            tracing::error!(call_id = %held.call_id, error = %e, "approved call not run: the store did not record it");
            send_result(&held.message, "toolgate: audit store unavailable", tx).await;
            return;
        }
    }
    let Some(upstream) = gw.upstreams.get(&held.upstream) else {
        send_result(
            &held.message,
            "toolgate: the upstream is no longer configured",
            tx,
        )
        .await;
        return;
    };
    let started = std::time::Instant::now();
    let response = match forward_to(gw, upstream, &held.headers, held.bytes.clone()).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(upstream = %held.upstream, error = %e, "upstream unreachable after approval");
            let text = format!(
                "toolgate: upstream {:?} unreachable after approval",
                held.upstream
            );
            send_result(&held.message, &text, tx).await;
            completion::record(
                gw,
                held.call_id.clone(),
                CallResult::UpstreamError,
                None,
                started,
            );
            return;
        }
    };
    let status = response.status().as_u16();
    let framing = Framing {
        max_bytes: gw.config.gateway.max_response_bytes,
        progress_offset: progress_sent,
    };
    let result = reframe(upstream, &held.message, response, framing, tx).await;
    completion::record(gw, held.call_id.clone(), result, Some(status), started);
}

/// How an approved call's answer is put on the held stream.
struct Framing {
    /// The most of a JSON answer, or of one SSE event, read whole.
    max_bytes: usize,
    /// How many progress notifications the wait sent: the upstream's own count from
    /// 0, so its values are shifted by this much to keep the sequence increasing, as
    /// the spec requires of progress.
    progress_offset: u64,
}

/// Puts the upstream's answer on the held stream, and says how the call ended.
async fn reframe(
    upstream: &Upstream,
    message: &ClientMessage,
    response: reqwest::Response,
    framing: Framing,
    tx: &mpsc::Sender<Bytes>,
) -> CallResult {
    let status = response.status();
    if !status.is_success() {
        let not_followed = if status.is_redirection() {
            " (redirects are not followed)"
        } else {
            ""
        };
        let text = format!(
            "toolgate: upstream answered HTTP {} after approval{not_followed}",
            status.as_u16()
        );
        tracing::warn!(upstream = %upstream.config.name, %status, "upstream refused an approved call");
        send_result(message, &text, tx).await;
        return CallResult::UpstreamError;
    }
    let content_type = content_type_of(&response);
    let id = message.id().cloned().unwrap_or(Value::Null);
    let mut finder = AnswerFinder::new(&content_type, id);
    let too_large = || {
        format!(
            "toolgate: the upstream's answer after approval is over max_response_bytes ({} bytes)",
            framing.max_bytes
        )
    };
    if finder.is_sse() {
        // Event by event, as the upstream sends them; only its progress is renumbered.
        let progress_token = message.body.pointer("/params/_meta/progressToken");
        let mut events = SseEvents::default();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                return CallResult::UpstreamError;
            };
            for event in events.push(&chunk) {
                finder.feed(&event);
                let out = match progress_token {
                    Some(token) if framing.progress_offset > 0 => {
                        renumber_progress(event, token, framing.progress_offset)
                    }
                    _ => Bytes::from(event),
                };
                if tx.send(out).await.is_err() {
                    return CallResult::ClientGone;
                }
            }
            if events.pending_len() > framing.max_bytes {
                if finder.found().is_none() {
                    send_result(message, &too_large(), tx).await;
                }
                return CallResult::UpstreamError;
            }
        }
        let rest = events.take_rest();
        finder.feed(&rest);
        if !rest.is_empty() && tx.send(Bytes::from(rest)).await.is_err() {
            return CallResult::ClientGone;
        }
    } else {
        let body = match read_bounded(response, framing.max_bytes).await {
            Ok(body) => body,
            Err(ReadError::TooLarge(_)) => {
                send_result(message, &too_large(), tx).await;
                return CallResult::UpstreamError;
            }
            Err(ReadError::Upstream(_)) => return CallResult::UpstreamError,
        };
        finder.feed(&body);
        if tx
            .send(sse_message(&String::from_utf8_lossy(&body)))
            .await
            .is_err()
        {
            return CallResult::ClientGone;
        }
    }
    completion::verdict(finder.end())
}

/// The event with its progress (and total) shifted by `offset` when it is a progress
/// notification for `token`; any other event unchanged, byte for byte.
fn renumber_progress(event: Vec<u8>, token: &Value, offset: u64) -> Bytes {
    let messages = super::super::mcp::response_messages("text/event-stream", &event);
    let [message] = messages.as_slice() else {
        return Bytes::from(event);
    };
    if message.get("method").and_then(Value::as_str) != Some("notifications/progress")
        || message.pointer("/params/progressToken") != Some(token)
    {
        return Bytes::from(event);
    }
    let mut message = message.clone();
    for field in ["progress", "total"] {
        if let Some(value) = message.pointer_mut(&format!("/params/{field}")) {
            *value = match (value.as_u64(), value.as_f64()) {
                (Some(n), _) => json!(n.saturating_add(offset)),
                (None, Some(f)) => json!(f + offset as f64),
                _ => continue,
            };
        }
    }
    sse_message(&message.to_string())
}

/// One SSE `message` event; a multi-line payload becomes several `data:` lines.
fn sse_message(payload: &str) -> Bytes {
    let mut out = String::from("event: message\n");
    for line in payload.trim_end().split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

async fn send_result(message: &ClientMessage, text: &str, tx: &mpsc::Sender<Bytes>) {
    let body: Value = error_result(message, text);
    let _ = tx.send(sse_message(&body.to_string())).await;
}
