//! A client of the control API, as any third-party tool would write one: HTTP with
//! reqwest, the event stream over WebSocket. The command-line client uses it.

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::api::{ApiError, HoldView, ResolveRequest};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Url(String),
    #[error("cannot reach the gateway: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot stream events: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        hold: Option<Box<HoldView>>,
        /// On a `stale_version`: the tool as it is now.
        tool: Option<Box<Value>>,
    },
    #[error("the gateway's store was recreated or is behind this client: {0}")]
    Reset(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

#[derive(Clone)]
pub struct ControlClient {
    /// The control API origin, such as `http://127.0.0.1:7801`.
    origin: reqwest::Url,
    token: String,
    http: reqwest::Client,
}

impl ControlClient {
    pub fn new(origin: &str, token: &str) -> Result<Self, ClientError> {
        let origin = Self::check_origin(origin).map_err(ClientError::Url)?;
        Ok(Self {
            origin,
            token: token.to_owned(),
            http: crate::http::client_builder().build()?,
        })
    }

    /// The control API origin as a URL, or why it cannot be one.
    pub fn check_origin(origin: &str) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(origin).map_err(|e| format!("gateway {origin:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the gateway must be an http:// or https:// origin, not {origin}"
            ));
        }
        Ok(url)
    }

    fn api(&self, path: &str) -> reqwest::Url {
        let mut url = self.origin.clone();
        url.set_path(&format!("/api/v1{path}"));
        url
    }

    async fn json(resp: reqwest::Response) -> Result<Value, ClientError> {
        let status = resp.status();
        let body = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::Unexpected(e.to_string()));
        }
        match serde_json::from_slice::<ApiError>(&body) {
            Ok(e) => Err(ClientError::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
                hold: e.hold.map(Box::new),
                tool: e
                    .tool
                    .and_then(|t| serde_json::to_value(t).ok())
                    .map(Box::new),
            }),
            Err(_) => Err(ClientError::Unexpected(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
        }
    }

    /// The newest decisions, newest first, each with its hold folded in.
    pub async fn decisions(&self, limit: usize) -> Result<Vec<Value>, ClientError> {
        let mut url = self.api("/decisions");
        url.set_query(Some(&format!("limit={limit}")));
        let resp = self.http.get(url).bearer_auth(&self.token).send().await?;
        let body = Self::json(resp).await?;
        Ok(body["decisions"].as_array().cloned().unwrap_or_default())
    }

    /// Opens the event stream's WebSocket from `since`, for a `store_id` the caller knows.
    pub async fn open_events(
        &self,
        since: Option<u64>,
        store_id: Option<&str>,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        ClientError,
    > {
        let mut url = self.api("/events");
        let scheme = if self.origin.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        url.set_scheme(scheme)
            .map_err(|_| ClientError::Url("cannot make a WebSocket URL".into()))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(s) = since {
                query.append_pair("since", &s.to_string());
            }
            if let Some(id) = store_id {
                query.append_pair("store_id", id);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut request = url.as_str().into_client_request().map_err(Box::new)?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.token))
            .map_err(|_| ClientError::Url("the token is not valid in a header".into()))?;
        request.headers_mut().insert("authorization", auth);
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(Box::new)?;
        Ok(socket)
    }

    /// The tool catalog, with call counts.
    pub async fn tools(&self) -> Result<Vec<Value>, ClientError> {
        let resp = self
            .http
            .get(self.api("/tools"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let body = Self::json(resp).await?;
        Ok(body["tools"].as_array().cloned().unwrap_or_default())
    }

    /// Sets a tool's risk class, if it is still at `expected_version`.
    pub async fn set_risk(
        &self,
        upstream: &str,
        tool: &str,
        risk: crate::api::Risk,
        expected_version: u64,
    ) -> Result<Value, ClientError> {
        let mut url = self.api("/tools");
        url.path_segments_mut()
            .map_err(|_| ClientError::Url("bad origin".into()))?
            .extend([upstream, tool, "risk"]);
        let body = serde_json::json!({"risk": risk, "expected_version": expected_version});
        let resp = self
            .http
            .put(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        Self::json(resp).await
    }

    pub async fn holds(&self) -> Result<Vec<HoldView>, ClientError> {
        let resp = self
            .http
            .get(self.api("/holds"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let body = Self::json(resp).await?;
        serde_json::from_value(body["holds"].clone())
            .map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Approves (or denies) a hold.
    pub async fn resolve(
        &self,
        call_id: &str,
        approve: bool,
        reason: Option<String>,
    ) -> Result<HoldView, ClientError> {
        let verb = if approve { "approve" } else { "deny" };
        let resp = self
            .http
            .post(self.api(&format!("/holds/{call_id}/{verb}")))
            .bearer_auth(&self.token)
            .json(&ResolveRequest { reason })
            .send()
            .await?;
        let body = Self::json(resp).await?;
        serde_json::from_value(body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// Streams events to `on_event` as JSON text, one per frame, from `since` (or live
    /// only). After a `lagged` close, or a connection that drops without closing, it
    /// resumes from the last event seen (a few times in a row at most); a `reset` is
    /// an error, since the client must reload.
    pub async fn events(
        &self,
        mut since: Option<u64>,
        mut on_event: impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let mut drops = 0;
        loop {
            let mut socket = self.open_events(since, None).await?;
            let mut closed_cleanly = false;
            while let Some(message) = socket.next().await {
                let Ok(message) = message else { break };
                let text = match message {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => {
                        closed_cleanly = true;
                        break;
                    }
                    _ => continue,
                };
                let frame: Value = serde_json::from_str(&text)
                    .map_err(|e| ClientError::Unexpected(e.to_string()))?;
                match frame["kind"].as_str() {
                    Some("hello") => {
                        tracing::info!(last_seq = %frame["last_seq"], store_id = %frame["store_id"], "connected");
                    }
                    Some("lagged") => {
                        tracing::warn!(last_seq = %frame["last_seq"], "fell behind; resuming");
                        since = frame["last_seq"].as_u64().or(since);
                        closed_cleanly = false;
                        break;
                    }
                    Some("shutdown") => {
                        tracing::info!(last_seq = %frame["last_seq"], "the gateway is stopping");
                    }
                    Some("reset") => {
                        return Err(ClientError::Reset(
                            frame["message"].as_str().unwrap_or("").to_owned(),
                        ));
                    }
                    _ => {
                        drops = 0;
                        since = frame["seq"].as_u64().or(since);
                        on_event(&text);
                    }
                }
            }
            if closed_cleanly {
                return Ok(());
            }
            drops += 1;
            if drops > 3 {
                return Err(ClientError::Unexpected(format!(
                    "the event stream keeps dropping; resume with --since {}",
                    since.unwrap_or(0)
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500 * drops)).await;
        }
    }
}
