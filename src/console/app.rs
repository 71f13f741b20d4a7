//! The console's state: one owner, changed only by keys and network events, so every
//! behaviour can be tested without a terminal or a gateway.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::keymap::{Action, Keymap};
use crate::api::{HoldPhase, HoldView, Resolution};

/// How long a resolved hold stays on screen with its fate.
pub const FATE_LINGER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Live,
    Held,
    Tools,
}

/// What the header says about the connection. It must always be the truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Connected,
    Reconnecting {
        attempt: u32,
        next_try: DateTime<Utc>,
    },
    Disconnected {
        since: DateTime<Utc>,
    },
}

/// What the network task tells the app.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// The newest decisions, newest first, as `GET /decisions` gave them.
    Backfill(Vec<Value>),
    Holds(Vec<HoldView>),
    Connected {
        store_id: String,
    },
    /// One event frame from the stream.
    Event(Value),
    /// The store was recreated: forget everything and reload.
    Reset,
    Connection(Connection),
    /// The catalog, as `GET /tools` gave it.
    Tools(Vec<Value>),
    /// The answer to a risk edit: the `risk.changed` event, or why not.
    RiskEdited {
        upstream: String,
        tool: String,
        outcome: Result<Value, RiskFailure>,
    },
    /// The answer to an approve or deny.
    Resolved {
        call_id: String,
        outcome: Result<Box<HoldView>, ResolveFailure>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResolveFailure {
    /// Someone else won the race; this is how it ended.
    AlreadyResolved(Box<HoldView>),
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RiskFailure {
    /// Someone changed the tool first; this is the tool as it is now.
    Stale(Box<Value>),
    Other(String),
}

/// What the app asks of the outside world.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Resolve {
        call_id: String,
        approve: bool,
        reason: Option<String>,
    },
    FetchTools,
    SetRisk {
        upstream: String,
        tool: String,
        risk: crate::api::Risk,
        expected_version: u64,
    },
    Quit,
}

/// One decision row of the live view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: u64,
    pub event: Value,
}

impl Row {
    pub fn call_id(&self) -> &str {
        self.event["call_id"].as_str().unwrap_or("")
    }
}

/// A resolved hold, kept on screen for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Fate {
    pub resolution: Resolution,
    pub by: String,
    pub at: Instant,
}

/// The confirm dialog for an approve or deny. Its default answer is Cancel.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub approve: bool,
    pub hold: HoldView,
    pub reason: String,
    /// Typing the reason; `y` types a `y` then, and Enter ends the reason.
    pub editing: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    /// Typing a `:` command.
    Command(String),
    Help,
    Confirm(Box<Confirm>),
}

pub struct App {
    pub view: View,
    pub mode: Mode,
    pub keymap: Keymap,
    pub read_only: bool,
    pub connection: Connection,
    pub store_id: Option<String>,
    ring: VecDeque<Row>,
    ring_size: usize,
    /// The highest seq seen; the stream resumes after it.
    pub max_seq: u64,
    /// Following the newest row, or paused at `selected` (an index from the newest).
    pub follow: bool,
    pub selected: usize,
    /// Rows that arrived while paused.
    pub new_while_paused: usize,
    pub holds: Vec<HoldView>,
    pub held_selected: usize,
    pub tools: Vec<Value>,
    pub tools_selected: usize,
    /// Each tool's row before an edit that is not confirmed yet, to roll back to.
    pending_edits: HashMap<(String, String), Value>,
    /// The catalog changed; the main loop fetches it again.
    pub want_tools: bool,
    pub fates: HashMap<String, Fate>,
    /// How each call that went upstream ended, by call id, as `call.completed` said.
    pub completions: HashMap<String, Value>,
    pub detail: bool,
    /// A short message for the status line, and when it was set.
    pub flash: Option<(String, Instant)>,
    /// Set when the screen must be drawn again.
    pub dirty: bool,
    /// A new hold arrived since the last bell.
    pub ring_bell: bool,
}

impl App {
    pub fn new(ring_size: usize, read_only: bool) -> Self {
        Self {
            view: View::Live,
            mode: Mode::Normal,
            keymap: Keymap::default(),
            read_only,
            connection: Connection::Connecting,
            store_id: None,
            ring: VecDeque::with_capacity(ring_size.min(4096)),
            ring_size: ring_size.max(1),
            max_seq: 0,
            follow: true,
            selected: 0,
            new_while_paused: 0,
            holds: Vec::new(),
            held_selected: 0,
            tools: Vec::new(),
            tools_selected: 0,
            pending_edits: HashMap::new(),
            want_tools: false,
            fates: HashMap::new(),
            completions: HashMap::new(),
            detail: false,
            flash: None,
            dirty: true,
            ring_bell: false,
        }
    }

    /// Rows, newest first.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.ring.iter().rev()
    }

    pub fn row_count(&self) -> usize {
        self.ring.len()
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.rows().nth(if self.follow { 0 } else { self.selected })
    }

    pub fn pending_count(&self) -> usize {
        self.holds.iter().filter(|h| h.resolution.is_none()).count()
    }

    pub fn is_connected(&self) -> bool {
        self.connection == Connection::Connected
    }

    fn say(&mut self, message: impl Into<String>) {
        self.flash = Some((message.into(), Instant::now()));
    }

    /// Adds a decision row unless its seq was seen: the seam after a reconnect may
    /// repeat what a backfill brought, and must never show a row twice.
    fn push_decision(&mut self, seq: u64, event: Value) {
        if seq <= self.max_seq {
            return;
        }
        self.max_seq = seq;
        if self.ring.len() == self.ring_size {
            // What the ring forgets, the side tables forget too, so memory stays bounded.
            if let Some(old) = self.ring.pop_front() {
                let held = self.holds.iter().any(|h| h.call_id == old.call_id());
                if !held {
                    self.fates.remove(old.call_id());
                }
                self.completions.remove(old.call_id());
            }
            if !self.follow && self.selected > 0 {
                // The paused row keeps its place among the newest rows it can.
                self.selected = self.selected.min(self.ring.len().saturating_sub(1));
            }
        }
        self.ring.push_back(Row { seq, event });
        if !self.follow {
            self.selected += 1;
            self.new_while_paused += 1;
        }
    }

    pub fn on_net(&mut self, event: NetEvent) {
        self.dirty = true;
        match event {
            NetEvent::Backfill(newest_first) => {
                for d in newest_first.into_iter().rev() {
                    let seq = d["seq"].as_u64().unwrap_or(0);
                    if let Some(resolution) =
                        d["hold"]["resolution"].as_str().and_then(Resolution::parse)
                    {
                        let by = d["hold"]["resolved_by"].as_str().unwrap_or("").to_owned();
                        let call_id = d["call_id"].as_str().unwrap_or("").to_owned();
                        // Old fates are shown in the outcome cell, not lingering in the queue.
                        self.fates.insert(
                            call_id,
                            Fate {
                                resolution,
                                by,
                                at: Instant::now() - FATE_LINGER,
                            },
                        );
                    }
                    self.push_decision(seq, d);
                }
            }
            NetEvent::Holds(holds) => {
                // Keep the lingering fates; the rest is what the gateway says now.
                let lingering: Vec<HoldView> = self
                    .holds
                    .drain(..)
                    .filter(|h| h.resolution.is_some())
                    .collect();
                self.holds = holds;
                self.holds.extend(lingering);
                self.sort_holds();
            }
            NetEvent::Connected { store_id } => {
                self.store_id = Some(store_id);
                self.connection = Connection::Connected;
            }
            NetEvent::Event(e) => self.on_event(e),
            NetEvent::Reset => {
                self.ring.clear();
                self.max_seq = 0;
                self.holds.clear();
                self.fates.clear();
                self.store_id = None;
                self.follow = true;
                self.selected = 0;
                self.new_while_paused = 0;
                self.say("the gateway's store was recreated; reloaded");
            }
            NetEvent::Connection(c) => self.connection = c,
            NetEvent::Tools(tools) => {
                self.tools = tools;
                self.tools_selected = self.tools_selected.min(self.tools.len().saturating_sub(1));
            }
            NetEvent::RiskEdited {
                upstream,
                tool,
                outcome,
            } => {
                let before = self.pending_edits.remove(&(upstream.clone(), tool.clone()));
                match outcome {
                    Ok(event) => {
                        if let Some(row) = self.tool_mut(&upstream, &tool) {
                            row["version"] = event["version"].clone();
                        }
                        self.say(format!(
                            "{upstream}/{tool} is now {}",
                            event["to"].as_str().unwrap_or("?")
                        ));
                    }
                    Err(RiskFailure::Stale(current)) => {
                        let by = current["updated_by"]
                            .as_str()
                            .unwrap_or("someone")
                            .to_owned();
                        let risk = current["risk"].as_str().unwrap_or("?").to_owned();
                        if let Some(row) = self.tool_mut(&upstream, &tool) {
                            *row = (*current).clone();
                            row["calls"] =
                                before.as_ref().map_or(Value::Null, |b| b["calls"].clone());
                        }
                        self.say(format!(
                            "not changed: {by} set {tool} to {risk} first; try again"
                        ));
                    }
                    Err(RiskFailure::Other(message)) => {
                        if let (Some(before), Some(row)) = (before, self.tool_mut(&upstream, &tool))
                        {
                            *row = before;
                        }
                        self.say(format!("not changed: {message}"));
                    }
                }
            }
            NetEvent::Resolved { call_id, outcome } => match outcome {
                Ok(hold) => {
                    let hold = *hold;
                    let verb = hold.resolution.map_or("resolved", Resolution::as_str);
                    self.say(format!("{verb} {}", short(&call_id)));
                    self.record_resolution(&hold);
                }
                Err(ResolveFailure::AlreadyResolved(hold)) => {
                    // A race lost is news, not an error.
                    let how = hold.resolution.map_or("resolved", Resolution::as_str);
                    let who = hold.resolved_by.clone().unwrap_or_else(|| "someone".into());
                    self.say(format!("already {how} by {who}"));
                    self.record_resolution(&hold);
                }
                Err(ResolveFailure::Other(message)) => {
                    self.say(format!("could not resolve {}: {message}", short(&call_id)))
                }
            },
        }
    }

    fn on_event(&mut self, e: Value) {
        let seq = e["seq"].as_u64().unwrap_or(0);
        match e["kind"].as_str() {
            Some("decision") => self.push_decision(seq, e),
            Some("hold.created") => {
                self.max_seq = self.max_seq.max(seq);
                let call_id = e["call_id"].as_str().unwrap_or("").to_owned();
                let decision = self
                    .ring
                    .iter()
                    .rev()
                    .find(|r| r.call_id() == call_id)
                    .map(|r| r.event.clone());
                if let Some(call) = decision.and_then(|d| serde_json::from_value(d).ok())
                    && !self.holds.iter().any(|h| h.call_id == call_id)
                {
                    self.holds.push(HoldView {
                        call_id,
                        phase: HoldPhase::Waiting,
                        expires_at: e["expires_at"].as_str().unwrap_or("").to_owned(),
                        call,
                        resolution: None,
                        resolved_by: None,
                        resolved_at: None,
                        reason: None,
                    });
                    self.sort_holds();
                    self.ring_bell = true;
                }
            }
            Some("hold.resolved") => {
                self.max_seq = self.max_seq.max(seq);
                let call_id = e["call_id"].as_str().unwrap_or("");
                if let Some(resolution) = e["resolution"].as_str().and_then(Resolution::parse) {
                    let by = e["by"].as_str().unwrap_or("").to_owned();
                    // That an approved call ran is its consequence, not a new fate: the
                    // screen keeps who approved it.
                    let approved =
                        self.fates.get(call_id).map(|f| f.resolution) == Some(Resolution::Approved);
                    if !(resolution == Resolution::Consumed && approved) {
                        let fate = Fate {
                            resolution,
                            by: by.clone(),
                            at: Instant::now(),
                        };
                        self.fates.insert(call_id.to_owned(), fate);
                        if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == call_id) {
                            h.resolution = Some(resolution);
                            h.resolved_by = Some(by);
                        }
                    }
                }
            }
            Some("risk.changed" | "tool.discovered" | "tool.changed") => {
                self.max_seq = self.max_seq.max(seq);
                self.want_tools = true;
            }
            Some("call.completed") => {
                self.max_seq = self.max_seq.max(seq);
                if let Some(call_id) = e["call_id"].as_str()
                    && self.ring.iter().any(|r| r.call_id() == call_id)
                {
                    self.completions.insert(call_id.to_owned(), e);
                }
            }
            _ => self.max_seq = self.max_seq.max(seq),
        }
    }

    fn tool_mut(&mut self, upstream: &str, tool: &str) -> Option<&mut Value> {
        self.tools
            .iter_mut()
            .find(|t| t["upstream"] == upstream && t["name"] == tool)
    }

    /// Shows the new class at once and asks the gateway; the answer confirms or undoes it.
    fn edit_risk(&mut self, risk: crate::api::Risk) -> Vec<Command> {
        let Some(row) = self.tools.get_mut(self.tools_selected) else {
            self.say("no tool selected");
            return Vec::new();
        };
        let upstream = row["upstream"].as_str().unwrap_or("").to_owned();
        let tool = row["name"].as_str().unwrap_or("").to_owned();
        let expected_version = row["version"].as_u64().unwrap_or(0);
        if row["risk"] == risk.as_str() {
            self.say(format!("{tool} is already {risk}"));
            return Vec::new();
        }
        let before = row.clone();
        row["risk"] = Value::String(risk.as_str().to_owned());
        row["source"] = Value::String("saving…".into());
        self.pending_edits
            .insert((upstream.clone(), tool.clone()), before);
        vec![Command::SetRisk {
            upstream,
            tool,
            risk,
            expected_version,
        }]
    }

    fn record_resolution(&mut self, hold: &HoldView) {
        if let Some(resolution) = hold.resolution {
            let by = hold.resolved_by.clone().unwrap_or_default();
            self.fates.insert(
                hold.call_id.clone(),
                Fate {
                    resolution,
                    by: by.clone(),
                    at: Instant::now(),
                },
            );
            if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == hold.call_id) {
                h.resolution = Some(resolution);
                h.resolved_by = Some(by);
            }
        }
    }

    fn sort_holds(&mut self) {
        self.holds.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
    }

    /// Drops resolved holds that have lingered long enough; true if any went.
    pub fn expire_fates(&mut self, now: Instant) -> bool {
        let before = self.holds.len();
        let fates = &self.fates;
        self.holds.retain(|h| {
            h.resolution.is_none()
                || fates
                    .get(&h.call_id)
                    .is_none_or(|f| now.duration_since(f.at) < FATE_LINGER)
        });
        self.held_selected = self.held_selected.min(self.holds.len().saturating_sub(1));
        before != self.holds.len()
    }

    pub fn on_key(&mut self, key: crossterm::event::KeyEvent) -> Vec<Command> {
        self.dirty = true;
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Command(text) => self.on_command_key(text, key),
            Mode::Help => Vec::new(),
            Mode::Confirm(confirm) => self.on_confirm_key(*confirm, key),
            Mode::Normal => match self.keymap.action(&key) {
                Some(action) => self.act(action),
                None => Vec::new(),
            },
        }
    }

    fn on_command_key(
        &mut self,
        mut text: String,
        key: crossterm::event::KeyEvent,
    ) -> Vec<Command> {
        use crossterm::event::KeyCode;
        match key.code {
            KeyCode::Esc => {}
            KeyCode::Enter => return self.run_command(text.trim()),
            KeyCode::Backspace => {
                text.pop();
                self.mode = Mode::Command(text);
            }
            KeyCode::Tab => self.mode = Mode::Command(complete(&text)),
            KeyCode::Char(c) => {
                text.push(c);
                self.mode = Mode::Command(text);
            }
            _ => self.mode = Mode::Command(text),
        }
        Vec::new()
    }

    fn run_command(&mut self, command: &str) -> Vec<Command> {
        match command {
            "live" => self.view = View::Live,
            "held" => self.view = View::Held,
            "tools" => {
                self.view = View::Tools;
                return vec![Command::FetchTools];
            }
            "q" | "quit" => return vec![Command::Quit],
            "" => {}
            other => self.say(format!(
                "unknown command :{other} (try :live, :held, :tools, :q)"
            )),
        }
        Vec::new()
    }

    fn on_confirm_key(
        &mut self,
        mut confirm: Confirm,
        key: crossterm::event::KeyEvent,
    ) -> Vec<Command> {
        use crossterm::event::KeyCode;
        if confirm.editing {
            match key.code {
                KeyCode::Enter | KeyCode::Esc => confirm.editing = false,
                KeyCode::Backspace => {
                    confirm.reason.pop();
                }
                KeyCode::Char(c) => confirm.reason.push(c),
                _ => {}
            }
            self.mode = Mode::Confirm(Box::new(confirm));
            return Vec::new();
        }
        match key.code {
            // Only an explicit `y` confirms; Enter takes the default, which is Cancel.
            KeyCode::Char('y') => {
                let reason = Some(confirm.reason.trim().to_owned()).filter(|r| !r.is_empty());
                let verb = if confirm.approve {
                    "approving"
                } else {
                    "denying"
                };
                self.say(format!("{verb} {}…", short(&confirm.hold.call_id)));
                return vec![Command::Resolve {
                    call_id: confirm.hold.call_id,
                    approve: confirm.approve,
                    reason,
                }];
            }
            KeyCode::Char('r') => {
                confirm.editing = true;
                self.mode = Mode::Confirm(Box::new(confirm));
            }
            KeyCode::Enter | KeyCode::Esc | KeyCode::Char('n') => self.say("cancelled"),
            _ => self.mode = Mode::Confirm(Box::new(confirm)),
        }
        Vec::new()
    }

    fn act(&mut self, action: Action) -> Vec<Command> {
        if action.mutates() && self.read_only {
            self.say("read-only: approving and denying are off");
            return Vec::new();
        }
        match action {
            Action::Quit => return vec![Command::Quit],
            Action::Command => self.mode = Mode::Command(String::new()),
            Action::Help => self.mode = Mode::Help,
            Action::Back => {
                if self.detail {
                    self.detail = false;
                } else if self.view != View::Live {
                    self.view = View::Live;
                }
            }
            Action::Up => self.move_selection(1),
            Action::Down => self.move_selection(-1),
            Action::Follow => {
                self.follow = true;
                self.selected = 0;
                self.new_while_paused = 0;
            }
            Action::Detail => self.detail = !self.detail,
            Action::SetRead
            | Action::SetWrite
            | Action::SetDestructive
            | Action::SetUnclassified => {
                if self.view != View::Tools {
                    return Vec::new();
                }
                return self.edit_risk(action.risk().expect("a risk action"));
            }
            Action::Approve | Action::Deny => {
                if self.view != View::Held {
                    self.view = View::Held;
                    return Vec::new();
                }
                match self.holds.get(self.held_selected) {
                    Some(h) if h.resolution.is_none() => {
                        let approve = action == Action::Approve;
                        self.mode = Mode::Confirm(Box::new(Confirm {
                            approve,
                            hold: h.clone(),
                            reason: String::new(),
                            // A deny asks for its reason first.
                            editing: !approve,
                        }));
                    }
                    Some(_) => self.say("that hold is already resolved"),
                    None => self.say("no held call selected"),
                }
            }
        }
        Vec::new()
    }

    /// Moves toward older rows (`by > 0`) or newer ones; leaving the newest pauses.
    fn move_selection(&mut self, by: i64) {
        match self.view {
            View::Live => {
                let last = self.ring.len().saturating_sub(1) as i64;
                let next = (self.selected as i64 + by).clamp(0, last) as usize;
                if self.follow && by > 0 {
                    self.follow = false;
                    self.new_while_paused = 0;
                }
                self.selected = next;
            }
            View::Held => {
                let last = self.holds.len().saturating_sub(1) as i64;
                // In the queue, down means later expiry.
                self.held_selected = (self.held_selected as i64 - by).clamp(0, last) as usize;
            }
            View::Tools => {
                let last = self.tools.len().saturating_sub(1) as i64;
                self.tools_selected = (self.tools_selected as i64 - by).clamp(0, last) as usize;
            }
        }
    }
}

/// Completes a `:` command from its first letters.
fn complete(text: &str) -> String {
    ["live", "held", "tools", "quit"]
        .into_iter()
        .find(|c| c.starts_with(text))
        .map_or_else(|| text.to_owned(), String::from)
}

pub fn short(call_id: &str) -> &str {
    call_id
        .get(call_id.len().saturating_sub(8)..)
        .unwrap_or(call_id)
}

#[cfg(test)]
mod tests;
