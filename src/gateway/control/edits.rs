//! Edits: a tool's risk class, and the policy. Both answer a stale or invalid edit
//! precisely, and leave what is in force untouched.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiFailure, operator};
use crate::api::{PolicyEdit, PolicyText, Risk, RiskEdit};
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

/// The policy in force, with its text.
pub async fn get_policy(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    // The version in force on this replica: beside others on a shared store, one
    // stored a moment ago elsewhere is in force here a moment later.
    policy_text_response(
        gw.store.policy_version(gw.policy_version()).await,
        "no policy stored",
    )
}

/// Every stored policy version, newest first, without their texts.
pub async fn policy_versions(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    match gw.store.policy_versions().await {
        Ok(versions) => json_response(StatusCode::OK, &json!({ "versions": versions })),
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

/// One stored policy version, with its text.
pub async fn policy_version(
    State(gw): State<Arc<Gateway>>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    let Some(v) = version.parse::<u64>().ok().filter(|v| *v > 0) else {
        return ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("{version:?} is not a policy version (a number from 1)"),
        )
        .into_response();
    };
    policy_text_response(
        gw.store.policy_version(v).await,
        &format!("no policy version {v} is stored"),
    )
}

fn policy_text_response(found: Result<Option<PolicyText>, StoreError>, missing: &str) -> Response {
    match found {
        Ok(Some(p)) => json_response(
            StatusCode::OK,
            &serde_json::to_value(&p).unwrap_or_default(),
        ),
        Ok(None) => ApiFailure::new(StatusCode::NOT_FOUND, "not_found", missing).into_response(),
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

/// Whether a request's body is JSON by its `Content-Type`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Replaces the policy: the body is the Cedar text, or (as `application/json`) a
/// `PolicyEdit` with the text, a note and the version the edit was made from. An invalid
/// text or a stale version is refused, and the policy in force stays.
pub async fn put_policy(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let edit = if is_json(&headers) {
        match serde_json::from_slice::<PolicyEdit>(&body) {
            Ok(edit) => edit,
            Err(e) => {
                return ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("expected {{\"text\", \"note\", \"expected_version\"}}: {e}"),
                )
                .into_response();
            }
        }
    } else {
        match super::policy_utf8(&body) {
            Ok(text) => PolicyEdit {
                text,
                note: None,
                expected_version: None,
            },
            Err(e) => return e.into_response(),
        }
    };
    let engine = match super::compiled(&edit.text) {
        Ok(engine) => engine,
        Err(e) => return e.into_response(),
    };
    commit_policy(&gw, &op.name, edit, engine).await
}

/// Stores `edit` as the policy in force, at the version it expects, and puts `engine`
/// (compiled from its text) in force: both or neither. Answers with the `policy.changed`
/// event, or 409 with the version in force.
pub(super) async fn commit_policy(
    gw: &Arc<Gateway>,
    by: &str,
    edit: PolicyEdit,
    engine: PolicyEngine,
) -> Response {
    let sha256 = sha256_hex(edit.text.as_bytes());
    let expected_version = edit.expected_version;
    // Commit and swap as one step, to the end even if the client hangs up: the policy in
    // force is always the last one stored.
    let committed = {
        let (gw, by, sha256) = (gw.clone(), by.to_owned(), sha256.clone());
        to_completion(async move {
            let _one_edit_at_a_time = gw.policy_edits.lock().await;
            let committed = gw
                .store
                .write_in_time(WriteOp::Policy {
                    text: edit.text,
                    sha256,
                    by,
                    note: edit.note.filter(|n| !n.is_empty()),
                    expected_version,
                    file_sha256: None,
                })
                .await;
            if let Ok(c) = &committed {
                gw.replace_policy(engine, crate::gateway::policy_version_of(c));
            }
            committed
        })
        .await
    };
    match committed {
        Ok(c) => {
            tracing::info!(operator = %by, %sha256, "policy replaced");
            let event = c
                .events
                .first()
                .map(|e| serde_json::to_value(e).unwrap_or_default());
            json_response(StatusCode::OK, &event.unwrap_or_default())
        }
        Err(StoreError::StalePolicy(current)) => {
            let now = current.as_ref().map_or_else(
                || "no policy is stored".to_owned(),
                |c| format!("the policy is at version {} (by {})", c.version, c.by),
            );
            let mut failure = ApiFailure::new(
                StatusCode::CONFLICT,
                "stale_version",
                format!(
                    "{now}, not {}; reload it and edit again",
                    expected_version.unwrap_or_default()
                ),
            );
            failure.body.policy = current.map(|c| *c);
            failure.into_response()
        }
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}
