//! A held call's open stream: the wait phase of a hold.
//!
//! The client is answered at once with an SSE stream that carries keep-alives (and
//! progress, when it asked for progress) while a person decides. An approval in time
//! sends the original bytes upstream and re-frames the answer onto this stream;
//! otherwise the stream ends with a deny or, when the wait ends first, with what lets
//! the client wait on: for a 2026-07-28 client an `input_required` result whose sealed
//! `requestState` its SDK sends back (and the wait goes on, see `request_state`), for an
//! older one the pending notice that says how to retry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::super::Gateway;
use super::super::holds::Verdict;
use super::super::mcp::{ClientMessage, Era};
use super::super::request_state::{HeldState, LAST_LEG, STATE_TTL};
use super::completion;
use super::observe::{AnswerFinder, SseEvents};
use super::reply::{error_result, sse_response};
use super::upstream::content_type_of;
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
    /// Whose call it is, and its keyed hash: what a `requestState` seals.
    pub principal: String,
    pub call_hash: String,
    /// Which leg of the wait this is (the call itself is leg 0).
    pub leg: u32,
    /// Whether the wait may go on inside the protocol: a 2026-07-28 client, whose request
    /// carries no state or input of an upstream's own (the SDK would send back only ours,
    /// and the upstream's would be lost).
    pub long_wait: bool,
}

/// Whether a request may wait inside the protocol (see `HeldRequest::long_wait`).
pub fn may_wait_long(message: &ClientMessage) -> bool {
    let params = message.body.get("params");
    message.era == Era::Modern
        && params
            .is_some_and(|p| p.get("requestState").is_none() && p.get("inputResponses").is_none())
}

impl HeldRequest {
    /// What an older client reads when its wait ends undecided: how to pick the approval
    /// up later.
    fn retry_notice(&self) -> String {
        format!(
            "Held for approval as {} until {}. Retry the identical call after approval.",
            self.call_id, self.expires_at
        )
    }

    /// What ends a wait that ended undecided: for a 2026-07-28 client, an
    /// `input_required` result carrying only a sealed `requestState`, which its SDK sends
    /// back to wait on; for an older one, `older` (a tool result that says what to do).
    /// On the last leg the SDKs make, the notice too: the SDK would not come back, and
    /// the agent learns how to pick the approval up later.
    fn undecided(&self, gw: &Gateway, older: &str) -> Bytes {
        if !self.long_wait || self.leg >= LAST_LEG {
            return sse_message(&error_result(&self.message, older).to_string());
        }
        let state = gw.state_seal.seal(&HeldState {
            call_id: self.call_id.clone(),
            call_hash: self.call_hash.clone(),
            principal: self.principal.clone(),
            expires: (chrono::Utc::now() + STATE_TTL).timestamp(),
            leg: self.leg + 1,
        });
        let id = self.message.id().cloned().unwrap_or(Value::Null);
        let answer = json!({"jsonrpc": "2.0", "id": id,
            "result": {"resultType": "input_required", "requestState": state}});
        sse_message(&answer.to_string())
    }
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
    sse_response(body)
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
                match v {
                    Ok(v) => answer(gw, &held, v, progress, tx).await,
                    // A newer leg of this wait took the hold over (this client is most
                    // likely gone): it is told to go on, never left without an answer.
                    Err(_) => {
                        let _ = tx.send(held.undecided(gw, &held.retry_notice())).await;
                    }
                }
                return;
            }
            () = tx.closed() => return,
            () = gw.stopped() => {
                // Nobody can approve it here now: the hold stays pending, so the identical
                // call can pick up its decision later. Beside other replicas, a 2026-07-28
                // client is told to wait on (its retry lands on a replica that is up);
                // alone, the client hears a deny that says why.
                let text = format!(
                    "Denied by toolgate: the gateway is shutting down before {} was decided, \
                     so the call did not run. It stays held until {}; retry the identical call later.",
                    held.call_id, held.expires_at
                );
                if gw.store.is_shared() {
                    let _ = tx.send(held.undecided(gw, &text)).await;
                } else {
                    send_result(&held.message, &text, tx).await;
                }
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
                        let _ = tx.send(held.undecided(gw, &held.retry_notice())).await;
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
        // The client withdrew the call; there is nobody to answer.
        Verdict::Cancelled => {}
        ended => {
            if let Some(text) = ended_text(&held.call_id, &ended) {
                send_result(&held.message, &text, tx).await;
            }
        }
    }
}

/// What the client reads of a hold that ended without running.
pub fn ended_text(call_id: &str, verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Denied { by, reason } => {
            let why = reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            Some(format!(
                "Denied by toolgate: {by} denied the held call {call_id}{why}"
            ))
        }
        Verdict::Expired => Some(format!(
            "Denied by toolgate: the held call {call_id} expired without approval"
        )),
        Verdict::Cancelled => Some(format!(
            "Denied by toolgate: the held call {call_id} was cancelled by its client"
        )),
        Verdict::Approved => None,
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
    let response = match forward_to(
        gw,
        upstream,
        &held.principal,
        &held.headers,
        held.bytes.clone(),
    )
    .await
    {
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
        progress_sent,
    };
    let result = reframe(upstream, &held.message, response, framing, tx).await;
    completion::record(gw, held.call_id.clone(), result, Some(status), started);
}

/// How an approved call's answer is put on the held stream.
struct Framing {
    /// The most of one SSE event read whole to renumber its progress; a bigger one
    /// passes as it is.
    max_bytes: usize,
    /// How many progress notifications the wait sent (1, 2, …, n). The upstream counts
    /// from 0 on its own, so its values are shifted past n to keep the sequence
    /// increasing, as the spec requires of progress.
    progress_sent: u64,
}

/// Puts the upstream's answer on the held stream as it arrives, and says how the call
/// ended. The client gets exactly one result: the upstream's, or, when its answer
/// carried none, one from toolgate saying that the call ran but its answer was lost.
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
    let renumber = message
        .body
        .pointer("/params/_meta/progressToken")
        .filter(|_| framing.progress_sent > 0 && finder.is_sse());
    let mut out = Outgoing::new(finder.is_sse(), renumber, framing);
    let mut stream = response.bytes_stream();
    let mut cut = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            cut = true;
            break;
        };
        finder.feed(&chunk);
        for piece in out.push(&chunk) {
            if tx.send(piece).await.is_err() {
                return CallResult::ClientGone;
            }
        }
    }
    for piece in out.finish() {
        if tx.send(piece).await.is_err() {
            return CallResult::ClientGone;
        }
    }
    match finder.end() {
        Some(found) => completion::verdict(Some(found)),
        None => {
            let how = if cut { "was cut off" } else { "ended" };
            let text = format!(
                "toolgate: the call ran after approval, but the upstream's answer {how} without its result"
            );
            send_result(message, &text, tx).await;
            if cut {
                CallResult::UpstreamError
            } else {
                CallResult::NoAnswer
            }
        }
    }
}

/// The bytes that go to the client for the upstream's: SSE as it is (events with the
/// client's progress renumbered, when they must be), a JSON answer framed as one SSE
/// `message` event line by line as it arrives, never buffered whole.
struct Outgoing<'a> {
    sse: bool,
    renumber: Option<&'a Value>,
    framing: Framing,
    events: SseEvents,
    /// For a JSON answer: whether its event has been opened.
    opened: bool,
}

impl<'a> Outgoing<'a> {
    fn new(sse: bool, renumber: Option<&'a Value>, framing: Framing) -> Self {
        Self {
            sse,
            renumber,
            framing,
            events: SseEvents::default(),
            opened: false,
        }
    }

    fn push(&mut self, chunk: &Bytes) -> Vec<Bytes> {
        if !self.sse {
            let mut framed = Vec::with_capacity(chunk.len() + 32);
            if !std::mem::replace(&mut self.opened, true) {
                framed.extend_from_slice(b"event: message\ndata: ");
            }
            // Every line of the body becomes a `data:` line of the one event.
            for &b in chunk.iter() {
                match b {
                    b'\n' | b'\r' => framed.extend_from_slice(b"\ndata: "),
                    _ => framed.push(b),
                }
            }
            return vec![Bytes::from(framed)];
        }
        let Some(token) = self.renumber else {
            return vec![chunk.clone()];
        };
        let offset = self.framing.progress_sent + 1;
        let mut out: Vec<Bytes> = self
            .events
            .push(chunk)
            .into_iter()
            .map(|event| renumber_progress(event, token, offset))
            .collect();
        // An event too big to read whole goes on as it is.
        if self.events.pending_len() > self.framing.max_bytes {
            out.push(Bytes::from(self.events.take_rest()));
        }
        out
    }

    fn finish(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.sse {
            if self.opened {
                out.push(Bytes::from_static(b"\n\n"));
            }
        } else {
            let rest = self.events.take_rest();
            if !rest.is_empty() {
                out.push(Bytes::from(rest));
            }
        }
        out
    }
}

/// The event with its progress (and total) shifted by `offset` when it is a progress
/// notification for `token`, its other lines (`id:`, `event:`) kept; any other event
/// unchanged, byte for byte.
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
    let text = String::from_utf8_lossy(&event);
    let mut out = String::with_capacity(event.len() + 16);
    let mut data_written = false;
    for line in text.split_inclusive(['\n']) {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.is_empty() {
            continue;
        }
        if bare.starts_with("data:") {
            if !std::mem::replace(&mut data_written, true) {
                out.push_str("data: ");
                out.push_str(&message.to_string());
                out.push('\n');
            }
        } else {
            out.push_str(bare);
            out.push('\n');
        }
    }
    out.push('\n');
    Bytes::from(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_shifted_and_the_events_other_lines_are_kept() {
        let event = b"id: 7\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"t\",\"progress\":0,\"total\":4}}\r\n\r\n".to_vec();
        let out = renumber_progress(event, &json!("t"), 3);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("id: 7\nevent: message\ndata: "), "{text}");
        assert!(text.ends_with("\n\n"), "{text}");
        let data: Value =
            serde_json::from_str(text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["params"]["progress"], 3);
        assert_eq!(data["params"]["total"], 7);
        let other = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"u\",\"progress\":0}}\n\n".to_vec();
        assert_eq!(
            renumber_progress(other.clone(), &json!("t"), 3).to_vec(),
            other
        );
    }

    #[test]
    fn a_json_answer_is_framed_as_one_event_line_by_line() {
        let framing = Framing {
            max_bytes: 1024,
            progress_sent: 0,
        };
        let mut out = Outgoing::new(false, None, framing);
        let mut bytes = Vec::new();
        for chunk in [&b"{\"a\":\n"[..], b"1}\r\n"] {
            for piece in out.push(&Bytes::copy_from_slice(chunk)) {
                bytes.extend_from_slice(&piece);
            }
        }
        for piece in out.finish() {
            bytes.extend_from_slice(&piece);
        }
        let messages = crate::gateway::mcp::response_messages("text/event-stream", &bytes);
        assert_eq!(
            messages,
            vec![json!({"a": 1})],
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
