//! What the wire benchmarks share: the release `toolgate gateway` in its own process.
// Each bench binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running gateway, killed when dropped.
pub struct Gateway {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without `/mcp/{upstream}`.
    pub mcp: String,
    /// `http://127.0.0.1:PORT` of the control API.
    pub control: String,
    _dir: tempfile::TempDir,
}

/// Starts `toolgate gateway` on `config` (its `data_dir` relative to a temporary dir) and
/// waits until it prints where it listens.
pub async fn gateway(config: &str) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .args(["gateway", "--config"])
        .arg(dir.path().join("gateway.toml"))
        .env("TOOLGATE_LOG", "toolgate=warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut mcp, mut control) = (String::new(), String::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.strip_prefix("toolgate gateway: MCP endpoint ") {
            mcp = rest.rsplit_once("/mcp/").unwrap().0.to_owned();
        }
        if let Some(rest) = line.strip_prefix("toolgate gateway: control API ") {
            control = rest.to_owned();
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Gateway {
        child,
        mcp,
        control,
        _dir: dir,
    }
}
