//! One admitted, strictly read POST on its way upstream, and what forwarding it can
//! answer besides the upstream's own answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::Value;

use super::super::Gateway;
use super::super::escape::Escaped;
use super::super::identity::Identity;
use super::super::mcp::{self, ClientMessage};
use super::super::sessions::Bound;
use super::super::store::{StoreError, WriteOp};
use super::admit::note_session_end;
use super::upstream::{Upstream, forward, redirect_not_followed};

/// A POST that passed admission and the strict reader.
pub struct Post<'g> {
    pub gw: &'g Arc<Gateway>,
    /// The upstream's name, from the path.
    pub name: &'g str,
    pub upstream: &'g Upstream,
    pub identity: Arc<Identity>,
    /// The session it names, checked to be this identity's.
    pub session: Option<String>,
    pub headers: &'g HeaderMap,
    pub message: ClientMessage,
    /// The bytes that were read, and that go upstream unchanged.
    pub bytes: Bytes,
}

/// Why a forwarded request has no answer to relay.
pub struct Failure {
    pub kind: FailureKind,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// What the client is told.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing reached the upstream, or its answer never came.
    Unreachable,
    /// It answered with something the gateway does not relay (a redirect, a session id
    /// another identity holds).
    Refused,
}

impl Post<'_> {
    /// The JSON-RPC id, or null.
    pub fn id(&self) -> Value {
        self.message.id().cloned().unwrap_or(Value::Null)
    }

    /// Sends the bytes upstream. An answer comes back only if it may be relayed: not a
    /// redirect (which would carry the upstream's credentials elsewhere), and for an
    /// `initialize`, not a session id that another identity already holds.
    pub async fn forward(&self) -> Result<reqwest::Response, Failure> {
        let gw = self.gw;
        let response = match forward(
            gw,
            self.upstream,
            &self.identity.principal(),
            Method::POST,
            self.headers,
            Some(self.bytes.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                gw.metrics.upstream_error(self.name);
                tracing::warn!(upstream = %Escaped(self.name), error = %e, "upstream unreachable");
                return Err(Failure {
                    kind: FailureKind::Unreachable,
                    upstream_status: None,
                    text: format!("toolgate: upstream {:?} unreachable", self.name),
                });
            }
        };
        let status = Some(response.status().as_u16());
        if response.status().is_redirection() {
            gw.metrics.upstream_error(self.name);
            return Err(Failure {
                kind: FailureKind::Refused,
                upstream_status: status,
                text: redirect_not_followed(self.name, &response),
            });
        }
        if self.message.method() == Some("initialize")
            && response.status().is_success()
            && let Some(created) = response
                .headers()
                .get(mcp::HEADER_SESSION_ID)
                .and_then(|v| v.to_str().ok())
        {
            let principal = self.identity.principal();
            let mut bound =
                gw.sessions
                    .bind(self.name, created, &principal, std::time::Instant::now());
            // Beside other replicas, the session is recorded before its id reaches the
            // client, so that its next request finds it on whichever replica it lands.
            if bound == Bound::New
                && gw.store.is_shared()
                && let Err(e) = gw
                    .store
                    .write_in_time(WriteOp::SessionBound {
                        upstream: self.name.to_owned(),
                        id: created.to_owned(),
                        principal: principal.clone(),
                    })
                    .await
            {
                gw.sessions.forget(self.name, created);
                if !matches!(e, StoreError::SessionTaken) {
                    tracing::error!(error = %e, "cannot record a new session in the shared store; refused");
                    return Err(Failure {
                        kind: FailureKind::Refused,
                        upstream_status: status,
                        text: "toolgate: the session could not be recorded (audit store unavailable); initialize again".into(),
                    });
                }
                bound = Bound::Taken;
            }
            if bound == Bound::Taken {
                tracing::warn!(upstream = %Escaped(self.name), identity = %Escaped(&principal),
                    "upstream handed out a session id another identity holds; refused");
                return Err(Failure {
                    kind: FailureKind::Refused,
                    upstream_status: status,
                    text: "toolgate: the upstream reused a session id; initialize again".into(),
                });
            }
        }
        note_session_end(
            gw,
            self.name,
            &Method::POST,
            self.session.as_deref(),
            response.status(),
        );
        Ok(response)
    }
}
