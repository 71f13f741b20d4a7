//! Grants: listing the active ones, revoking one, and checking the grant an approval
//! asks for.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiFailure, operator};
use crate::api::{GrantList, GrantRequest};
use crate::config::OperatorRole;
use crate::gateway::Gateway;
use crate::gateway::grants::RevokeError;
use crate::gateway::holds::Approver;
use crate::gateway::relay::reply::json_response;

/// A grant an approve asks for: only on an approve, and no longer than the config lets.
pub(super) fn check_request(
    gw: &Gateway,
    grant: &GrantRequest,
    approving: bool,
) -> Result<(), ApiFailure> {
    let bad = |m: String| ApiFailure::new(StatusCode::BAD_REQUEST, "invalid_grant", m);
    if !approving {
        return Err(bad("a grant comes only with an approval, not a deny".into()));
    }
    let max = gw.config.gateway.max_grant_secs;
    if grant.for_secs == 0 || grant.for_secs > max {
        return Err(bad(format!(
            "grant.for_secs must be from 1 to {max} ([gateway] max_grant_secs), not {}",
            grant.for_secs
        )));
    }
    Ok(())
}

/// `GET /api/v1/grants`: the active grants, soonest to end first, with their uses.
pub(super) async fn list(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    match gw.holds.grants.list().await {
        Ok(grants) => json_response(
            StatusCode::OK,
            &serde_json::to_value(GrantList { grants }).unwrap_or_default(),
        ),
        Err(e) => ApiFailure::store_unavailable(&e).into_response(),
    }
}

/// `DELETE /api/v1/grants/{id}`: from the next call on, the grant lets nothing through.
pub(super) async fn revoke(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Approver) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let approver = Approver::from(op);
    let result = {
        let gw = gw.clone();
        let id = id.clone();
        crate::gateway::to_completion(async move { gw.holds.grants.revoke(&id, &approver).await })
            .await
    };
    match result {
        Ok(grant) => {
            tracing::info!(grant = %crate::gateway::escape::Escaped(&id), operator = %op.name, "grant revoked");
            json_response(
                StatusCode::OK,
                &serde_json::to_value(&grant).unwrap_or_default(),
            )
        }
        Err(e @ RevokeError::NotFound) => {
            ApiFailure::new(StatusCode::NOT_FOUND, "not_found", e.to_string()).into_response()
        }
        Err(e @ RevokeError::OutOfScope(..)) => {
            ApiFailure::new(StatusCode::FORBIDDEN, "out_of_scope", e.to_string()).into_response()
        }
        Err(RevokeError::Ended(grant)) => {
            let how = match &grant.revoked_by {
                Some(by) => format!("already revoked by {by}"),
                None => format!("already expired at {}", grant.expires_at),
            };
            ApiFailure::new(StatusCode::CONFLICT, "grant_ended", how).into_response()
        }
        Err(RevokeError::Store(e)) => ApiFailure::store_unavailable(&e).into_response(),
    }
}
