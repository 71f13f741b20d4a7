//! What every request passes before its body is read (Host, Origin, token, session), the
//! bounded read of the body, and the refusals given on the way.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use super::super::Gateway;
use super::super::escape::Escaped;
use super::super::identity::{AuthError, Identity};
use super::super::mcp::{self, INVALID_REQUEST};
use super::super::store::WriteOp;
use super::reply::json_response;
use super::upstream::Upstream;

/// A request that may go on: its upstream, its caller, and the session it names.
pub(super) struct Admitted<'g> {
    pub upstream: &'g Upstream,
    pub identity: Arc<Identity>,
    pub session: Option<String>,
}

/// The checks every request passes before its body is even read.
pub(super) async fn admit<'g>(
    gw: &'g Gateway,
    name: &str,
    target: Option<&Authority>,
    headers: &HeaderMap,
) -> Result<Admitted<'g>, Refusal> {
    check_host(gw, target, headers)?;
    if let Some(origin) = headers.get(header::ORIGIN)
        && !is_local_origin(origin)
    {
        return Err(Refusal::invalid(
            StatusCode::FORBIDDEN,
            "toolgate: Origin is not a local origin",
        ));
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let identity = gw
        .auth
        .authenticate(authorization, chrono::Utc::now())
        .map_err(|e| {
            tracing::info!(upstream = %Escaped(name), reason = %Escaped(&e), "unauthenticated request refused");
            unauthorized(&e)
        })?;
    let upstream = gw.upstreams.get(name).ok_or_else(|| {
        Refusal::invalid(
            StatusCode::NOT_FOUND,
            &format!("toolgate: no upstream named {name:?}"),
        )
    })?;
    let session = check_session(gw, name, headers, &identity).await?;
    Ok(Admitted {
        upstream,
        identity,
        session,
    })
}

/// The request must name this gateway as its host: a browser that was pointed at the
/// gateway by DNS rebinding still names the attacker's host (see `hosts`). A request in
/// absolute form names it twice, and both must be ours.
pub(super) fn check_host(
    gw: &Gateway,
    target: Option<&Authority>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let served = match (hosts.next(), hosts.next()) {
        (Some(host), None) => {
            host.to_str().is_ok_and(|h| gw.served_hosts.admits(h))
                && target.is_none_or(|t| gw.served_hosts.admits(t.as_str()))
        }
        // None, or several that might be read differently further on.
        _ => false,
    };
    if served {
        return Ok(());
    }
    let named: Vec<_> = headers
        .get_all(header::HOST)
        .iter()
        .map(|h| Escaped(String::from_utf8_lossy(h.as_bytes()).into_owned()).to_string())
        .collect();
    tracing::info!(host = %named.join(", "), "request for a host this gateway does not serve refused");
    Err(Refusal::invalid(
        StatusCode::FORBIDDEN,
        "toolgate: Host is not a name this gateway serves",
    ))
}

/// A session is usable only by the identity whose `initialize` created it. To anyone
/// else it does not exist: 404 with the body an MCP server gives for an unknown session.
pub(super) async fn check_session(
    gw: &Gateway,
    name: &str,
    headers: &HeaderMap,
    identity: &Identity,
) -> Result<Option<String>, Refusal> {
    let mut values = headers.get_all(mcp::HEADER_SESSION_ID).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(v), None) => v,
        (Some(_), Some(_)) => {
            return Err(Refusal::invalid(
                StatusCode::BAD_REQUEST,
                "toolgate: more than one Mcp-Session-Id header",
            ));
        }
    };
    let principal = identity.principal();
    let id = value.to_str().ok();
    if let Some(id) = id
        && (gw
            .sessions
            .admits(name, id, &principal, std::time::Instant::now())
            || created_on_another_replica(gw, name, id, &principal).await)
    {
        return Ok(Some(id.to_owned()));
    }
    tracing::info!(upstream = %Escaped(name), identity = %Escaped(&principal),
        "session not created by this identity, or forgotten; refused as not found");
    Err(Refusal::new(
        StatusCode::NOT_FOUND,
        mcp::error_body(&Value::Null, SESSION_NOT_FOUND, "Session not found"),
    ))
}

/// Beside other replicas on a shared store, a session created through another one: the
/// store says whose it is. Known here from now on.
async fn created_on_another_replica(gw: &Gateway, name: &str, id: &str, principal: &str) -> bool {
    if !gw.store.is_shared() {
        return false;
    }
    let idle = chrono::Duration::seconds(gw.config.gateway.session_idle_secs as i64);
    let fresh_since = crate::time::rfc3339(chrono::Utc::now() - idle);
    match gw.store.session_owner(name, id, &fresh_since).await {
        Ok(Some(owner)) if owner == principal => {
            gw.sessions
                .bind(name, id, principal, std::time::Instant::now());
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look a session up in the shared store; refused as not found");
            false
        }
    }
}

/// The code the MCP SDKs answer an unknown session with.
pub(super) const SESSION_NOT_FOUND: i64 = -32001;

/// Forgets a session its owner ended, or that its upstream no longer knows.
pub(super) fn note_session_end(
    gw: &Gateway,
    name: &str,
    method: &Method,
    session: Option<&str>,
    status: reqwest::StatusCode,
) {
    let Some(id) = session else { return };
    let ended = *method == Method::DELETE && status.is_success();
    if ended || status == reqwest::StatusCode::NOT_FOUND {
        gw.sessions.forget(name, id);
        if gw.store.is_shared() {
            gw.store.record(WriteOp::SessionEnded {
                upstream: name.to_owned(),
                id: id.to_owned(),
            });
        }
    }
}

/// Browsers send an Origin; a page from elsewhere must not drive a local gateway
/// (DNS rebinding). Clients that are not browsers send none.
pub(super) fn is_local_origin(origin: &HeaderValue) -> bool {
    let Some(url) = origin
        .to_str()
        .ok()
        .and_then(|o| reqwest::Url::parse(o).ok())
    else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub(super) fn unauthorized(e: &AuthError) -> Refusal {
    let challenge = match e {
        AuthError::Missing => r#"Bearer realm="toolgate""#.to_owned(),
        other => format!(
            r#"Bearer realm="toolgate", error="invalid_token", error_description="{}""#,
            other.to_string().replace(['"', '\\'], "'")
        ),
    };
    let mut refusal = Refusal::invalid(
        StatusCode::UNAUTHORIZED,
        &format!("toolgate: unauthorized: {e}"),
    );
    refusal.challenge = HeaderValue::from_str(&challenge).ok();
    refusal
}

pub(super) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Invalid request: body exceeds the gateway's limit of {max} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Refusal::invalid(
                StatusCode::BAD_REQUEST,
                &format!("Invalid request: cannot read body: {e}"),
            )
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// An answer given before anything goes upstream: a JSON-RPC error with a status, and
/// a Bearer challenge when the token was the problem.
pub struct Refusal {
    status: StatusCode,
    body: Value,
    challenge: Option<HeaderValue>,
    /// Answer with `Connection: close`.
    close: bool,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            challenge: None,
            close: false,
        }
    }

    pub(super) fn invalid(status: StatusCode, message: &str) -> Self {
        Self::new(
            status,
            mcp::error_body(&Value::Null, INVALID_REQUEST, message),
        )
    }
}

impl Refusal {
    /// The client must not send another request on this connection.
    pub(super) fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.status, &self.body);
        if let Some(challenge) = self.challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
