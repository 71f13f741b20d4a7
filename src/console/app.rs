//! The console's state: one owner, changed only by keys and network events, so every
//! behaviour can be tested without a terminal or a gateway.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::filter::{Field, Filter, Filterable};
use super::keymap::{Action, Keymap};
use crate::api::{HoldPhase, HoldView, Resolution, Risk};

/// How long a resolved hold stays on screen with its fate.
pub const FATE_LINGER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        risk: Risk,
        expected_version: u64,
    },
    /// Connect to another context from the config.
    SwitchContext(String),
    SetTheme(String),
    /// Put text on the clipboard with OSC 52, which works over SSH.
    Copy(String),
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

/// How a decision row or a hold names its caller: `user:alice`, `token:ci-bot`.
pub fn identity_label(row: &Value) -> String {
    let kind = match row["identity"]["kind"].as_str() {
        Some("oauth") => "user",
        Some("api_token") => "token",
        _ => "?",
    };
    format!("{kind}:{}", row["identity"]["name"].as_str().unwrap_or("?"))
}

pub fn target_label(row: &Value) -> String {
    match (row["target"]["kind"].as_str(), row["target"]["id"].as_str()) {
        (Some(k), Some(id)) => format!("{k}:{id}"),
        _ => String::new(),
    }
}

/// A decision, or a tool row: both are JSON objects with these names.
impl Filterable for Value {
    fn field(&self, field: Field) -> Option<String> {
        let tool_row = self.get("name").is_some();
        match field {
            Field::Tool => self[if tool_row { "name" } else { "tool" }]
                .as_str()
                .map(str::to_owned),
            Field::Upstream => self["upstream"].as_str().map(str::to_owned),
            Field::Risk => self["risk"].as_str().map(str::to_owned),
            Field::Outcome => self["outcome"].as_str().map(str::to_owned),
            Field::Identity => self.get("identity").map(|_| identity_label(self)),
        }
    }

    fn text(&self) -> String {
        format!(
            "{} {} {} {}",
            target_label(self),
            self["call_id"].as_str().unwrap_or(""),
            self["reason"].as_str().unwrap_or(""),
            self["suggested_risk"].as_str().unwrap_or("")
        )
    }
}

impl Filterable for HoldView {
    fn field(&self, field: Field) -> Option<String> {
        match field {
            Field::Tool => Some(self.call.tool.clone()),
            Field::Upstream => Some(self.call.upstream.clone()),
            Field::Risk => Some(self.call.risk.as_str().to_owned()),
            Field::Outcome => Some("hold".into()),
            Field::Identity => Some(format!(
                "{}:{}",
                match self.call.identity.kind {
                    crate::api::IdentityKind::Oauth => "user",
                    crate::api::IdentityKind::ApiToken => "token",
                },
                self.call.identity.name
            )),
        }
    }

    fn text(&self) -> String {
        let call = serde_json::to_value(&self.call).unwrap_or_default();
        format!("{} {}", target_label(&call), self.call_id)
    }
}

/// A resolved hold, kept on screen for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Fate {
    pub resolution: Resolution,
    pub by: String,
    pub at: Instant,
}

/// The confirm dialog for an approve or deny, of one hold or of every marked one.
/// Its default answer is Cancel.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub approve: bool,
    pub holds: Vec<HoldView>,
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
    /// Typing a `/` filter; it applies as it is typed. Esc goes back to `before`.
    Filter {
        text: String,
        before: String,
        error: Option<String>,
    },
    /// Choosing the selected tool's class from a list.
    ClassPicker {
        index: usize,
    },
}

/// The classes in the order the class picker lists them.
pub const CLASSES: [Risk; 4] = [
    Risk::Read,
    Risk::Write,
    Risk::Destructive,
    Risk::Unclassified,
];

/// A view's filter as typed, and parsed.
#[derive(Debug, Clone, Default)]
pub struct ViewFilter {
    pub text: String,
    pub filter: Filter,
}

/// The answers a bulk decision still waits for, to sum them up in one line.
#[derive(Debug, Clone, Default)]
struct Bulk {
    approve: bool,
    waiting: HashSet<String>,
    done: usize,
    lost: Vec<String>,
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
    /// Each view's `/` filter.
    filters: HashMap<View, ViewFilter>,
    /// Held calls marked for one bulk decision, by call id.
    pub marked: BTreeSet<String>,
    bulk: Option<Bulk>,
    /// The context connected to, when it came from the config.
    pub context: Option<String>,
    /// What `:ctx` and `:theme` complete.
    pub context_names: Vec<String>,
    pub theme_names: Vec<String>,
    /// A first hint for the status line, gone with the first key.
    pub hint: Option<String>,
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
            filters: HashMap::new(),
            marked: BTreeSet::new(),
            bulk: None,
            context: None,
            context_names: Vec::new(),
            theme_names: Vec::new(),
            hint: None,
        }
    }

    /// The current view's filter text, if one is set.
    pub fn filter_text(&self, view: View) -> Option<&str> {
        self.filters
            .get(&view)
            .map(|f| f.text.as_str())
            .filter(|t| !t.is_empty())
    }

    fn filter_of(&self, view: View) -> Option<&Filter> {
        self.filters
            .get(&view)
            .map(|f| &f.filter)
            .filter(|f| !f.is_empty())
    }

    fn shows(&self, view: View, row: &impl Filterable) -> bool {
        self.filter_of(view).is_none_or(|f| f.matches(row))
    }

    /// Rows the live filter lets through, newest first.
    pub fn visible_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows().filter(|r| self.shows(View::Live, &r.event))
    }

    /// Holds the held view's filter lets through, in queue order.
    pub fn visible_holds(&self) -> Vec<&HoldView> {
        self.holds
            .iter()
            .filter(|h| self.shows(View::Held, *h))
            .collect()
    }

    pub fn selected_hold(&self) -> Option<&HoldView> {
        self.visible_holds().get(self.held_selected).copied()
    }

    /// Indexes into `tools` of the rows the tools filter lets through.
    pub fn visible_tools(&self) -> Vec<usize> {
        (0..self.tools.len())
            .filter(|&i| self.shows(View::Tools, &self.tools[i]))
            .collect()
    }

    fn selected_tool_index(&self) -> Option<usize> {
        self.visible_tools().get(self.tools_selected).copied()
    }

    /// Shows a message on the status line.
    pub fn notice(&mut self, message: impl Into<String>) {
        self.dirty = true;
        self.say(message);
    }

    /// Starts over for another gateway: nothing seen on the old one may look like it
    /// belongs to the new one. Filters and the current view stay, as the operator set them.
    pub fn enter_context(&mut self, name: &str, read_only: bool) {
        let ring_size = self.ring_size;
        let keep = App {
            view: self.view,
            keymap: self.keymap.clone(),
            filters: std::mem::take(&mut self.filters),
            context_names: std::mem::take(&mut self.context_names),
            theme_names: std::mem::take(&mut self.theme_names),
            context: Some(name.to_owned()),
            ..App::new(ring_size, read_only)
        };
        *self = keep;
        self.say(format!(
            "context {name}{}",
            if read_only { " (read-only)" } else { "" }
        ));
    }

    /// Rows, newest first.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.ring.iter().rev()
    }

    pub fn row_count(&self) -> usize {
        self.ring.len()
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.visible_rows()
            .nth(if self.follow { 0 } else { self.selected })
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
        let shown = self.shows(View::Live, &event);
        self.ring.push_back(Row { seq, event });
        if !self.follow && shown {
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
            NetEvent::Resolved { call_id, outcome } => {
                let message = match &outcome {
                    Ok(hold) => {
                        let verb = hold.resolution.map_or("resolved", Resolution::as_str);
                        self.record_resolution(hold);
                        Ok(format!("{verb} {}", short(&call_id)))
                    }
                    Err(ResolveFailure::AlreadyResolved(hold)) => {
                        // A race lost is news, not an error.
                        let how = hold.resolution.map_or("resolved", Resolution::as_str);
                        let who = hold.resolved_by.clone().unwrap_or_else(|| "someone".into());
                        self.record_resolution(hold);
                        Err(format!("already {how} by {who}"))
                    }
                    Err(ResolveFailure::Other(message)) => {
                        Err(format!("could not resolve {}: {message}", short(&call_id)))
                    }
                };
                let in_bulk = self
                    .bulk
                    .as_mut()
                    .is_some_and(|b| b.waiting.remove(&call_id));
                match self.bulk.as_mut() {
                    Some(bulk) if in_bulk => {
                        match message {
                            Ok(_) => bulk.done += 1,
                            Err(m) => bulk.lost.push(m),
                        }
                        if bulk.waiting.is_empty() {
                            let bulk = self.bulk.take().unwrap_or_default();
                            self.say(bulk.summary());
                        }
                    }
                    _ => self.say(message.unwrap_or_else(|e| e)),
                }
            }
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
    fn edit_risk(&mut self, risk: Risk) -> Vec<Command> {
        let Some(row) = self
            .selected_tool_index()
            .and_then(|i| self.tools.get_mut(i))
        else {
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
        let still: HashSet<&str> = self
            .holds
            .iter()
            .filter(|h| h.resolution.is_none())
            .map(|h| h.call_id.as_str())
            .collect();
        self.marked.retain(|id| still.contains(id.as_str()));
        let visible = self.visible_holds().len();
        self.held_selected = self.held_selected.min(visible.saturating_sub(1));
        before != self.holds.len()
    }

    pub fn on_key(&mut self, key: crossterm::event::KeyEvent) -> Vec<Command> {
        self.dirty = true;
        self.hint = None;
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Command(text) => self.on_command_key(text, key),
            Mode::Help => Vec::new(),
            Mode::Confirm(confirm) => self.on_confirm_key(*confirm, key),
            Mode::Filter {
                text,
                before,
                error,
            } => self.on_filter_key(text, before, error, key),
            Mode::ClassPicker { index } => self.on_class_key(index, key),
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
            KeyCode::Tab => {
                let (completed, candidates) =
                    complete(&text, &self.context_names, &self.theme_names);
                if candidates.len() > 1 {
                    self.say(candidates.join("  "));
                }
                self.mode = Mode::Command(completed);
            }
            KeyCode::Char(c) => {
                text.push(c);
                self.mode = Mode::Command(text);
            }
            _ => self.mode = Mode::Command(text),
        }
        Vec::new()
    }

    fn run_command(&mut self, command: &str) -> Vec<Command> {
        let (name, argument) = match command.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (command, ""),
        };
        match (name, argument) {
            ("live", "") => self.view = View::Live,
            ("held", "") => self.view = View::Held,
            ("tools", "") => {
                self.view = View::Tools;
                return vec![Command::FetchTools];
            }
            ("q" | "quit", "") => return vec![Command::Quit],
            ("ctx", "") => self.say(match (&self.context, self.context_names.is_empty()) {
                (_, true) => "no contexts: add [[context]] tables to config.toml".to_owned(),
                (Some(current), false) => format!(
                    "contexts: {} (now {current})",
                    self.context_names.join(", ")
                ),
                (None, false) => format!("contexts: {}", self.context_names.join(", ")),
            }),
            ("ctx", name) if self.context_names.iter().any(|c| c == name) => {
                self.say(format!("switching to {name}…"));
                return vec![Command::SwitchContext(name.to_owned())];
            }
            ("ctx", name) => self.say(format!(
                "no context is named {name:?} (the contexts: {})",
                if self.context_names.is_empty() {
                    "none".to_owned()
                } else {
                    self.context_names.join(", ")
                }
            )),
            ("theme", "") => self.say(format!("themes: {}", self.theme_names.join(", "))),
            ("theme", name) => return vec![Command::SetTheme(name.to_owned())],
            ("", "") => {}
            _ => self.say(format!(
                "unknown command :{command} (try :live, :held, :tools, :ctx NAME, :theme NAME, :q)"
            )),
        }
        Vec::new()
    }

    fn on_filter_key(
        &mut self,
        mut text: String,
        before: String,
        mut error: Option<String>,
        key: crossterm::event::KeyEvent,
    ) -> Vec<Command> {
        use crossterm::event::KeyCode;
        match key.code {
            // `before` parsed when it was set, so putting it back cannot fail.
            KeyCode::Esc => {
                let _ = self.set_filter(&before);
                return Vec::new();
            }
            KeyCode::Enter => {
                if let Some(e) = error {
                    self.say(format!("filter not applied: {e}"));
                    let _ = self.set_filter(&before);
                }
                return Vec::new();
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        // The view follows the typing; a token that does not parse yet keeps the last
        // filter that did, and says why.
        error = self.set_filter(&text).err();
        self.mode = Mode::Filter {
            text,
            before,
            error,
        };
        Vec::new()
    }

    /// Applies `text` as the current view's filter, unless it does not parse.
    pub fn set_filter(&mut self, text: &str) -> Result<(), String> {
        let filter = Filter::parse(text).map_err(|e| e.to_string())?;
        self.filters.insert(
            self.view,
            ViewFilter {
                text: text.trim().to_owned(),
                filter,
            },
        );
        // Selections index the filtered rows; start again from the top.
        match self.view {
            View::Live => {
                self.follow = true;
                self.selected = 0;
                self.new_while_paused = 0;
            }
            View::Held => self.held_selected = 0,
            View::Tools => self.tools_selected = 0,
        }
        Ok(())
    }

    fn on_class_key(&mut self, mut index: usize, key: crossterm::event::KeyEvent) -> Vec<Command> {
        use crossterm::event::KeyCode;
        let action = self.keymap.action(&key);
        if let Some(risk) = action.and_then(Action::risk) {
            return self.edit_risk(risk);
        }
        match action {
            Some(Action::Up) => index = index.saturating_sub(1),
            Some(Action::Down) => index = (index + 1).min(CLASSES.len() - 1),
            _ => match key.code {
                KeyCode::Enter => return self.edit_risk(CLASSES[index]),
                KeyCode::Esc => return Vec::new(),
                _ => {}
            },
        }
        self.mode = Mode::ClassPicker { index };
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
                match confirm.holds.as_slice() {
                    [one] => self.say(format!("{verb} {}…", short(&one.call_id))),
                    many => {
                        self.say(format!("{verb} {} held calls…", many.len()));
                        self.bulk = Some(Bulk {
                            approve: confirm.approve,
                            waiting: many.iter().map(|h| h.call_id.clone()).collect(),
                            ..Bulk::default()
                        });
                        self.marked.clear();
                    }
                }
                return confirm
                    .holds
                    .into_iter()
                    .map(|h| Command::Resolve {
                        call_id: h.call_id,
                        approve: confirm.approve,
                        reason: reason.clone(),
                    })
                    .collect();
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
            self.say("read-only: approving, denying and class edits are off");
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
            Action::Filter => {
                let before = self.filter_text(self.view).unwrap_or("").to_owned();
                self.mode = Mode::Filter {
                    text: before.clone(),
                    before,
                    error: None,
                };
            }
            Action::CopyId | Action::CopyJson => return self.copy(action == Action::CopyJson),
            Action::Mark => {
                if self.view != View::Held {
                    return Vec::new();
                }
                match self.selected_hold() {
                    Some(h) if h.resolution.is_none() => {
                        let id = h.call_id.clone();
                        if !self.marked.remove(&id) {
                            self.marked.insert(id);
                        }
                        self.move_selection(-1);
                    }
                    Some(_) => self.say("that hold is already resolved"),
                    None => self.say("no held call selected"),
                }
            }
            Action::EditClass => {
                if self.view != View::Tools {
                    return Vec::new();
                }
                let Some(i) = self.selected_tool_index() else {
                    self.say("no tool selected");
                    return Vec::new();
                };
                let index = CLASSES
                    .iter()
                    .position(|r| self.tools[i]["risk"] == r.as_str())
                    .unwrap_or(0);
                self.mode = Mode::ClassPicker { index };
            }
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
                let approve = action == Action::Approve;
                // Marked holds are decided together; otherwise the selected one.
                let holds: Vec<HoldView> = if self.marked.is_empty() {
                    match self.selected_hold() {
                        Some(h) if h.resolution.is_none() => vec![h.clone()],
                        Some(_) => {
                            self.say("that hold is already resolved");
                            return Vec::new();
                        }
                        None => {
                            self.say("no held call selected");
                            return Vec::new();
                        }
                    }
                } else {
                    self.holds
                        .iter()
                        .filter(|h| h.resolution.is_none() && self.marked.contains(&h.call_id))
                        .cloned()
                        .collect()
                };
                if holds.is_empty() {
                    self.marked.clear();
                    self.say("the marked holds were resolved meanwhile");
                    return Vec::new();
                }
                self.mode = Mode::Confirm(Box::new(Confirm {
                    approve,
                    holds,
                    reason: String::new(),
                    // A deny asks for its reason first.
                    editing: !approve,
                }));
            }
        }
        Vec::new()
    }

    /// The selected row's call id (a tool's `upstream/name`), or its whole JSON.
    fn copy(&mut self, json: bool) -> Vec<Command> {
        let picked: Option<(String, String)> = match self.view {
            View::Live => self
                .selected_row()
                .map(|r| (r.call_id().to_owned(), r.event.to_string())),
            View::Held => self.selected_hold().map(|h| {
                (
                    h.call_id.clone(),
                    serde_json::to_string(h).unwrap_or_default(),
                )
            }),
            View::Tools => self.selected_tool_index().map(|i| {
                let t = &self.tools[i];
                (
                    format!(
                        "{}/{}",
                        t["upstream"].as_str().unwrap_or(""),
                        t["name"].as_str().unwrap_or("")
                    ),
                    t.to_string(),
                )
            }),
        };
        let Some((id, whole)) = picked else {
            self.say("nothing selected to copy");
            return Vec::new();
        };
        if json {
            self.say(format!(
                "copied the JSON of {} ({} bytes)",
                short(&id),
                whole.len()
            ));
            vec![Command::Copy(whole)]
        } else {
            self.say(format!("copied {id}"));
            vec![Command::Copy(id)]
        }
    }

    /// The mouse wheel: toward older rows, or newer ones.
    pub fn scroll(&mut self, older: bool) {
        self.dirty = true;
        self.move_selection(if older { 1 } else { -1 });
    }

    /// Moves toward older rows (`by > 0`) or newer ones; leaving the newest pauses.
    fn move_selection(&mut self, by: i64) {
        match self.view {
            View::Live => {
                let last = self.visible_rows().count().saturating_sub(1) as i64;
                let next = (self.selected as i64 + by).clamp(0, last) as usize;
                if self.follow && by > 0 {
                    self.follow = false;
                    self.new_while_paused = 0;
                }
                self.selected = next;
            }
            View::Held => {
                let last = self.visible_holds().len().saturating_sub(1) as i64;
                // In the queue, down means later expiry.
                self.held_selected = (self.held_selected as i64 - by).clamp(0, last) as usize;
            }
            View::Tools => {
                let last = self.visible_tools().len().saturating_sub(1) as i64;
                self.tools_selected = (self.tools_selected as i64 - by).clamp(0, last) as usize;
            }
        }
    }
}

impl Bulk {
    fn summary(&self) -> String {
        let verb = if self.approve { "approved" } else { "denied" };
        let total = self.done + self.lost.len();
        let mut line = format!("{verb} {} of {total}", self.done);
        if !self.lost.is_empty() {
            line.push_str("; ");
            line.push_str(&self.lost.join("; "));
        }
        line
    }
}

const COMMANDS: [&str; 6] = ["live", "held", "tools", "ctx", "theme", "quit"];

/// Completes a `:` command, or the context or theme name after `ctx ` or `theme `:
/// as far as the candidates agree. Returns the new text and the candidates.
pub fn complete(text: &str, contexts: &[String], themes: &[String]) -> (String, Vec<String>) {
    let (prefix, word, pool): (&str, &str, Vec<&str>) = match text.split_once(' ') {
        Some(("ctx", w)) => ("ctx ", w, contexts.iter().map(String::as_str).collect()),
        Some(("theme", w)) => ("theme ", w, themes.iter().map(String::as_str).collect()),
        Some(_) => return (text.to_owned(), Vec::new()),
        None => ("", text, COMMANDS.to_vec()),
    };
    let candidates: Vec<String> = pool
        .into_iter()
        .filter(|c| c.starts_with(word))
        .map(String::from)
        .collect();
    let completed = match candidates.as_slice() {
        [] => return (text.to_owned(), candidates),
        // A command that takes a name gets its space, ready for the name.
        [one] if prefix.is_empty() && matches!(one.as_str(), "ctx" | "theme") => format!("{one} "),
        [one] => format!("{prefix}{one}"),
        many => {
            let first = &many[0];
            let common = (word.len()..=first.len())
                .rev()
                .find(|&n| many.iter().all(|c| c.get(..n) == first.get(..n)))
                .unwrap_or(word.len());
            format!("{prefix}{}", &first[..common])
        }
    };
    (completed, candidates)
}

pub fn short(call_id: &str) -> &str {
    call_id
        .get(call_id.len().saturating_sub(8)..)
        .unwrap_or(call_id)
}

#[cfg(test)]
mod tests;
