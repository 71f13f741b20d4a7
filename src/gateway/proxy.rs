//! The data plane: `/mcp/{upstream}`, a Streamable HTTP relay for both protocol eras.
//!
//! Order matters: Host and Origin, then the bearer token, then the session's owner, then
//! the body size, then strict parsing; only a message that passed all of them is decided
//! and forwarded. The forwarded bytes are exactly the bytes that were parsed, and answers
//! stream back as they arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt};
use serde_json::{Map, Value, json};

use super::Gateway;
use super::completion;
use super::decide;
use super::escape::Escaped;
use super::held_stream;
use super::holds;
use super::identity::{AuthError, Identity};
use super::mcp::{self, ClientMessage, Era, INVALID_PARAMS, INVALID_REQUEST};
use super::observe::{ReadError, read_bounded};
use super::policy::CallFacts;
use super::sessions::Bound;
use crate::api::{CallResult, DecisionEvent, Outcome};
use crate::config::UpstreamConfig;

/// The most of a `tools/list` answer kept aside for the catalog; a bigger one still
/// reaches the client, but is not learned from.
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/mcp/{upstream}",
            post(relay_post).get(relay_stream).delete(relay_stream),
        )
        .with_state(gateway)
}

/// A configured upstream, with what forwarding needs prepared once.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    /// 0 unknown, 1 the last request reached it, 2 the last request could not.
    reachable: std::sync::atomic::AtomicU8,
}

impl Upstream {
    /// How the last request to this upstream went: ok, unreachable, or unknown.
    pub fn health(&self) -> &'static str {
        match self.reachable.load(std::sync::atomic::Ordering::Relaxed) {
            1 => "ok",
            2 => "unreachable",
            _ => "unknown",
        }
    }

    fn note_reached(&self, ok: bool) {
        self.reachable
            .store(if ok { 1 } else { 2 }, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        Ok(Self {
            config: config.clone(),
            url: reqwest::Url::parse(&config.url)?,
            headers,
            reachable: std::sync::atomic::AtomicU8::new(0),
        })
    }
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
    } = match admit(&gw, &name, uri.authority(), &headers) {
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
    // The call that goes upstream now, when this is an allowed tools/call.
    let mut allowed_call: Option<String> = None;
    let started = std::time::Instant::now();
    if let Some((tool, args)) = message.tool_call() {
        let workflow = match decide::workflow_of(&message, &headers) {
            Ok(w) => w,
            Err(reason) => {
                let id = message.id().cloned().unwrap_or(Value::Null);
                let body =
                    mcp::error_body(&id, INVALID_REQUEST, &format!("Invalid request: {reason}"));
                return Refusal::new(StatusCode::BAD_REQUEST, body).into_response();
            }
        };
        let decision = gw.evaluate_call(&identity, &name, tool, args, workflow);
        // Only a held call needs its identity key: for a retry, or for its hold.
        let key = (decision.outcome == Outcome::Hold).then(|| {
            holds::CallKey::new(
                &gw.call_mac,
                &identity,
                &name,
                tool,
                &super::exact::canonical_arguments(&bytes),
            )
        });
        // The identical call, approved after its client stopped waiting, runs once; its
        // decision and the approval's use commit together.
        let committed = match &key {
            Some(key) => match gw
                .holds
                .consume_identical(key, chrono::Utc::now(), decision)
                .await
            {
                Ok(holds::Retry::Ran(allowed)) => Ok(allowed),
                // A new hold: its decision commits with it.
                Ok(holds::Retry::NotApproved(held)) => {
                    let key = key.clone();
                    return hold(&gw, upstream, identity, &headers, message, bytes, held, key)
                        .await;
                }
                Err(e) => Err(e),
            },
            None => gw.commit_decision(decision).await,
        };
        let decision = match committed {
            Ok(d) => d,
            Err(e) => {
                gw.metrics.store_error();
                tracing::error!(upstream = %Escaped(&name), tool = %Escaped(tool), error = %e, "decision not stored; call denied");
                return deny_response(&message, "toolgate: audit store unavailable");
            }
        };
        note_decided(&gw, &identity.principal(), &decision);
        match decision.outcome {
            Outcome::Allow => allowed_call = Some(decision.call_id.clone()),
            Outcome::Deny if upstream.config.hide_denied_tools => {
                return unknown_tool_response(&message, tool);
            }
            Outcome::Deny => return deny_response(&message, &denied_text(&decision)),
            Outcome::Hold => unreachable!("a held call was answered above"),
        }
    }
    if message.method() == Some("notifications/cancelled")
        && let Some(request_id) = message.body.pointer("/params/requestId")
    {
        let session = headers
            .get(mcp::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok());
        match gw
            .holds
            .cancel(&identity.principal(), &name, session, request_id)
            .await
        {
            // The held call never went upstream, so neither does its cancellation.
            Ok(Some(call_id)) => {
                tracing::info!(%call_id, "held call cancelled by its client");
                return StatusCode::ACCEPTED.into_response();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cancellation of a held call not stored"),
        }
    }
    let listing_id = (message.method() == Some("tools/list"))
        .then(|| message.id().cloned())
        .flatten();
    let response = match forward(&gw, upstream, Method::POST, &headers, Some(bytes)).await {
        Ok(r) => r,
        Err(e) => {
            gw.metrics.upstream_error(&name);
            if let Some(call_id) = allowed_call {
                completion::record(&gw, call_id, CallResult::UpstreamError, None, started);
            }
            return upstream_unreachable(&name, &message, &e);
        }
    };
    if response.status().is_redirection() {
        gw.metrics.upstream_error(&name);
        let text = redirect_not_followed(&name, &response);
        let Some(call_id) = allowed_call else {
            let id = message.id().cloned().unwrap_or(Value::Null);
            return json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&id, -32603, &text),
            );
        };
        // As after an approval: the call failed upstream, and the agent reads why.
        let status = Some(response.status().as_u16());
        completion::record(&gw, call_id, CallResult::UpstreamError, status, started);
        return json_response(StatusCode::OK, &error_result(&message, &text));
    }
    if message.method() == Some("initialize")
        && response.status().is_success()
        && let Some(created) = response
            .headers()
            .get(mcp::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
    {
        let principal = identity.principal();
        if gw
            .sessions
            .bind(&name, created, &principal, std::time::Instant::now())
            == Bound::Taken
        {
            tracing::warn!(upstream = %Escaped(&name), identity = %Escaped(&principal),
                "upstream handed out a session id another identity holds; refused");
            let id = message.id().cloned().unwrap_or(Value::Null);
            let text = "toolgate: the upstream reused a session id; initialize again";
            return json_response(StatusCode::BAD_GATEWAY, &mcp::error_body(&id, -32603, text));
        }
    }
    note_session_end(
        &gw,
        &name,
        &Method::POST,
        session.as_deref(),
        response.status(),
    );
    if let Some(call_id) = allowed_call {
        let id = message.id().cloned().unwrap_or(Value::Null);
        return completion::relay(&gw, call_id, id, started, response);
    }
    match listing_id {
        Some(id) if response.status().is_success() && upstream.config.hide_denied_tools => {
            filtered_listing(&gw, upstream, &identity, id, response).await
        }
        Some(id) if response.status().is_success() => {
            learn_from_listing(&gw, upstream, id, response)
        }
        _ => relay_response(response),
    }
}

/// Opens a hold and answers with its waiting stream.
#[allow(clippy::too_many_arguments)]
async fn hold(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    identity: Arc<Identity>,
    headers: &HeaderMap,
    message: ClientMessage,
    bytes: Bytes,
    decision: DecisionEvent,
    key: holds::CallKey,
) -> Response {
    let (_, args) = message.tool_call().expect("a held message is a tools/call");
    let wait = Duration::from_secs(
        upstream
            .config
            .hold_timeout_secs
            .unwrap_or(gw.config.gateway.hold_timeout_secs),
    );
    let ttl = chrono::Duration::seconds(gw.config.gateway.approval_ttl_secs as i64);
    let call_id = decision.call_id.clone();
    let notice = json!({
        "call_id": call_id, "identity": decision.identity, "upstream": decision.upstream,
        "tool": decision.tool, "risk": decision.risk, "target": decision.target,
    });
    let new = holds::NewHold {
        call: holds::HeldCall {
            identity,
            args: Some(args.clone()),
            decision,
        },
        key,
        session_id: headers
            .get(mcp::HEADER_SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        request_id: message.id().cloned().unwrap_or(Value::Null),
        ttl,
    };
    let principal = new.call.identity.principal();
    let (verdict, expires_at) = match gw.holds.create(new).await {
        Ok(created) => {
            note_decided(gw, &principal, &created.decision);
            (created.verdict, created.expires_at)
        }
        Err(holds::CreateError::Refused(denied)) => {
            note_decided(gw, &principal, &denied);
            return deny_response(&message, &denied_text(&denied));
        }
        Err(holds::CreateError::Store(e)) => {
            gw.metrics.store_error();
            tracing::error!(%call_id, error = %e, "hold not stored; call denied");
            return deny_response(&message, "toolgate: audit store unavailable");
        }
    };
    let mut notice = notice;
    notice["expires_at"] = json!(expires_at);
    gw.notifier.send(notice);
    held_stream::respond(
        gw.clone(),
        held_stream::HeldRequest {
            upstream: upstream.config.name.clone(),
            message,
            bytes,
            headers: headers.clone(),
            call_id,
            expires_at,
            wait,
        },
        verdict,
    )
}

/// Counts and logs a committed decision.
fn note_decided(gw: &Gateway, principal: &str, decision: &DecisionEvent) {
    gw.metrics.decided(decision.outcome, decision.decision_us);
    tracing::info!(call_id = %decision.call_id, upstream = %Escaped(&decision.upstream),
        tool = %Escaped(&decision.tool), identity = %Escaped(principal), risk = %decision.risk,
        outcome = decision.outcome.as_str(), policy = ?decision.policy_ids, "decided");
}

/// What a denied call's client reads: the deciding policy and its reason.
fn denied_text(decision: &DecisionEvent) -> String {
    format!(
        "Denied by toolgate policy {}: {}",
        if decision.policy_ids.is_empty() {
            "default-deny".to_owned()
        } else {
            decision.policy_ids.join(",")
        },
        decision.reason
    )
}

/// A tool result that reports an error, as toolgate answers a call it will not run.
pub fn error_result(message: &ClientMessage, text: &str) -> Value {
    let mut result = json!({"content": [{"type": "text", "text": text}], "isError": true});
    if message.era == Era::Modern {
        result["resultType"] = json!("complete");
    }
    let id = message.id().cloned().unwrap_or(Value::Null);
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A deny as the tool's own result: HTTP 200 with `isError`, so an agent reads the
/// reason the way it reads any tool failure.
fn deny_response(message: &ClientMessage, text: &str) -> Response {
    json_response(StatusCode::OK, &error_result(message, text))
}

/// Where denied tools are hidden, a call to one looks like a call to no tool at all.
fn unknown_tool_response(message: &ClientMessage, tool: &str) -> Response {
    let id = message.id().cloned().unwrap_or(Value::Null);
    json_response(
        StatusCode::OK,
        &mcp::error_body(&id, INVALID_PARAMS, &format!("Unknown tool: {tool}")),
    )
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
        upstream, session, ..
    } = match admit(&gw, &name, uri.authority(), &headers) {
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
    match forward(&gw, upstream, method.clone(), &headers, None).await {
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
        Err(e) => {
            tracing::warn!(upstream = %Escaped(&name), error = %e, "upstream unreachable");
            json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(
                    &Value::Null,
                    -32603,
                    &format!("toolgate: upstream {name:?} unreachable"),
                ),
            )
        }
    }
}

/// A request that may go on: its upstream, its caller, and the session it names.
struct Admitted<'g> {
    upstream: &'g Upstream,
    identity: Arc<Identity>,
    session: Option<String>,
}

/// The checks every request passes before its body is even read.
fn admit<'g>(
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
    let session = check_session(gw, name, headers, &identity)?;
    Ok(Admitted {
        upstream,
        identity,
        session,
    })
}

/// The request must name this gateway as its host: a browser that was pointed at the
/// gateway by DNS rebinding still names the attacker's host (see `hosts`). A request in
/// absolute form names it twice, and both must be ours.
fn check_host(
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
fn check_session(
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
        && gw
            .sessions
            .admits(name, id, &principal, std::time::Instant::now())
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

/// The code the MCP SDKs answer an unknown session with.
const SESSION_NOT_FOUND: i64 = -32001;

/// Forgets a session its owner ended, or that its upstream no longer knows.
fn note_session_end(
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
    }
}

/// Logs an upstream's redirect, and says what the client is told about it.
fn redirect_not_followed(name: &str, response: &reqwest::Response) -> String {
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
        .unwrap_or_default();
    tracing::warn!(upstream = %Escaped(name), status = response.status().as_u16(),
        location = %Escaped(&location), "upstream answered with a redirect; not followed");
    format!(
        "toolgate: upstream answered HTTP {} (redirects are not followed)",
        response.status().as_u16()
    )
}

/// Browsers send an Origin; a page from elsewhere must not drive a local gateway
/// (DNS rebinding). Clients that are not browsers send none.
fn is_local_origin(origin: &HeaderValue) -> bool {
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

fn unauthorized(e: &AuthError) -> Refusal {
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

async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, Refusal> {
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

/// Request headers that describe this hop or this client, never the upstream's.
fn is_local_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "authorization"   // the client's token is for toolgate only
            | "cookie"
            | "origin"          // checked here; upstream sees the gateway as its client
            | "accept-encoding" // keep answers readable for the catalog
            | "x-toolgate-context"
    ) || is_hop_by_hop(name)
}

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Sends a POST body upstream as the client sent it.
pub async fn forward_to(
    gw: &Gateway,
    upstream: &Upstream,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, reqwest::Error> {
    forward(gw, upstream, Method::POST, headers, Some(body)).await
}

async fn forward(
    gw: &Gateway,
    upstream: &Upstream,
    method: Method,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut out = HeaderMap::with_capacity(headers.len() + upstream.headers.len());
    for (name, value) in headers {
        if !is_local_request_header(name) {
            out.append(name.clone(), value.clone());
        }
    }
    for (name, value) in &upstream.headers {
        out.insert(name.clone(), value.clone());
    }
    let mut request = gw.http.request(method, upstream.url.clone()).headers(out);
    if let Some(body) = body {
        request = request.body(body);
    }
    let sent = request.send().await;
    upstream.note_reached(sent.is_ok());
    sent
}

fn response_head(upstream: &reqwest::Response) -> axum::http::response::Builder {
    let mut builder = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !is_hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    builder
}

/// Streams the upstream's answer through chunk by chunk, so SSE events (progress
/// among them) reach the client when the upstream sends them.
fn relay_response(upstream: reqwest::Response) -> Response {
    let head = response_head(&upstream);
    head.body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

/// Relays a `tools/list` answer unchanged while keeping a copy. The catalog learns
/// from the copy before the answer's last bytes go out, so a client that lists and
/// then calls at once is decided with what it was shown.
fn learn_from_listing(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    id: Value,
    response: reqwest::Response,
) -> Response {
    let head = response_head(&response);
    let content_type = content_type_of(&response);
    let sse_id = content_type
        .starts_with("text/event-stream")
        .then(|| id.clone());
    let gw = gw.clone();
    let name = upstream.config.name.clone();
    let learn = move |body: Vec<u8>| -> BoxFuture<'static, ()> {
        // Its own task, so a client that hangs up cannot cut learning short.
        let task = tokio::spawn(async move {
            learn_listing(&gw, &name, &content_type, &body, &id).await;
        });
        Box::pin(async move {
            let _ = task.await;
        })
    };
    let tee = Tee {
        expected_len: response.content_length(),
        sse_id,
        inner: Box::pin(response.bytes_stream()),
        copy: Vec::new(),
        overflowed: false,
        learn: Some(Box::new(learn)),
        learning: None,
    };
    head.body(Body::from_stream(tee))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn content_type_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Teaches the catalog one complete `tools/list` answer.
async fn learn_listing(gw: &Gateway, upstream: &str, content_type: &str, body: &[u8], id: &Value) {
    let Some(upstream) = gw.upstreams.get(upstream) else {
        return;
    };
    let messages = mcp::response_messages(content_type, body);
    let Some(tools) = listed_tools(&messages, id) else {
        tracing::debug!(upstream = %upstream.config.name, "tools/list answer carried no tools");
        return;
    };
    match gw.catalog.learn(&upstream.config, &tools).await {
        Ok(n) => {
            tracing::debug!(upstream = %upstream.config.name, listed = tools.len(), recorded = n, "catalog learned")
        }
        Err(e) => {
            tracing::error!(upstream = %upstream.config.name, error = %e, "catalog not recorded")
        }
    }
}

/// With `hide_denied_tools`, a listing shows only the tools this identity may call
/// (decided without arguments). The answer is read whole and re-framed, the one place
/// the relay re-encodes, and only where the operator asked for it.
async fn filtered_listing(
    gw: &Arc<Gateway>,
    upstream: &Upstream,
    identity: &Identity,
    id: Value,
    response: reqwest::Response,
) -> Response {
    let status = response.status();
    let mut head = Response::builder().status(status);
    for (name, value) in response.headers() {
        if !is_hop_by_hop(name) && name != header::CONTENT_LENGTH {
            head = head.header(name, value);
        }
    }
    let content_type = content_type_of(&response);
    let body = match read_bounded(response, gw.config.gateway.max_response_bytes).await {
        Ok(b) => b,
        Err(ReadError::TooLarge(max)) => {
            tracing::warn!(upstream = %upstream.config.name, max, "tools/list answer too large to filter");
            let text = format!(
                "toolgate: the upstream's tools/list answer is over max_response_bytes ({max} bytes), too large to filter"
            );
            return json_response(
                StatusCode::BAD_GATEWAY,
                &mcp::error_body(&id, -32603, &text),
            );
        }
        Err(ReadError::Upstream(e)) => {
            return upstream_unreachable_id(&upstream.config.name, &id, &e);
        }
    };
    learn_listing(gw, &upstream.config.name, &content_type, &body, &id).await;
    let mut messages = mcp::response_messages(&content_type, &body);
    let engine = gw.policy();
    let no_args = Map::new();
    let now = chrono::Utc::now();
    for m in &mut messages {
        if m.get("id") != Some(&id) {
            continue;
        }
        if let Some(Value::Array(tools)) = m.pointer_mut("/result/tools") {
            tools.retain(|t| {
                let Some(name) = t.get("name").and_then(Value::as_str) else {
                    return false;
                };
                let decision = engine.decide(&CallFacts {
                    identity,
                    upstream: &upstream.config.name,
                    tool: name,
                    risk: gw.catalog.risk(&upstream.config.name, name),
                    args: &no_args,
                    target: None,
                    workflow: None,
                    now,
                });
                decision.outcome != Outcome::Deny
            });
        }
    }
    let out = if content_type.starts_with("text/event-stream") {
        messages
            .iter()
            .map(|m| format!("event: message\ndata: {m}\n\n"))
            .collect::<String>()
    } else {
        messages.first().map(Value::to_string).unwrap_or_default()
    };
    head.body(Body::from(out))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

fn listed_tools(messages: &[Value], id: &Value) -> Option<Vec<Value>> {
    messages
        .iter()
        .find(|m| m.get("id") == Some(id) && m.get("result").is_some())
        .and_then(|m| {
            m.pointer("/result/tools")
                .and_then(Value::as_array)
                .cloned()
        })
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

type Learn = Box<dyn FnOnce(Vec<u8>) -> BoxFuture<'static, ()> + Send>;

struct Tee {
    inner: ByteStream,
    /// hyper stops polling once a Content-Length body is complete, so the end of the
    /// stream may never be seen; reaching the declared length counts as the end.
    expected_len: Option<u64>,
    /// For an SSE answer: the request id whose response ends the listing. A client
    /// may hang up as soon as it has that response, before the stream's end.
    sse_id: Option<Value>,
    copy: Vec<u8>,
    overflowed: bool,
    learn: Option<Learn>,
    /// Learning in progress, and the final item held back until it is done.
    learning: Option<(BoxFuture<'static, ()>, Option<Bytes>)>,
}

impl Stream for Tee {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some((learning, _)) = self.learning.as_mut() {
                std::task::ready!(learning.as_mut().poll(cx));
                let (_, held) = self.learning.take().expect("learning");
                return Poll::Ready(held.map(Ok));
            }
            let polled = self.inner.as_mut().poll_next(cx);
            match polled {
                Poll::Ready(Some(Ok(chunk))) if !self.overflowed => {
                    if self.copy.len() + chunk.len() > MAX_LISTING_BYTES {
                        self.overflowed = true;
                        self.copy = Vec::new();
                        tracing::warn!(
                            "tools/list answer over {MAX_LISTING_BYTES} bytes; not learned"
                        );
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    self.copy.extend_from_slice(&chunk);
                    if self.expected_len == Some(self.copy.len() as u64) || self.has_sse_response()
                    {
                        self.start_learning(Some(chunk));
                        continue;
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(None) if !self.overflowed && self.learn.is_some() => {
                    self.start_learning(None);
                    continue;
                }
                other => return other,
            }
        }
    }
}

impl Tee {
    fn has_sse_response(&self) -> bool {
        let Some(id) = &self.sse_id else {
            return false;
        };
        // Only a chunk that ends an event can complete the response.
        (self.copy.ends_with(b"\n\n") || self.copy.ends_with(b"\r\n\r\n"))
            && mcp::response_messages("text/event-stream", &self.copy)
                .iter()
                .any(|m| m.get("id") == Some(id) && m.get("result").is_some())
    }

    fn start_learning(&mut self, held: Option<Bytes>) {
        match self.learn.take() {
            Some(learn) => self.learning = Some((learn(std::mem::take(&mut self.copy)), held)),
            // Already learned: pass the item straight through on the next poll.
            None => self.learning = Some((Box::pin(std::future::ready(())), held)),
        }
    }
}

fn upstream_unreachable(name: &str, message: &ClientMessage, e: &reqwest::Error) -> Response {
    upstream_unreachable_id(name, message.id().unwrap_or(&Value::Null), e)
}

fn upstream_unreachable_id(name: &str, id: &Value, e: &reqwest::Error) -> Response {
    tracing::warn!(upstream = %Escaped(name), error = %e, "upstream unreachable");
    json_response(
        StatusCode::BAD_GATEWAY,
        &mcp::error_body(
            id,
            -32603,
            &format!("toolgate: upstream {name:?} unreachable"),
        ),
    )
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
    fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            challenge: None,
            close: false,
        }
    }

    fn invalid(status: StatusCode, message: &str) -> Self {
        Self::new(
            status,
            mcp::error_body(&Value::Null, INVALID_REQUEST, message),
        )
    }
}

impl Refusal {
    /// The client must not send another request on this connection.
    fn closing(mut self) -> Self {
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

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}
