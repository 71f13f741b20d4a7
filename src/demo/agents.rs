//! The demo's simulated agents: three identities making a steady, varied stream of calls
//! through the gateway, as MCP clients do, so every outcome shows up within seconds.
//!
//! - `alice@example.com`, an OAuth user (a locally signed JWT), on the 2025-11-25 era
//!   with a session;
//! - `ci-bot`, an API token, on the 2026-07-28 era;
//! - `support-legacy`, an old, broad API token about to expire, reaching across projects.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How many calls one agent may have open at once; held calls keep theirs open.
const IN_FLIGHT: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize`, then calls on the session it opened.
    Sessions,
    /// Stateless requests with routing headers and per-request `_meta`.
    Stateless,
}

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub name: &'static str,
    /// What it sends as `Authorization: Bearer`.
    pub credential: String,
    pub era: Era,
    script: fn(&mut Dice, u64) -> Call,
}

/// One tool call an agent makes.
#[derive(Debug, Clone)]
pub struct Call {
    pub tool: &'static str,
    pub args: Value,
    /// The workflow context (`toolgate/context`), such as the ticket it works on.
    pub context: Option<Value>,
}

fn call(tool: &'static str, args: Value) -> Call {
    Call {
        tool,
        args,
        context: None,
    }
}

fn for_ticket(mut c: Call, ticket: &str) -> Call {
    c.context = Some(json!({"ticket": ticket}));
    c
}

/// A small, seedable source of choices; the demo needs variety, not secrecy.
pub struct Dice(u64);

impl Dice {
    pub fn new() -> Dice {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Dice(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Milliseconds in `[low, high)`.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

impl Default for Dice {
    fn default() -> Self {
        Self::new()
    }
}

const PROJECTS: [&str; 3] = ["OPS", "PAY", "WEB"];
const SPACES: [&str; 3] = ["ENG", "OPS", "HR"];
const PAGES: [&str; 5] = ["1001", "1002", "1003", "1004", "1005"];
const REPOS: [&str; 3] = ["payments-api", "web-frontend", "infra"];
const SUMMARIES: [&str; 5] = [
    "Flaky canary in eu-west",
    "Alert fatigue from disk checks",
    "Document the refund limits",
    "Upgrade the TLS library",
    "Stale feature flags in checkout",
];

fn issue(d: &mut Dice) -> String {
    format!("{}-{}", d.pick(&PROJECTS), 1 + d.below(2))
}

/// alice: reads, writes (allowed for a user), and the odd destructive or unclassified
/// call, which is held for an operator.
fn alice(d: &mut Dice, n: u64) -> Call {
    if n == 0 {
        return for_ticket(
            call("confluence_delete_page", json!({"pageId": "1002"})),
            "OPS-2",
        );
    }
    match d.below(10) {
        0..=2 => call(
            "jira_search_issues",
            json!({"projectKey": d.pick(&PROJECTS), "status": "To Do"}),
        ),
        3 => call("confluence_get_page", json!({"pageId": d.pick(&PAGES)})),
        4 => for_ticket(
            call(
                "jira_create_issue",
                json!({"projectKey": d.pick(&PROJECTS), "summary": d.pick(&SUMMARIES), "issueType": "Task"}),
            ),
            "OPS-1",
        ),
        5 => {
            let key = issue(d);
            for_ticket(
                call(
                    "jira_transition_issue",
                    json!({"issueKey": key, "status": "In Progress"}),
                ),
                &key,
            )
        }
        6 => call(
            "confluence_update_page",
            json!({"pageId": d.pick(&PAGES), "body": "Reviewed during the weekly ops sync."}),
        ),
        7 => for_ticket(
            call("confluence_delete_page", json!({"pageId": d.pick(&PAGES)})),
            "OPS-2",
        ),
        8 => call(
            "bitbucket_run_pipeline",
            json!({"repoSlug": d.pick(&REPOS), "branch": "main"}),
        ),
        _ => call(
            "bitbucket_list_branches",
            json!({"repoSlug": d.pick(&REPOS)}),
        ),
    }
}

/// ci-bot: reads freely; its writes are held, its destructive and unclassified calls
/// denied.
fn ci_bot(d: &mut Dice, n: u64) -> Call {
    if n == 0 {
        return for_ticket(
            call(
                "bitbucket_create_pull_request",
                json!({"repoSlug": "payments-api", "source": "feature/refund-approval",
                       "destination": "main", "title": "Refunds over 10k need a second approver"}),
            ),
            "PAY-1",
        );
    }
    match d.below(10) {
        0..=2 => call(
            "bitbucket_list_branches",
            json!({"repoSlug": d.pick(&REPOS)}),
        ),
        3 => call("jira_get_issue", json!({"issueKey": issue(d)})),
        4 => for_ticket(
            call(
                "bitbucket_create_pull_request",
                json!({"repoSlug": "web-frontend", "source": "feature/checkout-fix",
                       "destination": "main", "title": "Keep the checkout button in place"}),
            ),
            "WEB-1",
        ),
        5 => {
            let key = issue(d);
            for_ticket(
                call(
                    "jira_add_comment",
                    json!({"issueKey": key, "body": "Build 4711 passed on main."}),
                ),
                &key,
            )
        }
        6 => call(
            "jira_transition_issue",
            json!({"issueKey": issue(d), "status": "Done"}),
        ),
        7 => call(
            "bitbucket_force_push",
            json!({"repoSlug": d.pick(&REPOS), "branch": "main", "commit": "0badc0d"}),
        ),
        _ => call(
            "bitbucket_run_pipeline",
            json!({"repoSlug": d.pick(&REPOS), "branch": "main"}),
        ),
    }
}

/// support-legacy: an old token that reads everywhere, comments, and now and then tries
/// something it should not.
fn support(d: &mut Dice, _n: u64) -> Call {
    match d.below(10) {
        0..=2 => call(
            "jira_search_issues",
            json!({"projectKey": d.pick(&PROJECTS), "text": "the"}),
        ),
        3 | 4 => call(
            "confluence_search_pages",
            json!({"spaceKey": d.pick(&SPACES), "text": "on"}),
        ),
        5 => call("jira_get_issue", json!({"issueKey": issue(d)})),
        6 => call(
            "jira_add_comment",
            json!({"issueKey": issue(d), "body": "Customer asked for an update."}),
        ),
        7 => call("jira_delete_issue", json!({"issueKey": issue(d)})),
        8 => call(
            "bitbucket_delete_branch",
            json!({"repoSlug": d.pick(&REPOS), "branch": "feature/checkout-fix"}),
        ),
        _ => call("confluence_get_page", json!({"pageId": d.pick(&PAGES)})),
    }
}

pub fn agents(user_jwt: String, ci_token: String, support_token: String) -> Vec<Agent> {
    vec![
        Agent {
            name: "alice@example.com",
            credential: user_jwt,
            era: Era::Sessions,
            script: alice,
        },
        Agent {
            name: "ci-bot",
            credential: ci_token,
            era: Era::Stateless,
            script: ci_bot,
        },
        Agent {
            name: "support-legacy",
            credential: support_token,
            era: Era::Stateless,
            script: support,
        },
    ]
}

/// Runs every agent against `endpoint` (the gateway's `/mcp/{upstream}`) until `stop`.
pub async fn run(endpoint: String, agents: Vec<Agent>, stop: CancellationToken) {
    let http = crate::http::client_builder()
        .build()
        .expect("an HTTP client");
    let tasks: Vec<_> = agents
        .into_iter()
        .map(|agent| {
            tokio::spawn(run_agent(
                http.clone(),
                endpoint.clone(),
                agent,
                stop.clone(),
            ))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_agent(http: reqwest::Client, endpoint: String, agent: Agent, stop: CancellationToken) {
    let mut dice = Dice::new();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let session = Arc::new(tokio::sync::Mutex::new(None::<String>));
    let agent = Arc::new(agent);
    // Like any MCP client, it lists the tools first; the gateway learns them from the
    // answer, with their annotations.
    let listed = stop
        .run_until_cancelled(rpc(
            &http,
            &endpoint,
            &agent,
            &session,
            0,
            "tools/list",
            json!({}),
            serde_json::Map::new(),
        ))
        .await;
    match listed {
        None => return,
        Some(Err(e)) => tracing::warn!(agent = agent.name, error = %e, "tools/list failed"),
        Some(Ok(_)) => {}
    }
    for n in 0u64.. {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Every slot waits on a hold: an agent blocked on approvals pauses too.
            if stop
                .run_until_cancelled(tokio::time::sleep(Duration::from_millis(500)))
                .await
                .is_none()
            {
                return;
            }
            continue;
        };
        let next = (agent.script)(&mut dice, n);
        let (http, endpoint, agent2, session) = (
            http.clone(),
            endpoint.clone(),
            agent.clone(),
            session.clone(),
        );
        let stop_call = stop.clone();
        tokio::spawn(async move {
            let outcome = stop_call
                .run_until_cancelled(send(&http, &endpoint, &agent2, &session, n + 1, &next))
                .await;
            if let Some(outcome) = outcome {
                match outcome {
                    Ok(text) => {
                        tracing::debug!(agent = agent2.name, tool = next.tool, answer = %text, "call answered")
                    }
                    Err(e) => {
                        tracing::debug!(agent = agent2.name, tool = next.tool, error = %e, "call failed")
                    }
                }
            }
            drop(slot);
        });
        let pause = dice.millis(700, 2200);
        if stop
            .run_until_cancelled(tokio::time::sleep(pause))
            .await
            .is_none()
        {
            return;
        }
    }
}

/// How many times an agent sends a held call's `requestState` back, as the MCP SDKs'
/// default `input_required` rounds.
const INPUT_REQUIRED_ROUNDS: u64 = 10;

/// Sends one call in the agent's era and returns the answer's text.
async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    agent: &Agent,
    session: &tokio::sync::Mutex<Option<String>>,
    id: u64,
    c: &Call,
) -> Result<String, String> {
    let mut meta = serde_json::Map::new();
    if let Some(ctx) = &c.context {
        meta.insert(crate::gateway::decide::META_CONTEXT.into(), ctx.clone());
    }
    let mut params = json!({"name": c.tool, "arguments": c.args});
    let mut answer = rpc(
        http,
        endpoint,
        agent,
        session,
        id,
        "tools/call",
        params.clone(),
        meta.clone(),
    )
    .await?;
    // A 2026-07-28 call held past one wait: send the state back and wait on, as the
    // MCP SDKs do (up to their 10 rounds).
    for round in 1..=INPUT_REQUIRED_ROUNDS {
        let Some(state) = answer["result"]["requestState"]
            .as_str()
            .filter(|_| answer["result"]["resultType"] == "input_required")
        else {
            break;
        };
        params["requestState"] = json!(state);
        let retry_id = id * 100 + round;
        answer = rpc(
            http,
            endpoint,
            agent,
            session,
            retry_id,
            "tools/call",
            params.clone(),
            meta.clone(),
        )
        .await?;
    }
    Ok(answer["result"]["content"][0]["text"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.to_string()))
}

/// One JSON-RPC request in the agent's era; the answer, from JSON or an event stream.
#[allow(clippy::too_many_arguments)]
async fn rpc(
    http: &reqwest::Client,
    endpoint: &str,
    agent: &Agent,
    session: &tokio::sync::Mutex<Option<String>>,
    id: u64,
    method: &str,
    mut params: Value,
    mut meta: serde_json::Map<String, Value>,
) -> Result<Value, String> {
    let name = params["name"].as_str().map(str::to_owned);
    let request = match agent.era {
        Era::Stateless => {
            meta.insert(
                "io.modelcontextprotocol/protocolVersion".into(),
                json!("2026-07-28"),
            );
            meta.insert(
                "io.modelcontextprotocol/clientCapabilities".into(),
                json!({}),
            );
            params["_meta"] = Value::Object(meta);
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let mut r = http
                .post(endpoint)
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", method);
            if let Some(name) = &name {
                r = r.header("mcp-name", name);
            }
            r.body(body.to_string())
        }
        Era::Sessions => {
            let id_header = open_session(http, endpoint, agent, session).await?;
            if !meta.is_empty() {
                params["_meta"] = Value::Object(meta);
            }
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            http.post(endpoint)
                .header("mcp-protocol-version", "2025-11-25")
                .header("mcp-session-id", id_header)
                .body(body.to_string())
        }
    };
    let resp = request
        .bearer_auth(&agent.credential)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND && agent.era == Era::Sessions {
        // The session is gone (the upstream restarted): open a new one next time.
        *session.lock().await = None;
    }
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    answer_of(&text).ok_or_else(|| format!("HTTP {status}: {text}"))
}

/// The session id of this agent, opening one with `initialize` when it has none.
async fn open_session(
    http: &reqwest::Client,
    endpoint: &str,
    agent: &Agent,
    session: &tokio::sync::Mutex<Option<String>>,
) -> Result<String, String> {
    let mut current = session.lock().await;
    if let Some(id) = current.as_ref() {
        return Ok(id.clone());
    }
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": format!("demo-agent/{}", agent.name), "version": env!("CARGO_PKG_VERSION")}}});
    let post = |body: String, session_id: Option<&str>| {
        let mut r = http
            .post(endpoint)
            .bearer_auth(&agent.credential)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(id) = session_id {
            r = r
                .header("mcp-session-id", id)
                .header("mcp-protocol-version", "2025-11-25");
        }
        r.send()
    };
    let resp = post(init.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let id = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| format!("initialize gave no session (HTTP {})", resp.status()))?;
    let _ = resp.text().await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    post(initialized.to_string(), Some(&id))
        .await
        .map_err(|e| e.to_string())?;
    *current = Some(id.clone());
    Ok(id)
}

/// The JSON-RPC answer in a body: the body itself, or the last SSE message with a result
/// or an error.
pub fn answer_of(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .rfind(|m| m.get("result").is_some() || m.get("error").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_start_with_something_to_approve_and_vary() {
        let mut d = Dice::new();
        assert_eq!(alice(&mut d, 0).tool, "confluence_delete_page");
        assert_eq!(ci_bot(&mut d, 0).tool, "bitbucket_create_pull_request");
        let tools: std::collections::HashSet<&str> =
            (1..400).map(|n| ci_bot(&mut d, n).tool).collect();
        assert!(tools.len() >= 6, "{tools:?}");
        let with_ticket = (1..400)
            .filter(|&n| alice(&mut d, n).context.is_some())
            .count();
        assert!(with_ticket > 50, "some calls carry a ticket");
    }

    #[test]
    fn an_answer_is_found_in_json_or_in_an_event_stream() {
        assert_eq!(answer_of(r#"{"id":1,"result":{}}"#).unwrap()["id"], 1);
        let sse = ": held\n\ndata: {\"method\":\"notifications/progress\"}\n\ndata: {\"id\":2,\"result\":{\"content\":[]}}\n\n";
        assert_eq!(answer_of(sse).unwrap()["id"], 2);
        assert!(answer_of("nothing").is_none());
    }
}
