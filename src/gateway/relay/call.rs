//! A `tools/call`: decided and committed before anything else, then denied, held, or
//! forwarded with its ending recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::super::decide::{self, Decided};
use super::super::escape::Escaped;
use super::super::exact;
use super::super::holds;
use super::super::mcp::{self, INVALID_PARAMS, INVALID_REQUEST};
use super::super::request_state::{self, StateError};
use super::super::{Gateway, to_completion};
use super::admit::Refusal;
use super::completion;
use super::held_stream;
use super::reply::{
    denied_text, deny_response, error_result, json_response, unknown_tool_response,
};
use super::request::{FailureKind, Post};
use super::upstream::relay_response;
use crate::api::{CallResult, DecisionEvent, Outcome, Resolution};
use axum::body::Bytes;

pub async fn relay(post: Post<'_>) -> Response {
    let gw = post.gw;
    let (tool, args) = post
        .message
        .tool_call()
        .expect("dispatched as a tools/call");
    let workflow = match decide::workflow_of(&post.message, post.headers) {
        Ok(w) => w,
        Err(reason) => {
            let body = mcp::error_body(
                &post.id(),
                INVALID_REQUEST,
                &format!("Invalid request: {reason}"),
            );
            return Refusal::new(StatusCode::BAD_REQUEST, body).into_response();
        }
    };
    // Beside other replicas: a copy (classes, policy) that may be out of date decides
    // nothing, and may not have heard how a hold ended.
    if let Some(why) = gw.out_of_step() {
        tracing::warn!(upstream = %Escaped(post.name), tool = %Escaped(tool), %why, "replica out of step with the shared store; call denied");
        return deny_response(
            &post.message,
            "toolgate: this gateway replica is catching up with the others; try again",
        );
    }
    // A 2026-07-28 client back to wait on its hold: nothing new to decide.
    if let Some(state) = gw.state_seal.ours(&post.message.body) {
        let state = state.to_owned();
        return resume(post, &state).await;
    }
    // A 2026-07-28 call again that brings the answer its stdio server asked for mid-call
    // runs nothing new (the same identity, tool and arguments, checked by the bridge):
    // it goes on to the waiting call, which was decided (and, if held, approved) when it
    // was made. Decided again, an approved write would be held a second time.
    if let Some(stdio) = &post.upstream.stdio
        && stdio.continues(&post.identity.principal(), &post.message.body)
    {
        tracing::info!(upstream = %Escaped(post.name), tool = %Escaped(tool),
            "call again continues a call waiting on its stdio server for the client's answer; not decided again");
        return match post.forward().await {
            Ok(response) => relay_response(response),
            Err(failure) => json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&post.id(), -32603, &failure.text),
            ),
        };
    }
    let started = Instant::now();
    let decided = gw
        .decide_call(
            &post.identity,
            post.name,
            tool,
            args,
            decide::CallContext {
                workflow,
                traceparent: decide::traceparent_of(&post.message, post.headers),
            },
            &post.bytes,
        )
        .await;
    let decision = match decided {
        Ok(Decided::Committed(d)) => d,
        // A new hold: its decision commits with it.
        Ok(Decided::ToHold(held, key)) => return hold(post, held, key).await,
        Err(e) => {
            gw.metrics.store_error();
            tracing::error!(upstream = %Escaped(post.name), tool = %Escaped(tool), error = %e, "decision not stored; call denied");
            return deny_response(&post.message, "toolgate: audit store unavailable");
        }
    };
    note_decided(gw, &post.identity.principal(), &decision);
    match decision.outcome {
        Outcome::Allow => {}
        Outcome::Deny if post.upstream.config.hide_denied_tools => {
            return unknown_tool_response(&post.message, tool);
        }
        Outcome::Deny => return deny_response(&post.message, &denied_text(&decision)),
        Outcome::Hold => unreachable!("a held call is answered by its hold"),
    }
    match post.forward().await {
        Ok(response) => completion::relay(gw, decision.call_id, post.id(), started, response),
        Err(failure) => {
            completion::record(
                gw,
                decision.call_id,
                CallResult::UpstreamError,
                failure.upstream_status,
                started,
            );
            match failure.kind {
                FailureKind::Unreachable => json_response(
                    StatusCode::BAD_GATEWAY,
                    &mcp::error_body(&post.id(), -32603, &failure.text),
                ),
                // As after an approval: the call failed upstream, and the agent reads why.
                FailureKind::Refused => {
                    json_response(StatusCode::OK, &error_result(&post.message, &failure.text))
                }
            }
        }
    }
}

/// Opens a hold and answers with its waiting stream.
async fn hold(post: Post<'_>, decision: DecisionEvent, key: holds::CallKey) -> Response {
    let gw = post.gw;
    let (_, args) = post
        .message
        .tool_call()
        .expect("a held message is a tools/call");
    let wait = wait_of(&post);
    let ttl = chrono::Duration::seconds(gw.config.gateway.approval_ttl_secs as i64);
    let call_id = decision.call_id.clone();
    let new = holds::NewHold {
        call: holds::HeldCall {
            identity: post.identity.clone(),
            args: Some(args.clone()),
            decision,
        },
        key,
        size: post.bytes.len(),
        session_id: post.session.clone(),
        request_id: post.id(),
        ttl,
    };
    let principal = post.identity.principal();
    let call_hash = new.key.hash.clone();
    // The hold and its place in memory must not part if the client hangs up now.
    let created = {
        let gw = gw.clone();
        to_completion(async move { gw.holds.create(new).await }).await
    };
    let (verdict, expires_at) = match created {
        Ok(created) => {
            note_decided(gw, &principal, &created.decision);
            gw.notifier.held(&created.decision, &created.expires_at);
            (created.verdict, created.expires_at)
        }
        Err(holds::CreateError::Refused(denied)) => {
            note_decided(gw, &principal, &denied);
            return deny_response(&post.message, &denied_text(&denied));
        }
        Err(holds::CreateError::Store(e)) => {
            gw.metrics.store_error();
            tracing::error!(%call_id, error = %e, "hold not stored; call denied");
            return deny_response(&post.message, "toolgate: audit store unavailable");
        }
    };
    let long_wait = held_stream::may_wait_long(&post.message);
    held_stream::respond(
        gw.clone(),
        held_stream::HeldRequest {
            upstream: post.upstream.config.name.clone(),
            message: post.message,
            bytes: post.bytes,
            headers: post.headers.clone(),
            call_id,
            expires_at,
            wait,
            leg: 0,
            long_wait,
            principal,
            call_hash,
        },
        verdict,
    )
}

/// How long one wait on a hold lasts before the client is told how to go on.
fn wait_of(post: &Post<'_>) -> Duration {
    Duration::from_secs(
        post.upstream
            .config
            .hold_timeout_secs
            .unwrap_or(post.gw.config.gateway.hold_timeout_secs),
    )
}

/// A retried wait on a hold (a 2026-07-28 client's `requestState`): the state must be
/// sealed by this deployment, unexpired, the same identity's, and of this very call;
/// then the request waits on the hold as the first did. Anything else is `-32602`, and
/// nothing runs.
async fn resume(post: Post<'_>, state: &str) -> Response {
    let gw = post.gw;
    let (tool, _) = post.message.tool_call().expect("a tools/call");
    let principal = post.identity.principal();
    let refuse = |why: String| {
        tracing::warn!(upstream = %Escaped(post.name), tool = %Escaped(tool),
            identity = %Escaped(&principal), reason = %why, "requestState refused; nothing runs");
        let mut body = mcp::error_body(
            &post.id(),
            INVALID_PARAMS,
            &format!("Invalid or expired requestState: {why}"),
        );
        body["error"]["data"] = serde_json::json!({"reason": "invalid_request_state"});
        json_response(StatusCode::OK, &body)
    };
    let held = match gw.state_seal.open(state, chrono::Utc::now()) {
        Ok(held) => held,
        Err(e) => return refuse(e.to_string()),
    };
    if held.principal != principal {
        return refuse(StateError::OtherIdentity.to_string());
    }
    let key = holds::CallKey::new(
        &gw.call_mac,
        &post.identity,
        post.name,
        tool,
        &exact::canonical_arguments(&post.bytes),
    );
    if key.hash != held.call_hash {
        return refuse(StateError::OtherCall.to_string());
    }
    // The gateway asked for no input: answers to questions it never put would reach the
    // upstream unasked.
    if post
        .message
        .body
        .pointer("/params/inputResponses")
        .is_some()
    {
        return refuse(
            "toolgate asked for no input; inputResponses are not taken with its state".into(),
        );
    }
    if post.bytes.len() > gw.config.gateway.max_held_call_bytes {
        return refuse(format!(
            "the request is {} bytes, over the {} a held call may keep (max_held_call_bytes)",
            post.bytes.len(),
            gw.config.gateway.max_held_call_bytes
        ));
    }
    // What runs upstream is the call without the gateway's state.
    let bytes = match request_state::without_state(&post.bytes) {
        Ok(b) => Bytes::from(b),
        Err(e) => return refuse(format!("the request does not read: {e}")),
    };
    let rejoined = {
        let (gw, call_id, hash, id) = (gw.clone(), held.call_id.clone(), key.hash, post.id());
        to_completion(async move { gw.holds.rejoin(&call_id, &hash, id).await }).await
    };
    let (verdict, expires_at) = match rejoined {
        Ok(Some(holds::Rejoined::Waiting {
            verdict,
            expires_at,
            approved,
        })) => {
            // Approved between two legs: it runs on this one only while the approval
            // stands, and only if the policy in force now does not deny it.
            if approved && let Some(denied) = lapsed(&post, &expires_at, &held.call_id).await {
                return denied;
            }
            (verdict, expires_at)
        }
        Ok(Some(holds::Rejoined::Ended(view))) => {
            let verdict = match view.resolution {
                Some(Resolution::Denied) => holds::Verdict::Denied {
                    by: view.resolved_by.unwrap_or_default(),
                    reason: view.reason,
                },
                Some(Resolution::Expired) => holds::Verdict::Expired,
                Some(Resolution::Cancelled) => holds::Verdict::Cancelled,
                // Run already: a state is good for one run.
                _ => {
                    return refuse(format!("the held call {} has already run", held.call_id));
                }
            };
            let text = held_stream::ended_text(&held.call_id, &verdict).unwrap_or_default();
            return deny_response(&post.message, &text);
        }
        Ok(None) => return refuse(format!("no held call {}", held.call_id)),
        Err(e) => {
            gw.metrics.store_error();
            tracing::error!(call_id = %held.call_id, error = %e, "a held call's wait could not go on");
            return deny_response(&post.message, "toolgate: audit store unavailable");
        }
    };
    let wait = wait_of(&post);
    held_stream::respond(
        gw.clone(),
        held_stream::HeldRequest {
            upstream: post.upstream.config.name.clone(),
            message: post.message,
            bytes,
            headers: post.headers.clone(),
            call_id: held.call_id,
            expires_at,
            wait,
            principal,
            call_hash: held.call_hash,
            leg: held.leg,
            long_wait: true,
        },
        verdict,
    )
}

/// Why an approval given between two legs may not run on this one: it lapsed (its hold's
/// time is up), or the policy in force now denies the call (that deny is committed, as an
/// identical retry's would be). `None`: it runs.
async fn lapsed(post: &Post<'_>, expires_at: &str, call_id: &str) -> Option<Response> {
    let gw = post.gw;
    let now = chrono::Utc::now();
    if chrono::DateTime::parse_from_rfc3339(expires_at).is_ok_and(|e| e <= now) {
        let text = format!(
            "Denied by toolgate: the approval of the held call {call_id} lapsed at {expires_at} before it ran"
        );
        return Some(deny_response(&post.message, &text));
    }
    let (tool, args) = post.message.tool_call().expect("a tools/call");
    let workflow = decide::workflow_of(&post.message, post.headers)
        .ok()
        .flatten();
    let decision = gw.evaluate_call(&post.identity, post.name, tool, args, workflow);
    if decision.outcome != Outcome::Deny {
        return None;
    }
    let text = match gw.commit_decision(decision).await {
        Ok(denied) => {
            note_decided(gw, &post.identity.principal(), &denied);
            denied_text(&denied)
        }
        Err(e) => {
            gw.metrics.store_error();
            tracing::error!(error = %e, "decision not stored; call denied");
            "toolgate: audit store unavailable".to_owned()
        }
    };
    Some(deny_response(&post.message, &text))
}

/// Counts and logs a committed decision.
fn note_decided(gw: &Arc<Gateway>, principal: &str, decision: &DecisionEvent) {
    gw.metrics.decided(decision.outcome, decision.decision_us);
    tracing::info!(call_id = %decision.call_id, upstream = %Escaped(&decision.upstream),
        tool = %Escaped(&decision.tool), identity = %Escaped(principal), risk = %decision.risk,
        outcome = decision.outcome.as_str(), policy = ?decision.policy_ids, "decided");
}
