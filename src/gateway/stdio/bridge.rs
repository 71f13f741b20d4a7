//! The Streamable HTTP server in front of a stdio upstream's children, which the relay
//! reaches on a private Unix socket.
//!
//! POST writes a message to the child as one line and answers with the child's answer:
//! JSON when nothing came before it, else an SSE stream carrying the request's progress
//! and the server's requests first. GET is the session's stream for what no request
//! carries; DELETE ends the session and its child. A 2026-07-28 request goes to a pooled
//! child and its answer is completed for that era ([`super::era`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::conn::Conn;
use super::era::{Declared, discover_answer, modern_answer};
use super::input;
use super::{BRIDGE_KEY_HEADER, PRINCIPAL_HEADER, Refused, StdioUpstream, ended_text, request_key};
use super::{Incoming, StdioError};
use crate::gateway::mcp::{self, Era};
use crate::gateway::relay::reply::sse_response;

/// How long a child has to answer a request whose client went away (after it was told
/// the request is cancelled) before a pooled child is stopped rather than reused.
const DRAIN: Duration = Duration::from_secs(5);

pub fn router(upstream: Arc<StdioUpstream>) -> Router {
    Router::new()
        .route("/", post(on_post).get(on_get).delete(on_delete))
        .with_state(upstream)
}

/// Whose request it is, from a request that the relay made (it alone knows the key).
fn principal(up: &StdioUpstream, headers: &HeaderMap) -> Result<String, Refused> {
    use subtle::ConstantTimeEq as _;
    let through_the_gateway = headers
        .get(BRIDGE_KEY_HEADER)
        .is_some_and(|key| bool::from(key.as_bytes().ct_eq(up.bridge_key.as_bytes())));
    let principal = headers
        .get(PRINCIPAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|_| through_the_gateway);
    principal.map(str::to_owned).ok_or_else(|| Refused {
        status: StatusCode::FORBIDDEN,
        text: "toolgate: a stdio upstream is reached through the gateway only".into(),
    })
}

fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(mcp::HEADER_SESSION_ID)
        .and_then(|v| v.to_str().ok())
}

fn refusal(id: &Value, refused: Refused) -> Response {
    json_answer(
        refused.status,
        mcp::error_body(id, -32603, &refused.text)
            .to_string()
            .into_bytes(),
    )
}

fn json_answer(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn on_post(
    State(up): State<Arc<StdioUpstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let principal = match principal(&up, &headers) {
        Ok(p) => p,
        Err(refused) => return refusal(&Value::Null, refused),
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return refusal(
            &Value::Null,
            Refused {
                status: StatusCode::BAD_REQUEST,
                text: "toolgate: the body is not one JSON-RPC message".into(),
            },
        );
    };
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").filter(|_| method.is_some()).cloned();
    let params = message.get("params").and_then(Value::as_object);
    let modern = mcp::detect_era(params, &headers) == Era::Modern;
    let session = session_of(&headers);
    let (Some(method), Some(id)) = (method, id) else {
        // A notification, or the client's answer to the server's request.
        return match session {
            Some(session) => match up.session_conn(session, &principal).await {
                Ok(conn) => match conn.child.send(&body).await {
                    Ok(()) => StatusCode::ACCEPTED.into_response(),
                    Err(e) => refusal(
                        &Value::Null,
                        Refused {
                            status: StatusCode::BAD_GATEWAY,
                            text: format!(
                                "toolgate: the stdio server of upstream {:?} {}",
                                up.name,
                                ended_text(&e)
                            ),
                        },
                    ),
                },
                Err(refused) => refusal(&Value::Null, refused),
            },
            // 2026-07-28 has no session to deliver it in; a call is cancelled by
            // closing its request.
            None => StatusCode::ACCEPTED.into_response(),
        };
    };
    if request_key(&id).is_none() {
        let text = format!(
            "toolgate: request id {id} is not a string or an integer, which is all a stdio upstream takes"
        );
        return json_answer(
            StatusCode::BAD_REQUEST,
            mcp::error_body(&id, -32600, &text).to_string().into_bytes(),
        );
    }
    if method == "initialize" && session.is_none() && !modern {
        return match up.open_session(&principal, body).await {
            Ok((created, answer)) => {
                let mut response = json_answer(StatusCode::OK, answer.raw.to_vec());
                if let Some(created) = created
                    && let Ok(value) = HeaderValue::from_str(&created)
                {
                    response.headers_mut().insert(mcp::HEADER_SESSION_ID, value);
                }
                response
            }
            Err(refused) => refusal(&id, refused),
        };
    }
    if let Some(session) = session {
        return match up.session_conn(session, &principal).await {
            Ok(conn) => {
                exchange(
                    up.clone(),
                    conn,
                    body,
                    message,
                    principal,
                    Answers::AsWritten,
                    None,
                )
                .await
            }
            Err(refused) => refusal(&id, refused),
        };
    }
    if !modern {
        return refusal(&id, Refused {
            status: StatusCode::BAD_REQUEST,
            text: "toolgate: a request needs the Mcp-Session-Id its initialize gave (2025-11-25), or 2026-07-28's _meta".into(),
        });
    }
    if let Some(state) = input::state_of(&message) {
        return resume(&up, state, &principal, &message).await;
    }
    let header_version = headers
        .get(mcp::HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok());
    let declared = Declared::of(&message, header_version);
    let pool = declared.pool_key(&principal);
    let conn = match up.pooled_conn(&principal, &pool, &declared).await {
        Ok(conn) => conn,
        Err(refused) => return refusal(&id, refused),
    };
    // A child that speaks the era itself is relayed as it is.
    let complete = !conn.speaks_modern();
    if method == "server/discover" && complete {
        let answer = discover_answer(&id, &conn.init.lock().expect("init"));
        up.release(&pool, conn);
        return json_answer(StatusCode::OK, answer);
    }
    exchange(
        up.clone(),
        conn,
        body,
        message,
        principal,
        Answers::Modern { complete },
        Some(pool),
    )
    .await
}

/// How a request's answers are shaped.
#[derive(Clone, Copy)]
enum Answers {
    /// As the child wrote them (a session, in the child's own era).
    AsWritten,
    /// For a 2026-07-28 client: the child's requests mid-call asked as `input_required`,
    /// and its answers `complete`d, when it speaks the handshake era.
    Modern { complete: bool },
}

/// What goes to the client for one request, in the child's order; the answer is last.
pub enum Out {
    Related(Bytes),
    Answer(Vec<u8>),
}

/// Writes a request to the child and answers with what it says, streaming what it says
/// first. A pooled child (`pool`) goes back to its pool afterwards.
async fn exchange(
    up: Arc<StdioUpstream>,
    conn: Arc<Conn>,
    body: Bytes,
    message: Value,
    principal: String,
    answers: Answers,
    pool: Option<String>,
) -> Response {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let key = request_key(&id).unwrap_or_else(|| id.to_string());
    let progress = message
        .pointer("/params/_meta/progressToken")
        .map(Value::to_string);
    let related = conn.open_route(&key, progress);
    let (out, to_client) = mpsc::channel::<Out>(16);
    tokio::spawn({
        let id = id.clone();
        async move {
            let request = Request {
                up: &up,
                conn: &conn,
                key: &key,
                message: &message,
                principal: &principal,
                answers,
            };
            let answered = request.run(&body, id, related, out).await;
            conn.close_route(&key);
            conn.touch();
            if let Some(pool) = pool {
                if answered {
                    up.release(&pool, conn);
                } else {
                    up.retire(&conn);
                }
            }
        }
    });
    respond(to_client, &id).await
}

/// The client's response: JSON if the answer comes first, else an SSE stream.
async fn respond(mut to_client: mpsc::Receiver<Out>, id: &Value) -> Response {
    match to_client.recv().await {
        Some(Out::Answer(body)) => json_answer(StatusCode::OK, body),
        Some(Out::Related(first)) => {
            let first = futures_util::stream::once(async move { Out::Related(first) });
            let rest = futures_util::stream::unfold(to_client, |mut rx| async move {
                rx.recv().await.map(|o| (o, rx))
            });
            let events = first.chain(rest).map(|o| {
                let data: &[u8] = match &o {
                    Out::Related(b) => b,
                    Out::Answer(b) => b,
                };
                Ok::<_, std::convert::Infallible>(sse_event(data))
            });
            sse_response(Body::from_stream(events))
        }
        None => refusal(
            id,
            Refused {
                status: StatusCode::BAD_GATEWAY,
                text: "toolgate: the stdio bridge lost the request".into(),
            },
        ),
    }
}

/// A 2026-07-28 call again, with the answer its child asked for: the rest of that call
/// is its response.
async fn resume(up: &StdioUpstream, state: &str, principal: &str, message: &Value) -> Response {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let (out, to_client) = mpsc::channel::<Out>(16);
    match up.suspensions.resume(state, principal, message, out) {
        Ok(()) => respond(to_client, &id).await,
        Err(why) => json_answer(
            StatusCode::OK,
            mcp::error_body(&id, mcp::INVALID_PARAMS, &why)
                .to_string()
                .into_bytes(),
        ),
    }
}

/// One request on its child.
struct Request<'a> {
    up: &'a StdioUpstream,
    conn: &'a Conn,
    /// Its id, as `request_key` has it.
    key: &'a str,
    message: &'a Value,
    principal: &'a str,
    answers: Answers,
}

/// What happened while a request waited on its child.
enum Event {
    Related(Incoming),
    Answered(Result<Incoming, StdioError>),
    ClientGone,
}

impl Request<'_> {
    /// Writes the request and passes on what the child says, its answer last (to
    /// whichever request of the client's that is by then: `id`). Whether the child
    /// answered (a client that went away leaves it a moment to).
    async fn run(
        &self,
        body: &[u8],
        mut id: Value,
        mut related: mpsc::Receiver<Incoming>,
        mut out: mpsc::Sender<Out>,
    ) -> bool {
        let answer = self.conn.child.request_as(self.key, body);
        tokio::pin!(answer);
        let answered = loop {
            let event = tokio::select! {
                biased;
                Some(m) = related.recv() => Event::Related(m),
                a = &mut answer => Event::Answered(a),
                () = out.closed() => Event::ClientGone,
            };
            match event {
                Event::Related(m) if m.value["method"] == "ping" && self.is_modern() => {
                    // A 2026-07-28 client is not pinged; the bridge answers for it.
                    let pong = json!({"jsonrpc": "2.0", "id": m.value["id"], "result": {}});
                    let _ = self.conn.child.send(pong.to_string().as_bytes()).await;
                }
                Event::Related(m) if is_request(&m.value) && self.is_modern() => {
                    match self.ask(&m.value, &id, out).await {
                        Some((next, next_id)) => (out, id) = (next, next_id),
                        None => return self.abandon(answer).await,
                    }
                }
                Event::Related(m) => {
                    if out.send(Out::Related(m.raw)).await.is_err() {
                        break None;
                    }
                }
                Event::Answered(a) => break Some(a),
                Event::ClientGone => break None,
            }
        };
        let Some(answered) = answered else {
            return self.abandon(answer).await;
        };
        // What the child wrote before its answer goes first.
        while let Ok(m) = related.try_recv() {
            let _ = out.send(Out::Related(m.raw)).await;
        }
        let method = self.message["method"].as_str().unwrap_or_default();
        let body = match answered {
            Ok(answer) if matches!(self.answers, Answers::Modern { complete: true }) => {
                let init = self.conn.init.lock().expect("init").clone();
                input::with_id(modern_answer(&answer.raw, method, &init), &id)
            }
            Ok(answer) => input::with_id(answer.raw.to_vec(), &id),
            Err(e @ (StdioError::DuplicateId(_) | StdioError::UnusableId(_))) => {
                mcp::error_body(&id, -32600, &format!("toolgate: {e}"))
                    .to_string()
                    .into_bytes()
            }
            Err(e) => mcp::error_body(
                &id,
                -32603,
                &format!("toolgate: the stdio server {}", ended_text(&e)),
            )
            .to_string()
            .into_bytes(),
        };
        let _ = out.send(Out::Answer(body)).await;
        true
    }

    /// The client went away: the server is told, and has a moment to end the request
    /// before its child takes another. Whether it did.
    async fn abandon<F: std::future::Future>(&self, answer: std::pin::Pin<&mut F>) -> bool {
        let cancelled = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": self.message["id"], "reason": "the client went away"}});
        let cancelled = cancelled.to_string();
        let told = self.conn.child.send(cancelled.as_bytes());
        let _ = tokio::time::timeout(DRAIN, told).await;
        tokio::time::timeout(DRAIN, answer).await.is_ok()
    }

    fn is_modern(&self) -> bool {
        matches!(self.answers, Answers::Modern { .. })
    }

    /// The child asks the 2026-07-28 client something: `input_required` now, and the
    /// call goes on when the client calls again with the answer (the new request's
    /// sender and id), or is given up after `input::WAIT`.
    async fn ask(
        &self,
        asked: &Value,
        id: &Value,
        out: mpsc::Sender<Out>,
    ) -> Option<(mpsc::Sender<Out>, Value)> {
        let child = &self.conn.child;
        // A child of 2026-07-28 asks in that era's own way, not like this.
        let suspended = match self.answers {
            Answers::Modern { complete: true } => self
                .up
                .suspensions
                .suspend(self.principal, self.message)
                .ok_or_else(|| {
                    tracing::warn!(upstream = %self.up.name, "stdio server's request refused: this identity has {} calls waiting for their clients' answers already", input::MAX_WAITING_PER_IDENTITY);
                    "toolgate: this client has too many calls waiting for its answers"
                }),
            _ => Err("toolgate: a 2026-07-28 client is asked through input_required"),
        };
        let (state, resumed) = match suspended {
            Ok(suspended) => suspended,
            Err(why) => {
                let _ = child.send(&input::refusal_to(asked, why)).await;
                return Some((out, id.clone()));
            }
        };
        let told = out
            .send(Out::Answer(input::input_required(id, asked, &state)))
            .await
            .is_ok();
        drop(out);
        let resumed = if told {
            tokio::time::timeout(input::WAIT, resumed).await.ok()
        } else {
            None
        };
        match resumed {
            Some(Ok(resume)) => {
                let _ = child.send(&input::response_to(asked, resume.answer)).await;
                Some((resume.out, resume.id))
            }
            _ => {
                tracing::info!(upstream = %self.up.name, "a call's client did not call again with its answer within {} s; the call is cancelled", input::WAIT.as_secs());
                self.up.suspensions.forget(&state);
                let _ = child
                    .send(&input::refusal_to(
                        asked,
                        "toolgate: the client did not answer",
                    ))
                    .await;
                None
            }
        }
    }
}

/// A message with a method and an id: the child's own request.
fn is_request(message: &Value) -> bool {
    message.get("id").is_some() && message.get("method").is_some()
}

fn sse_event(data: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(data.len() + 24);
    event.extend_from_slice(b"event: message\ndata: ");
    event.extend_from_slice(data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// Whose request a GET or DELETE is, and the session it names (these have no other
/// use here).
fn session_request(up: &StdioUpstream, headers: &HeaderMap) -> Result<(String, String), Refused> {
    let principal = principal(up, headers)?;
    let session = session_of(headers).ok_or_else(|| Refused {
        status: StatusCode::METHOD_NOT_ALLOWED,
        text: "toolgate: GET and DELETE are for a session (Mcp-Session-Id)".into(),
    })?;
    Ok((principal, session.to_owned()))
}

/// The session's own stream: what the child says outside any request.
async fn on_get(State(up): State<Arc<StdioUpstream>>, headers: HeaderMap) -> Response {
    let (principal, session) = match session_request(&up, &headers) {
        Ok(request) => request,
        Err(refused) => return refusal(&Value::Null, refused),
    };
    match up.session_conn(&session, &principal).await {
        Ok(conn) => {
            let events = futures_util::stream::unfold(conn.listen(), |mut rx| async move {
                rx.recv().await.map(|m| (m, rx))
            })
            .map(|m| Ok::<_, std::convert::Infallible>(sse_event(&m.raw)));
            sse_response(Body::from_stream(events))
        }
        Err(refused) => refusal(&Value::Null, refused),
    }
}

async fn on_delete(State(up): State<Arc<StdioUpstream>>, headers: HeaderMap) -> Response {
    let (principal, session) = match session_request(&up, &headers) {
        Ok(request) => request,
        Err(refused) => return refusal(&Value::Null, refused),
    };
    if up.close_session(&session, &principal) {
        StatusCode::OK.into_response()
    } else {
        refusal(&Value::Null, super::no_session())
    }
}
