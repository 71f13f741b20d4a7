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
    /// `control` is the control API's base URL (`http://host:port`, or `[gateway]
    /// public_control_url`), for the links in pages.
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

    /// Queues the pages for a new hold without waiting; nothing is copied when no
    /// receiver is configured.
    pub fn held(&self, decision: &DecisionEvent, expires_at: &str) {
        if self.tx.is_none() {
            return;
        }
        let notice = HeldNotice {
            call_id: decision.call_id.clone(),
            decision: decision.clone(),
            expires_at: expires_at.to_owned(),
        };
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
    // One queue and worker per receiver: a hung one slows only itself.
    let queues: Vec<mpsc::Sender<Value>> = targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let label = label(i, target);
            tokio::spawn(deliver_all(
                rx,
                http.clone(),
                target.url.clone(),
                label,
                // PagerDuty's trigger must reach it before its resolve: one at a time.
                if target.format == NotifyFormat::Pagerduty {
                    1
                } else {
                    IN_FLIGHT
                },
            ));
            tx
        })
        .collect();
    while let Some(job) = rx.recv().await {
        for (i, target) in targets.iter().enumerate() {
            if let Some(body) = payload(target, &job, &control)
                && queues[i].try_send(body).is_err()
            {
                tracing::warn!(receiver = %label(i, target), "its queue is full; a page was dropped");
            }
        }
    }
}

/// How logs name a receiver: its place and format, and its host, never its URL (a
/// Slack webhook's path is its secret).
fn label(i: usize, target: &NotifyConfig) -> String {
    let host = url::Url::parse(&target.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("[[notify]] #{} ({:?}, {host})", i + 1, target.format)
}

/// Delivers one receiver's pages, `at_once` at a time, in order when that is 1.
async fn deliver_all(
    mut rx: mpsc::Receiver<Value>,
    http: reqwest::Client,
    url: String,
    label: String,
    at_once: usize,
) {
    let slots = Arc::new(Semaphore::new(at_once));
    while let Some(body) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (http, url, label) = (http.clone(), url.clone(), label.clone());
        let delivery = async move {
            deliver(&http, &url, &label, &body).await;
            drop(slot);
        };
        if at_once == 1 {
            delivery.await;
        } else {
            tokio::spawn(delivery);
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

/// One line of what is held, for people. The target comes from the agent's arguments:
/// control characters (a newline that would fake a second line) become spaces.
fn summary(n: &HeldNotice) -> String {
    summary_raw(n)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn summary_raw(n: &HeldNotice) -> String {
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
        format!("{control}/api/v1/holds/{}/approve", n.call_id),
    )
}

/// A Slack incoming-webhook message: `text` for notifications, blocks for the channel.
fn slack(n: &HeldNotice, control: &str) -> Value {
    let (command, url) = how_to_act(n, control);
    // Escaped everywhere Slack reads mrkdwn, the notification's text included: `<!channel>`
    // or a disguised link in a target must stay text.
    let text = escape_mrkdwn(&summary(n));
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{text}*")}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": format!("*Policy*\n{}", escape_mrkdwn(&n.decision.policy_ids.join(", ")))},
                {"type": "mrkdwn", "text": format!("*Expires*\n{}", escape_mrkdwn(&n.expires_at))},
                {"type": "mrkdwn", "text": format!("*Reason*\n{}", escape_mrkdwn(&n.decision.reason))},
                {"type": "mrkdwn", "text": format!("*Call*\n`{}`", escape_mrkdwn(&n.call_id))},
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("`{command}` in a shell, `:held` in `toolgate console`, or POST {url}")}
            ]}
        ]
    })
}

/// Slack's mrkdwn control characters, as its docs ask them escaped (so that text from an
/// agent cannot link or mention: `<!channel>` stays text), and no line breaks.
fn escape_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
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
                "expires_at": n.expires_at, "approve": command, "approve_api": format!("POST {url}"),
            }
        },
        // A link is opened with GET: the held calls, which a viewer's token lists; the
        // approve URL (a POST) is in the details.
        "links": [{"href": format!("{control}/api/v1/holds"), "text": "held calls (control API)"}]
    })
}

async fn deliver(http: &reqwest::Client, url: &str, label: &str, body: &Value) {
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
                tracing::warn!(receiver = %label, attempt, status = %resp.status(), "a page was refused")
            }
            // The error's text names the URL: only its kind is logged.
            Err(e) => tracing::warn!(
                receiver = %label,
                attempt,
                timeout = e.is_timeout(),
                connect = e.is_connect(),
                "a page's receiver is unreachable"
            ),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    tracing::error!(receiver = %label, "a page was not delivered after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(target_id: &str) -> HeldNotice {
        let decision: DecisionEvent = serde_json::from_value(json!({
            "call_id": "01900000-0000-7000-8000-000000000001", "upstream": "py", "tool": "write_page",
            "risk": "write", "identity": {"kind": "api_token", "name": "ci-bot", "groups": []},
            "target": {"kind": "page", "id": target_id}, "workflow": null, "outcome": "hold",
            "policy_ids": ["token-write-held"], "reason": "needs a person", "decision_us": 1,
            "args": {"page_id": target_id, "body": "secret"}
        }))
        .unwrap();
        HeldNotice {
            call_id: decision.call_id.clone(),
            decision,
            expires_at: "2026-11-27T10:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_target_from_the_agent_cannot_mention_link_or_fake_a_line_in_slack() {
        let message = slack(
            &notice("x <!channel> <https://evil.example|click>\n*Approved by security*"),
            "127.0.0.1:7801",
        );
        let all = message.to_string();
        assert!(
            !all.contains("<!channel>") && !all.contains("<https://evil"),
            "{all}"
        );
        assert!(!all.contains("secret"), "no arguments: {all}");
        let text = message["text"].as_str().unwrap();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
    }

    #[test]
    fn logs_name_a_receiver_by_host_never_by_url() {
        let target = NotifyConfig {
            url: "https://hooks.slack.com/services/T000/B000/SECRETPATH".into(),
            format: NotifyFormat::Slack,
            routing_key: None,
        };
        let shown = label(0, &target);
        assert_eq!(shown, "[[notify]] #1 (Slack, hooks.slack.com)");
        assert!(!shown.contains("SECRETPATH"));
    }
}
