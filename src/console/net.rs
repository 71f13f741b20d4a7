//! The console's network side: one task that keeps the view filled and streaming,
//! reconnecting with backoff, and never blocks the keyboard.

use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::app::{Connection, NetEvent, ResolveFailure};
use crate::client::{ClientError, ControlClient};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps the app fed until the receiver is gone. `ring` is how many decisions to load.
pub async fn run(client: ControlClient, ring: usize, tx: mpsc::Sender<NetEvent>) {
    let mut attempt = 0u32;
    let mut since: Option<u64> = None;
    let mut store_id: Option<String> = None;
    let mut disconnected_at = None;
    loop {
        match session(&client, ring, &tx, &mut since, &mut store_id).await {
            Ok(SessionEnd::Reset) => {
                since = None;
                store_id = None;
                if tx.send(NetEvent::Reset).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(SessionEnd::Lagged) => continue,
            Ok(SessionEnd::AppGone) => return,
            Ok(SessionEnd::Closed) | Err(_) => {}
        }
        attempt += 1;
        let since_when = *disconnected_at.get_or_insert_with(Utc::now);
        let delay = backoff(attempt);
        let next_try = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let state = if attempt == 1 {
            Connection::Disconnected { since: since_when }
        } else {
            Connection::Reconnecting { attempt, next_try }
        };
        if tx.send(NetEvent::Connection(state)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        if tx
            .send(NetEvent::Connection(Connection::Reconnecting {
                attempt,
                next_try: Utc::now(),
            }))
            .await
            .is_err()
        {
            return;
        }
        // A session that got as far as streaming resets the count.
        if since.is_some() && store_id.is_some() {
            disconnected_at = None;
        }
    }
}

/// Exponential from 1 s to 30 s, with up to a quarter of jitter so that many consoles
/// do not reconnect in step.
fn backoff(attempt: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(MAX_BACKOFF);
    let mut bytes = [0u8; 2];
    let _ = getrandom::fill(&mut bytes);
    let jitter = base.mul_f64(f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX) / 4.0);
    (base + jitter).min(MAX_BACKOFF)
}

enum SessionEnd {
    Closed,
    Lagged,
    Reset,
    AppGone,
}

async fn session(
    client: &ControlClient,
    ring: usize,
    tx: &mpsc::Sender<NetEvent>,
    since: &mut Option<u64>,
    store_id: &mut Option<String>,
) -> Result<SessionEnd, ClientError> {
    if since.is_none() {
        let decisions = client.decisions(ring).await?;
        *since = Some(
            decisions
                .first()
                .and_then(|d| d["seq"].as_u64())
                .unwrap_or(0),
        );
        if tx.send(NetEvent::Backfill(decisions)).await.is_err() {
            return Ok(SessionEnd::AppGone);
        }
    }
    // Holds are refetched on every (re)connect: some may have been resolved meanwhile.
    let holds = client.holds().await?;
    if tx.send(NetEvent::Holds(holds)).await.is_err() {
        return Ok(SessionEnd::AppGone);
    }
    let mut socket = client.open_events(*since, store_id.as_deref()).await?;
    while let Some(message) = socket.next().await {
        let Ok(message) = message else {
            return Ok(SessionEnd::Closed);
        };
        let text = match message {
            Message::Text(t) => t,
            Message::Close(_) => return Ok(SessionEnd::Closed),
            _ => continue,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let sent = match frame["kind"].as_str() {
            Some("hello") => {
                let id = frame["store_id"].as_str().unwrap_or("").to_owned();
                *store_id = Some(id.clone());
                tx.send(NetEvent::Connected { store_id: id }).await
            }
            Some("lagged") => {
                *since = frame["last_seq"].as_u64().or(*since);
                return Ok(SessionEnd::Lagged);
            }
            Some("reset") => return Ok(SessionEnd::Reset),
            // The gateway is stopping: reconnect (with backoff) from where we are.
            Some("shutdown") => return Ok(SessionEnd::Closed),
            _ => {
                *since = frame["seq"].as_u64().or(*since);
                tx.send(NetEvent::Event(frame)).await
            }
        };
        if sent.is_err() {
            return Ok(SessionEnd::AppGone);
        }
    }
    Ok(SessionEnd::Closed)
}

/// Approves or denies on its own task, and reports back.
pub fn resolve(
    client: ControlClient,
    call_id: String,
    approve: bool,
    reason: Option<String>,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let outcome = match client.resolve(&call_id, approve, reason).await {
            Ok(hold) => Ok(Box::new(hold)),
            Err(ClientError::Api {
                hold: Some(hold),
                code,
                ..
            }) if code == "already_resolved" => Err(ResolveFailure::AlreadyResolved(hold)),
            Err(e) => Err(ResolveFailure::Other(e.to_string())),
        };
        let _ = tx.send(NetEvent::Resolved { call_id, outcome }).await;
    });
}

/// Fetches the catalog on its own task.
pub fn fetch_tools(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        if let Ok(tools) = client.tools().await {
            let _ = tx.send(NetEvent::Tools(tools)).await;
        }
    });
}

/// Sets a tool's class on its own task, and reports back.
pub fn set_risk(
    client: ControlClient,
    upstream: String,
    tool: String,
    risk: crate::api::Risk,
    expected_version: u64,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let outcome = match client
            .set_risk(&upstream, &tool, risk, expected_version)
            .await
        {
            Ok(event) => Ok(event),
            Err(ClientError::Api {
                code,
                tool: Some(current),
                ..
            }) if code == "stale_version" => Err(super::app::RiskFailure::Stale(current)),
            Err(e) => Err(super::app::RiskFailure::Other(e.to_string())),
        };
        let _ = tx
            .send(NetEvent::RiskEdited {
                upstream,
                tool,
                outcome,
            })
            .await;
    });
}
