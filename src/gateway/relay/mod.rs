//! The data plane: `/mcp/{upstream}`, a Streamable HTTP relay for both protocol eras.
//!
//! Order matters: Host and Origin, then the bearer token and the session, then the body
//! size, then strict parsing; only a message that passed all of them goes on, to one
//! function per kind of message. The forwarded bytes are exactly the bytes that were
//! parsed, and answers stream back as they arrive.
//!
//! Dependencies run one way: this handler dispatches to `call` and `listing`, which use
//! the leaves (`request`, `upstream`, `reply`, `admit`, `observe`) and the held-call
//! stream and call-ending record below them; no leaf imports from above.

mod admit;
mod call;
pub mod completion;
mod held_stream;
mod listing;
pub mod observe;
pub mod reply;
mod request;
pub mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::Gateway;
use super::escape::Escaped;
use super::mcp;
use admit::{Admitted, Refusal, admit, note_session_end, read_body};
use reply::{json_response, upstream_unreachable};
use request::Post;
use upstream::{forward, redirect_not_followed, relay_response};

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/mcp/{upstream}",
            post(relay_post).get(relay_stream).delete(relay_stream),
        )
        .with_state(gateway)
}

async fn relay_post(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A refusal before the whole body was read leaves the rest of it on the
    // connection, so that connection cannot carry another request.
    let Admitted {
        upstream,
        identity,
        session,
    } = match admit(&gw, &name, uri.authority(), &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.closing().into_response(),
    };
    let bytes = match read_body(body, &headers, gw.config.gateway.max_body_bytes).await {
        Ok(b) => b,
        Err(refusal) => return refusal.closing().into_response(),
    };
    let message = match mcp::read_client_message(&bytes, &headers, |tool| {
        gw.catalog
            .get(&name, tool)
            .and_then(|t| t.param_headers.clone())
    }) {
        Ok(m) => m,
        Err(rejection) => {
            tracing::info!(upstream = %Escaped(&name), code = rejection.code, reason = %Escaped(&rejection.message), "request refused");
            return Refusal::new(rejection.status, rejection.body()).into_response();
        }
    };
    let post = Post {
        gw: &gw,
        name: &name,
        upstream,
        identity,
        session,
        headers: &headers,
        message,
        bytes,
    };
    match post.message.method() {
        Some("tools/call") => call::relay(post).await,
        Some("tools/list") => listing::relay(post).await,
        Some("notifications/cancelled") => cancelled(post).await,
        _ => passthrough(post).await,
    }
}

/// Anything the gateway does not decide goes upstream as it came, and back the same.
async fn passthrough(post: Post<'_>) -> Response {
    match post.forward().await {
        Ok(response) => relay_response(response),
        Err(failure) => json_response(
            StatusCode::BAD_GATEWAY,
            &mcp::error_body(&post.id(), -32603, &failure.text),
        ),
    }
}

/// A client that withdraws a held call resolves its hold as `cancelled`; the call
/// never went upstream, so neither does its cancellation. Any other goes on.
async fn cancelled(post: Post<'_>) -> Response {
    if let Some(request_id) = post.message.body.pointer("/params/requestId") {
        match post
            .gw
            .holds
            .cancel(
                &post.identity.principal(),
                post.name,
                post.session.as_deref(),
                request_id,
            )
            .await
        {
            Ok(Some(call_id)) => {
                tracing::info!(%call_id, "held call cancelled by its client");
                return StatusCode::ACCEPTED.into_response();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cancellation of a held call not stored"),
        }
    }
    passthrough(post).await
}

/// GET (the server's own stream) and DELETE (ending a session) carry no body to decide.
async fn relay_stream(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Admitted {
        upstream,
        session,
        identity,
    } = match admit(&gw, &name, uri.authority(), &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    // Event ids are bound to an identity only through the session they belong to.
    if session.is_none() && headers.contains_key("last-event-id") {
        return Refusal::invalid(
            StatusCode::BAD_REQUEST,
            "toolgate: Last-Event-ID resumption needs the Mcp-Session-Id of a session this identity created",
        )
        .into_response();
    }
    let principal = identity.principal();
    match forward(&gw, upstream, &principal, method.clone(), &headers, None).await {
        Ok(r) if r.status().is_redirection() => {
            gw.metrics.upstream_error(&name);
            let text = redirect_not_followed(&name, &r);
            json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&Value::Null, -32603, &text),
            )
        }
        Ok(r) => {
            note_session_end(&gw, &name, &method, session.as_deref(), r.status());
            relay_response(r)
        }
        Err(e) => upstream_unreachable(&name, &Value::Null, &e),
    }
}
