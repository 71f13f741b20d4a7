//! The console's network side: one task that keeps the view filled and streaming,
//! reconnecting with backoff, and never blocks the keyboard. A rejected token ends it:
//! retrying cannot help, so the operator decides.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::app::{Connection, DraftFailure, NetEvent, ResolveFailure, RiskFailure};
use crate::api::{StreamFrame, StreamNotice};
use crate::client::{ClientError, ControlClient};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the summary's upstream health and counters are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Reconnect attempts since the last connection that worked.
#[derive(Debug, Default)]
pub struct Backoff {
    attempt: u32,
    lost_at: Option<DateTime<Utc>>,
}

impl Backoff {
    /// A session got as far as streaming: the next outage starts from the first attempt.
    pub fn connected(&mut self) {
        self.attempt = 0;
        self.lost_at = None;
    }

    /// One more failed attempt: its number, since when the gateway is lost, and how long
    /// to wait before the next.
    pub fn failed(&mut self, now: DateTime<Utc>) -> (u32, DateTime<Utc>, Duration) {
        self.attempt += 1;
        let since = *self.lost_at.get_or_insert(now);
        (self.attempt, since, backoff(self.attempt))
    }
}

/// Where a new link goes on from: the last seq the app has, of the store it knew.
#[derive(Debug, Clone)]
pub struct Resume {
    pub since: u64,
    pub store_id: String,
}

/// Keeps the app fed until the receiver is gone, or the gateway rejects the token.
/// `ring` is how many decisions to load.
pub async fn run(client: ControlClient, ring: usize, tx: mpsc::Sender<NetEvent>) {
    run_from(client, ring, tx, None).await;
}

/// As `run`, going on from what the app already has.
pub async fn run_from(
    client: ControlClient,
    ring: usize,
    tx: mpsc::Sender<NetEvent>,
    from: Option<Resume>,
) {
    let mut backoff = Backoff::default();
    let mut since: Option<u64> = from.as_ref().map(|r| r.since);
    let mut store_id: Option<String> = from.map(|r| r.store_id);
    let mut lags = 0u32;
    loop {
        let mut streamed = false;
        let before = since;
        let end = session(&client, ring, &tx, &mut since, &mut store_id, &mut streamed).await;
        let streamed_events = since != before;
        if streamed {
            backoff.connected();
        }
        match end {
            Ok(SessionEnd::Reset) => {
                since = None;
                store_id = None;
                if tx.send(NetEvent::Reset).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(SessionEnd::Lagged) => {
                // Resume at once the first time; a gateway that keeps answering `lagged`
                // (its replay failing) is asked again only with backoff.
                lags = if streamed_events { 1 } else { lags + 1 };
                if lags > 1 {
                    tokio::time::sleep(self::backoff(lags - 1)).await;
                }
                continue;
            }
            Ok(SessionEnd::AppGone) => return,
            Ok(SessionEnd::Closed) => {}
            Err(e) => {
                if let Some(status) = e.rejected_token() {
                    let _ = tx
                        .send(NetEvent::Connection(Connection::Rejected {
                            status,
                            gateway: client.origin().to_owned(),
                            since: backoff.lost_at.unwrap_or_else(Utc::now),
                        }))
                        .await;
                    return;
                }
            }
        }
        let (attempt, lost_since, delay) = backoff.failed(Utc::now());
        let next_try = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let state = if attempt == 1 {
            Connection::Disconnected { since: lost_since }
        } else {
            Connection::Reconnecting {
                attempt,
                next_try,
                since: lost_since,
            }
        };
        if tx.send(NetEvent::Connection(state)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        let trying = Connection::Reconnecting {
            attempt,
            next_try: Utc::now(),
            since: lost_since,
        };
        if tx.send(NetEvent::Connection(trying)).await.is_err() {
            return;
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
    streamed: &mut bool,
) -> Result<SessionEnd, ClientError> {
    if since.is_none() {
        let decisions = client.decisions(ring).await?;
        // The stream resumes after the newest row, read or not.
        let newest = decisions
            .rows
            .first()
            .map(|d| d.seq)
            .into_iter()
            .chain(
                decisions
                    .unreadable
                    .iter()
                    .filter_map(|d| d["seq"].as_u64()),
            )
            .max();
        *since = Some(newest.unwrap_or(0));
        if unreadable(tx, "decisions", decisions.unreadable.len())
            .await
            .is_err()
            || tx.send(NetEvent::Backfill(decisions.rows)).await.is_err()
        {
            return Ok(SessionEnd::AppGone);
        }
    }
    // Who this is, so that holds the operator may not resolve are not offered.
    if let Ok(me) = client.me().await
        && tx.send(NetEvent::Me(Box::new(me))).await.is_err()
    {
        return Ok(SessionEnd::AppGone);
    }
    // Holds are refetched on every (re)connect: some may have been resolved meanwhile.
    let holds = client.holds().await?;
    if unreadable(tx, "held calls", holds.unreadable.len())
        .await
        .is_err()
        || tx.send(NetEvent::Holds(holds.rows)).await.is_err()
    {
        return Ok(SessionEnd::AppGone);
    }
    // Grants too: some may have been made, revoked or used meanwhile. A gateway
    // without grants (an older one) has none to show.
    if let Ok(grants) = client.grants().await
        && tx.send(NetEvent::Grants(grants.grants)).await.is_err()
    {
        return Ok(SessionEnd::AppGone);
    }
    if let Ok(status) = client.status().await
        && tx.send(NetEvent::Status(Box::new(status))).await.is_err()
    {
        return Ok(SessionEnd::AppGone);
    }
    let mut socket = client.open_events(*since, store_id.as_deref()).await?;
    // Upstream health and the gateway's counters change without events: ask now and then.
    let mut status_every = tokio::time::interval(STATUS_EVERY);
    status_every.tick().await;
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = status_every.tick() => {
                fetch_status(client.clone(), tx.clone());
                continue;
            }
        };
        let Some(Ok(message)) = message else {
            return Ok(SessionEnd::Closed);
        };
        let text = match message {
            Message::Text(t) => t,
            Message::Close(_) => return Ok(SessionEnd::Closed),
            _ => continue,
        };
        let Some(frame) = StreamFrame::parse(&text) else {
            continue;
        };
        let sent = match frame {
            StreamFrame::Notice(StreamNotice::Hello { store_id: id, .. }) => {
                *store_id = Some(id.clone());
                *streamed = true;
                tx.send(NetEvent::Connected { store_id: id }).await
            }
            StreamFrame::Notice(StreamNotice::Lagged { last_seq, .. }) => {
                *since = Some(last_seq);
                return Ok(SessionEnd::Lagged);
            }
            StreamFrame::Notice(StreamNotice::Reset { .. }) => return Ok(SessionEnd::Reset),
            // The gateway is stopping: reconnect (with backoff) from where we are.
            StreamFrame::Notice(StreamNotice::Shutdown { .. }) => return Ok(SessionEnd::Closed),
            StreamFrame::Event(event) => {
                *since = Some(event.seq);
                tx.send(NetEvent::Event(event)).await
            }
            StreamFrame::Unknown { seq, value } => {
                *since = seq.or(*since);
                let kind = value["kind"].as_str().map(str::to_owned);
                tx.send(NetEvent::Unknown { seq, kind }).await
            }
        };
        if sent.is_err() {
            return Ok(SessionEnd::AppGone);
        }
    }
}

/// Says that `count` rows of a list could not be read (a newer gateway's), if any.
async fn unreadable(
    tx: &mpsc::Sender<NetEvent>,
    what: &str,
    count: usize,
) -> Result<(), mpsc::error::SendError<NetEvent>> {
    if count == 0 {
        return Ok(());
    }
    tx.send(NetEvent::Notice(format!(
        "{count} {what} from a newer gateway cannot be shown by this console; upgrade it"
    )))
    .await
}

/// Fetches `GET /status` on its own task; a failure waits for the next try.
fn fetch_status(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        if let Ok(status) = client.status().await {
            let _ = tx.send(NetEvent::Status(Box::new(status))).await;
        }
    });
}

/// Approves or denies on its own task, and reports back.
pub fn resolve(
    client: ControlClient,
    call_id: String,
    approve: bool,
    reason: Option<String>,
    grant: Option<crate::api::GrantRequest>,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let outcome = match client.resolve(&call_id, approve, reason, grant).await {
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

/// Fetches the active grants on its own task.
pub fn fetch_grants(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let event = match client.grants().await {
            Ok(list) => NetEvent::Grants(list.grants),
            Err(e) => NetEvent::Notice(format!("cannot read the grants: {e}")),
        };
        let _ = tx.send(event).await;
    });
}

/// Fetches the token report on its own task.
pub fn fetch_tokens(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let event = match client.tokens().await {
            Ok(view) => NetEvent::Tokens(Box::new(view)),
            Err(e) => NetEvent::Notice(format!("cannot read the token report: {e}")),
        };
        let _ = tx.send(event).await;
    });
}

/// Revokes a grant on its own task, and reports back.
pub fn revoke_grant(client: ControlClient, id: String, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let outcome = client
            .revoke_grant(&id)
            .await
            .map(Box::new)
            .map_err(|e| e.to_string());
        let _ = tx.send(NetEvent::Revoked { id, outcome }).await;
    });
}

/// Extends a hold on its own task, and says how it went.
pub fn extend(client: ControlClient, call_id: String, secs: u64, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let message = match client.extend(&call_id, secs).await {
            Ok(hold) => format!(
                "{} now expires at {}",
                super::text::short(&call_id),
                super::text::clock(
                    chrono::DateTime::parse_from_rfc3339(&hold.expires_at)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_else(|_| Utc::now())
                )
            ),
            Err(e) => format!("could not extend {}: {e}", super::text::short(&call_id)),
        };
        let _ = tx.send(NetEvent::Notice(message)).await;
    });
}

/// Fetches the catalog on its own task.
pub fn fetch_tools(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        if let Ok(tools) = client.tools().await {
            let _ = unreadable(&tx, "tools", tools.unreadable.len()).await;
            let _ = tx.send(NetEvent::Tools(tools.rows)).await;
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
    note: Option<String>,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let outcome = match client
            .set_risk(&upstream, &tool, risk, expected_version, note)
            .await
        {
            Ok(event) => Ok(Box::new(event)),
            Err(ClientError::Api {
                code,
                tool: Some(current),
                ..
            }) if code == "stale_version" => Err(RiskFailure::Stale(current)),
            Err(e) => Err(RiskFailure::Other(e.to_string())),
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

/// Fetches the policy view's data on its own task: the versions, the shadow, and the
/// text in force.
pub fn fetch_policy(client: ControlClient, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let versions = client.policy_versions().await;
        let shadow = client.shadow().await;
        match (versions, shadow) {
            (Ok(versions), Ok(shadow)) => {
                let newest = versions.first().map(|v| v.version);
                let _ = tx
                    .send(NetEvent::Policy {
                        versions,
                        shadow: shadow.map(Box::new),
                    })
                    .await;
                if newest.is_some()
                    && let Ok(text) = client.policy().await
                {
                    let _ = tx.send(NetEvent::PolicyText(Box::new(text))).await;
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = tx
                    .send(NetEvent::Notice(format!("cannot read the policy: {e}")))
                    .await;
            }
        }
    });
}

/// Fetches one stored version's text on its own task.
pub fn fetch_policy_version(client: ControlClient, version: u64, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let event = match client.policy_version(version).await {
            Ok(text) => NetEvent::PolicyText(Box::new(text)),
            Err(e) => NetEvent::Notice(format!("cannot read policy v{version}: {e}")),
        };
        let _ = tx.send(event).await;
    });
}

/// How many recent decisions a class change's preview replays.
const PREVIEW_WINDOW: u64 = 10_000;

/// Replays the recent recorded calls with one tool at another class, on its own task,
/// and reports what would have changed.
pub fn preview(
    client: ControlClient,
    upstream: String,
    tool: String,
    risk: crate::api::Risk,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let request = crate::api::ReplayRequest {
            risk: vec![crate::api::RiskCandidate {
                upstream: upstream.clone(),
                tool: tool.clone(),
                risk,
            }],
            window: Some(crate::api::ReplayWindow::Last(PREVIEW_WINDOW)),
            page: Some(crate::api::ReplayPage {
                after: None,
                upto: None,
                limit: Some(0),
            }),
            ..Default::default()
        };
        let outcome = client
            .replay(&request)
            .await
            .map(Box::new)
            .map_err(|e| e.to_string());
        let _ = tx
            .send(NetEvent::Previewed {
                upstream,
                tool,
                risk,
                outcome,
            })
            .await;
    });
}

/// How long a draft's replay, push or shadow may take before the console stops
/// waiting for the answer.
const DRAFT_ANSWER: Duration = Duration::from_secs(30);

/// Waits for a draft request's answer, `DRAFT_ANSWER` at most.
async fn within<T>(
    request: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, DraftFailure> {
    match tokio::time::timeout(DRAFT_ANSWER, request).await {
        Ok(answer) => answer.map_err(DraftFailure::from),
        Err(_) => Err(DraftFailure::Unknown(format!(
            "none within {} s",
            DRAFT_ANSWER.as_secs()
        ))),
    }
}

impl From<ClientError> for DraftFailure {
    fn from(e: ClientError) -> DraftFailure {
        match e {
            // Only a refused connection proves the request never arrived; any other
            // transport failure may have come after the gateway acted on it.
            ClientError::Http(e) if !e.is_connect() => DraftFailure::Unknown(e.to_string()),
            ClientError::Api {
                code,
                message,
                line,
                column,
                ..
            } if code == "invalid_policy" => DraftFailure::Invalid {
                message,
                line,
                column,
            },
            ClientError::Api {
                code,
                policy: Some(now),
                ..
            } if code == "stale_version" => DraftFailure::Stale(now),
            other => DraftFailure::Other(other.to_string()),
        }
    }
}

/// Validates a policy draft and replays the last decisions with it, on its own task:
/// the gateway answers 400 `invalid_policy` with line and column as a push would.
pub fn replay_draft(client: ControlClient, id: u64, text: String, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let request = crate::api::ReplayRequest {
            policy: Some(text),
            window: Some(crate::api::ReplayWindow::Last(
                super::popups::draft::DRAFT_WINDOW,
            )),
            page: Some(crate::api::ReplayPage {
                after: None,
                upto: None,
                limit: Some(super::popups::draft::SAMPLE),
            }),
            ..Default::default()
        };
        let outcome = within(client.replay(&request)).await.map(Box::new);
        let _ = tx.send(NetEvent::DraftReplayed { id, outcome }).await;
    });
}

/// Pushes a draft at the version its edit began from, on its own task.
pub fn push_draft(
    client: ControlClient,
    id: u64,
    text: String,
    note: Option<String>,
    expected_version: u64,
    tx: mpsc::Sender<NetEvent>,
) {
    tokio::spawn(async move {
        let outcome = within(client.put_policy(&text, note, Some(expected_version)))
            .await
            .map(Box::new);
        let newer = match &outcome {
            Err(DraftFailure::Stale(now)) => Some(now.version),
            _ => None,
        };
        let _ = tx.send(NetEvent::DraftPushed { id, outcome }).await;
        // What the newer version changed, for the operator to merge.
        if let Some(newer) = newer
            && let (Ok(began), Ok(now)) = (
                within(client.policy_version(expected_version)).await,
                within(client.policy_version(newer)).await,
            )
        {
            let diff = crate::cli_output::policy_diff(&began, &now);
            let _ = tx.send(NetEvent::DraftConflictDiff { id, diff }).await;
        }
    });
}

/// Installs a draft as the shadow policy, on its own task.
pub fn shadow_draft(client: ControlClient, id: u64, text: String, tx: mpsc::Sender<NetEvent>) {
    tokio::spawn(async move {
        let outcome = within(client.put_shadow(&text)).await.map(Box::new);
        let _ = tx.send(NetEvent::DraftShadowed { id, outcome }).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_worked_resets_the_backoff() {
        let mut b = Backoff::default();
        let t0 = Utc::now();
        assert_eq!(b.failed(t0).0, 1);
        let (attempt, since, delay) = b.failed(t0 + chrono::Duration::seconds(2));
        assert_eq!(
            (attempt, since),
            (2, t0),
            "the outage began at the first failure"
        );
        assert!(delay >= Duration::from_secs(2));
        b.connected();
        let t1 = t0 + chrono::Duration::seconds(60);
        let (attempt, since, delay) = b.failed(t1);
        assert_eq!(
            (attempt, since),
            (1, t1),
            "a new outage starts at attempt 1, from its own start"
        );
        assert!(delay < Duration::from_millis(1251), "{delay:?}");
    }
}
