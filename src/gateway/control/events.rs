//! `GET /api/v1/events`: the live event stream, over WebSocket or SSE.
//!
//! Every connection starts with a `hello` frame (`last_seq`, `store_id`). Without
//! `since` it is live only; with it, every stored event after `since` is replayed first.
//! The seam is exact: the subscriber joins the live channel, notes the last committed
//! seq, replays the store up to that seq, then takes live events above it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::api::StreamNotice;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::gateway::Gateway;
use crate::gateway::store::Published;

/// How many stored events one replay read takes.
const REPLAY_PAGE: u32 = 500;
/// A subscriber that cannot take a frame for this long is treated as lagging.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// WebSocket close codes in the private range, one per reason.
const CLOSE_LAGGED: u16 = 4001;
const CLOSE_RESET: u16 = 4002;
/// The standard "going away" close code: the gateway is stopping.
const CLOSE_GOING_AWAY: u16 = 1001;

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    pub since: Option<u64>,
    pub store_id: Option<String>,
}

/// One frame of the stream.
pub enum Frame {
    /// A control frame: `hello`. No seq, no SSE id, not stored.
    Hello(String),
    Event(Arc<Published>),
    /// The stream ends: `lagged` (resume with `since=`) or `reset` (reload).
    Close {
        reason: &'static str,
        json: String,
    },
}

/// The frames one subscriber gets, in order.
pub struct Feed {
    gw: Arc<Gateway>,
    live: tokio::sync::broadcast::Receiver<Arc<Published>>,
    /// Live events at or below this seq were (or will be) replayed from the store.
    seam: u64,
    replay_after: u64,
    replaying: bool,
    page: VecDeque<Published>,
    delivered: u64,
    hello: Option<String>,
    closing: Option<Frame>,
}

/// How long a resuming subscriber waits for this replica to reach the seq it saw on
/// another one.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

impl Feed {
    pub async fn open(gw: Arc<Gateway>, query: &EventsQuery) -> Self {
        let (mut live, mut seam) = gw.store.subscribe();
        // Beside other replicas, a subscriber may come from one whose stream is a few
        // milliseconds ahead of this one's: wait for it here, rather than call the seq
        // it last saw a future one.
        if let Some(since) = query.since
            && since > seam
            && gw.store.is_shared()
        {
            let deadline = tokio::time::Instant::now() + CATCH_UP;
            while gw.store.last_seq() < since && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (live, seam) = gw.store.subscribe();
        }
        let store_id = gw.store_id.clone();
        let hello = notice(&StreamNotice::Hello {
            last_seq: seam,
            store_id: store_id.clone(),
        });
        let reset = |why: &str| Frame::Close {
            reason: "reset",
            json: notice(&StreamNotice::Reset {
                last_seq: seam,
                store_id: store_id.clone(),
                message: why.to_owned(),
            }),
        };
        let closing = match (&query.store_id, query.since) {
            (Some(theirs), _) if *theirs != store_id => {
                Some(reset("the store was recreated; reload"))
            }
            (_, Some(since)) if since > seam => {
                Some(reset("since is beyond the last stored seq; reload"))
            }
            _ => None,
        };
        Self {
            replay_after: query.since.unwrap_or(seam),
            replaying: query.since.is_some(),
            gw,
            live,
            seam,
            page: VecDeque::new(),
            delivered: query.since.unwrap_or(seam),
            hello: Some(hello),
            closing,
        }
    }

    pub async fn next(&mut self) -> Option<Frame> {
        if let Some(hello) = self.hello.take() {
            return Some(Frame::Hello(hello));
        }
        if let Some(close) = self.closing.take() {
            return Some(close);
        }
        while self.replaying {
            if let Some(event) = self.page.pop_front() {
                self.delivered = event.seq;
                return Some(Frame::Event(Arc::new(event)));
            }
            match self
                .gw
                .store
                .events_between(self.replay_after, self.seam, REPLAY_PAGE)
                .await
            {
                Ok(page) if page.is_empty() => self.replaying = false,
                Ok(page) => {
                    self.replay_after = page.last().map_or(self.seam, |e| e.seq);
                    self.page.extend(page);
                }
                Err(e) => {
                    tracing::error!(error = %e, "event replay failed; closing the subscriber");
                    return Some(self.lagged());
                }
            }
        }
        loop {
            let received = tokio::select! {
                received = self.live.recv() => received,
                () = self.gw.stopped() => return Some(Frame::Close {
                    reason: "shutdown",
                    json: notice(&StreamNotice::Shutdown {
                        last_seq: self.delivered,
                        message: "the gateway is stopping; reconnect with since=last_seq".into(),
                    }),
                }),
            };
            match received {
                Ok(event) if event.seq <= self.seam => continue,
                Ok(event) => {
                    self.delivered = event.seq;
                    return Some(Frame::Event(event));
                }
                Err(RecvError::Lagged(_)) => {
                    tracing::warn!(
                        last_seq = self.delivered,
                        "event subscriber fell behind; closed as lagged"
                    );
                    return Some(self.lagged());
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    pub fn lagged(&self) -> Frame {
        Frame::Close {
            reason: "lagged",
            json: notice(&StreamNotice::Lagged {
                last_seq: self.delivered,
                message: "this subscriber fell behind; resume with since=last_seq".into(),
            }),
        }
    }
}

/// A notice as the one JSON text a frame carries.
fn notice(n: &StreamNotice) -> String {
    serde_json::to_string(n).unwrap_or_default()
}

pub async fn websocket(mut socket: WebSocket, mut feed: Feed) {
    while let Some(frame) = feed.next().await {
        let (text, close) = match frame {
            Frame::Hello(json) => (json, None),
            Frame::Event(event) => (event.json.clone(), None),
            Frame::Close { reason, json } => {
                let code = match reason {
                    "lagged" => CLOSE_LAGGED,
                    "shutdown" => CLOSE_GOING_AWAY,
                    _ => CLOSE_RESET,
                };
                (
                    json,
                    Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }),
                )
            }
        };
        let sent =
            tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    last_seq = feed.delivered,
                    "event subscriber stopped reading; closed as lagged"
                );
                // The client stopped reading: tell it why, if it can still hear.
                if let Frame::Close { json, .. } = feed.lagged() {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(200),
                        socket.send(Message::Text(json.into())),
                    )
                    .await;
                }
                let close = CloseFrame {
                    code: CLOSE_LAGGED,
                    reason: "lagged".into(),
                };
                let _ = tokio::time::timeout(
                    Duration::from_millis(200),
                    socket.send(Message::Close(Some(close))),
                )
                .await;
                return;
            }
        }
        if let Some(close) = close {
            let _ = socket.send(Message::Close(Some(close))).await;
            return;
        }
    }
}

pub fn sse(feed: Feed) -> Response {
    let stream = futures_util::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        let frame = feed.next().await?;
        let (text, more) = match frame {
            Frame::Hello(json) => (format!("data: {json}\n\n"), true),
            Frame::Event(e) => (format!("id: {}\ndata: {}\n\n", e.seq, e.json), true),
            Frame::Close { json, .. } => (format!("data: {json}\n\n"), false),
        };
        Some((
            Ok::<_, std::convert::Infallible>(text),
            more.then_some(feed),
        ))
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
