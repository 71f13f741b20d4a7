//! The control plane on `control_listen`: health, the event stream, the hold queue,
//! queries and edits, all behind operator tokens and one error shape.

mod edits;
mod events;
mod grants;
mod queries;
mod replay;
mod shadow;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Gateway;
use super::holds::{Approver, ResolveError};
use super::relay::reply::json_response;
use crate::api::{ApiError, ApiErrorBody, HoldView, ResolveRequest};
use crate::config::{OperatorConfig, OperatorRole};

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(queries::metrics))
        .route("/api/v1/status", get(queries::status))
        .route("/api/v1/decisions", get(queries::decisions))
        .route("/api/v1/tools", get(queries::tools))
        .route("/api/v1/tokens", get(queries::tokens))
        .route(
            "/api/v1/tools/{upstream}/{tool}/risk",
            axum::routing::put(edits::set_risk),
        )
        .route(
            "/api/v1/policy",
            get(edits::get_policy).put(edits::put_policy),
        )
        .route("/api/v1/policy/versions", get(edits::policy_versions))
        .route(
            "/api/v1/policy/versions/{version}",
            get(edits::policy_version),
        )
        .route(
            "/api/v1/policy/shadow",
            get(shadow::get_shadow)
                .put(shadow::put_shadow)
                .delete(shadow::delete_shadow),
        )
        .route("/api/v1/policy/shadow/promote", post(shadow::promote))
        .route("/api/v1/replay", post(replay::replay))
        .route("/api/v1/events", get(stream_events))
        .route("/api/v1/holds", get(list_holds))
        .route("/api/v1/me", get(me))
        .route("/api/v1/holds/{call_id}/approve", post(approve))
        .route("/api/v1/holds/{call_id}/deny", post(deny))
        .route("/api/v1/holds/{call_id}/extend", post(extend))
        .route("/api/v1/grants", get(grants::list))
        .route("/api/v1/grants/{id}", axum::routing::delete(grants::revoke))
        .with_state(gateway)
}

/// The process is up and serving.
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Decisions can be stored. While they cannot, every call is denied, so a load
/// balancer should send traffic elsewhere.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if !gw.store.health().is_ready() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": "the audit store cannot commit; calls are being denied"}),
        );
    }
    if let Some(why) = gw.out_of_step() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": format!("this replica is out of step with the shared store ({why}); calls are being denied")}),
        );
    }
    json_response(StatusCode::OK, &json!({"ready": true}))
}

/// A control-API error: `{"error": {"code", "message"}}`, plus the hold on a 409.
pub struct ApiFailure {
    status: StatusCode,
    pub body: Box<ApiError>,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ApiError {
                error: ApiErrorBody {
                    code: code.to_owned(),
                    message: message.into(),
                    ..Default::default()
                },
                hold: None,
                tool: None,
                policy: None,
            }),
        }
    }
}

/// A request body as a policy's text: UTF-8, or the 400 that says it is not.
pub(super) fn policy_utf8(body: &Bytes) -> Result<String, ApiFailure> {
    String::from_utf8(body.to_vec()).map_err(|_| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_policy",
            "the policy is not UTF-8 text",
        )
    })
}

/// A policy text compiled and validated, or the 400 that says where it is wrong.
pub(super) fn compiled(text: &str) -> Result<crate::gateway::policy::PolicyEngine, ApiFailure> {
    crate::gateway::policy::PolicyEngine::compile(text).map_err(|e| ApiFailure::invalid_policy(&e))
}

impl ApiFailure {
    /// 400 `invalid_policy`, with where in the text.
    pub fn invalid_policy(e: &crate::gateway::policy::PolicyError) -> Self {
        let mut failure = Self::new(StatusCode::BAD_REQUEST, "invalid_policy", e.message.clone());
        failure.body.error.line = e.line;
        failure.body.error.column = e.column;
        failure
    }

    /// 503 `store_unavailable`: the store could not answer or commit in time.
    pub fn store_unavailable(e: &crate::gateway::store::StoreError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut resp = json_response(
            self.status,
            &serde_json::to_value(&self.body).unwrap_or_default(),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(r#"Bearer realm="toolgate-control""#),
            );
        }
        resp
    }
}

/// The operator behind a bearer token, if their role is at least `needed`. Every
/// configured hash is compared, in constant time, whatever matches.
pub(super) fn operator<'g>(
    gw: &'g Gateway,
    headers: &HeaderMap,
    needed: OperatorRole,
) -> Result<&'g OperatorConfig, ApiFailure> {
    let unauthorized = |m: &str| ApiFailure::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("an operator bearer token is required"))?;
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (hash, op) in &gw.operators {
        if bool::from(hash.ct_eq(&digest)) {
            found = Some(op);
        }
    }
    let op = found.ok_or_else(|| unauthorized("unknown operator token"))?;
    if op.role < needed {
        return Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "forbidden_role",
            format!(
                "{} is a {:?}; this needs the {:?} role",
                op.name, op.role, needed
            )
            .to_lowercase(),
        ));
    }
    Ok(op)
}

async fn stream_events(
    State(gw): State<Arc<Gateway>>,
    Query(query): Query<events::EventsQuery>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if let Err(e) = operator(&gw, &parts.headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    let wants_sse = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => u,
            Err(rejection) => return rejection.into_response(),
        };
        let feed = events::Feed::open(gw.clone(), &query).await;
        return upgrade.on_upgrade(move |socket| events::websocket(socket, feed));
    }
    if wants_sse {
        return events::sse(events::Feed::open(gw.clone(), &query).await);
    }
    ApiFailure::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "open a WebSocket, or send Accept: text/event-stream",
    )
    .into_response()
}

async fn list_holds(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = operator(&gw, &headers, OperatorRole::Viewer) {
        return e.into_response();
    }
    json_response(StatusCode::OK, &json!({"holds": gw.holds.open().await}))
}

/// Gives a pending hold more time (`{"secs": N}`, at most `max_extend_secs`).
async fn extend(
    State(gw): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Approver) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let max = gw.config.gateway.max_extend_secs;
    let request: crate::api::ExtendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("invalid body: {e} (expected {{\"secs\": 1 to {max}}})"),
            )
            .into_response();
        }
    };
    if request.secs == 0 || request.secs > max {
        return ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "secs must be from 1 to {max} ([gateway] max_extend_secs), not {}",
                request.secs
            ),
        )
        .into_response();
    }
    let approver = Approver::from(op);
    let result = {
        let (gw, call_id) = (gw.clone(), call_id.clone());
        super::to_completion(
            async move { gw.holds.extend(&call_id, &approver, request.secs).await },
        )
        .await
    };
    match result {
        Ok(view) => {
            tracing::info!(call_id = %super::escape::Escaped(&call_id), operator = %op.name, expires_at = %view.expires_at, "hold extended");
            json_response(
                StatusCode::OK,
                &serde_json::to_value(&view).unwrap_or_default(),
            )
        }
        Err(e) => resolve_failure(e).into_response(),
    }
}

/// Who the token is: its operator's name, role, and the holds they may resolve, so
/// that a client (the console) can hide what the operator cannot act on.
async fn me(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let op = match operator(&gw, &headers, OperatorRole::Viewer) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let view = crate::api::OperatorView {
        name: op.name.clone(),
        role: match op.role {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Approver => "approver",
            OperatorRole::Admin => "admin",
        }
        .to_owned(),
        approves: op.approves.clone(),
    };
    json_response(
        StatusCode::OK,
        &serde_json::to_value(&view).unwrap_or_default(),
    )
}

async fn approve(
    State(gw): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    resolve(&gw, &call_id, &headers, &body, true).await
}

async fn deny(
    State(gw): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    resolve(&gw, &call_id, &headers, &body, false).await
}

async fn resolve(
    gw: &Arc<Gateway>,
    call_id: &str,
    headers: &HeaderMap,
    body: &[u8],
    approving: bool,
) -> Response {
    let op = match operator(gw, headers, OperatorRole::Approver) {
        Ok(op) => op,
        Err(e) => return e.into_response(),
    };
    let request: ResolveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResolveRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                return ApiFailure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("invalid body: {e}"),
                )
                .into_response();
            }
        }
    };
    if let Some(grant) = &request.grant
        && let Err(e) = grants::check_request(gw, grant, approving)
    {
        return e.into_response();
    }
    let approver = Approver::from(op);
    let result = {
        let (gw, call_id) = (gw.clone(), call_id.to_owned());
        super::to_completion(async move {
            if approving {
                gw.holds
                    .approve(&call_id, &approver, request.reason, request.grant, |call| {
                        super::decide::reevaluate(
                            &gw.policy(),
                            &gw.catalog,
                            call,
                            chrono::Utc::now(),
                        )
                    })
                    .await
            } else {
                gw.holds.deny(&call_id, &approver, request.reason).await
            }
        })
        .await
    };
    match result {
        Ok(view) => {
            tracing::info!(call_id = %super::escape::Escaped(call_id), operator = %op.name, resolution = ?view.resolution, "hold resolved");
            json_response(
                StatusCode::OK,
                &serde_json::to_value(&view).unwrap_or_default(),
            )
        }
        Err(e) => resolve_failure(e).into_response(),
    }
}

fn resolve_failure(e: ResolveError) -> ApiFailure {
    match e {
        ResolveError::NotFound => ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no hold with that call id",
        ),
        ResolveError::SelfApproval(_) => {
            ApiFailure::new(StatusCode::FORBIDDEN, "self_approval", e.to_string())
        }
        ResolveError::OutOfScope(..) => {
            ApiFailure::new(StatusCode::FORBIDDEN, "out_of_scope", e.to_string())
        }
        ResolveError::AlreadyApproved(view) => {
            let message = format!(
                "you approved this call already; it needs {} approvals from different operators ({} so far)",
                view.call.approvals_required,
                view.approvals.len()
            );
            let mut failure = ApiFailure::new(StatusCode::CONFLICT, "already_approved", message);
            failure.body.hold = Some(*view);
            failure
        }
        ResolveError::GrantMismatch(_, ref view) => {
            let mut failure =
                ApiFailure::new(StatusCode::CONFLICT, "grant_mismatch", e.to_string());
            failure.body.hold = Some((**view).clone());
            failure
        }
        ResolveError::AlreadyResolved(view) => {
            let message = already_resolved_message(&view);
            let mut failure = ApiFailure::new(StatusCode::CONFLICT, "already_resolved", message);
            failure.body.hold = Some(*view);
            failure
        }
        ResolveError::Store(e) => ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the resolution could not be stored: {e}"),
        ),
    }
}

fn already_resolved_message(view: &HoldView) -> String {
    match (&view.resolution, &view.resolved_by) {
        (Some(r), Some(by)) => format!("already {} by {by}", r.as_str()),
        (Some(r), None) => format!("already {}", r.as_str()),
        _ => "already resolved".into(),
    }
}
