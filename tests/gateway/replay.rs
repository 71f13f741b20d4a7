//! Replay (what-if) against a store filled through the real gateway: the candidate
//! decides the recorded calls again, and only what it changes is reported as changed.

use serde_json::{Value, json};

use crate::control::{ADMIN, VIEWER, api, code, operators};
use crate::decisions::call_tool;
use crate::support::*;

const NIGHTLY: &str = "tg_test-replay-nightly";

/// A gateway whose `page_id` arguments are redacted, with a second API token, and its
/// recorded calls: ci-bot reads three pages and deletes one (denied), nightly reads two.
async fn recorded() -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let config = format!(
        "{}\n[[identity]]\nname = \"nightly\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n\n[redact]\nkeys = [\"page_id\"]\n{}",
        upstream.config("trust_annotations = true"),
        sha256_hex(NIGHTLY),
        operators()
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;
    for page in ["a", "b", "c"] {
        call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": page})).await;
    }
    call_tool(&gw, AGENT_TOKEN, "delete_page", json!({"page_id": "a"})).await;
    for page in ["a", "b"] {
        call_tool(&gw, NIGHTLY, "read_page", json!({"page_id": page})).await;
    }
    (upstream, gw)
}

async fn replay(gw: &GatewayProc, body: Value) -> (u16, Value) {
    api(
        gw,
        reqwest::Method::POST,
        "/api/v1/replay",
        Some(ADMIN),
        Some(body.to_string()),
    )
    .await
}

fn default_policy() -> String {
    std::fs::read_to_string(repo_root().join("src/gateway/policy/default.cedar")).unwrap()
}

/// The recorded decisions, newest first: (call id, identity name, tool, outcome).
async fn decisions(gw: &GatewayProc) -> Vec<(String, String, String, String)> {
    let (_, body) = api(
        gw,
        reqwest::Method::GET,
        "/api/v1/decisions?limit=100",
        Some(VIEWER),
        None,
    )
    .await;
    body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["call_id"].as_str().unwrap().to_owned(),
                d["identity"]["name"].as_str().unwrap().to_owned(),
                d["tool"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn holding_one_tokens_reads_changes_exactly_its_recorded_reads() {
    let (_upstream, gw) = recorded().await;
    let recorded = decisions(&gw).await;
    assert_eq!(recorded.len(), 6, "{recorded:?}");
    let candidate = format!(
        "{}\n@id(\"ci-reads-held\")\n@outcome(\"hold\")\n@reason(\"ci-bot's reads wait for a person\")\npermit (principal == Token::\"ci-bot\", action == Action::\"call_tool\", resource)\nwhen {{ resource.risk == \"read\" }};\n",
        default_policy()
    );
    let (status, report) = replay(&gw, json!({"policy": candidate})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["decisions"], 6);
    assert_eq!(
        report["transitions"],
        json!({"allow→hold": 3, "unchanged": 3})
    );
    assert_eq!(
        report["by_identity"],
        json!([{"key": "token:ci-bot", "transitions": {"allow→hold": 3}}])
    );
    assert_eq!(
        report["by_tool"],
        json!([{"key": "py/read_page", "transitions": {"allow→hold": 3}}])
    );
    let mut changed: Vec<&str> = report["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(
                (c["from"].as_str(), c["to"].as_str()),
                (Some("allow"), Some("hold"))
            );
            assert_eq!(c["to_policy_ids"], json!(["ci-reads-held"]));
            c["call_id"].as_str().unwrap()
        })
        .collect();
    let mut expected: Vec<&str> = recorded
        .iter()
        .filter(|(_, who, tool, outcome)| {
            who == "ci-bot" && tool == "read_page" && outcome == "allow"
        })
        .map(|(id, ..)| id.as_str())
        .collect();
    changed.sort();
    expected.sort();
    assert_eq!(changed, expected, "exactly ci-bot's recorded reads");

    // Paging: one at a time, in seq order, each page after the last.
    let (_, first) = replay(&gw, json!({"policy": candidate, "page": {"limit": 1}})).await;
    let after = first["next_after"].as_u64().expect("more to read");
    let (_, second) = replay(
        &gw,
        json!({"policy": candidate, "page": {"limit": 1, "after": after}}),
    )
    .await;
    assert!(second["changed"][0]["seq"].as_u64().unwrap() > after);
    assert_eq!(
        second["transitions"], first["transitions"],
        "counts cover the whole window"
    );

    // The window: the newest two decisions are nightly's reads.
    let (_, last_two) = replay(&gw, json!({"policy": candidate, "window": {"last": 2}})).await;
    assert_eq!(last_two["decisions"], 2);
    assert_eq!(last_two["transitions"], json!({"unchanged": 2}));
    let (_, future) = replay(
        &gw,
        json!({"policy": candidate, "window": {"since": "2099-01-01T00:00:00+02:00"}}),
    )
    .await;
    assert_eq!(
        (future["decisions"].as_u64(), future["first_seq"].as_u64()),
        (Some(0), None)
    );
}

#[tokio::test]
async fn no_change_is_all_unchanged_and_a_risk_candidate_moves_only_that_tool() {
    let (_upstream, gw) = recorded().await;
    let (status, same) = replay(&gw, json!({"policy": default_policy()})).await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["transitions"], json!({"unchanged": 6}));
    assert_eq!(same["changed"], json!([]));
    assert_eq!(same["next_after"], Value::Null);

    // read_page as destructive: every token's read would have been denied.
    let (_, risky) = replay(
        &gw,
        json!({"risk": [{"upstream": "py", "tool": "read_page", "risk": "destructive"}]}),
    )
    .await;
    assert_eq!(
        risky["transitions"],
        json!({"allow→deny": 5, "unchanged": 1})
    );
    assert!(
        risky["changed"].as_array().unwrap().iter().all(
            |c| c["tool"] == "read_page" && c["to_policy_ids"] == json!(["token-risky-denied"])
        )
    );
}

#[tokio::test]
async fn a_rule_on_a_redacted_argument_is_unknown_never_guessed() {
    let (_upstream, gw) = recorded().await;
    let candidate = format!(
        "{}\n@id(\"no-page-a\")\nforbid (principal, action == Action::\"call_tool\", resource)\nwhen {{ context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") == \"a\" }};\n",
        default_policy()
    );
    let (status, report) = replay(&gw, json!({"policy": candidate})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["transitions"], json!({"unknown": 6}));
    let first = &report["changed"][0];
    assert_eq!(first["to"], Value::Null);
    assert_eq!(
        first["reason"],
        "no-page-a reads /page_id, redacted before it was stored"
    );
}

#[tokio::test]
async fn a_bad_candidate_or_request_is_refused_precisely() {
    let (_upstream, gw) = recorded().await;
    let (status, body) = replay(
        &gw,
        json!({"policy": "permit (principal, action, resource)\nwhen { resource.nope == 1 };"}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_policy"), "{body}");
    assert_eq!(body["error"]["line"], 2, "{body}");
    assert!(body["error"]["column"].as_u64().is_some(), "{body}");

    for (bad, says) in [
        (json!({}), "nothing to replay"),
        (
            json!({"policy": default_policy(), "window": {"last": 0}}),
            "window.last must be from 1",
        ),
        (
            json!({"policy": default_policy(), "window": {"since": "yesterday"}}),
            "not an RFC 3339 time",
        ),
        (
            json!({"policy": default_policy(), "windw": {"last": 1}}),
            "unknown field `windw`",
        ),
        (
            json!({"risk": [{"upstream": "py", "tool": "read_page", "risk": "scary"}]}),
            "unknown variant `scary`",
        ),
    ] {
        let (status, body) = replay(&gw, bad.clone()).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{bad}: {body}"
        );
    }
    // Replay is for admins: it reads every recorded call.
    let (status, _) = api(
        &gw,
        reqwest::Method::POST,
        "/api/v1/replay",
        Some(VIEWER),
        Some(json!({"policy": default_policy()}).to_string()),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn toolgate_policy_replay_reports_for_people_and_programs_and_exits_as_it_should() {
    let (_upstream, gw) = recorded().await;
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.cedar");
    std::fs::write(
        &candidate,
        format!(
            "{}\n@id(\"ci-reads-held\")\n@outcome(\"hold\")\npermit (principal == Token::\"ci-bot\", action == Action::\"call_tool\", resource)\nwhen {{ resource.risk == \"read\" }};\n",
            default_policy()
        ),
    )
    .unwrap();
    let file = candidate.to_str().unwrap();
    let run = |args: Vec<&str>| {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let gw = &gw;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::cli::run_control_cli(gw, ADMIN, &args).await
        }
    };
    // A program gets the report as one JSON object.
    let (status, out, err) = run(vec!["policy", "replay", file, "--output", "json"]).await;
    assert!(status.success(), "{err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        report["transitions"],
        json!({"allow→hold": 3, "unchanged": 3})
    );
    // A person gets a summary: the counts, who and what changed, and the calls.
    let (status, out, err) = run(vec![
        "policy", "replay", file, "--output", "table", "--limit", "2",
    ])
    .await;
    assert!(status.success(), "{err}");
    for expected in [
        "replayed 6 decisions (seq ",
        "  allow→hold  3",
        "  unchanged   3",
        "changed, by tool:",
        "  py/read_page  allow→hold 3",
        "changed, by identity:",
        "  token:ci-bot  allow→hold 3",
        "changed calls:",
        "… more: --limit N, or --output json",
    ] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    assert_eq!(
        out.matches("ci-reads-held").count(),
        2,
        "two calls listed:\n{out}"
    );
    // Classes alone, and a window.
    let (status, out, _) = run(vec![
        "policy",
        "replay",
        "--risk",
        "py/read_page=destructive",
        "--last",
        "2",
        "--output",
        "json",
    ])
    .await;
    assert!(status.success());
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (report["decisions"].as_u64(), &report["transitions"]),
        (Some(2), &json!({"allow→deny": 2}))
    );
    let (status, out, _) = run(vec![
        "policy", "replay", file, "--since", "1h", "--output", "json",
    ])
    .await;
    assert!(status.success());
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["decisions"],
        6
    );

    // Refused by the gateway: exit 1, with the file's line and column.
    std::fs::write(
        &candidate,
        "permit (principal, action, resource)\nwhen { resource.nope };",
    )
    .unwrap();
    let (status, out, err) = run(vec!["policy", "replay", file]).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(out.is_empty());
    assert!(err.contains(&format!("{file}:2:")), "{err}");
    // Usage: exit 2, before anything is sent.
    for bad in [
        vec!["policy", "replay"],
        vec!["policy", "replay", "--risk", "read_page=read"],
        vec!["policy", "replay", "--risk", "py/read_page=scary"],
        vec!["policy", "replay", file, "--since", "yesterday"],
        vec!["policy", "replay", file, "--since", "1h", "--last", "3"],
        vec!["policy", "replay", file, "--last", "0"],
        vec!["policy", "replay", file, "--limit", "5000"],
    ] {
        let (status, _, err) = run(bad.clone()).await;
        assert_eq!(status.code(), Some(2), "{bad:?}: {err}");
    }
}

#[tokio::test]
async fn a_deny_for_too_many_arguments_is_the_gateways_and_replays_unchanged() {
    let (_upstream, gw) = recorded().await;
    let many: Vec<String> = (0..4100).map(|i| (i % 10).to_string()).collect();
    let answer = call_tool(
        &gw,
        AGENT_TOKEN,
        "read_page",
        json!({"page_id": "z", "x": many}),
    )
    .await;
    assert!(answer["result"]["isError"] == true, "denied: {answer}");
    let (_, body) = api(
        &gw,
        reqwest::Method::GET,
        "/api/v1/decisions?limit=1",
        Some(VIEWER),
        None,
    )
    .await;
    let newest = &body["decisions"][0];
    assert_eq!(
        (newest["outcome"].as_str(), &newest["policy_ids"]),
        (Some("deny"), &json!(["toolgate-argument-limit"]))
    );
    // Its stored arguments are cut; a candidate that reads none would allow it if it
    // were a policy decision. It is not: unchanged.
    let (_, report) = replay(
        &gw,
        json!({"policy": default_policy(), "window": {"last": 1}}),
    )
    .await;
    assert_eq!(report["transitions"], json!({"unchanged": 1}), "{report}");
    // And no policy may take the gateway's own ids.
    let (status, body) = replay(
        &gw,
        json!({"policy": "@id(\"toolgate-argument-limit\")\npermit (principal, action, resource);"}),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_policy"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("toolgate's own"),
        "{body}"
    );
}
