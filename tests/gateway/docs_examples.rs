//! The docs' examples do what their text says. Every Cedar example in docs/policy.md is
//! put in force beside the default policy through the control API of a running
//! `toolgate demo`, and the demo's identities make the demo agents' calls through its
//! gateway: each call's outcome and deciding policies must be the ones the example's
//! comment promises. The schema and the config examples in the docs are checked too.

use serde_json::{Value, json};

use crate::demo::Demo;
use crate::support::*;

/// The demo's identities (see `src/demo/mod.rs`).
#[derive(Debug, Clone, Copy)]
enum Who {
    /// `alice@example.com`, an OAuth user in the groups `eng` and `oncall`.
    Alice,
    /// `ci-bot`, an API token in the group `ci`, issued 30 days ago, without expiry.
    CiBot,
    /// `support-legacy`, an API token in `support` and `all-projects`, issued in 2021
    /// and expiring in 3 days.
    Support,
}
use Who::*;

const ALLOW: &str = "allow";
const DENY: &str = "deny";
const HOLD: &str = "hold";

/// One call a demo identity makes, and how it must be decided.
#[derive(Debug)]
struct Case {
    who: Who,
    tool: &'static str,
    args: Value,
    /// The workflow ticket the call carries, as the demo's agents send it.
    ticket: Option<&'static str>,
    outcome: &'static str,
    /// The policies that decided it, sorted, as the decision event names them.
    policies: &'static [&'static str],
}

fn call(who: Who, tool: &'static str, args: Value) -> Case {
    Case {
        who,
        tool,
        args,
        ticket: None,
        outcome: "",
        policies: &[],
    }
}

impl Case {
    fn ticket(mut self, ticket: &'static str) -> Case {
        self.ticket = Some(ticket);
        self
    }

    fn is(mut self, outcome: &'static str, policies: &'static [&'static str]) -> Case {
        self.outcome = outcome;
        self.policies = policies;
        self
    }
}

/// What each example in docs/policy.md must do to the demo's calls, by its `@id`.
fn expectations() -> Vec<(&'static str, Vec<Case>)> {
    vec![
        (
            "no-ops-projects",
            vec![
                call(Alice, "jira_search_issues", json!({"projectKey": "OPS", "status": "To Do"}))
                    .is(DENY, &["no-ops-projects"]),
                call(Alice, "jira_create_issue",
                    json!({"projectKey": "OPS", "summary": "Upgrade the TLS library", "issueType": "Task"}))
                    .ticket("OPS-1")
                    .is(DENY, &["no-ops-projects"]),
                call(Alice, "jira_transition_issue", json!({"issueKey": "OPS-2", "status": "In Progress"}))
                    .ticket("OPS-2")
                    .is(DENY, &["no-ops-projects"]),
                call(CiBot, "jira_get_issue", json!({"issueKey": "OPS-7"}))
                    .is(DENY, &["no-ops-projects"]),
                call(Support, "jira_add_comment", json!({"issueKey": "OPS-1", "body": "Customer asked for an update."}))
                    .is(DENY, &["no-ops-projects"]),
                call(Support, "jira_delete_issue", json!({"issueKey": "OPS-2"}))
                    .is(DENY, &["no-ops-projects", "token-risky-denied"]),
                // Other projects and their issues, and what the comment says is not matched.
                call(Alice, "jira_search_issues", json!({"projectKey": "WEB", "status": "To Do"}))
                    .is(ALLOW, &["read-allowed"]),
                call(CiBot, "jira_get_issue", json!({"issueKey": "PAY-1"}))
                    .is(ALLOW, &["read-allowed"]),
                call(Alice, "jira_create_issue",
                    json!({"projectKey": "WEB", "summary": "Stale feature flags in checkout", "issueType": "Task"}))
                    .ticket("OPS-1")
                    .is(ALLOW, &["user-write-allowed"]),
                call(Alice, "jira_search_issues", json!({"status": "To Do"}))
                    .is(ALLOW, &["read-allowed"]),
                call(Support, "confluence_search_pages", json!({"spaceKey": "OPS", "text": "on"}))
                    .is(ALLOW, &["read-allowed"]),
                // Cedar compares exactly, as the text after the examples says.
                call(Alice, "jira_search_issues", json!({"projectKey": "ops", "status": "To Do"}))
                    .is(ALLOW, &["read-allowed"]),
            ],
        ),
        (
            "ci-writes-need-a-ticket",
            vec![
                call(CiBot, "jira_transition_issue", json!({"issueKey": "PAY-1", "status": "Done"}))
                    .is(DENY, &["ci-writes-need-a-ticket"]),
                call(CiBot, "jira_add_comment", json!({"issueKey": "PAY-2", "body": "Build 4711 passed on main."}))
                    .ticket("")
                    .is(DENY, &["ci-writes-need-a-ticket"]),
                call(CiBot, "jira_add_comment", json!({"issueKey": "WEB-1", "body": "Build 4711 passed on main."}))
                    .ticket("WEB-1")
                    .is(HOLD, &["token-write-held"]),
                call(CiBot, "bitbucket_create_pull_request",
                    json!({"repoSlug": "payments-api", "source": "feature/refund-approval",
                           "destination": "main", "title": "Refunds over 10k need a second approver"}))
                    .ticket("PAY-1")
                    .is(HOLD, &["token-write-held"]),
                call(CiBot, "jira_get_issue", json!({"issueKey": "PAY-2"}))
                    .is(ALLOW, &["read-allowed"]),
                call(Support, "jira_add_comment", json!({"issueKey": "PAY-1", "body": "Customer asked for an update."}))
                    .is(HOLD, &["token-write-held"]),
                call(Alice, "confluence_update_page", json!({"pageId": "1001", "body": "Reviewed during the weekly ops sync."}))
                    .is(ALLOW, &["user-write-allowed"]),
            ],
        ),
        (
            "stale-tokens-held",
            vec![
                call(Support, "jira_search_issues", json!({"projectKey": "PAY", "text": "the"}))
                    .is(HOLD, &["stale-tokens-held"]),
                call(Support, "confluence_get_page", json!({"pageId": "1003"}))
                    .is(HOLD, &["stale-tokens-held"]),
                call(Support, "jira_add_comment", json!({"issueKey": "PAY-1", "body": "Customer asked for an update."}))
                    .is(HOLD, &["stale-tokens-held", "token-write-held"]),
                call(Support, "jira_delete_issue", json!({"issueKey": "WEB-1"}))
                    .is(DENY, &["token-risky-denied"]),
                call(Support, "bitbucket_delete_branch", json!({"repoSlug": "web-frontend", "branch": "feature/checkout-fix"}))
                    .is(DENY, &["token-risky-denied"]),
                call(CiBot, "bitbucket_list_branches", json!({"repoSlug": "infra"}))
                    .is(ALLOW, &["read-allowed"]),
            ],
        ),
        (
            "expiring-tokens-read-only",
            vec![
                call(Support, "jira_add_comment", json!({"issueKey": "PAY-2", "body": "Customer asked for an update."}))
                    .is(DENY, &["expiring-tokens-read-only"]),
                call(Support, "jira_delete_issue", json!({"issueKey": "PAY-1"}))
                    .is(DENY, &["expiring-tokens-read-only", "token-risky-denied"]),
                call(Support, "jira_search_issues", json!({"projectKey": "WEB", "text": "the"}))
                    .is(ALLOW, &["read-allowed"]),
                call(Support, "confluence_search_pages", json!({"spaceKey": "ENG", "text": "on"}))
                    .is(ALLOW, &["read-allowed"]),
                call(CiBot, "jira_add_comment", json!({"issueKey": "WEB-1", "body": "Build 4711 passed on main."}))
                    .ticket("WEB-1")
                    .is(HOLD, &["token-write-held"]),
            ],
        ),
        (
            "page-deletes-on-call-only",
            vec![
                call(Alice, "confluence_delete_page", json!({"pageId": "1002"}))
                    .ticket("OPS-2")
                    .is(HOLD, &["user-risky-held"]),
                call(CiBot, "confluence_delete_page", json!({"pageId": "1004"}))
                    .is(DENY, &["page-deletes-on-call-only", "token-risky-denied"]),
                call(Support, "confluence_delete_page", json!({"pageId": "1005"}))
                    .is(DENY, &["page-deletes-on-call-only", "token-risky-denied"]),
                call(Alice, "bitbucket_delete_branch", json!({"repoSlug": "infra", "branch": "hotfix/disk-alerts"}))
                    .is(HOLD, &["user-risky-held"]),
            ],
        ),
        (
            "no-force-push-main",
            vec![
                call(CiBot, "bitbucket_force_push", json!({"repoSlug": "infra", "branch": "main", "commit": "0badc0d"}))
                    .is(DENY, &["no-force-push-main", "token-risky-denied"]),
                call(Alice, "bitbucket_force_push", json!({"repoSlug": "payments-api", "branch": "main", "commit": "0badc0d"}))
                    .is(DENY, &["no-force-push-main"]),
                call(Alice, "bitbucket_force_push",
                    json!({"repoSlug": "web-frontend", "branch": "feature/checkout-fix", "commit": "0badc0d"}))
                    .is(HOLD, &["user-risky-held"]),
                call(Alice, "bitbucket_run_pipeline", json!({"repoSlug": "infra", "branch": "main"}))
                    .is(HOLD, &["user-risky-held"]),
            ],
        ),
        (
            "known-projects-only",
            vec![
                call(Alice, "jira_search_issues", json!({"projectKey": "OPS", "status": "To Do"}))
                    .is(DENY, &["known-projects-only"]),
                call(Alice, "jira_search_issues", json!({"projectKey": "ops", "status": "To Do"}))
                    .is(DENY, &["known-projects-only"]),
                call(Support, "jira_search_issues", json!({"projectKey": "pay", "text": "the"}))
                    .is(DENY, &["known-projects-only"]),
                call(Alice, "jira_create_issue",
                    json!({"projectKey": "PAY", "summary": "Document the refund limits", "issueType": "Task"}))
                    .ticket("OPS-1")
                    .is(ALLOW, &["user-write-allowed"]),
                call(Support, "jira_search_issues", json!({"projectKey": "WEB", "text": "the"}))
                    .is(ALLOW, &["read-allowed"]),
                call(CiBot, "jira_get_issue", json!({"issueKey": "OPS-1"}))
                    .is(ALLOW, &["read-allowed"]),
            ],
        ),
        (
            "oncall-risky-allowed",
            vec![
                call(Alice, "confluence_delete_page", json!({"pageId": "1002"}))
                    .ticket("OPS-2")
                    .is(ALLOW, &["oncall-risky-allowed"]),
                call(Alice, "bitbucket_run_pipeline", json!({"repoSlug": "payments-api", "branch": "main"}))
                    .is(ALLOW, &["oncall-risky-allowed"]),
                call(Alice, "jira_create_issue",
                    json!({"projectKey": "WEB", "summary": "Flaky canary in eu-west", "issueType": "Task"}))
                    .ticket("OPS-1")
                    .is(ALLOW, &["user-write-allowed"]),
                call(CiBot, "bitbucket_force_push", json!({"repoSlug": "infra", "branch": "main", "commit": "0badc0d"}))
                    .is(DENY, &["token-risky-denied"]),
                call(Support, "jira_delete_issue", json!({"issueKey": "PAY-2"}))
                    .is(DENY, &["token-risky-denied"]),
            ],
        ),
    ]
}

/// One example: a run of lines without a blank one in a ```cedar block. It is named by
/// the one `@id` it has that the default policy has not; an `@id` the default has
/// replaces that default policy.
#[derive(Debug)]
struct Example {
    name: String,
    text: String,
    replaces: Vec<String>,
}

/// The blocks fenced as ```lang in a Markdown text.
fn fenced(doc: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut lines = doc.lines();
    while lines.any(|l| l.trim_end() == open) {
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| l.trim_end() != "```")
            .collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

/// Lines that are not comments or blank: what Cedar reads.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .collect()
}

fn is_schema(block: &str) -> bool {
    code_lines(block)
        .first()
        .is_some_and(|l| l.starts_with("entity "))
}

/// The `@id`s in a policy text, in order.
fn ids(text: &str) -> Vec<String> {
    text.split("@id(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

fn policy_examples(doc: &str) -> Vec<Example> {
    let default_ids = ids(DEFAULT_POLICY);
    let mut examples: Vec<Example> = Vec::new();
    for block in fenced(doc, "cedar").iter().filter(|b| !is_schema(b)) {
        for run in block.split("\n\n").filter(|r| !r.trim().is_empty()) {
            let (replaces, new): (Vec<String>, Vec<String>) = ids(run)
                .into_iter()
                .partition(|id| default_ids.contains(id));
            assert!(
                new.len() == 1,
                "an example in docs/policy.md (a run of lines without a blank one in a ```cedar block) \
                 needs exactly one @id the default policy does not have, to name it; this one has {new:?}:\n{run}"
            );
            let name = new.into_iter().next().unwrap();
            assert!(
                examples.iter().all(|e| e.name != name),
                "two examples in docs/policy.md are named {name}"
            );
            examples.push(Example {
                name,
                text: run.to_owned(),
                replaces,
            });
        }
    }
    examples
}

/// The policy text the example is meant to be: the default's, without the policies the
/// example replaces, and the example.
fn with_default(example: &Example) -> String {
    let kept: Vec<&str> = DEFAULT_POLICY
        .split("\n\n")
        .filter(|chunk| !ids(chunk).iter().any(|id| example.replaces.contains(id)))
        .collect();
    let dropped = DEFAULT_POLICY.split("\n\n").count() - kept.len();
    assert_eq!(
        dropped,
        example.replaces.len(),
        "{} replaces {:?}, each one policy of the default",
        example.name,
        example.replaces
    );
    format!("{}\n\n{}\n", kept.join("\n\n"), example.text)
}

/// Makes the call as the demo's agents do (2026-07-28, the ticket in `_meta`) and
/// returns its decision event. A decision is committed before its answer starts, so a
/// held call's stream is left at its first byte.
async fn decide(demo: &Demo, case: &Case, id: u64) -> Value {
    let credential = match case.who {
        Alice => &demo.alice,
        CiBot => &demo.ci_bot,
        Support => &demo.support,
    };
    let meta = match case.ticket {
        Some(t) => json!({"toolgate/context": {"ticket": t}}),
        None => json!({}),
    };
    let body = modern_call(id, case.tool, case.args.clone(), meta).to_string();
    let send = modern_request(&http(), &demo.endpoint, case.tool, body)
        .bearer_auth(credential)
        .send();
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), send)
        .await
        .unwrap_or_else(|_| panic!("no answer to {case:?}"))
        .unwrap();
    assert_eq!(resp.status(), 200, "{case:?}");
    drop(resp);
    demo.get("/api/v1/decisions?limit=1").await["decisions"][0].clone()
}

#[tokio::test]
async fn every_policy_example_in_the_docs_decides_the_demos_calls_as_its_text_says() {
    let doc = std::fs::read_to_string(repo_root().join("docs/policy.md")).unwrap();
    let examples = policy_examples(&doc);
    let expected = expectations();
    let unchecked: Vec<&str> = examples
        .iter()
        .map(|e| e.name.as_str())
        .filter(|name| !expected.iter().any(|(e, _)| e == name))
        .collect();
    assert!(
        unchecked.is_empty(),
        "docs/policy.md has examples no test checks: {unchecked:?}. Add the demo's calls each \
         one decides, with the outcomes its text promises, to expectations() in \
         tests/gateway/docs_examples.rs"
    );
    let gone: Vec<&str> = expected
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !examples.iter().any(|e| e.name == *name))
        .collect();
    assert!(
        gone.is_empty(),
        "expectations() in tests/gateway/docs_examples.rs names examples docs/policy.md no longer has: {gone:?}"
    );

    let demo = Demo::start(&["--no-agents"]).await;
    // As the demo's agents do first: the gateway learns the tools and their classes.
    list_tools(&demo.endpoint, &demo.ci_bot).await;
    let tools = toolgate::demo::upstream::tool_definitions().len();
    eventually("the gateway to learn the demo's tools", || async {
        let known = demo.get("/api/v1/tools").await["tools"]
            .as_array()
            .unwrap()
            .len();
        (known == tools).then_some(())
    })
    .await;

    let mut failures = Vec::new();
    let mut last_seq = 0;
    for example in &examples {
        let resp = http()
            .put(format!("{}/api/v1/policy", demo.control))
            .bearer_auth(&demo.operator)
            .body(with_default(example))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "{} does not compile: {text}", example.name);
        let cases = &expected.iter().find(|(n, _)| *n == example.name).unwrap().1;
        let mut decides_one = false;
        for case in cases {
            let d = decide(&demo, case, last_seq + 1).await;
            let seq = d["seq"].as_u64().unwrap();
            assert!(
                seq > last_seq && d["tool"] == case.tool,
                "not this call's decision: {d}"
            );
            last_seq = seq;
            let policies: Vec<&str> = d["policy_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            decides_one |= policies.contains(&example.name.as_str());
            if (d["outcome"].as_str().unwrap(), &policies[..]) != (case.outcome, case.policies) {
                let ticket = case.ticket.map(|t| format!(" with ticket {t:?}"));
                failures.push(format!(
                    "{}: {:?} {} {}{}: expected {} by {:?}, got {} by {:?} ({})",
                    example.name,
                    case.who,
                    case.tool,
                    case.args,
                    ticket.unwrap_or_default(),
                    case.outcome,
                    case.policies,
                    d["outcome"],
                    policies,
                    d["reason"]
                ));
            }
        }
        if !decides_one {
            failures.push(format!(
                "{}: decides none of its calls; give it one it changes",
                example.name
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_schema_in_the_docs_is_the_one_policies_are_validated_against() {
    let doc = std::fs::read_to_string(repo_root().join("docs/policy.md")).unwrap();
    let schemas: Vec<String> = fenced(&doc, "cedar")
        .into_iter()
        .filter(|b| is_schema(b))
        .collect();
    let shipped =
        std::fs::read_to_string(repo_root().join("src/gateway/policy/schema.cedarschema")).unwrap();
    assert_eq!(schemas.len(), 1, "docs/policy.md shows the schema once");
    assert_eq!(code_lines(&schemas[0]), code_lines(&shipped));
}

#[test]
fn the_config_examples_in_the_docs_are_read_as_they_say() {
    // README's gateway.toml, with a hash of its own where it shows a placeholder.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let gateway = fenced(&readme, "toml");
    assert_eq!(gateway.len(), 1, "README.md has one gateway.toml");
    let text: String = gateway[0]
        .lines()
        .map(|l| match l.split_once("\"<") {
            Some((before, rest)) => {
                let (placeholder, after) = rest.split_once(">\"").expect("a closed placeholder");
                format!("{before}\"{}\"{after}\n", sha256_hex(placeholder))
            }
            None => format!("{l}\n"),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    toolgate::config::Config::load(&path)
        .unwrap_or_else(|e| panic!("README.md's gateway.toml: {e}"));

    // The console's config.toml.
    let console = std::fs::read_to_string(repo_root().join("docs/console.md")).unwrap();
    let blocks = fenced(&console, "toml");
    assert_eq!(blocks.len(), 1, "docs/console.md has one config.toml");
    let path = dir.path().join("config.toml");
    let config = toolgate::console::config::ConsoleConfig::parse(&blocks[0], &path)
        .unwrap_or_else(|e| panic!("docs/console.md's config.toml: {e}"));
    assert!(config.context("prod").is_ok() && config.context("staging").is_ok());

    // JSON shown in the API docs.
    for file in [
        "README.md",
        "docs/api.md",
        "docs/configuration.md",
        "docs/console.md",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        for block in fenced(&text, "json") {
            serde_json::from_str::<Value>(&block)
                .unwrap_or_else(|e| panic!("{file}: {e}:\n{block}"));
        }
    }
}
