//! The control plane on `control_listen`. For now: liveness and readiness.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::Gateway;
use super::proxy::json_response;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

/// The process is up and serving.
async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// Decisions can be stored. While they cannot, every call is denied, so a load
/// balancer should send traffic elsewhere.
async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.store.health().is_ready() {
        json_response(StatusCode::OK, &json!({"ready": true}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "reason": "the audit store cannot commit; calls are being denied"}),
        )
    }
}
