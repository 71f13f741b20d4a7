//! Edits: a tool's risk class, and the policy. Both answer a stale or invalid edit
//! precisely, and leave what is in force untouched.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiFailure, operator};
use crate::api::{Risk, RiskEdit};
use crate::config::OperatorRole;
use crate::gateway::policy::PolicyEngine;
use crate::gateway::relay::reply::json_response;
use crate::gateway::store::{StoreError, WriteOp};
use crate::gateway::{Gateway, sha256_hex, to_completion};

pub async fn set_risk(
    State(gw): State<Arc<Gateway>>,
    Path((upstream, tool)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let edit: RiskEdit = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected {{\"risk\", \"expected_version\", \"note\"}}: {e}"),
            )
            .into_response();
        }
    };
    let Some(risk) = Risk::parse(&edit.risk) else {
        let mut failure = ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_risk",
            format!(
                "{:?} is not a risk class; use read, write, destructive or unclassified",
                edit.risk
            ),
        );
        failure.body.error.valid = Some(Risk::ALL.to_vec());
        return failure.into_response();
    };
    let edited = {
        let (gw, upstream, tool, by) =
            (gw.clone(), upstream.clone(), tool.clone(), op.name.clone());
        to_completion(async move {
            gw.catalog
                .set_risk(
                    &upstream,
                    &tool,
                    risk,
                    Some(edit.expected_version),
                    &by,
                    edit.note,
                )
                .await
        })
        .await
    };
    match edited {
        Ok(event) => {
            tracing::info!(upstream = %crate::gateway::escape::Escaped(&upstream), tool = %crate::gateway::escape::Escaped(&tool), %risk, operator = %op.name, "risk class set");
            json_response(
                StatusCode::OK,
                &serde_json::to_value(&event).unwrap_or_default(),
            )
        }
        Err(StoreError::NoSuchTool) => ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no tool {tool:?} on upstream {upstream:?} in the catalog"),
        )
        .into_response(),
        Err(StoreError::StaleVersion(current)) => {
            let mut failure = ApiFailure::new(
                StatusCode::CONFLICT,
                "stale_version",
                format!(
                    "the tool is at version {}, not {}; reload it and edit again",
                    current.version, edit.expected_version
                ),
            );
            failure.body.tool = Some(*current);
            failure.into_response()
        }
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

pub async fn get_policy(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    match gw.store.current_policy().await {
        Ok(Some(p)) => json_response(
            StatusCode::OK,
            &json!({"version": p.version, "sha256": p.sha256, "by": p.by, "text": p.text}),
        ),
        Ok(None) => {
            ApiFailure::new(StatusCode::NOT_FOUND, "not_found", "no policy stored").into_response()
        }
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

/// Replaces the policy with the Cedar text in the body. An invalid text is refused
/// with its line and column, and the policy in force stays.
pub async fn put_policy(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_policy",
            "the policy is not UTF-8 text",
        )
        .into_response();
    };
    let engine = match PolicyEngine::compile(&text) {
        Ok(engine) => engine,
        Err(e) => {
            let mut failure =
                ApiFailure::new(StatusCode::BAD_REQUEST, "invalid_policy", e.message.clone());
            failure.body.error.line = e.line;
            failure.body.error.column = e.column;
            return failure.into_response();
        }
    };
    let sha256 = sha256_hex(text.as_bytes());
    // Commit and swap as one step, to the end even if the client hangs up: the policy in
    // force is always the last one stored.
    let committed = {
        let (gw, by, sha256) = (gw.clone(), op.name.clone(), sha256.clone());
        to_completion(async move {
            let _one_edit_at_a_time = gw.policy_edits.lock().await;
            let committed = gw
                .store
                .write_in_time(WriteOp::Policy {
                    text,
                    sha256,
                    by,
                    file_sha256: None,
                })
                .await;
            if committed.is_ok() {
                gw.replace_policy(engine);
            }
            committed
        })
        .await
    };
    match committed {
        Ok(c) => {
            tracing::info!(operator = %op.name, %sha256, "policy replaced");
            let event = c
                .events
                .first()
                .map(|e| serde_json::to_value(e).unwrap_or_default());
            json_response(StatusCode::OK, &event.unwrap_or_default())
        }
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}
