//! The standing-privilege report: three tokens crafted to trip every flag, on recorded
//! traffic, through the API and the CLI.

use serde_json::{Value, json};

use crate::cli::run_control_cli;
use crate::decisions::call_tool;
use crate::holds::VIEWER;
use crate::support::*;

const STALE: &str = "tg_test-stale-bot";
const BROAD: &str = "tg_test-broad-bot";
const PROJECTS: &str = "tg_test-project-bot";

fn identities() -> String {
    let now = chrono::Utc::now();
    let day = |d: i64| (now + chrono::Duration::days(d)).format("%Y-%m-%dT%H:%M:%SZ");
    format!(
        r#"
[[identity]]
name = "stale-bot"
kind = "api_token"
token_sha256 = "{}"
issued = "{}"

[[identity]]
name = "broad-bot"
kind = "api_token"
token_sha256 = "{}"
issued = "{}"
expires = "{}"

[[identity]]
name = "project-bot"
kind = "api_token"
token_sha256 = "{}"
issued = "{}"
expires = "{}"
"#,
        sha256_hex(STALE),
        day(-400),
        sha256_hex(BROAD),
        day(-10),
        day(30),
        sha256_hex(PROJECTS),
        day(-10),
        day(30),
    )
}

/// get_project mirrors its key into a header, as 2026-07-28 clients must send it.
async fn get_project(gw: &GatewayProc, token: &str, project: &str) {
    let body = modern_call(1, "get_project", json!({"project": project}), json!({})).to_string();
    let resp = modern_request(&http(), &gw.url("py"), "get_project", body)
        .header("mcp-param-project", project)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    assert!(text.contains(&format!("project {project}")), "{text}");
}

fn flags(token: &Value) -> Vec<&str> {
    token["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["flag"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn three_tokens_trip_every_flag_through_the_api_and_the_cli() {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "token_broad_unused_tools = 2\ntoken_cross_project_max = 3\n{}{}{}\n{}",
        upstream.config("trust_annotations = true"),
        identities(),
        crate::holds::operators(),
        crate::identity::oauth_config()
    ))
    .await;
    prime_catalog(&gw).await;
    call_tool(&gw, BROAD, "read_page", json!({"page_id": "B-1"})).await;
    call_tool(&gw, BROAD, "read_page", json!({"page_id": "B-2"})).await;
    for project in ["OPS", "DEV", "SEC", "WEB"] {
        get_project(&gw, PROJECTS, project).await;
    }
    call_tool(&gw, PROJECTS, "read_page", json!({"page_id": "P-1"})).await;
    // An OAuth user's use is listed apart: they log in, their privilege does not stand.
    let user = crate::identity::user_jwt();
    call_tool(&gw, &user, "read_page", json!({"page_id": "U-1"})).await;

    let view = gw.control_get(VIEWER, "/api/v1/tokens").await;
    let token = |name: &str| {
        view["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {view}"))
            .clone()
    };
    let stale = token("stale-bot");
    assert_eq!(flags(&stale), ["unused", "never_expires", "old"], "{stale}");
    assert!(stale["age_days"].as_i64().unwrap() >= 400);
    assert!(stale.get("last_used").is_none());

    let broad = token("broad-bot");
    assert_eq!(flags(&broad), ["broad"], "{broad}");
    assert_eq!(broad["used"], json!(["py/read_page"]));
    // The policy lets a token read and (held) write: read_page, get_project, write_page.
    assert_eq!(
        broad["reachable"],
        json!(["py/get_project", "py/read_page", "py/write_page"])
    );
    assert_eq!(broad["calls_30d"]["allow"], 2);
    let narrowing = broad["narrowing_policy"].as_str().unwrap();
    assert!(
        narrowing.contains(r#"unless { resource == Tool::"py/read_page" }"#),
        "{narrowing}"
    );

    let projects = token("project-bot");
    assert_eq!(flags(&projects), ["cross_project"], "{projects}");
    assert!(
        projects["flags"][0]["says"]
            .as_str()
            .unwrap()
            .contains("4 projects (project:DEV, project:OPS, project:SEC, project:WEB)"),
        "{projects}"
    );
    assert_eq!(projects["calls_7d"]["allow"], 5);

    let users = view["users"].as_array().unwrap();
    assert_eq!(users.len(), 1, "{view}");
    assert!(users[0]["identity"].as_str().unwrap().starts_with("user:"));
    assert_eq!(users[0]["calls_30d"]["allow"], 1);
    assert_eq!(users[0]["used"], json!(["py/read_page"]));
    assert!(
        view["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] != users[0]["identity"]),
        "not among the tokens"
    );

    // The CLI prints the same, a JSON object a line.
    let (status, stdout, stderr) =
        run_control_cli(&gw, VIEWER, &["tokens", "--output", "json"]).await;
    assert!(status.success(), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from_cli = lines.iter().find(|t| t["name"] == "project-bot").unwrap();
    assert_eq!(flags(from_cli), ["cross_project"]);
    assert_eq!(lines.len(), view["tokens"].as_array().unwrap().len());
    // For people: a line a token, its flags under it.
    let (status, stdout, _) = run_control_cli(&gw, VIEWER, &["tokens", "--output", "table"]).await;
    assert!(status.success());
    assert!(stdout.contains("stale-bot"), "{stdout}");
    assert!(
        stdout.contains("    never_expires: it never expires"),
        "{stdout}"
    );
}
