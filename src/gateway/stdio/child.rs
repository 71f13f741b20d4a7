//! A stdio MCP server as a child process: newline-delimited JSON-RPC on its stdin and
//! stdout (issue 19's upstream transport; the relay drives it).
//!
//! The child is started without a shell, with a clean environment plus the configured
//! one, in a process group of its own that is killed whole. Its answers are routed back
//! to the request that waits for them by JSON-RPC id; everything else it writes (server
//! requests such as sampling, notifications such as progress) goes to a sink. Its
//! stderr goes to the gateway's log, prefixed with the upstream's name and bounded in
//! rate, and its last lines are kept for the report when it dies. A child that exits or
//! writes something that is not JSON-RPC fails every request still waiting, with why.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};

/// How many of the child's last stderr lines are kept for its death report.
const STDERR_KEPT: usize = 20;
/// The most stderr lines logged per second; the rest are counted.
const STDERR_PER_SEC: u32 = 20;
/// The longest line read from the child (a larger one is a broken child).
const MAX_LINE: usize = 64 * 1024 * 1024;

/// How to start one stdio server.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildSpec {
    /// The upstream's name, for the log.
    pub name: String,
    /// The program and its arguments, run as they are: no shell.
    pub command: Vec<String>,
    /// Its whole environment (the configured one, expanded): nothing is inherited.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
}

/// `${VAR}` in a configured value, taken from the gateway's environment (so secrets stay
/// out of the config file); `$$` is a `$`. A variable that is not set is an error.
pub fn expand_env(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(open) = rest.strip_prefix('{') {
            let end = open
                .find('}')
                .ok_or_else(|| format!("{value:?}: `${{` without its `}}`"))?;
            let name = &open[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{value:?}: `${{{name}}}` is not a variable name"));
            }
            let found = lookup(name)
                .ok_or_else(|| format!("{value:?}: the environment variable {name} is not set"))?;
            out.push_str(&found);
            rest = &open[end + 1..];
        } else {
            return Err(format!(
                "{value:?}: a `$` is `${{VAR}}` or `$$` (for a `$` itself)"
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// How a child ended, for errors and `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// `exited with status 1`, `killed by signal 9`, `wrote a line that is not
    /// JSON-RPC`, …
    pub how: String,
    /// Its last stderr lines.
    pub stderr: Vec<String>,
    /// When it was found ended (before its report was put together).
    pub at: Instant,
}

impl Ended {
    fn now(how: impl Into<String>) -> Self {
        Self {
            how: how.into(),
            stderr: Vec::new(),
            at: Instant::now(),
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.how)?;
        if let Some(last) = self.stderr.last() {
            write!(f, "; its last stderr line: {last}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("the stdio server ended: {0}")]
    Ended(Ended),
    #[error("a message for a stdio server must be one JSON-RPC object: {0}")]
    NotJsonRpc(String),
    #[error("request id {0} is still running on the server; use another id")]
    DuplicateId(String),
    #[error("request id {0} is not a string or an integer, which is all a stdio upstream takes")]
    UnusableId(String),
}

/// How a request's id is known among the child's answers: a string, or an integer in
/// one spelling. Other ids (fractions, `8.0`, `1e1`, null) are refused, since a server
/// may answer them as another number or not at all.
pub fn request_key(id: &Value) -> Option<String> {
    match id {
        Value::String(_) => Some(id.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// The request an answer's id names; an integer written as `8.0` is 8.
fn answer_key(id: &Value) -> String {
    match id {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => id.to_string(),
        },
        _ => request_key(id).unwrap_or_else(|| id.to_string()),
    }
}

/// A message the child wrote: its line as it was, and what it says.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub raw: Bytes,
    pub value: Value,
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Result<Incoming, Ended>>>>>;

/// A running stdio server.
pub struct StdioChild {
    pid: u32,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    waiting: Waiters,
    ended: watch::Receiver<Option<Ended>>,
    reaped: Arc<std::sync::atomic::AtomicBool>,
}

impl StdioChild {
    /// Starts the server. What it writes that is not an answer goes to `sink`, called in
    /// the order the child wrote, and before the answer that followed it is delivered.
    pub fn spawn(
        spec: &ChildSpec,
        sink: impl FnMut(Incoming) + Send + 'static,
    ) -> Result<Self, StdioError> {
        let (program, args) = spec
            .command
            .split_first()
            .ok_or_else(|| StdioError::Spawn {
                command: String::new(),
                source: std::io::Error::other("the command is empty"),
            })?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        command.process_group(0);
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|source| StdioError::Spawn {
            command: spec.command.join(" "),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let waiting: Waiters = Arc::default();
        let (ended_tx, ended) = watch::channel(None);
        let last_stderr: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let reaped: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        tokio::spawn(log_stderr(spec.name.clone(), stderr, last_stderr.clone()));
        tokio::spawn(read_stdout(
            child,
            pid,
            stdout,
            waiting.clone(),
            sink,
            ended_tx,
            last_stderr,
            reaped.clone(),
        ));
        Ok(Self {
            pid,
            stdin: tokio::sync::Mutex::new(stdin),
            waiting,
            ended,
            reaped,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    /// Waits for it to end, and says how.
    pub fn wait_ended(&self) -> impl std::future::Future<Output = Ended> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            loop {
                if let Some(how) = ended.borrow_and_update().clone() {
                    return how;
                }
                if ended.changed().await.is_err() {
                    return Ended::now("ended");
                }
            }
        }
    }

    /// Sends a request (its bytes, as decided) and waits for its answer.
    pub async fn request(&self, bytes: &[u8]) -> Result<Incoming, StdioError> {
        let message: Value =
            serde_json::from_slice(bytes).map_err(|e| StdioError::NotJsonRpc(e.to_string()))?;
        let id = message
            .get("id")
            .filter(|_| message.get("method").is_some())
            .ok_or_else(|| StdioError::NotJsonRpc("a request has a method and an id".into()))?;
        let key = request_key(id).ok_or_else(|| StdioError::UnusableId(id.to_string()))?;
        self.request_as(&key, bytes).await
    }

    /// `request`, for a caller that has read the message's id already (`key`, from
    /// `request_key`). An id whose answer has not come yet, even for a request whose
    /// client went away, is refused: the answers could not be told apart.
    pub async fn request_as(&self, key: &str, bytes: &[u8]) -> Result<Incoming, StdioError> {
        let key = key.to_owned();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().expect("stdio waiters");
            if waiting.contains_key(&key) {
                return Err(StdioError::DuplicateId(key));
            }
            waiting.insert(key.clone(), tx);
        }
        if let Err(e) = self.send(bytes).await {
            self.waiting.lock().expect("stdio waiters").remove(&key);
            return Err(e);
        }
        match rx.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(ended)) => Err(StdioError::Ended(ended)),
            Err(_) => Err(StdioError::Ended(
                self.ended().unwrap_or_else(|| Ended::now("ended")),
            )),
        }
    }

    /// Writes one message (a notification, or an answer to the server's own request) as
    /// one line. The bytes are written as they are, but for line breaks, which in JSON
    /// can only be whitespace between tokens and which would end the line early: they are
    /// written as spaces.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), StdioError> {
        if let Some(ended) = self.ended() {
            return Err(StdioError::Ended(ended));
        }
        let mut line: Vec<u8> = bytes
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .collect();
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        let written = match stdin.as_mut() {
            Some(pipe) => pipe.write_all(&line).await.and(pipe.flush().await),
            None => Err(std::io::Error::other("its stdin is closed")),
        };
        written.map_err(|e| {
            StdioError::Ended(
                self.ended()
                    .unwrap_or_else(|| Ended::now(format!("its stdin could not be written: {e}"))),
            )
        })
    }

    /// Stops it: SIGKILL to its whole process group (what it started too).
    pub fn kill(&self) {
        // Once waited for, its pid may be another process's.
        if self.reaped.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        #[cfg(unix)]
        if self.pid != 0 {
            // SAFETY: kill(2) takes no pointers; a negative pid names the process group
            // this child leads (it was started with process_group(0)).
            unsafe {
                libc::kill(-(self.pid as i32), libc::SIGKILL);
            }
        }
    }
}

impl Drop for StdioChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Routes what the child writes: answers to their waiters, the rest to the sink. At
/// its end (exit, or a line that is not JSON-RPC) every waiter hears why.
#[allow(clippy::too_many_arguments)]
async fn read_stdout(
    child: Child,
    pid: u32,
    stdout: tokio::process::ChildStdout,
    waiting: Waiters,
    mut sink: impl FnMut(Incoming),
    ended: watch::Sender<Option<Ended>>,
    last_stderr: Arc<Mutex<VecDeque<String>>>,
    reaped: Arc<std::sync::atomic::AtomicBool>,
) {
    // The leader is watched apart from its stdout, which a process it started may hold
    // open after it died: its death ends the group, and so the stdout.
    let exited = {
        let reaped = reaped.clone();
        let mut child = child;
        let (exited, exit) = oneshot::channel();
        tokio::spawn(async move {
            let status = child.wait().await;
            let at = Instant::now();
            // Its pid still names the group while any of it lives, so this reaches
            // nobody else; with none left, there is nothing to kill.
            kill_group(pid);
            reaped.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = exited.send((status, at));
        });
        exit
    };
    let mut lines = BufReader::new(stdout);
    let mut line = Vec::new();
    let broken = loop {
        line.clear();
        match (&mut lines)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(format!("its stdout could not be read: {e}")),
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = match serde_json::from_slice::<Value>(&line) {
            Ok(m) if m.get("jsonrpc").and_then(Value::as_str) == Some("2.0") => m,
            _ => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                break Some(format!(
                    "it wrote a line that is not JSON-RPC: {:?}",
                    shown.trim_end()
                ));
            }
        };
        let is_answer = value.get("method").is_none()
            && (value.get("result").is_some() || value.get("error").is_some());
        let end = line.trim_ascii_end().len();
        let message = Incoming {
            raw: Bytes::copy_from_slice(&line[..end]),
            value,
        };
        if is_answer {
            let key = message.value.get("id").map(answer_key).unwrap_or_default();
            let waiter = waiting.lock().expect("stdio waiters").remove(&key);
            if let Some(waiter) = waiter {
                let _ = waiter.send(Ok(message));
            }
        } else {
            sink(message);
        }
    };
    // Its stdout is done, so it is done: its group goes, while the leader's pid is still
    // its own (not yet waited for).
    if !reaped.load(std::sync::atomic::Ordering::SeqCst) {
        kill_group(pid);
    }
    let (status, at) = match exited.await {
        Ok((status, at)) => (status, at),
        Err(_) => (
            Err(std::io::Error::other("its exit was not seen")),
            Instant::now(),
        ),
    };
    let how = match (broken, status) {
        (Some(why), _) => why,
        (None, Ok(status)) => describe(status),
        (None, Err(e)) => format!("its exit could not be read: {e}"),
    };
    // The last stderr lines may still be arriving: a moment for them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = Ended {
        how,
        at,
        stderr: last_stderr
            .lock()
            .expect("stderr")
            .iter()
            .cloned()
            .collect(),
    };
    let _ = ended.send(Some(report.clone()));
    let waiters: Vec<_> = waiting.lock().expect("stdio waiters").drain().collect();
    for (_, waiter) in waiters {
        let _ = waiter.send(Err(report.clone()));
    }
}

fn kill_group(pid: u32) {
    #[cfg(unix)]
    if pid != 0 {
        // SAFETY: as in `StdioChild::kill`.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited".to_owned(),
    }
}

/// The longest stderr line kept and logged; the rest of a longer one is skipped.
const MAX_STDERR_LINE: usize = 2000;

/// The child's stderr, line by line into the gateway's log (at most `STDERR_PER_SEC` a
/// second; the rest are counted), keeping the last lines. Any bytes are taken (invalid
/// UTF-8 is shown replaced) and a line is cut at `MAX_STDERR_LINE`, so the child can
/// always write and the gateway never holds more than a line.
async fn log_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    kept: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stderr);
    let (mut second, mut logged, mut dropped) = (Instant::now(), 0u32, 0u64);
    loop {
        let Some(line) = read_capped_line(&mut reader, MAX_STDERR_LINE).await else {
            return;
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        {
            let mut kept = kept.lock().expect("stderr");
            if kept.len() == STDERR_KEPT {
                kept.pop_front();
            }
            kept.push_back(line.clone());
        }
        if second.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(upstream = %name, dropped, "stdio server: stderr lines not logged (too many)");
            }
            (second, logged, dropped) = (Instant::now(), 0, 0);
        }
        if logged < STDERR_PER_SEC {
            logged += 1;
            tracing::info!(upstream = %name, "stdio server: {}", crate::gateway::escape::Escaped(&line));
        } else {
            dropped += 1;
        }
    }
}

/// The next line (without its `\n`), its first `max` bytes only; `None` at the end or
/// on a read error.
async fn read_capped_line(
    reader: &mut BufReader<tokio::process::ChildStderr>,
    max: usize,
) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let available = match reader.fill_buf().await {
            Ok([]) => return (!line.is_empty()).then_some(line),
            Ok(bytes) => bytes,
            Err(_) => return None,
        };
        let (chunk, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        let room = max.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = ends.unwrap_or(available.len());
        reader.consume(used);
        if ends.is_some() {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Some(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_from_the_environment_and_a_typo_is_named() {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer s3cret");
        assert_eq!(expand_env("cost $$5", env).unwrap(), "cost $5");
        assert_eq!(expand_env("plain", env).unwrap(), "plain");
        let err = expand_env("${TOKNE}", env).unwrap_err();
        assert!(err.contains("TOKNE is not set"), "{err}");
        assert!(
            expand_env("${TOKEN", env)
                .unwrap_err()
                .contains("without its")
        );
        assert!(
            expand_env("$TOKEN", env)
                .unwrap_err()
                .contains("`${VAR}` or `$$`")
        );
        assert!(
            expand_env("${A-B}", env)
                .unwrap_err()
                .contains("not a variable name")
        );
    }
}
