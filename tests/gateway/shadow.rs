//! Shadow mode: a candidate decides every call beside the enforced policy, enforcing
//! nothing; where it disagrees, the decision event says so, and it is all counted.

use serde_json::{Value, json};

use crate::control::{ADMIN, VIEWER, api, code, metrics, setup};
use crate::decisions::call_tool;
use crate::support::*;

fn candidate() -> String {
    let default =
        std::fs::read_to_string(repo_root().join("src/gateway/policy/default.cedar")).unwrap();
    format!(
        "{default}\n@id(\"ci-reads-held\")\n@outcome(\"hold\")\npermit (principal == Token::\"ci-bot\", action == Action::\"call_tool\", resource)\nwhen {{ resource.risk == \"read\" && context.args.hasTag(\"/page_id\") && context.args.getTag(\"/page_id\") like \"s*\" }};\n"
    )
}

async fn newest_decisions(gw: &GatewayProc, n: usize) -> Vec<Value> {
    let (_, body) = api(
        gw,
        reqwest::Method::GET,
        &format!("/api/v1/decisions?limit={n}"),
        Some(VIEWER),
        None,
    )
    .await;
    body["decisions"].as_array().unwrap().clone()
}

async fn shadow_view(gw: &GatewayProc) -> (u16, Value) {
    api(
        gw,
        reqwest::Method::GET,
        "/api/v1/policy/shadow",
        Some(VIEWER),
        None,
    )
    .await
}

#[tokio::test]
async fn a_shadow_enforces_nothing_says_where_it_disagrees_and_counts_it_all() {
    let (_upstream, gw) = setup().await;
    let put = |text: String| {
        api(
            &gw,
            reqwest::Method::PUT,
            "/api/v1/policy/shadow",
            Some(ADMIN),
            Some(text),
        )
    };
    let (status, view) = put(candidate()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["by"], "ada");
    assert_eq!(view["compared"], json!({}));
    // Installing it is in the audit log, before it decides anything.
    let events = crate::decisions::stored_events(&gw, "policy.shadow").await;
    assert!(
        events
            .iter()
            .any(|e| e["sha256"] == view["sha256"] && e["by"] == "ada"),
        "{events:?}"
    );

    // Two reads the shadow would hold, one it agrees on: all three run.
    for page in ["s1", "s2", "other"] {
        let answer = call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": page})).await;
        assert!(answer["result"].is_object(), "enforced allow: {answer}");
    }
    let events = newest_decisions(&gw, 3).await;
    let shadows: Vec<(&str, &Value)> = events
        .iter()
        .map(|d| (d["args"]["page_id"].as_str().unwrap(), &d["shadow"]))
        .collect();
    for (page, shadow) in shadows {
        assert_eq!(
            events
                .iter()
                .find(|d| d["args"]["page_id"] == page)
                .unwrap()["outcome"],
            "allow",
            "the enforced policy decides"
        );
        if page.starts_with('s') {
            assert_eq!(
                *shadow,
                json!({"outcome": "hold", "policy_ids": ["ci-reads-held"]}),
                "{page}"
            );
        } else {
            assert_eq!(
                *shadow,
                Value::Null,
                "agreement is not written on the event"
            );
        }
    }
    let (_, view) = shadow_view(&gw).await;
    assert_eq!(view["compared"], json!({"agree": 1, "allow→hold": 2}));
    let metrics = metrics(&gw).await;
    assert!(
        metrics.contains("toolgate_shadow_decisions_total{enforced=\"allow\",shadow=\"hold\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("toolgate_shadow_decisions_total{enforced=\"allow\",shadow=\"allow\"} 1")
    );

    // A bad text is refused where it is wrong, and the shadow in place stays.
    let (status, body) =
        put("permit (principal, action, resource)\nwhen { resource.nope };".into()).await;
    assert_eq!(
        (status, code(&body), body["error"]["line"].as_u64()),
        (400, "invalid_policy", Some(2))
    );
    let (status, _) = api(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/policy/shadow",
        Some(VIEWER),
        Some(candidate()),
    )
    .await;
    assert_eq!(status, 403, "installing a shadow is for admins");

    // Removed: the next call carries no shadow, and the shadow is gone.
    let (status, _) = api(
        &gw,
        reqwest::Method::DELETE,
        "/api/v1/policy/shadow",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "s3"})).await;
    assert_eq!(newest_decisions(&gw, 1).await[0]["shadow"], Value::Null);
    let (status, body) = shadow_view(&gw).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn promoting_checks_the_version_in_force_then_enforces_the_shadow() {
    let (_upstream, gw) = setup().await;
    api(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/policy/shadow",
        Some(ADMIN),
        Some(candidate()),
    )
    .await;
    let promote = |body: Value| {
        api(
            &gw,
            reqwest::Method::POST,
            "/api/v1/policy/shadow/promote",
            Some(ADMIN),
            Some(body.to_string()),
        )
    };
    // The shadow was compared against v1; someone else's v2 makes that stale.
    let (status, _) = api(
        &gw,
        reqwest::Method::PUT,
        "/api/v1/policy",
        Some(ADMIN),
        Some(
            std::fs::read_to_string(repo_root().join("src/gateway/policy/default.cedar")).unwrap(),
        ),
    )
    .await;
    assert_eq!(status, 200);
    let (_, view) = shadow_view(&gw).await;
    let sha = view["sha256"].as_str().unwrap().to_owned();
    let (status, body) = promote(json!({"expected_version": 1, "sha256": sha})).await;
    assert_eq!((status, code(&body)), (409, "stale_version"), "{body}");
    assert_eq!(body["policy"]["version"], 2, "{body}");
    assert_eq!(
        shadow_view(&gw).await.0,
        200,
        "a refused promote keeps the shadow"
    );
    let (status, body) = promote(json!({"expected_version": 2, "sha256": sha, "bogus": 1})).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    // Not the shadow the operator looked at: refused.
    let (status, body) = promote(json!({"expected_version": 2, "sha256": "0123456789ab"})).await;
    assert_eq!((status, code(&body)), (409, "shadow_changed"), "{body}");
    let (status, body) = promote(json!({"expected_version": 2, "sha256": &sha[..6]})).await;
    assert_eq!(
        (status, code(&body)),
        (409, "shadow_changed"),
        "too short: {body}"
    );

    let (status, event) =
        promote(json!({"expected_version": 2, "sha256": &sha[..12], "note": "a week of shadow"}))
            .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(
        (event["kind"].as_str(), event["version"].as_u64()),
        (Some("policy.changed"), Some(3))
    );
    assert_eq!(event["note"], "a week of shadow");
    assert_eq!(shadow_view(&gw).await.0, 404, "the promoted shadow is gone");
    let (_, policy) = api(
        &gw,
        reqwest::Method::GET,
        "/api/v1/policy",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(policy["text"], candidate().as_str());
    // In force: ci-bot's read of an s-page is now held (its client waits), not allowed.
    let body = modern_call(2, "read_page", json!({"page_id": "s9"}), json!({})).to_string();
    let waiting = {
        let gw_url = gw.url("py");
        tokio::spawn(async move {
            modern_request(&http(), &gw_url, "read_page", body)
                .bearer_auth(AGENT_TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let newest = eventually("the read's decision", || async {
        // Nothing may be recorded yet: keep looking until the read is.
        newest_decisions(&gw, 1)
            .await
            .into_iter()
            .find(|d| d["args"]["page_id"] == "s9")
    })
    .await;
    assert_eq!(
        (newest["outcome"].as_str(), &newest["policy_ids"]),
        (Some("hold"), &json!(["ci-reads-held"]))
    );
    waiting.abort();
}

#[tokio::test]
async fn toolgate_policy_shadow_installs_shows_promotes_and_removes() {
    let (_upstream, gw) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shadow.cedar");
    std::fs::write(&path, candidate()).unwrap();
    let file = path.to_str().unwrap();
    let run = |args: &'static [&'static str]| crate::cli::run_control_cli(&gw, ADMIN, args);

    let (status, out, _) = run(&["policy", "shadow"]).await;
    assert!(status.success());
    assert_eq!(out, "no shadow policy is installed\n");
    let (status, out, err) =
        crate::cli::run_control_cli(&gw, ADMIN, &["policy", "shadow", file]).await;
    assert!(status.success(), "{err}");
    assert!(out.contains("installed as the shadow"), "{out}");
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "s1"})).await;
    let (_, out, _) = run(&["policy", "shadow"]).await;
    assert!(out.contains("installed by ada"), "{out}");
    assert!(
        out.ends_with("compared with the policy in force: allow→hold 1\n"),
        "{out}"
    );

    // The shadow as shown, by its 12 digits.
    let sha = out
        .split_whitespace()
        .nth(1)
        .expect("shadow <sha> installed by …")
        .to_owned();
    let promote = |version: &str, sha: &str, note: Option<&str>| {
        let mut args: Vec<String> = [
            "policy",
            "shadow",
            "--promote",
            "--expected-version",
            version,
            "--sha",
            sha,
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(n) = note {
            args.extend(["--note".to_owned(), n.to_owned()]);
        }
        let gw = &gw;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::cli::run_control_cli(gw, ADMIN, &args).await
        }
    };
    // Promote against the wrong version, or another shadow: refused, exit 1.
    let (status, _, err) = promote("7", &sha, None).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("not promoted: the policy in force is v1"),
        "{err}"
    );
    let (status, _, err) = promote("1", "0123456789ab", None).await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("not promoted: the shadow is {sha}")),
        "{err}"
    );
    let (status, out, err) = promote("1", &sha, Some("tried for a day")).await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "the shadow is in force as v2\n");
    let (_, policy) = api(
        &gw,
        reqwest::Method::GET,
        "/api/v1/policy",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(
        (policy["version"].as_u64(), policy["note"].as_str()),
        (Some(2), Some("tried for a day"))
    );

    // Nothing left to remove or promote: exit 1; usage mistakes: exit 2.
    let (status, _, err) = run(&["policy", "shadow", "--off"]).await;
    assert_eq!(
        (status.code(), err.contains("no shadow policy is installed")),
        (Some(1), true),
        "{err}"
    );
    for bad in [
        &["policy", "shadow", "--promote"][..],
        &["policy", "shadow", "--promote", "--expected-version", "2"][..],
        &[
            "policy",
            "shadow",
            "--off",
            "--promote",
            "--expected-version",
            "2",
            "--sha",
            "0123456789ab",
        ][..],
        &["policy", "shadow", "--note", "x"][..],
        &["policy", "shadow", "--expected-version", "2"][..],
    ] {
        let (status, _, err) = crate::cli::run_control_cli(&gw, ADMIN, bad).await;
        assert_eq!(status.code(), Some(2), "{bad:?}: {err}");
    }
}
