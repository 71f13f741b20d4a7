//! The console end to end, in a real terminal: tmux runs `toolgate console` against a
//! real gateway and upstream; keys approve a held call; a gateway restart is survived.

use std::time::Duration;

use serde_json::json;

use crate::decisions::{answer_of, call_tool, result_text};
use crate::support::*;

const APPROVER: &str = "tg_test-console-approver";

#[tokio::test]
async fn an_operator_approves_a_held_call_in_a_real_terminal_and_the_console_survives_a_restart() {
    let upstream = PyUpstream::start().await;
    let control_port = free_port();
    let config = format!(
        "{}\n[[operator]]\nname = \"olga\"\nrole = \"approver\"\ntoken_sha256 = \"{}\"\n",
        upstream.config("trust_annotations = true\nhold_timeout_secs = 30"),
        sha256_hex(APPROVER)
    );
    let gw = start_gateway_with_control_port(control_port, &config).await;
    prime_catalog(&gw).await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "before"})).await;

    let command = format!(
        "{} console --gateway http://127.0.0.1:{control_port} --bell off",
        env!("CARGO_BIN_EXE_toolgate")
    );
    let tmux = Tmux::start(&command, &[("TOOLGATE_TOKEN", APPROVER)], 120, 40);
    tmux.wait_for("● connected").await;
    tmux.wait_for("page:before").await;

    // An API token's write is held; the client waits on its stream.
    let client = spawn_write_page(&gw, AGENT_TOKEN, "tmux", "hi", json!({}));
    tmux.wait_for("held: 1").await;
    tmux.send(&[":held", "Enter"]);
    tmux.wait_for("waiting").await;
    tmux.send(&["a"]);
    tmux.wait_for("Approve held call").await;
    tmux.send(&["y"]);

    let text = tokio::time::timeout(Duration::from_secs(15), client)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        result_text(&answer_of(&text).unwrap()),
        "wrote tmux (2 bytes)"
    );
    tmux.wait_for("approved by olga").await;
    assert_eq!(
        upstream
            .posts()
            .iter()
            .filter(|p| p.body.contains("\"tmux\""))
            .count(),
        1
    );

    // The gateway restarts on the same ports; the console reconnects by itself.
    let gw = gw.stop_then(|| {}).await;
    tmux.send(&[":live", "Enter"]);
    tmux.wait_for("● connected").await;
    call_tool(&gw, AGENT_TOKEN, "read_page", json!({"page_id": "after"})).await;
    let screen = tmux.wait_for("page:after").await;
    assert!(
        screen.contains("page:before"),
        "the rows from before the restart are kept:\n{screen}"
    );
}
