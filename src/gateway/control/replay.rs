//! `POST /api/v1/replay`: what a candidate policy or candidate classes would have
//! decided for the recorded decisions of a window (see `gateway::replay`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiFailure, operator};
use crate::api::{ReplayRequest, ReplayWindow};
use crate::config::OperatorRole;
use crate::gateway::Gateway;
use crate::gateway::policy::PolicyEngine;
use crate::gateway::relay::reply::json_response;
use crate::gateway::replay::{self, Candidate, DEFAULT_LISTED, MAX_LISTED};

/// The window when the request names none, and the most decisions any window holds.
const DEFAULT_LAST: u64 = 10_000;
const MAX_LAST: u64 = 1_000_000;

/// One replay at a time: each reads the store and takes a core for a while, and the
/// store's readers serve the data plane too.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

pub async fn replay(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Admin) {
        return e.into_response();
    }
    let request: ReplayRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "expected {{\"policy\", \"risk\": [{{\"upstream\", \"tool\", \"risk\"}}], \"window\": {{\"last\": N}} or {{\"since\": RFC 3339}}, \"page\"}}: {e}"
                ),
            )
            .into_response();
        }
    };
    if request.policy.is_none() && request.risk.is_empty() {
        return ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "nothing to replay: give a candidate \"policy\", candidate \"risk\" classes, or both",
        )
        .into_response();
    }
    let window = match request.window.unwrap_or(ReplayWindow::Last(DEFAULT_LAST)) {
        ReplayWindow::Last(n) if n == 0 || n > MAX_LAST => {
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("window.last must be from 1 to {MAX_LAST}, not {n}"),
            )
            .into_response();
        }
        ReplayWindow::Since(ts) => match chrono::DateTime::parse_from_rfc3339(&ts) {
            // Stored times are UTC with milliseconds: compared as text, they must match.
            Ok(t) => ReplayWindow::Since(
                t.with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            Err(e) => {
                return ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("window.since {ts:?} is not an RFC 3339 time: {e}"),
                )
                .into_response();
            }
        },
        last => last,
    };
    let page = request.page.unwrap_or_default();
    let listed = page.limit.unwrap_or(DEFAULT_LISTED).min(MAX_LISTED);
    // A class for a tool the catalog does not know is a typo, not a no-op.
    if let Some(r) = request
        .risk
        .iter()
        .find(|r| gw.catalog.get(&r.upstream, &r.tool).is_none())
    {
        return ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "no tool {:?} on upstream {:?} in the catalog",
                r.tool, r.upstream
            ),
        )
        .into_response();
    }
    let Ok(_running) = RUNNING.try_acquire() else {
        return ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "replay_busy",
            "a replay is already running; try again when it ends",
        )
        .into_response();
    };
    // The candidate compiles on a blocking thread: a large text takes a while. A
    // class-only candidate decides with a private copy of the policy in force, so the
    // live engine's memory of decisions stays as it is, and compares with that same
    // policy at the recorded classes: what the classes change, not what policy edits in
    // the window did.
    let (text, baseline) = match &request.policy {
        Some(text) => (text.clone(), false),
        None => match gw.store.current_policy().await {
            Ok(Some(p)) => (p.text, true),
            Ok(None) => {
                return ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no policy stored")
                    .into_response();
            }
            Err(e) => return ApiFailure::store_unavailable(&e).into_response(),
        },
    };
    let engine = match tokio::task::spawn_blocking(move || PolicyEngine::compile(&text)).await {
        Ok(Ok(engine)) => Arc::new(engine),
        Ok(Err(e)) => return ApiFailure::invalid_policy(&e).into_response(),
        Err(e) => {
            return ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the policy could not be compiled: {e}"),
            )
            .into_response();
        }
    };
    let candidate = Arc::new(Candidate {
        baseline: baseline.then(|| engine.clone()),
        engine,
        risk: request
            .risk
            .into_iter()
            .map(|r| ((r.upstream, r.tool), r.risk))
            .collect(),
        tokens: gw
            .config
            .identities
            .iter()
            .map(|i| (i.name.clone(), i.clone()))
            .collect::<HashMap<_, _>>(),
    });
    let snapshot = match gw
        .store
        .decision_snapshot(&window, page.upto, MAX_LAST)
        .await
    {
        Ok(s) => s,
        Err(e) => return ApiFailure::store_unavailable(&e).into_response(),
    };
    match replay::replay(candidate, snapshot, page.after.unwrap_or(0), listed).await {
        Ok(report) => json_response(StatusCode::OK, &report),
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}
