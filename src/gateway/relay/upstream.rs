//! The upstream client: forwarding a request as the client sent it (minus what belongs
//! to this hop), and relaying or reading the answer.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::Gateway;
use super::super::escape::Escaped;
use super::super::stdio::{BRIDGE_KEY_HEADER, PRINCIPAL_HEADER, StdioUpstream};
use crate::config::{Transport, UpstreamConfig};

/// A configured upstream, with what forwarding needs prepared once.
pub struct Upstream {
    pub config: UpstreamConfig,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    /// A stdio upstream's children, behind the bridge `client` reaches.
    pub stdio: Option<Arc<StdioUpstream>>,
    client: Option<reqwest::Client>,
    /// 0 unknown, 1 the last request reached it, 2 the last request could not.
    reachable: std::sync::atomic::AtomicU8,
}

impl Upstream {
    /// How the last request to this upstream went: ok, unreachable, or unknown; for a
    /// stdio upstream, how its servers are doing (ok, failing, unknown).
    pub fn health(&self) -> &'static str {
        if let Some(stdio) = &self.stdio {
            return stdio.health();
        }
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
    /// Prepares an HTTP upstream, or starts a stdio upstream's bridge.
    pub fn new(config: &UpstreamConfig) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes())?,
                HeaderValue::from_str(v)?,
            );
        }
        let (url, stdio, client) = match config.transport() {
            Transport::Http(url) => (reqwest::Url::parse(url)?, None, None),
            Transport::Stdio(_) => {
                let stdio = StdioUpstream::start(config)?;
                let client = stdio.client()?;
                // The bridge's socket is the connection; the host only fills the URL.
                let url = reqwest::Url::parse("http://localhost/")?;
                (url, Some(stdio), Some(client))
            }
        };
        Ok(Self {
            config: config.clone(),
            url,
            headers,
            stdio,
            client,
            reachable: std::sync::atomic::AtomicU8::new(0),
        })
    }
}

/// Request headers that describe this hop or this client, never the upstream's.
pub(super) fn is_local_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "authorization"   // the client's token is for toolgate only
            | "cookie"
            | "origin"          // checked here; upstream sees the gateway as its client
            | "accept-encoding" // keep answers readable for the catalog
            | "x-toolgate-context"
            | PRINCIPAL_HEADER  // set by the gateway alone
            | BRIDGE_KEY_HEADER
    ) || is_hop_by_hop(name)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
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
pub(super) async fn forward_to(
    gw: &Gateway,
    upstream: &Upstream,
    principal: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, reqwest::Error> {
    forward(gw, upstream, principal, Method::POST, headers, Some(body)).await
}

/// Sends a request upstream for `principal` (whom a stdio upstream's bridge is told, so
/// that a pooled child serves one identity).
pub(super) async fn forward(
    gw: &Gateway,
    upstream: &Upstream,
    principal: &str,
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
    // Hex, so that any principal (`oauth:zoë@…`) is a header value.
    if upstream.stdio.is_some()
        && let Ok(principal) = HeaderValue::from_str(&hex::encode(principal))
    {
        out.insert(PRINCIPAL_HEADER, principal);
    }
    let client = upstream.client.as_ref().unwrap_or(&gw.http);
    let mut request = client.request(method, upstream.url.clone()).headers(out);
    if let Some(body) = body {
        request = request.body(body);
    }
    let sent = request.send().await;
    upstream.note_reached(sent.is_ok());
    sent
}

pub(super) fn response_head(upstream: &reqwest::Response) -> axum::http::response::Builder {
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
pub(super) fn relay_response(upstream: reqwest::Response) -> Response {
    let head = response_head(&upstream);
    head.body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

pub(super) fn content_type_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Logs an upstream's redirect, and says what the client is told about it.
pub(super) fn redirect_not_followed(name: &str, response: &reqwest::Response) -> String {
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

/// Why an answer could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// Over the limit, in bytes.
    TooLarge(usize),
    Upstream(reqwest::Error),
}

/// Reads an upstream answer whole, up to `max` bytes.
pub async fn read_bounded(response: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    use futures_util::StreamExt as _;
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge(max));
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Upstream)?;
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
