//! Pages for new holds, where on-call lives: toolgate's own JSON, a Slack
//! incoming-webhook message, or a PagerDuty Events API v2 trigger, resolved when the hold
//! ends. Delivery runs on its own tasks with bounded retries; a slow or dead receiver
//! never delays a call. No page carries the call's arguments.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::api::{DecisionEvent, EventBody, Resolution, Risk};
use crate::config::{NotifyConfig, NotifyFormat};

/// How many notifications may wait for delivery; past it, new ones are dropped (and
/// logged) rather than slowing the data plane.
const QUEUE: usize = 1024;
/// How many deliveries may be in flight at once.
const IN_FLIGHT: usize = 32;
const ATTEMPTS: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The most holds whose PagerDuty incident this replica remembers, to resolve it.
const OPEN_PAGES: usize = 100_000;

/// A new hold, as pages describe it: never its arguments.
#[derive(Debug, Clone)]
pub struct HeldNotice {
    pub call_id: String,
    pub decision: DecisionEvent,
    pub expires_at: String,
}

enum Job {
    Held(Box<HeldNotice>),
    Ended { call_id: String },
}

pub struct Notifier {
    tx: Option<mpsc::Sender<Job>>,
    pagerduty: bool,
    /// Holds this replica paged PagerDuty for, whose incidents it resolves.
    paged: Mutex<HashSet<String>>,
}

impl Notifier {
    /// `control` is the control API's address, for the links in pages.
    pub fn new(targets: Vec<NotifyConfig>, control: &str, http: reqwest::Client) -> Self {
        let pagerduty = targets.iter().any(|t| t.format == NotifyFormat::Pagerduty);
        if targets.is_empty() {
            return Self {
                tx: None,
                pagerduty,
                paged: Mutex::default(),
            };
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(rx, Arc::new(targets), control.to_owned(), http));
        Self {
            tx: Some(tx),
            pagerduty,
            paged: Mutex::default(),
        }
    }

    /// Queues the pages for a new hold without waiting.
    pub fn held(&self, notice: HeldNotice) {
        if self.pagerduty {
            let mut paged = self.paged.lock().expect("paged lock");
            if paged.len() < OPEN_PAGES {
                paged.insert(notice.call_id.clone());
            }
        }
        self.queue(Job::Held(Box::new(notice)));
    }

    /// Whether some receiver is told when a hold ends (PagerDuty's resolve).
    pub fn closes_pages(&self) -> bool {
        self.pagerduty
    }

    /// A hold ended: the incident this replica opened for it is resolved.
    fn ended(&self, call_id: &str, resolution: Resolution) {
        // An approval ends the wait, and its run is not news.
        if resolution == Resolution::Consumed
            || !self.paged.lock().expect("paged lock").remove(call_id)
        {
            return;
        }
        self.queue(Job::Ended {
            call_id: call_id.to_owned(),
        });
    }

    fn queue(&self, job: Job) {
        if let Some(tx) = &self.tx
            && tx.try_send(job).is_err()
        {
            tracing::warn!("notification queue full; a page was dropped");
        }
    }
}

/// Resolves the PagerDuty incidents of holds that end, however they end (an operator,
/// the policy, the clock, the client; on any replica): read from the event stream.
pub async fn close_pages(gw: Arc<super::Gateway>) {
    let (mut events, _) = gw.store.subscribe();
    loop {
        let next = tokio::select! {
            next = events.recv() => next,
            () = gw.stopped() => return,
        };
        match next {
            Ok(published) => {
                if !published.json.contains("\"hold.resolved\"") {
                    continue;
                }
                if let Ok(crate::api::Event {
                    body:
                        EventBody::HoldResolved {
                            call_id,
                            resolution,
                            ..
                        },
                    ..
                }) = serde_json::from_str(&published.json)
                {
                    gw.notifier.ended(&call_id, resolution);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "events missed while closing pages; some incidents stay open"
                );
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<Job>,
    targets: Arc<Vec<NotifyConfig>>,
    control: String,
    http: reqwest::Client,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(job) = rx.recv().await {
        for target in targets.iter() {
            let Some(body) = payload(target, &job, &control) else {
                continue;
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (http, url) = (http.clone(), target.url.clone());
            tokio::spawn(async move {
                deliver(&http, &url, &body).await;
                drop(slot);
            });
        }
    }
}

/// What `target` is sent for `job`, if anything.
fn payload(target: &NotifyConfig, job: &Job, control: &str) -> Option<Value> {
    match (target.format, job) {
        (NotifyFormat::Generic, Job::Held(n)) => Some(generic(n)),
        (NotifyFormat::Slack, Job::Held(n)) => Some(slack(n, control)),
        (NotifyFormat::Pagerduty, Job::Held(n)) => Some(pagerduty_trigger(
            n,
            target.routing_key.as_deref().unwrap_or_default(),
            control,
        )),
        (NotifyFormat::Pagerduty, Job::Ended { call_id, .. }) => Some(json!({
            "routing_key": target.routing_key.as_deref().unwrap_or_default(),
            "event_action": "resolve",
            "dedup_key": call_id,
        })),
        (_, Job::Ended { .. }) => None,
    }
}

/// toolgate's own page: the hold, as the API names its fields.
fn generic(n: &HeldNotice) -> Value {
    let d = &n.decision;
    json!({
        "call_id": n.call_id, "identity": d.identity, "upstream": d.upstream,
        "tool": d.tool, "risk": d.risk, "target": d.target, "expires_at": n.expires_at,
    })
}

/// One line of what is held, for people.
fn summary(n: &HeldNotice) -> String {
    let d = &n.decision;
    let target = d
        .target
        .as_ref()
        .map(|t| format!(" on {}", t.label()))
        .unwrap_or_default();
    format!(
        "{} wants to run {}/{} ({}){target}: held for approval",
        d.identity.label(),
        d.upstream,
        d.tool,
        d.risk.as_str()
    )
}

/// Where an operator acts on the hold: the console's command and the API.
fn how_to_act(n: &HeldNotice, control: &str) -> (String, String) {
    (
        format!("toolgate approve {}", crate::api::short_id(&n.call_id)),
        format!("http://{control}/api/v1/holds/{}/approve", n.call_id),
    )
}

/// A Slack incoming-webhook message: `text` for notifications, blocks for the channel.
fn slack(n: &HeldNotice, control: &str) -> Value {
    let (command, url) = how_to_act(n, control);
    let text = summary(n);
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", escape_mrkdwn(&text))}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Policy*\n{}", escape_mrkdwn(&n.decision.policy_ids.join(", ")))},
                {"type": "mrkdwn", "text": format!("*Expires*\n{}", n.expires_at)},
                {"type": "mrkdwn", "text": format!("*Reason*\n{}", escape_mrkdwn(&n.decision.reason))},
                {"type": "mrkdwn", "text": format!("*Call*\n`{}`", n.call_id)},
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("`{command}` in a shell, `:held` in `toolgate console`, or POST {url}")}
            ]}
        ]
    })
}

/// Slack's mrkdwn control characters, as its docs ask them escaped.
fn escape_mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A PagerDuty Events API v2 trigger, deduplicated by the hold's call id.
fn pagerduty_trigger(n: &HeldNotice, routing_key: &str, control: &str) -> Value {
    let (command, url) = how_to_act(n, control);
    let d = &n.decision;
    let severity = match d.risk {
        Risk::Read => "info",
        Risk::Write => "warning",
        Risk::Destructive | Risk::Unclassified => "error",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": n.call_id,
        "payload": {
            "summary": summary(n),
            "source": format!("toolgate/{}", d.upstream),
            "severity": severity,
            "component": format!("{}/{}", d.upstream, d.tool),
            "group": d.identity.label(),
            "class": "held tool call",
            "custom_details": {
                "call_id": n.call_id, "identity": d.identity, "upstream": d.upstream,
                "tool": d.tool, "risk": d.risk, "target": d.target,
                "policy_ids": d.policy_ids, "reason": d.reason,
                "expires_at": n.expires_at, "approve": command,
            }
        },
        "links": [{"href": url, "text": "approve through the control API"}]
    })
}

async fn deliver(http: &reqwest::Client, url: &str, body: &Value) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = http
            .post(url)
            .timeout(ATTEMPT_TIMEOUT)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => return,
            Ok(resp) => {
                tracing::warn!(%url, attempt, status = %resp.status(), "a page was refused")
            }
            Err(e) => tracing::warn!(%url, attempt, error = %e, "a page's receiver is unreachable"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(%url, "a page was not delivered after {ATTEMPTS} attempts");
}
