//! A `tools/call`: decided and committed before anything else, then denied, held, or
//! forwarded with its ending recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::super::decide::{self, Decided};
use super::super::escape::Escaped;
use super::super::holds;
use super::super::mcp::{self, INVALID_REQUEST};
use super::super::{Gateway, to_completion};
use super::admit::Refusal;
use super::completion;
use super::held_stream;
use super::reply::{
    denied_text, deny_response, error_result, json_response, unknown_tool_response,
};
use super::request::{FailureKind, Post};
use crate::api::{CallResult, DecisionEvent, Outcome};

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
    // nothing.
    if let Some(why) = gw.out_of_step() {
        tracing::warn!(upstream = %Escaped(post.name), tool = %Escaped(tool), %why, "replica out of step with the shared store; call denied");
        return deny_response(
            &post.message,
            "toolgate: this gateway replica is catching up with the others; try again",
        );
    }
    let started = Instant::now();
    let decided = gw
        .decide_call(&post.identity, post.name, tool, args, workflow, &post.bytes)
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
    let wait = Duration::from_secs(
        post.upstream
            .config
            .hold_timeout_secs
            .unwrap_or(gw.config.gateway.hold_timeout_secs),
    );
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
        },
        verdict,
    )
}

/// Counts and logs a committed decision.
fn note_decided(gw: &Arc<Gateway>, principal: &str, decision: &DecisionEvent) {
    gw.metrics.decided(decision.outcome, decision.decision_us);
    tracing::info!(call_id = %decision.call_id, upstream = %Escaped(&decision.upstream),
        tool = %Escaped(&decision.tool), identity = %Escaped(principal), risk = %decision.risk,
        outcome = decision.outcome.as_str(), policy = ?decision.policy_ids, "decided");
}
