//! Read-only routes: status, decisions, the tool catalog and metrics.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiFailure, operator};
use crate::api::{
    CallCounts, HoldPhase, Outcome, PolicyInForce, StatusCounters, StatusView, ToolEntry,
    UpstreamStatus,
};
use crate::config::OperatorRole;
use crate::gateway::Gateway;
use crate::gateway::relay::reply::json_response;

/// The most decisions one page returns.
const MAX_PAGE: u32 = 10_000;

pub async fn status(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    let upstreams = gw
        .config
        .upstreams
        .iter()
        .map(|u| UpstreamStatus {
            name: u.name.clone(),
            url: u.location(),
            tools: gw.catalog.tool_count(&u.name),
            health: gw
                .upstreams
                .get(&u.name)
                .map_or("unknown", |up| up.health())
                .to_owned(),
            stdio: gw
                .upstreams
                .get(&u.name)
                .and_then(|up| up.stdio.as_ref())
                .map(|s| s.status()),
        })
        .collect();
    let holds = gw.holds.open().await;
    // The policy in force here (the newest stored version, a moment later on other
    // replicas); a store error leaves it out rather than failing the status page that
    // reports the store's state.
    let policy = gw
        .store
        .policy_version(gw.policy_version())
        .await
        .ok()
        .flatten()
        .map(|p| PolicyInForce {
            version: p.stored.version,
            sha256: p.stored.sha256,
        });
    let status = StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: gw.started.elapsed().as_secs(),
        store_id: gw.store_id.clone(),
        ready: gw.store.health().is_ready(),
        last_seq: gw.store.last_seq(),
        upstreams,
        counters: StatusCounters {
            decisions: CallCounts {
                allow: gw.metrics.decisions(Outcome::Allow),
                deny: gw.metrics.decisions(Outcome::Deny),
                hold: gw.metrics.decisions(Outcome::Hold),
            },
            holds_open: holds.len(),
            event_subscribers: gw.store.subscribers(),
        },
        policy,
        audit_public_key: Some(gw.audit_signer.public_key()),
    };
    json_response(StatusCode::OK, &status)
}

#[derive(Deserialize)]
pub struct DecisionsQuery {
    limit: Option<u32>,
    before: Option<u64>,
}

pub async fn decisions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(q): Query<DecisionsQuery>,
) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    match gw.store.decisions(limit, q.before).await {
        Ok(decisions) => json_response(StatusCode::OK, &json!({"decisions": decisions})),
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

/// The standing privilege of every API token, over the last 30 days of decisions.
pub async fn tokens(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    use crate::gateway::tokens::{ReportError, report};
    match report(&gw, chrono::Utc::now()).await {
        Ok(view) => json_response(
            StatusCode::OK,
            &serde_json::to_value(view).unwrap_or_default(),
        ),
        Err(e @ ReportError::Busy) => {
            ApiFailure::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string()).into_response()
        }
        Err(ReportError::Store(e)) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

pub async fn tools(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    match gw.store.tool_rows().await {
        Ok(rows) => {
            let tools: Vec<ToolEntry> = rows
                .into_iter()
                .map(|(tool, calls)| ToolEntry { tool, calls })
                .collect();
            json_response(StatusCode::OK, &json!({"tools": tools}))
        }
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

pub async fn metrics(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if gw.config.gateway.metrics_auth
        && let Err(e) = operator(&gw, &headers, OperatorRole::Viewer)
    {
        return e.into_response();
    }
    let holds = gw.holds.open().await;
    let waiting = holds
        .iter()
        .filter(|h| h.phase == HoldPhase::Waiting)
        .count();
    let text = gw.metrics.render(
        waiting,
        holds.len() - waiting,
        gw.store.subscribers(),
        &gw.shadow().map(|s| s.pairs()).unwrap_or_default(),
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response()
}
