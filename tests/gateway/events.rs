//! The event stream: a subscriber that reconnects with `since=` misses nothing and
//! sees nothing twice; a recreated store tells subscribers to reload.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::decisions::call_tool;
use crate::support::*;

pub const VIEWER: &str = "tg_test-events-viewer";

/// One viewer operator, whose token is `VIEWER`.
pub fn viewer() -> String {
    format!(
        "[[operator]]\nname = \"viv\"\nrole = \"viewer\"\ntoken_sha256 = \"{}\"\n",
        sha256_hex(VIEWER)
    )
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn subscribe(gw: &GatewayProc, query: &str) -> Socket {
    subscribe_as(gw, VIEWER, query).await
}

/// The event stream over WebSocket, as the operator with `token`.
pub(crate) async fn subscribe_as(gw: &GatewayProc, token: &str, query: &str) -> Socket {
    let url = format!("ws://{}/api/v1/events{query}", gw.control);
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket")
        .0
}

pub(crate) async fn next_frame<S>(
    socket: &mut tokio_tungstenite::WebSocketStream<S>,
) -> Option<Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s")?;
        match message.ok()? {
            Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn stored_seqs(gw: &GatewayProc) -> Vec<u64> {
    query_rows(
        &gw.db_path(),
        "SELECT CAST(seq AS TEXT) FROM events ORDER BY seq",
    )
    .await
    .iter()
    .map(|r| r[0].as_deref().unwrap().parse().unwrap())
    .collect()
}

#[tokio::test]
async fn a_subscriber_that_reconnects_with_since_sees_every_seq_exactly_once() {
    let (_upstream, gw) = trusted_py_with(&viewer()).await;
    let url_gw = GatewayRef {
        addr: gw.addr.clone(),
    };
    let calls = tokio::spawn(async move {
        for i in 0..120 {
            let tool = if i % 3 == 0 {
                "delete_page"
            } else {
                "read_page"
            };
            url_gw.call(tool, &format!("p{i}")).await;
        }
    });

    let mut seen: Vec<u64> = Vec::new();
    let mut socket = subscribe(&gw, "?since=0").await;
    let hello = next_frame(&mut socket).await.unwrap();
    assert_eq!(hello["kind"], "hello");
    // Take some events, then drop the connection mid-stream while calls go on.
    while seen.len() < 25 {
        let frame = next_frame(&mut socket).await.expect("events");
        seen.push(frame["seq"].as_u64().expect("an event has a seq"));
    }
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut socket = subscribe(&gw, &format!("?since={}", seen.last().unwrap())).await;
    assert_eq!(next_frame(&mut socket).await.unwrap()["kind"], "hello");
    calls.await.unwrap();
    // How the last call ended may be committed a moment later; compare up to here.
    let stored = stored_seqs(&gw).await;
    let last = *stored.last().unwrap();
    while seen.last() != Some(&last) {
        let frame = next_frame(&mut socket)
            .await
            .expect("events until the last stored seq");
        seen.push(frame["seq"].as_u64().unwrap());
    }
    assert_eq!(seen, stored, "every seq exactly once, in order");
    assert!(seen.len() > 120);
}

#[tokio::test]
async fn a_recreated_store_or_a_future_since_is_a_reset() {
    let (_upstream, gw) = trusted_py_with(&viewer()).await;
    let mut socket = subscribe(&gw, "").await;
    let hello = next_frame(&mut socket).await.unwrap();
    let store_id = hello["store_id"].as_str().unwrap().to_owned();
    let last = hello["last_seq"].as_u64().unwrap();
    drop(socket);

    let mut ahead = subscribe(&gw, &format!("?since={}", last + 100)).await;
    assert_eq!(next_frame(&mut ahead).await.unwrap()["kind"], "hello");
    assert_eq!(next_frame(&mut ahead).await.unwrap()["kind"], "reset");
    assert!(next_frame(&mut ahead).await.is_none(), "closed after reset");

    // The store is recreated under the same gateway config.
    let data = gw.dir.path().join("data");
    let gw = gw
        .stop_then(|| std::fs::remove_dir_all(&data).unwrap())
        .await;
    let mut socket = subscribe(&gw, &format!("?since={last}&store_id={store_id}")).await;
    let hello = next_frame(&mut socket).await.unwrap();
    assert_ne!(hello["store_id"].as_str().unwrap(), store_id);
    let reset = next_frame(&mut socket).await.unwrap();
    assert_eq!(reset["kind"], "reset", "{reset}");
    assert!(next_frame(&mut socket).await.is_none());
}

#[tokio::test]
async fn sse_carries_the_same_events_with_ids() {
    let (_upstream, gw) = trusted_py_with(&viewer()).await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "sse"})).await;
    let resp = event_stream(&gw, VIEWER).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let want = stored_seqs(&gw).await.len();
    while text.matches("\nid: ").count() + usize::from(text.starts_with("id: ")) < want {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("data: {\"kind\":\"hello\""), "{text}");
    assert!(text.contains("\"page_id\":\"sse\""), "{text}");
    assert!(text.contains("id: 1\ndata: {\"seq\":1,"), "{text}");
}

#[tokio::test]
async fn the_events_command_prints_json_lines() {
    let (_upstream, gw) = trusted_py_with(&viewer()).await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "cli"})).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args([
            "events",
            "--since",
            "0",
            "--gateway",
            &format!("http://{}", gw.control),
        ])
        .env("TOOLGATE_TOKEN", VIEWER)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line).expect("each line is JSON");
            if event["kind"] == "decision" && event["args"]["page_id"] == "cli" {
                return event;
            }
        }
        panic!("the stream ended without the decision");
    })
    .await
    .expect("the decision within 10 s");
    assert_eq!(found["outcome"], "allow");
}

/// A gateway in front of the trusted Python upstream, with extra config.
async fn trusted_py_with(extra: &str) -> (PyUpstream, GatewayProc) {
    let upstream = PyUpstream::start().await;
    let gw = start_gateway(&format!(
        "{}\n{extra}",
        upstream.config("trust_annotations = true")
    ))
    .await;
    prime_catalog(&gw).await;
    (upstream, gw)
}

/// What a background task needs to call through the gateway.
struct GatewayRef {
    addr: String,
}

impl GatewayRef {
    async fn call(&self, tool: &str, page: &str) {
        let body = modern_call(1, tool, json!({"page_id": page}), json!({}));
        let resp = modern_request(
            &http(),
            &format!("http://{}/mcp/py", self.addr),
            tool,
            body.to_string(),
        )
        .bearer_auth(AGENT_TOKEN)
        .send()
        .await
        .unwrap();
        resp.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn a_stalled_subscriber_among_twenty_is_closed_with_lagged_while_the_rest_see_every_seq() {
    let (_upstream, gw) = trusted_py_with(&viewer()).await;
    // The stalled subscriber reads through a tiny receive buffer, and then not at all.
    let stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(gw.control.parse().unwrap()).await.unwrap();
        let url = format!("ws://{}/api/v1/events", gw.control);
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();
        assert_eq!(next_frame(&mut ws).await.unwrap()["kind"], "hello");
        ws
    };
    let mut readers = Vec::new();
    for _ in 0..19 {
        let mut socket = subscribe(&gw, "").await;
        let hello = next_frame(&mut socket).await.unwrap();
        let from = hello["last_seq"].as_u64().unwrap();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while let Some(frame) = next_frame(&mut socket).await {
                assert_ne!(frame["kind"], "lagged", "a reader that keeps up was closed");
                seqs.push(frame["seq"].as_u64().unwrap());
                if seqs.len() == CALLS {
                    break;
                }
            }
            (from, seqs)
        }));
    }
    let pid = gw.proc.child.id().unwrap();
    let rss_before = rss_kib(pid);
    // Denied calls: each is one committed decision, and nothing goes upstream.
    let mut callers = Vec::new();
    for c in 0..16 {
        let gw_ref = GatewayRef {
            addr: gw.addr.clone(),
        };
        callers.push(tokio::spawn(async move {
            for i in 0..CALLS / 16 {
                gw_ref.call("delete_page", &format!("lag-{c}-{i}")).await;
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    for r in readers {
        let (from, seqs) = tokio::time::timeout(Duration::from_secs(60), r)
            .await
            .unwrap()
            .unwrap();
        let expected: Vec<u64> = (from + 1..=from + CALLS as u64).collect();
        assert_eq!(seqs, expected, "a reader missed or repeated a seq");
    }
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the gateway grew from {rss_before} KiB to {rss_after} KiB while a subscriber stalled"
    );
    // The gateway closed the stalled subscriber as lagged. Read at last, its stream
    // ends: with the `lagged` notice if that still fit behind the queued events.
    assert!(
        gw.log().contains("closed as lagged"),
        "the stalled subscriber was not closed"
    );
    let mut ws = stalled;
    let mut frames = 0;
    while let Some(frame) = next_frame(&mut ws).await {
        frames += 1;
        if frame["kind"] == "lagged" {
            assert!(frame["last_seq"].as_u64().is_some(), "{frame}");
            break;
        }
    }
    assert!(
        frames < CALLS,
        "the stalled subscriber got everything; it never lagged"
    );
}

const CALLS: usize = 1600;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
