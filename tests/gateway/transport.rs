//! Transport hardening: what reaches the gateway's log, which hosts it answers to, where
//! its requests may go, and whose sessions a client may use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::relay::{legacy_post, legacy_session};
use crate::support::*;

#[tokio::test]
async fn request_values_cannot_forge_a_line_in_the_gateways_log() {
    // Neither request goes upstream (one has no token, the other is denied), so none runs.
    let gw = start_gateway(&format!(
        "[[upstream]]\nname = \"rec\"\nurl = \"http://127.0.0.1:9/mcp\"\n{}",
        test_identities()
    ))
    .await;
    let client = http();
    let forged_path = format!("http://{}/mcp/x%0Aforged%20line", gw.addr);
    let refused = client.post(&forged_path).body("{}").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "echo\n2026-01-01T00:00:00Z  INFO forged tool line", "arguments": {}}});
    let denied = legacy_post(&client, &gw.url("rec"), AGENT_TOKEN, None, &call)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 200);
    denied.bytes().await.unwrap();

    let log = eventually("the decision in the log", || async {
        let log = gw.log();
        log.contains("decided").then_some(log)
    })
    .await;
    for line in log.lines() {
        assert!(
            !line.starts_with("forged") && !line.starts_with("2026-01-01T00:00:00Z  INFO forged"),
            "a request forged a log line: {line:?}\nthe whole log:\n{log}"
        );
    }
    // Both values were logged, escaped, on the lines they belong to.
    assert!(log.contains(r#"upstream="x\nforged line""#), "{log}");
    assert!(
        log.contains(r#"tool="echo\n2026-01-01T00:00:00Z  INFO forged tool line""#),
        "{log}"
    );
}

/// One request as an in-process upstream received it.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    headers: HeaderMap,
    body: String,
}

type Answer = Arc<dyn Fn(&Method, &str) -> Response + Send + Sync>;

/// A tiny upstream on 127.0.0.1 that records every request and answers with `answer`.
/// Returns its MCP URL and what it received.
async fn recording_upstream(answer: Answer) -> (String, Arc<Mutex<Vec<Received>>>) {
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let app = axum::Router::new().fallback({
        let received = received.clone();
        move |method: Method, headers: HeaderMap, body: axum::body::Bytes| {
            let body = String::from_utf8_lossy(&body).into_owned();
            let response = answer(&method, &body);
            received.lock().unwrap().push(Received {
                method,
                headers,
                body,
            });
            async move { response }
        }
    });
    let addr = serve_local(app).await;
    (format!("http://{addr}/mcp"), received)
}

/// Answers like a 2025-11-25 server: each `initialize` opens a new session, requests get
/// a result, notifications 202, GET an (empty) event stream, DELETE 200.
fn session_server() -> Answer {
    let next = AtomicUsize::new(1);
    Arc::new(move |method, body| {
        let message: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        match *method {
            Method::GET => ([("content-type", "text/event-stream")], "").into_response(),
            Method::DELETE => StatusCode::OK.into_response(),
            _ if message["method"] == "initialize" => {
                let session = format!("session-{}", next.fetch_add(1, Ordering::Relaxed));
                let result = json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "serverInfo": {"name": "recording", "version": "1"}}});
                (
                    [
                        ("mcp-session-id", session),
                        ("content-type", "application/json".into()),
                    ],
                    result.to_string(),
                )
                    .into_response()
            }
            _ if message.get("id").is_none() => StatusCode::ACCEPTED.into_response(),
            _ => (
                [("content-type", "application/json")],
                json!({"jsonrpc": "2.0", "id": message["id"], "result": {"tools": []}}).to_string(),
            )
                .into_response(),
        }
    })
}

/// A gateway whose upstream `rec` is at `url`; `extra` joins the config.
async fn gateway_for(url: &str, extra: &str) -> GatewayProc {
    start_gateway(&format!(
        "[[upstream]]\nname = \"rec\"\nurl = \"{url}\"\n{}\n{extra}",
        test_identities()
    ))
    .await
}

/// The port a gateway listens on.
fn port_of(gw: &GatewayProc) -> u16 {
    gw.addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_request_for_another_host_is_refused_before_anything_goes_upstream() {
    let (url, received) = recording_upstream(session_server()).await;
    let gw = gateway_for(
        &url,
        "[[risk]]\nupstream = \"rec\"\ntool = \"echo\"\nrisk = \"read\"\n",
    )
    .await;
    let port = port_of(&gw);
    let client = http();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let send_as = |host: String| {
        legacy_post(&client, &gw.url("rec"), AGENT_TOKEN, None, &list)
            .header("host", host)
            .send()
    };

    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "localhost:1".into(),
    ] {
        let resp = send_as(host.clone()).await.unwrap();
        assert_eq!(resp.status(), 403, "{host}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["jsonrpc"], "2.0", "{body}");
        assert_eq!(
            body["error"]["message"], "toolgate: Host is not a name this gateway serves",
            "{host}"
        );
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "a refused request went upstream"
    );

    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let resp = send_as(host.clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "{host}");
        resp.bytes().await.unwrap();
    }
    let received = received.lock().unwrap();
    assert_eq!(received.len(), 2);
    // The upstream is addressed by its own name, never by the client's Host.
    let upstream_host = url.trim_start_matches("http://").trim_end_matches("/mcp");
    for r in received.iter() {
        assert_eq!(r.headers["host"], upstream_host);
    }
}

#[tokio::test]
async fn configured_allowed_hosts_are_served_too() {
    let (url, received) = recording_upstream(session_server()).await;
    // The body's first lines are `[gateway]` keys.
    let gw = start_gateway(&format!(
        "allowed_hosts = [\"toolgate.internal\"]\n[[upstream]]\nname = \"rec\"\nurl = \"{url}\"\n{}",
        test_identities()
    ))
    .await;
    let port = port_of(&gw);
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let client = http();
    for (host, status) in [
        (format!("toolgate.internal:{port}"), 200),
        ("Toolgate.Internal".to_owned(), 200),
        (format!("other.internal:{port}"), 403),
    ] {
        let resp = legacy_post(&client, &gw.url("rec"), AGENT_TOKEN, None, &list)
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{host}");
    }
    assert_eq!(received.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_upstream_redirect_is_reported_and_not_followed() {
    let (elsewhere, elsewhere_received) = recording_upstream(session_server()).await;
    let (moved, moved_received) = recording_upstream(Arc::new(move |_, _| {
        (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", elsewhere.clone())],
        )
            .into_response()
    }))
    .await;
    let gw = start_gateway(&format!(
        "[[upstream]]\nname = \"moved\"\nurl = \"{moved}\"\nheaders = {{ \"x-api-key\" = \"upstream-secret-key\" }}\n\
         [[risk]]\nupstream = \"moved\"\ntool = \"echo\"\nrisk = \"read\"\n{}",
        test_identities()
    ))
    .await;
    let client = http();

    let call = modern_call(4, "echo", json!({"message": "hi"}), json!({}));
    let resp = modern_request(&client, &gw.url("moved"), "echo", call.to_string())
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("location").is_none());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["id"], 4);
    assert_eq!(answer["result"]["isError"], true, "{answer}");
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "toolgate: upstream answered HTTP 307 (redirects are not followed)"
    );

    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "toolgate-test", "version": "1"}}});
    let resp = legacy_post(&client, &gw.url("moved"), AGENT_TOKEN, None, &init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("location").is_none());
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["id"], 0);
    assert_eq!(
        answer["error"]["message"],
        "toolgate: upstream answered HTTP 307 (redirects are not followed)"
    );

    // The redirecting upstream got both, with its key; the place it pointed to got nothing.
    let moved_received = moved_received.lock().unwrap();
    assert_eq!(moved_received.len(), 2);
    assert!(moved_received[0].body.contains(r#""name":"echo""#));
    assert!(
        moved_received
            .iter()
            .all(|r| r.headers["x-api-key"] == "upstream-secret-key")
    );
    assert!(
        elsewhere_received.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

const OTHER_TOKEN: &str = "tg_test-agent-other";

#[tokio::test]
async fn a_session_is_usable_only_by_the_identity_that_created_it() {
    let (url, received) = recording_upstream(session_server()).await;
    let gw = gateway_for(
        &url,
        &format!(
            "[[identity]]\nname = \"other-bot\"\nkind = \"api_token\"\ntoken_sha256 = \"{}\"\nissued = \"2026-01-01T00:00:00Z\"\n",
            sha256_hex(OTHER_TOKEN)
        ),
    )
    .await;
    let client = http();
    let url = gw.url("rec");
    let session = legacy_session(&client, &url, AGENT_TOKEN).await;
    let upstream_saw = || received.lock().unwrap().len();
    assert_eq!(
        upstream_saw(),
        2,
        "initialize and notifications/initialized"
    );

    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let stream = |token: &str, session: &str| {
        client
            .get(&url)
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .header("last-event-id", "session-1-event-7")
    };
    let delete = |token: &str, session: &str| {
        client
            .delete(&url)
            .bearer_auth(token)
            .header("mcp-session-id", session)
    };
    let assert_not_found = |resp: reqwest::Response, what: &'static str| async move {
        assert_eq!(resp.status(), 404, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": "Session not found"}}),
            "{what}"
        );
    };

    // Another identity holding the id: the session does not exist, whatever it asks.
    let post = legacy_post(&client, &url, OTHER_TOKEN, Some(&session), &list);
    assert_not_found(post.send().await.unwrap(), "another's POST").await;
    assert_not_found(
        stream(OTHER_TOKEN, &session).send().await.unwrap(),
        "another's GET resumption",
    )
    .await;
    assert_not_found(
        delete(OTHER_TOKEN, &session).send().await.unwrap(),
        "another's DELETE",
    )
    .await;
    // An id the gateway never saw created is nobody's, the caller's own token or not.
    let post = legacy_post(&client, &url, AGENT_TOKEN, Some("session-99"), &list);
    assert_not_found(post.send().await.unwrap(), "an unknown session").await;
    // Two ids in one request could be read differently upstream.
    let twice = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &list)
        .header("mcp-session-id", "session-99")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    // Resuming an event stream needs a session to bind the event ids to.
    let unbound = client
        .get(&url)
        .bearer_auth(AGENT_TOKEN)
        .header("accept", "text/event-stream")
        .header("last-event-id", "session-1-event-7")
        .send()
        .await
        .unwrap();
    assert_eq!(unbound.status(), 400);
    assert_eq!(upstream_saw(), 2, "a refused request reached the upstream");

    // Its creator uses it, and ends it.
    let post = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &list);
    assert_eq!(post.send().await.unwrap().status(), 200);
    assert_eq!(
        stream(AGENT_TOKEN, &session).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        delete(AGENT_TOKEN, &session).send().await.unwrap().status(),
        200
    );
    // Ended: forgotten, for its creator too.
    let post = legacy_post(&client, &url, AGENT_TOKEN, Some(&session), &list);
    assert_not_found(post.send().await.unwrap(), "an ended session").await;

    let received = received.lock().unwrap();
    let seen: Vec<(&str, Option<&str>)> = received
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.headers.get("mcp-session-id").map(|v| v.to_str().unwrap()),
            )
        })
        .collect();
    let s = Some(session.as_str());
    assert_eq!(
        seen,
        [
            ("POST", None),
            ("POST", s),
            ("POST", s),
            ("GET", s),
            ("DELETE", s)
        ]
    );
    assert!(received[3].headers.contains_key("last-event-id"));
}
