//! `/api/v1/policy/shadow`: a candidate policy that decides every call beside the
//! enforced one, enforcing nothing (see `gateway::shadow`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiFailure, operator};
use crate::config::OperatorRole;
use crate::gateway::Gateway;
use crate::gateway::relay::reply::json_response;
use crate::gateway::shadow::Shadow;

/// Records a shadow installed (`Some(sha256)`) or removed in the audit log.
async fn record(
    gw: &Gateway,
    sha256: Option<String>,
    by: &str,
) -> Result<(), crate::gateway::store::StoreError> {
    gw.store
        .write(crate::gateway::store::WriteOp::Event(Box::new(
            crate::api::EventBody::ShadowChanged {
                sha256,
                by: by.to_owned(),
            },
        )))
        .await
        .map(|_| ())
}

fn none_installed() -> Response {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no shadow policy is installed",
    )
    .into_response()
}

pub async fn get_shadow(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    match gw.shadow() {
        Some(shadow) => json_response(StatusCode::OK, &shadow.view()),
        None => none_installed(),
    }
}

/// Installs the Cedar text in the body as the shadow, in place of any other; its
/// comparisons start from zero. An invalid text is refused with its line and column.
pub async fn put_shadow(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let parsed = super::policy_utf8(&body).and_then(|text| Ok((super::compiled(&text)?, text)));
    let (engine, text) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    let sha256 = crate::gateway::sha256_hex(text.as_bytes());
    // The audit log says who put which shadow in place, before it decides anything.
    if let Err(e) = record(&gw, Some(sha256.clone()), &op.name).await {
        return ApiFailure::store_unavailable(&e).into_response();
    }
    let shadow = Shadow::new(engine, text, sha256.clone(), op.name.clone());
    let view = shadow.view();
    gw.set_shadow(Some(shadow));
    tracing::info!(operator = %op.name, %sha256, "shadow policy installed");
    json_response(StatusCode::OK, &view)
}

pub async fn delete_shadow(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    if gw.shadow().is_none() {
        return none_installed();
    }
    if let Err(e) = record(&gw, None, &op.name).await {
        return ApiFailure::store_unavailable(&e).into_response();
    }
    match gw.set_shadow(None) {
        Some(old) => {
            tracing::info!(operator = %op.name, sha256 = %old.sha256, "shadow policy removed");
            json_response(StatusCode::OK, &old.view())
        }
        None => none_installed(),
    }
}

/// Makes the shadow the enforced policy, as a new version, if the policy in force is
/// still `expected_version`; the shadow is then removed. 409 when someone changed the
/// policy meanwhile: the shadow was compared against a policy no longer in force.
pub async fn promote(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Admin) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let request: crate::api::PromoteRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("expected {{\"expected_version\", \"note\"}}: {e}"),
            )
            .into_response();
        }
    };
    let Some(shadow) = gw.shadow() else {
        return none_installed();
    };
    // The shadow promoted is the one the operator looked at, not one put in its place.
    if request.sha256.len() < 12 || !shadow.sha256.starts_with(&request.sha256) {
        let mut failure = ApiFailure::new(
            StatusCode::CONFLICT,
            "shadow_changed",
            format!(
                "the shadow is {} (by {}), not {:?}; look at it again and promote that one",
                &shadow.sha256[..12],
                shadow.by,
                request.sha256
            ),
        );
        failure.body.error.valid = None;
        return failure.into_response();
    }
    // The shadow's text compiled when it was installed; it compiles the same now.
    let engine = match super::compiled(&shadow.text) {
        Ok(engine) => engine,
        Err(e) => return e.into_response(),
    };
    let note = request.note.unwrap_or_else(|| {
        format!(
            "promoted from the shadow installed by {} at {} ({})",
            shadow.by,
            shadow.since,
            shadow
                .view()
                .compared
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    let edit = crate::api::PolicyEdit {
        text: shadow.text.clone(),
        note: Some(note),
        expected_version: Some(request.expected_version),
    };
    let answer = super::edits::commit_policy(&gw, &op.name, edit, engine).await;
    if answer.status() == StatusCode::OK {
        // Only this shadow goes: one installed meanwhile stays.
        gw.remove_shadow_if(&shadow);
        tracing::info!(operator = %op.name, sha256 = %shadow.sha256, "shadow policy promoted");
    }
    answer
}
