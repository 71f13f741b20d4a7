//! What is decided, stored, hashed and forwarded is one exact reading of the call:
//! numbers are never rounded, a rule on a number matches however it is written, and a
//! redacted value reaches no file, event, answer, webhook or log line, nor can it be
//! recovered from the stored identical-call hash.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::decisions::{decisions, is_held, result_text};
use crate::events::{VIEWER, viewer};
use crate::support::*;

/// Posts a 2026-07-28 tools/call whose body is given as text, so numbers keep the
/// spelling the test chose. Returns the status and the JSON-RPC answer.
async fn post_raw(gw: &GatewayProc, tool: &str, args_json: &str) -> (u16, Value) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{args_json},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    post_call(gw, tool, body).await
}

const FORBID_ACCOUNT: &str = r#"
@id("no-account-99999999999999999999")
@reason("that account is closed")
forbid (principal, action, resource)
when { context.args.hasTag("/account") && context.args.getTag("/account") == "99999999999999999999" };

@id("no-count-100")
@reason("100 is too many")
forbid (principal, action, resource)
when { context.args.hasTag("/count") && context.args.getTag("/count") == "100" };
"#;

async fn with_number_rules() -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let policy = format!("{DEFAULT_POLICY}\n{FORBID_ACCOUNT}");
    let config = format!(
        "{}\n[policy]\nfile = \"policy.cedar\"\n",
        upstream.config("trust_annotations = true")
    );
    let gw = start_gateway_with_files(&config, &[("policy.cedar", &policy)]).await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

#[tokio::test]
async fn a_number_the_gateway_would_round_is_refused_before_any_decision() {
    let (upstream, gw) = with_number_rules().await;
    // As a string the forbid applies, as it always did.
    let (_, quoted) = post_raw(
        &gw,
        "read_page",
        r#"{"page_id":"MARK-BIG-QUOTED","account":"99999999999999999999"}"#,
    )
    .await;
    assert!(
        result_text(&quoted).contains("no-account-99999999999999999999"),
        "{quoted}"
    );
    // As a bare number it used to be read as 1e20, and the forbid missed it.
    for (marker, number) in [
        ("MARK-BIG-BARE", "99999999999999999999"),
        ("MARK-BIG-NEG", "-9223372036854775809"),
        // Exact for a Rust or Python reader, but a JavaScript server reads ...992.
        ("MARK-BIG-JS", "9007199254740993"),
        ("MARK-BIG-DIGITS", "0.10000000000000000000001"),
    ] {
        let (status, answer) = post_raw(
            &gw,
            "read_page",
            &format!(r#"{{"page_id":"{marker}","account":{number}}}"#),
        )
        .await;
        assert_eq!(status, 400, "{number}: {answer}");
        assert_eq!(answer["error"]["code"], -32602, "{number}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("/params/arguments/account") && message.contains(number),
            "{message}"
        );
    }
    // The biggest integers every reader holds exactly still pass.
    let (status, ok) = post_raw(
        &gw,
        "read_page",
        r#"{"page_id":"MARK-BIG-OK","account":9007199254740991}"#,
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(result_text(&ok), "no page MARK-BIG-OK");

    let posts: Vec<String> = upstream.posts().into_iter().map(|p| p.body).collect();
    assert!(posts.iter().any(|b| b.contains("MARK-BIG-OK")));
    assert!(
        !posts.iter().any(|b| b.contains("MARK-BIG-BARE")
            || b.contains("MARK-BIG-NEG")
            || b.contains("MARK-BIG-DIGITS")
            || b.contains("MARK-BIG-JS")
            || b.contains("MARK-BIG-QUOTED")),
        "a refused or denied call reached the upstream: {posts:?}"
    );
    let stored = decisions(&gw).await;
    assert!(
        stored.iter().all(|d| !d["args"]["page_id"]
            .as_str()
            .unwrap_or("")
            .starts_with("MARK-BIG-B")),
        "a refused call has a decision: {stored:?}"
    );
    // The audit log holds exactly what the upstream got.
    let ok_row = stored
        .iter()
        .find(|d| d["args"]["page_id"] == "MARK-BIG-OK")
        .unwrap();
    assert_eq!(ok_row["args"]["account"].to_string(), "9007199254740991");
}

#[tokio::test]
async fn a_rule_on_a_number_matches_it_however_it_is_written() {
    let (upstream, gw) = with_number_rules().await;
    for (i, spelling) in ["100", "100.0", "1e2", "1.00E+2", "100.000"]
        .iter()
        .enumerate()
    {
        let (status, answer) = post_raw(
            &gw,
            "read_page",
            &format!(r#"{{"page_id":"MARK-COUNT-{i}","count":{spelling}}}"#),
        )
        .await;
        assert_eq!(status, 200);
        assert!(
            result_text(&answer).contains("no-count-100"),
            "{spelling} slipped past the rule: {answer}"
        );
    }
    let (_, fine) = post_raw(
        &gw,
        "read_page",
        r#"{"page_id":"MARK-COUNT-OK","count":100.5}"#,
    )
    .await;
    assert_eq!(result_text(&fine), "no page MARK-COUNT-OK");
    let posts = upstream.posts();
    assert!(
        !posts
            .iter()
            .any(|p| p.body.contains("MARK-COUNT-") && !p.body.contains("MARK-COUNT-OK"))
    );
}

/// A tiny webhook receiver on 127.0.0.1 that keeps every body it gets.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |body: String| async move {
                received.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let addr = serve_local(app).await;
    (format!("http://{addr}/hook"), received)
}

#[tokio::test]
async fn a_redacted_value_reaches_no_file_event_answer_webhook_or_log_line_and_the_hash_keeps_it() {
    const URL_SECRET: &str = "Sup3rS3cretPassw0rd";
    const PIN: &str = "4711";
    let (hook, received) = webhook_receiver().await;
    let upstream = PyUpstream::start().await;
    let config = format!(
        "{}\n{}\n[redact]\nkeys = [\"pin\"]\npointers = [\"/url\"]\n\n[[resource]]\ntool = \"write_page\"\npointer = \"/url\"\nkind = \"url\"\n\n[[notify]]\nurl = \"{hook}\"\n",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 1"),
        viewer()
    );
    let gw = start_gateway(&config).await;
    prime_catalog(&gw).await;

    let args = json!({"page_id": "p-secret", "url": format!("https://deploy:{URL_SECRET}@git.example/x"), "pin": PIN});
    // Watch the live stream from the start, as a console would.
    let mut stream = event_stream(&gw, VIEWER).await;
    let held = crate::decisions::call_tool(&gw, AGENT_TOKEN, "write_page", args).await;
    assert!(is_held(&held), "{held}");

    let hooks = eventually("the hold's webhook", || async {
        let got = received.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, stream.chunk()).await {
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("hold.created") {
            break;
        }
    }
    assert!(seen.contains("hold.created"), "{seen}");
    let mut answers = vec![("event stream", seen), ("webhook", hooks.join("\n"))];
    for path in ["/api/v1/decisions?limit=10", "/api/v1/holds"] {
        let (_, body) =
            crate::control::api(&gw, reqwest::Method::GET, path, Some(VIEWER), None).await;
        answers.push((path, body.to_string()));
    }
    let stored = decisions(&gw).await;
    assert_eq!(stored.last().unwrap()["target"]["kind"], "url");
    assert_eq!(stored.last().unwrap()["target"]["id"], "[REDACTED]");
    for (what, text) in &answers {
        assert!(
            text.contains("write_page"),
            "{what} does not show the call: {text}"
        );
        assert!(
            !text.contains(URL_SECRET),
            "the URL's password is in the {what}: {text}"
        );
        assert!(
            !text.contains("\"4711\""),
            "the pin is in the {what}: {text}"
        );
    }
    gw.assert_secret_not_stored(URL_SECRET);
    let log = gw.log();
    assert!(log.contains("decided"), "the log is not being written");
    assert!(
        !log.contains(URL_SECRET),
        "the URL's password is in the log"
    );

    // Someone who reads the database knows everything but the pin, and the pin has
    // four digits. Without the deployment key, no guess can be checked.
    let rows = query_rows(&gw.db_path(), "SELECT call_hash FROM holds").await;
    let stored_hash = rows[0][0].clone().unwrap();
    let key_file = std::fs::read_to_string(gw.dir.path().join("data/toolgate.key")).unwrap();
    assert_eq!(
        key_file.trim().len(),
        64,
        "the deployment key is made on first start"
    );
    let guess_matches = (0..10_000).any(|pin| {
        let guess = json!(["api_token:ci-bot", "py", "write_page", {
            "page_id": "p-secret",
            "url": format!("https://deploy:{URL_SECRET}@git.example/x"),
            "pin": format!("{pin:04}")}]);
        let unkeyed_jcs = hex::encode(Sha256::digest(serde_jcs::to_string(&guess).unwrap()));
        let unkeyed_plain = hex::encode(Sha256::digest(guess.to_string()));
        unkeyed_jcs == stored_hash || unkeyed_plain == stored_hash
    });
    assert!(!guess_matches, "a guess of the pin matched the stored hash");
    drop(upstream);
}
