//! A client of the control API, as any third-party tool would write one: HTTP with
//! reqwest, the event stream over WebSocket. The command-line client uses it.

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::api::{
    ApiError, DecisionRecord, Event, HoldView, PolicyEdit, PolicyText, PolicyVersion,
    ResolveRequest, Risk, RiskEdit, StatusView, StreamFrame, StreamNotice, ToolEntry, ToolRow,
};

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
        /// On a `stale_version` for a risk edit: the tool as it is now.
        tool: Option<Box<ToolRow>>,
        /// On a `stale_version` for a policy edit: the version in force now.
        policy: Option<Box<PolicyVersion>>,
        /// On an `invalid_policy`: where in the text, when the gateway could say.
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("the gateway's store was recreated or is behind this client: {0}")]
    Reset(String),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// A failure whose body is not the API's error JSON (a proxy's page, say).
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

impl ClientError {
    /// The gateway refused a policy text as invalid (400 `invalid_policy`).
    pub fn is_invalid_policy(&self) -> bool {
        matches!(self, ClientError::Api { code, .. } if code == "invalid_policy")
    }

    /// The HTTP status when the gateway refused the token (401) or the operator (403),
    /// on a request or on the event stream's handshake: retrying will not help.
    pub fn rejected_token(&self) -> Option<u16> {
        use tokio_tungstenite::tungstenite::Error as Ws;
        let status = match self {
            ClientError::Api { status, .. } | ClientError::Status { status, .. } => *status,
            ClientError::WebSocket(e) => match e.as_ref() {
                Ws::Http(response) => response.status().as_u16(),
                _ => return None,
            },
            _ => return None,
        };
        matches!(status, 401 | 403).then_some(status)
    }
}

/// The rows of a list the API answered: those this client reads, and those it cannot (a
/// newer gateway's, with a class or outcome this version does not know), kept as sent so
/// that one such row never hides the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub rows: Vec<T>,
    pub unreadable: Vec<serde_json::Value>,
}

impl<T: serde::de::DeserializeOwned> Listed<T> {
    fn read(values: Vec<serde_json::Value>) -> Listed<T> {
        let mut listed = Listed {
            rows: Vec::with_capacity(values.len()),
            unreadable: Vec::new(),
        };
        for value in values {
            match T::deserialize(&value) {
                Ok(row) => listed.rows.push(row),
                Err(e) => {
                    tracing::warn!(error = %e, "a row this client cannot read; kept as sent");
                    listed.unreadable.push(value);
                }
            }
        }
        listed
    }
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

    /// The gateway's origin, as the operator named it.
    pub fn origin(&self) -> &str {
        self.origin.as_str().trim_end_matches('/')
    }

    fn api(&self, path: &str) -> reqwest::Url {
        let mut url = self.origin.clone();
        url.set_path(&format!("/api/v1{path}"));
        url
    }

    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
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
                tool: e.tool.map(Box::new),
                policy: e.policy.map(Box::new),
                line: e.error.line,
                column: e.error.column,
            }),
            Err(_) => Err(ClientError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            }),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> Result<T, ClientError> {
        let resp = self.http.get(url).bearer_auth(&self.token).send().await?;
        Self::json(resp).await
    }

    /// The newest decisions, newest first, each with its hold folded in.
    pub async fn decisions(&self, limit: usize) -> Result<Listed<DecisionRecord>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            decisions: Vec<serde_json::Value>,
        }
        let mut url = self.api("/decisions");
        url.set_query(Some(&format!("limit={limit}")));
        Ok(Listed::read(self.get::<Page>(url).await?.decisions))
    }

    /// The gateway's health, counters, upstreams and the policy in force.
    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get(self.api("/status")).await
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
    pub async fn tools(&self) -> Result<Listed<ToolEntry>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tools: Vec<serde_json::Value>,
        }
        Ok(Listed::read(
            self.get::<Page>(self.api("/tools")).await?.tools,
        ))
    }

    /// Sets a tool's risk class, if it is still at `expected_version`; answers with the
    /// `risk.changed` event.
    pub async fn set_risk(
        &self,
        upstream: &str,
        tool: &str,
        risk: Risk,
        expected_version: u64,
        note: Option<String>,
    ) -> Result<Event, ClientError> {
        let mut url = self.api("/tools");
        url.path_segments_mut()
            .map_err(|_| ClientError::Url("bad origin".into()))?
            .extend([upstream, tool, "risk"]);
        let body = RiskEdit {
            risk: risk.as_str().to_owned(),
            expected_version,
            note,
        };
        let resp = self
            .http
            .put(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        Self::json(resp).await
    }

    /// The policy in force, with its text.
    pub async fn policy(&self) -> Result<PolicyText, ClientError> {
        self.get(self.api("/policy")).await
    }

    /// Every stored policy version, newest first.
    pub async fn policy_versions(&self) -> Result<Vec<PolicyVersion>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            versions: Vec<PolicyVersion>,
        }
        Ok(self
            .get::<Page>(self.api("/policy/versions"))
            .await?
            .versions)
    }

    /// A stored policy version, with its text.
    pub async fn policy_version(&self, version: u64) -> Result<PolicyText, ClientError> {
        self.get(self.api(&format!("/policy/versions/{version}")))
            .await
    }

    /// Puts `text` in force as a new policy version, if the policy is still at
    /// `expected_version` (when given); answers with the `policy.changed` event.
    pub async fn put_policy(
        &self,
        text: &str,
        note: Option<String>,
        expected_version: Option<u64>,
    ) -> Result<Event, ClientError> {
        let body = PolicyEdit {
            text: text.to_owned(),
            note,
            expected_version,
        };
        let resp = self
            .http
            .put(self.api("/policy"))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        Self::json(resp).await
    }

    /// The shadow policy, or `None` when none is installed.
    pub async fn shadow(&self) -> Result<Option<crate::api::ShadowView>, ClientError> {
        match self.get(self.api("/policy/shadow")).await {
            Ok(view) => Ok(Some(view)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Installs `text` as the shadow policy.
    pub async fn put_shadow(&self, text: &str) -> Result<crate::api::ShadowView, ClientError> {
        let resp = self
            .http
            .put(self.api("/policy/shadow"))
            .bearer_auth(&self.token)
            .body(text.to_owned())
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Removes the shadow policy; answers with its last view.
    pub async fn delete_shadow(&self) -> Result<crate::api::ShadowView, ClientError> {
        let resp = self
            .http
            .delete(self.api("/policy/shadow"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Makes the shadow the policy in force, if `expected_version` still is.
    pub async fn promote_shadow(
        &self,
        sha256: &str,
        expected_version: u64,
        note: Option<String>,
    ) -> Result<Event, ClientError> {
        let resp = self
            .http
            .post(self.api("/policy/shadow/promote"))
            .bearer_auth(&self.token)
            .json(&crate::api::PromoteRequest {
                sha256: sha256.to_owned(),
                expected_version,
                note,
            })
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Gives a pending hold `secs` more before it expires.
    pub async fn extend(&self, call_id: &str, secs: u64) -> Result<HoldView, ClientError> {
        let resp = self
            .http
            .post(self.api(&format!("/holds/{call_id}/extend")))
            .bearer_auth(&self.token)
            .json(&crate::api::ExtendRequest { secs })
            .send()
            .await?;
        Self::json(resp).await
    }

    /// The operator this client's token belongs to.
    pub async fn me(&self) -> Result<crate::api::OperatorView, ClientError> {
        self.get(self.api("/me")).await
    }

    /// The standing privilege of every API token.
    pub async fn tokens(&self) -> Result<crate::api::TokensView, ClientError> {
        self.get(self.api("/tokens")).await
    }

    /// The active grants.
    pub async fn grants(&self) -> Result<crate::api::GrantList, ClientError> {
        self.get(self.api("/grants")).await
    }

    /// Revokes a grant.
    pub async fn revoke_grant(&self, id: &str) -> Result<crate::api::Grant, ClientError> {
        let resp = self
            .http
            .delete(self.api(&format!("/grants/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await?;
        Self::json(resp).await
    }

    pub async fn holds(&self) -> Result<Listed<HoldView>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            holds: Vec<serde_json::Value>,
        }
        Ok(Listed::read(
            self.get::<Page>(self.api("/holds")).await?.holds,
        ))
    }

    /// What a candidate policy and/or classes would have decided for recorded decisions.
    pub async fn replay(
        &self,
        request: &crate::api::ReplayRequest,
    ) -> Result<crate::api::ReplayReport, ClientError> {
        let resp = self
            .http
            .post(self.api("/replay"))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await?;
        Self::json(resp).await
    }

    /// Approves (or denies) a hold; an approval may make a grant.
    pub async fn resolve(
        &self,
        call_id: &str,
        approve: bool,
        reason: Option<String>,
        grant: Option<crate::api::GrantRequest>,
    ) -> Result<HoldView, ClientError> {
        let verb = if approve { "approve" } else { "deny" };
        let resp = self
            .http
            .post(self.api(&format!("/holds/{call_id}/{verb}")))
            .bearer_auth(&self.token)
            .json(&ResolveRequest { reason, grant })
            .send()
            .await?;
        Self::json(resp).await
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
                let frame = StreamFrame::parse(&text).ok_or_else(|| {
                    ClientError::Unexpected(format!("a frame that is not JSON: {text}"))
                })?;
                match frame {
                    StreamFrame::Notice(StreamNotice::Hello { last_seq, store_id }) => {
                        tracing::info!(last_seq, %store_id, "connected");
                    }
                    StreamFrame::Notice(StreamNotice::Lagged { last_seq, .. }) => {
                        tracing::warn!(last_seq, "fell behind; resuming");
                        since = Some(last_seq);
                        closed_cleanly = false;
                        break;
                    }
                    StreamFrame::Notice(StreamNotice::Shutdown { last_seq, .. }) => {
                        tracing::info!(last_seq, "the gateway is stopping");
                    }
                    StreamFrame::Notice(StreamNotice::Reset { message, .. }) => {
                        return Err(ClientError::Reset(message));
                    }
                    event => {
                        drops = 0;
                        since = event.seq().or(since);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_from_a_newer_gateway_is_kept_as_sent_and_hides_no_other() {
        let hold = |risk: &str, id: &str| {
            serde_json::json!({"call_id": id, "phase": "pending", "expires_at": "2099-01-01T00:00:00.000Z",
                "call": {"call_id": id, "upstream": "u", "tool": "t", "risk": risk,
                    "identity": {"kind": "api_token", "name": "ci", "groups": []},
                    "target": null, "workflow": null, "outcome": "hold", "policy_ids": [],
                    "reason": "r", "decision_us": 1, "args": {}}})
        };
        let listed: Listed<HoldView> = Listed::read(vec![
            hold("write", "a"),
            hold("catastrophic", "b"),
            hold("read", "c"),
        ]);
        let ids: Vec<&str> = listed.rows.iter().map(|h| h.call_id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(listed.unreadable, vec![hold("catastrophic", "b")]);
    }
}
