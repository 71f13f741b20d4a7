//! The console's state: one owner, changed only by keys and network events, so every
//! behaviour can be tested without a terminal or a gateway. It routes each key to the
//! open popup or the current view; each of those says which actions apply, and the same
//! answer drives the keys, the hint bar and the help.

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::keymap::{Action, Keymap};
use super::model::{Model, Row};
use super::popups::Answer;
use super::popups::confirm::Confirm;
use super::popups::draft::{
    Base, Conflict, Draft, DraftAnswer, DraftState, EditRequest, mark_at, unmark,
};
use super::popups::picker::{Picked, Picker};
use super::popups::prompt::{Prompt, PromptKind};
use super::popups::reclassify::{Preview, Reclassify};
use super::popups::revoke::Revoke;
use super::text::{clock, fit_words, short};
use super::views::held::Held;
use super::views::live::Live;
use super::views::tools::{LastEdit, Tools};
use super::views::{View, ViewFilter};
use crate::api::{
    DecisionRecord, Event, EventBody, HoldView, Resolution, Risk, StatusView, ToolEntry, ToolRow,
};

pub use super::model::{FATE_LINGER, Fate};

/// How much time `x` gives a hold.
pub const EXTEND_SECS: u64 = 300;

/// The smallest screen the console draws on; below it, only quit works.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;
/// From this width the details sit beside the table.
pub const WIDE: u16 = 120;

/// What the header says about the connection. It must always be the truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Connecting,
    Connected,
    Reconnecting {
        attempt: u32,
        next_try: DateTime<Utc>,
        since: DateTime<Utc>,
    },
    Disconnected {
        since: DateTime<Utc>,
    },
    /// The gateway refused the token (401) or the operator (403): retrying will not help,
    /// so the console waits for the operator (`:reconnect`, `:ctx`, quit).
    Rejected {
        status: u16,
        gateway: String,
        since: DateTime<Utc>,
    },
}

impl Connection {
    /// Since when the gateway has been out of reach, if it is.
    pub fn lost_since(&self) -> Option<DateTime<Utc>> {
        match self {
            Connection::Connecting | Connection::Connected => None,
            Connection::Reconnecting { since, .. }
            | Connection::Disconnected { since }
            | Connection::Rejected { since, .. } => Some(*since),
        }
    }
}

/// What the network task tells the app.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// The newest decisions, newest first, as `GET /decisions` gave them.
    Backfill(Vec<DecisionRecord>),
    Holds(Vec<HoldView>),
    /// The active grants, as `GET /grants` gave them.
    Grants(Vec<crate::api::Grant>),
    /// The token report, as `GET /tokens` gave it.
    Tokens(Box<crate::api::TokensView>),
    /// The answer to a revoke: the grant as revoked, or why not.
    Revoked {
        id: String,
        outcome: Result<Box<crate::api::Grant>, String>,
    },
    Connected {
        store_id: String,
    },
    /// One event from the stream.
    Event(Box<Event>),
    /// A frame this console cannot read (a newer gateway's): its seq counts, and a call
    /// it cannot show is said.
    Unknown {
        seq: Option<u64>,
        kind: Option<String>,
    },
    /// The store was recreated: forget everything and reload.
    Reset,
    /// A line for the status bar.
    Notice(String),
    Connection(Connection),
    /// The catalog, as `GET /tools` gave it.
    Tools(Vec<ToolEntry>),
    Status(Box<StatusView>),
    /// The answer to a risk edit: the `risk.changed` event, or why not.
    RiskEdited {
        upstream: String,
        tool: String,
        outcome: Result<Box<Event>, RiskFailure>,
    },
    /// The policy's versions (newest first) and shadow, for the policy view.
    Policy {
        versions: Vec<crate::api::PolicyVersion>,
        shadow: Option<Box<crate::api::ShadowView>>,
    },
    /// A stored version's text.
    PolicyText(Box<crate::api::PolicyText>),
    /// The operator this console's token belongs to (`GET /me`).
    Me(Box<crate::api::OperatorView>),
    /// What a class change would have done (the replay API's report), or why not known.
    Previewed {
        upstream: String,
        tool: String,
        risk: Risk,
        outcome: Result<Box<crate::api::ReplayReport>, String>,
    },
    /// The answer to an approve or deny.
    Resolved {
        call_id: String,
        outcome: Result<Box<HoldView>, ResolveFailure>,
    },
    /// What a policy draft would have done over the recent calls, or why not known.
    DraftReplayed {
        id: u64,
        outcome: Result<Box<crate::api::ReplayReport>, DraftFailure>,
    },
    /// The answer to a draft's push: the `policy.changed` event, or why not.
    DraftPushed {
        id: u64,
        outcome: Result<Box<Event>, DraftFailure>,
    },
    /// The answer to installing a draft as the shadow.
    DraftShadowed {
        id: u64,
        outcome: Result<Box<crate::api::ShadowView>, DraftFailure>,
    },
    /// After a push refused as stale: what the newer version changed, as a unified diff
    /// from the version the edit began on.
    DraftConflictDiff {
        id: u64,
        diff: String,
    },
}

/// Why the gateway did not take a policy draft.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftFailure {
    /// Not valid Cedar (400 `invalid_policy`), and where, when the gateway could say.
    Invalid {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The policy moved on since the edit began (409 `stale_version`): this is the
    /// version in force now.
    Stale(Box<crate::api::PolicyVersion>),
    /// The request went out and no answer came back: it may have taken effect.
    Unknown(String),
    Other(String),
}

impl DraftFailure {
    /// The draft's state after this failure; `what` says what did not happen.
    fn into_state(self, what: &str) -> DraftState {
        match self {
            DraftFailure::Invalid {
                message,
                line,
                column,
            } => DraftState::Invalid {
                message,
                line,
                column,
            },
            DraftFailure::Stale(now) => DraftState::Stale(now),
            DraftFailure::Unknown(why) => DraftState::Failed(format!(
                "no answer ({why}): it may have taken effect; :policy shows the version in force"
            )),
            DraftFailure::Other(why) => DraftState::Failed(format!("{what}: {why}")),
        }
    }
}

impl std::fmt::Display for DraftFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DraftFailure::Invalid { message, .. } => write!(f, "not valid Cedar: {message}"),
            DraftFailure::Stale(now) => write!(f, "{} stored v{} meanwhile", now.by, now.version),
            DraftFailure::Unknown(why) => write!(f, "no answer ({why}): it may have taken effect"),
            DraftFailure::Other(why) => f.write_str(why),
        }
    }
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
    Stale(Box<ToolRow>),
    Other(String),
}

/// What the app asks of the outside world.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Resolve {
        call_id: String,
        approve: bool,
        reason: Option<String>,
        /// On an approval: the grant the operator asked for.
        grant: Option<crate::api::GrantRequest>,
    },
    FetchTools,
    SetRisk {
        upstream: String,
        tool: String,
        risk: Risk,
        expected_version: u64,
        /// Why, as the operator typed it; the gateway stores it with the change.
        note: Option<String>,
    },
    /// The policy view's versions, shadow and text in force.
    FetchPolicy,
    /// One stored version's text, for the policy view.
    FetchPolicyVersion(u64),
    /// Replay the recent recorded calls with `upstream/tool` at `risk`, for a dialog.
    Preview {
        upstream: String,
        tool: String,
        risk: Risk,
    },
    /// Give the terminal to the operator's editor on this text; `App::on_edited` takes
    /// what was saved.
    Edit(Box<EditRequest>),
    /// Validate a policy draft and replay the recent calls with it.
    ReplayDraft {
        id: u64,
        text: String,
    },
    /// Put a draft in force, if the policy is still at `expected_version`.
    PushDraft {
        id: u64,
        text: String,
        note: Option<String>,
        expected_version: u64,
    },
    /// Install a draft as the shadow policy.
    ShadowDraft {
        id: u64,
        text: String,
    },
    /// The active grants, for the grants view.
    FetchGrants,
    /// The token report, for the tokens view.
    FetchTokens,
    /// Revoke a grant.
    RevokeGrant(String),
    /// Give a pending hold more time before it expires.
    Extend {
        call_id: String,
        secs: u64,
    },
    /// Connect to another context from the config.
    SwitchContext(String),
    /// Connect again, with a fresh token from the context's token command.
    Reconnect,
    SetTheme(String),
    /// Put text on the clipboard with OSC 52, which works over SSH.
    Copy(String),
    Quit,
}

/// The popup over the view, if any.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Prompt(Prompt),
    Help,
    Confirm(Box<Confirm>),
    ClassPicker(Picker),
    Reclassify(Box<Reclassify>),
    Draft(Box<Draft>),
    Revoke(Box<super::popups::revoke::Revoke>),
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
    pub model: Model,
    pub live: Live,
    pub held: Held,
    pub tools: Tools,
    pub grants: super::views::grants::Grants,
    pub tokens: super::views::tokens::Tokens,
    pub policy: super::views::policy::PolicyState,
    pub detail: bool,
    /// How far the details are scrolled (PgUp/PgDn while they are open).
    pub detail_scroll: u16,
    /// The gateway's last `GET /status`.
    pub status: Option<StatusView>,
    /// The terminal's size, which decides pages and whether keys act at all.
    pub size: (u16, u16),
    /// The catalog changed; the main loop fetches it again.
    pub want_tools: bool,
    /// The policy changed; the main loop fetches the policy view's data again.
    pub want_policy: bool,
    /// A short message for the status line, and when it was set.
    pub flash: Option<(String, Instant)>,
    /// Set when the screen must be drawn again.
    pub dirty: bool,
    /// A new hold arrived since the last bell.
    pub ring_bell: bool,
    bulk: Option<Bulk>,
    /// The context connected to, when it came from the config.
    pub context: Option<String>,
    /// The gateway's origin, for the header's messages.
    pub gateway: String,
    /// What `:ctx` and `:theme` complete.
    pub context_names: Vec<String>,
    pub theme_names: Vec<String>,
    /// A first hint for the status line, gone with the first key.
    pub hint: Option<String>,
    /// A reason typed in a dialog that was then cancelled, for the same calls: a second
    /// Enter (which cancels) does not throw it away.
    draft: Option<(Vec<String>, String)>,
    /// When the gateway went out of reach, kept through `:reconnect` until connected.
    lost_at: Option<DateTime<Utc>>,
    /// The clock, fixed by tests; the wall clock otherwise.
    pub clock: Option<DateTime<Utc>>,
    /// The last policy draft's id, so that a late answer finds only its own draft.
    drafts: u64,
    /// A draft closed without being pushed: `e` in the policy view opens it again, so
    /// that a stray key never loses an edit.
    kept: Option<Box<Draft>>,
}

impl App {
    pub fn new(ring_size: usize, read_only: bool) -> Self {
        Self {
            view: View::Live,
            mode: Mode::Normal,
            keymap: Keymap::default(),
            read_only,
            connection: Connection::Connecting,
            model: Model::new(ring_size),
            live: Live::default(),
            held: Held::default(),
            grants: Default::default(),
            tokens: Default::default(),
            tools: Tools::default(),
            policy: Default::default(),
            detail: false,
            detail_scroll: 0,
            status: None,
            size: (MIN_WIDTH, MIN_HEIGHT),
            want_tools: false,
            want_policy: false,
            flash: None,
            dirty: true,
            ring_bell: false,
            bulk: None,
            context: None,
            gateway: String::new(),
            context_names: Vec::new(),
            theme_names: Vec::new(),
            hint: None,
            draft: None,
            lost_at: None,
            clock: None,
            drafts: 0,
            kept: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    /// Since when what is shown may be out of date: the gateway is out of reach, or a
    /// new connection has not caught up yet.
    pub fn stale_since(&self) -> Option<DateTime<Utc>> {
        match &self.connection {
            Connection::Connected => None,
            Connection::Connecting => self.lost_at,
            other => other.lost_since(),
        }
    }

    // --- what the screen shows -------------------------------------------------------

    pub fn too_small(&self) -> bool {
        self.size.0 < MIN_WIDTH || self.size.1 < MIN_HEIGHT
    }

    /// Rows a table shows on this terminal: the screen less the header, the hint and
    /// status lines, and the table's title and header.
    pub fn page(&self) -> usize {
        self.size.1.saturating_sub(5).max(1) as usize
    }

    pub fn filter_text(&self, view: View) -> Option<&str> {
        self.filter(view).and_then(ViewFilter::active)
    }

    /// A view's filter; the summary has none.
    fn filter(&self, view: View) -> Option<&ViewFilter> {
        match view {
            View::Live => Some(&self.live.filter),
            View::Held => Some(&self.held.filter),
            View::Tools => Some(&self.tools.filter),
            View::Stats | View::Policy | View::Grants | View::Tokens => None,
        }
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.model.rows()
    }

    pub fn row_count(&self) -> usize {
        self.model.row_count()
    }

    /// Rows the live view shows, newest first.
    pub fn visible_rows(&self) -> impl Iterator<Item = &Row> {
        self.live.rows(&self.model)
    }

    pub fn selected_row(&self) -> Option<&Row> {
        self.live.selected(&self.model)
    }

    pub fn visible_holds(&self) -> Vec<&HoldView> {
        self.held.visible(&self.model)
    }

    pub fn selected_hold(&self) -> Option<&HoldView> {
        self.held.selected(&self.model)
    }

    /// Selects the `index`th hold the held view shows.
    pub fn select_hold(&mut self, index: usize) {
        let page = self.page();
        self.held.select(index, &self.model, page);
    }

    pub fn visible_tools(&self) -> Vec<usize> {
        self.tools.visible(&self.model)
    }

    pub fn pending_count(&self) -> usize {
        self.model.pending_count()
    }

    pub fn is_connected(&self) -> bool {
        self.connection == Connection::Connected
    }

    /// The actions that apply now: the popup's, or the view's with the global ones.
    /// Keys, the hint bar and the help all come from this list.
    pub fn actions(&self) -> Vec<Action> {
        match &self.mode {
            Mode::Normal => self.view_actions(),
            Mode::Confirm(c) => c.actions(),
            Mode::Reclassify(_) => self.asking().map(|a| a.actions()).unwrap_or_default(),
            Mode::Revoke(r) => r.actions(),
            Mode::Draft(draft) => draft.actions(),
            Mode::ClassPicker(_) => Picker::actions(),
            Mode::Prompt(_) | Mode::Help => Vec::new(),
        }
    }

    /// What a desktop notification says when holds arrive.
    pub fn hold_notice(&self) -> String {
        let newest = self
            .model
            .holds
            .iter()
            .filter(|h| h.resolution.is_none())
            .max_by(|a, b| a.call_id.cmp(&b.call_id));
        match newest {
            Some(h) => format!(
                "{} held · newest: {}/{} by {}",
                self.pending_count(),
                h.call.upstream,
                h.call.tool,
                h.call.identity.label()
            ),
            None => "a call is held".to_owned(),
        }
    }

    /// The open yes/no dialog's keys and text, if one is open.
    pub fn asking(&self) -> Option<&super::popups::Ask> {
        match &self.mode {
            Mode::Confirm(c) => Some(&c.ask),
            Mode::Reclassify(r) => Some(&r.ask),
            Mode::Draft(d) => Some(&d.ask),
            Mode::Revoke(r) => Some(&r.ask),
            _ => None,
        }
    }

    /// What the current view offers when no popup is open.
    pub fn view_actions(&self) -> Vec<Action> {
        let mut actions = match self.view {
            View::Live => self.live.actions(),
            View::Held => self.held.actions(),
            View::Tools => self.tools.actions(),
            View::Stats => super::views::stats::actions(),
            View::Policy => self.policy.actions(),
            View::Grants => self.grants.actions(),
            View::Tokens => self.tokens.actions(),
        };
        if self.detail && !actions.contains(&Action::Back) {
            actions.push(Action::Back);
        }
        // Read-only keeps the mutating actions here so that their keys can say why
        // they do nothing; the hint bar and the help leave them out.
        actions.extend([Action::Command, Action::Help, Action::Quit]);
        actions
    }

    // --- messages --------------------------------------------------------------------

    /// Shows a message on the status line.
    pub fn notice(&mut self, message: impl Into<String>) {
        self.dirty = true;
        self.say(message);
    }

    fn say(&mut self, message: impl Into<String>) {
        self.flash = Some((message.into(), Instant::now()));
    }

    /// Starts over for another gateway: nothing seen on the old one may look like it
    /// belongs to the new one. Filters and the current view stay, as the operator set them.
    pub fn enter_context(&mut self, name: &str, read_only: bool) {
        let mut fresh = App::new(self.model.ring_size(), read_only);
        fresh.view = self.view;
        fresh.size = self.size;
        fresh.keymap = std::mem::take(&mut self.keymap);
        fresh.live.filter = std::mem::take(&mut self.live.filter);
        fresh.held.filter = std::mem::take(&mut self.held.filter);
        fresh.tools.filter = std::mem::take(&mut self.tools.filter);
        fresh.context_names = std::mem::take(&mut self.context_names);
        fresh.theme_names = std::mem::take(&mut self.theme_names);
        fresh.context = Some(name.to_owned());
        *self = fresh;
        self.say(format!(
            "context {name}{}",
            if read_only { " (read-only)" } else { "" }
        ));
    }

    /// Everything of this gateway forgotten, as after a store reset; the operator's
    /// settings (view, filters, keys, context) stay.
    fn forget_gateway(&mut self) {
        self.model = Model::new(self.model.ring_size());
        self.live.resume();
        self.held.marked.clear();
        self.tools.last_edit = None;
        self.bulk = None;
        self.status = None;
        if matches!(
            self.mode,
            Mode::Confirm(_) | Mode::ClassPicker(_) | Mode::Reclassify(_) | Mode::Revoke(_)
        ) {
            self.mode = Mode::Normal;
        }
        // A draft was replayed on, and would be pushed to, the old store: it closes, its
        // text kept for `e` over what this store has in force.
        if let Mode::Draft(draft) = std::mem::replace(&mut self.mode, Mode::Normal) {
            self.kept = Some(draft);
        }
        self.policy = Default::default();
        self.want_policy = true;
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        self.size = (width, height);
        self.dirty = true;
        self.reanchor();
    }

    fn reanchor(&mut self) {
        let page = self.page();
        if let Some(gone) = self.held.reanchor(&self.model, page)
            && self.view == View::Held
        {
            self.say(format!(
                "{} left the queue; the selection moved to the next call",
                short(&gone)
            ));
        }
        self.tools.reanchor(&self.model, page);
        self.grants.reanchor(&self.model, page);
    }

    // --- the network -----------------------------------------------------------------

    pub fn on_net(&mut self, event: NetEvent) {
        self.dirty = true;
        // A decision or a call's end changes no list the selections follow: the ingest
        // path does not re-sort the queue and the catalog for each of them.
        let lists_unchanged = matches!(&event, NetEvent::Event(e)
            if matches!(e.body, EventBody::Decision(_) | EventBody::CallCompleted { .. }));
        match event {
            NetEvent::Backfill(newest_first) => self.model.backfill(newest_first),
            NetEvent::Holds(holds) => self.model.set_holds(holds),
            NetEvent::Grants(grants) => self.model.set_grants(grants),
            NetEvent::Tokens(view) => self.model.tokens = Some(view),
            NetEvent::Revoked { id, outcome } => match outcome {
                Ok(grant) => {
                    self.model.grants.retain(|g| g.id != grant.id);
                    self.say(format!(
                        "revoked grant {} ({} on {}/{}, used {} times)",
                        short(&id),
                        grant.identity.label(),
                        grant.upstream,
                        grant.tool,
                        grant.uses
                    ));
                }
                Err(why) => self.say(format!("could not revoke grant {}: {why}", short(&id))),
            },
            NetEvent::Connected { store_id } => {
                // Another store under the same address: nothing shown belongs to it.
                if self
                    .model
                    .store_id
                    .as_ref()
                    .is_some_and(|known| *known != store_id)
                {
                    self.forget_gateway();
                    self.say("the gateway's store is not the one shown before; reloaded");
                }
                self.model.store_id = Some(store_id);
                self.connection = Connection::Connected;
                self.lost_at = None;
            }
            NetEvent::Event(e) => self.on_event(*e),
            NetEvent::Unknown { seq, kind } => {
                self.model.max_seq = self.model.max_seq.max(seq.unwrap_or(0));
                // A decision or hold it cannot read is one the operator cannot answer here.
                if let Some(kind) = kind.filter(|k| k == "decision" || k.starts_with("hold.")) {
                    self.say(format!(
                        "a {kind} event from a newer gateway cannot be shown by this console; upgrade it (toolgate holds --output json lists every hold)"
                    ));
                }
            }
            NetEvent::Notice(message) => self.say(message),
            NetEvent::Reset => {
                self.forget_gateway();
                self.say("the gateway's store was recreated; reloaded");
            }
            NetEvent::Connection(c) => {
                if let Connection::Rejected {
                    status, gateway, ..
                } = &c
                {
                    self.say(format!(
                        "token rejected by {gateway} ({status}): :reconnect with a new token, :ctx NAME, or q"
                    ));
                }
                self.connection = c;
            }
            NetEvent::Tools(tools) => self.model.set_tools(tools),
            NetEvent::Status(status) => {
                // The status comes from a task of its own: it may be older than a
                // `policy.changed` the stream already brought.
                let version = status.policy.as_ref().map(|p| p.version);
                self.model.policy_version = self.model.policy_version.max(version);
                self.status = Some(*status);
            }
            NetEvent::RiskEdited {
                upstream,
                tool,
                outcome,
            } => self.on_risk_edited(upstream, tool, outcome),
            NetEvent::Resolved { call_id, outcome } => self.on_resolved(call_id, outcome),
            NetEvent::Policy { versions, shadow } => {
                let newest = versions.first().map(|v| v.version);
                self.model.policy_version = self.model.policy_version.max(newest);
                self.policy.versions = versions;
                self.policy.shadow = shadow.map(|s| *s);
                let page = self.page();
                self.policy
                    .list
                    .scroll_into_view(self.policy.versions.len(), page);
            }
            NetEvent::PolicyText(text) => self.policy.text = Some(*text),
            NetEvent::Me(me) => self.model.me = Some(*me),
            NetEvent::DraftReplayed { id, outcome } => {
                if let Some(draft) = self.draft_mut(id) {
                    draft.state = match outcome {
                        Ok(report) => DraftState::Ready(report),
                        Err(DraftFailure::Unknown(why)) => {
                            DraftState::Failed(format!("no replay: no answer ({why})"))
                        }
                        Err(failure) => failure.into_state("no replay"),
                    };
                }
            }
            NetEvent::DraftPushed { id, outcome } => self.on_draft_pushed(id, outcome),
            NetEvent::DraftConflictDiff { id, diff } => {
                if let Some(conflict) = self.draft_mut(id).and_then(|d| d.conflict.as_mut()) {
                    conflict.diff = Some(diff);
                }
            }
            NetEvent::DraftShadowed { id, outcome } => match outcome {
                Ok(view) => {
                    self.close_draft(id);
                    self.want_policy = true;
                    self.say(format!(
                        "installed as the shadow ({}): it decides every call beside the policy in force and enforces nothing; :policy counts where they disagree",
                        view.sha256.get(..12).unwrap_or(&view.sha256)
                    ));
                }
                Err(failure) => match self.draft_mut(id) {
                    Some(draft) => draft.state = failure.into_state("no shadow installed"),
                    None => self.say(format!("no shadow installed: {failure}")),
                },
            },
            NetEvent::Previewed {
                upstream,
                tool,
                risk,
                outcome,
            } => {
                // Only the dialog it was asked for takes it.
                if let Mode::Reclassify(dialog) = &mut self.mode
                    && (dialog.upstream.as_str(), dialog.tool.as_str(), dialog.to)
                        == (upstream.as_str(), tool.as_str(), risk)
                {
                    dialog.preview = match outcome {
                        Ok(report) => Preview::of(&report),
                        Err(why) => Preview::Failed(why),
                    };
                }
            }
        }
        if !lists_unchanged {
            self.reanchor();
        }
    }

    /// The open draft, if it is the one numbered `id`.
    fn draft_mut(&mut self, id: u64) -> Option<&mut Draft> {
        match &mut self.mode {
            Mode::Draft(draft) if draft.id == id => Some(draft),
            _ => None,
        }
    }

    fn close_draft(&mut self, id: u64) {
        if self.draft_mut(id).is_some() {
            self.mode = Mode::Normal;
        }
    }

    fn on_draft_pushed(&mut self, id: u64, outcome: Result<Box<Event>, DraftFailure>) {
        match outcome {
            Ok(event) => {
                let was = self.draft_mut(id).map(|d| d.base.version);
                self.close_draft(id);
                self.want_policy = true;
                if let EventBody::PolicyChanged { version, .. } = event.body {
                    self.model.policy_version = self.model.policy_version.max(Some(version));
                    self.say(match was {
                        Some(was) => format!(
                            "policy v{version} is in force (was v{was}): the next calls are decided by it"
                        ),
                        None => format!("policy v{version} is in force"),
                    });
                }
            }
            Err(failure) => {
                // What was sent may be in force: the view asks the gateway.
                if matches!(failure, DraftFailure::Unknown(_)) {
                    self.want_policy = true;
                }
                match self.draft_mut(id) {
                    Some(draft) => {
                        if let DraftFailure::Stale(now) = &failure {
                            let before = draft.text.clone();
                            draft.conflict = Some(Conflict {
                                now: (**now).clone(),
                                before,
                                diff: None,
                            });
                        }
                        draft.state = failure.into_state("not pushed");
                    }
                    None => self.say(format!("not pushed: {failure}")),
                }
            }
        }
    }

    /// What the editor left in the file: a changed text opens a draft and replays it;
    /// an unchanged one from the policy view changes nothing; an empty one discards.
    pub fn on_edited(
        &mut self,
        request: EditRequest,
        saved: Result<String, String>,
    ) -> Vec<Command> {
        self.dirty = true;
        let text = match saved {
            Ok(text) => unmark(&text),
            Err(why) => {
                self.say(why);
                return Vec::new();
            }
        };
        let open = request.draft.and_then(|id| match &self.mode {
            Mode::Draft(d) if d.id == id => Some((d.ask.clone(), d.conflict.clone())),
            _ => None,
        });
        if text.trim().is_empty() {
            if let Some(id) = request.draft {
                self.close_draft(id);
            }
            self.say("the file was saved empty: the draft is discarded and nothing was pushed");
            return Vec::new();
        }
        let base = request.base;
        if open.is_none()
            && base.from == base.version
            && text.trim_end() == base.original.trim_end()
        {
            self.say(format!("no change: v{} stays in force", base.version));
            return Vec::new();
        }
        let (ask, conflict) = open.unwrap_or((super::popups::Ask::new(false), None));
        // After a refused push, the same text again merges nothing: it stays refused.
        if let Some(c) = &conflict
            && text.trim_end() == c.before.trim_end()
        {
            self.say(format!(
                "nothing merged: the draft is as it was when {} stored v{}; it stays refused (merge their change, or discard it and edit v{})",
                c.now.by, c.now.version, c.now.version
            ));
            return Vec::new();
        }
        self.drafts += 1;
        let id = self.drafts;
        let mut draft = Draft::new(id, text.clone(), base);
        // A note typed before the editor opened again is kept, and so is a conflict.
        draft.ask = ask;
        draft.conflict = conflict;
        self.kept = None;
        self.mode = Mode::Draft(Box::new(draft));
        vec![Command::ReplayDraft { id, text }]
    }

    /// `x` in the held view: five more minutes for the selected hold.
    fn extend_selected(&mut self) -> Vec<Command> {
        if let Some(since) = self.stale_since() {
            self.say(format!(
                "the gateway is unreachable (since {}): nothing can be extended until it is back",
                super::text::clock(since)
            ));
            return Vec::new();
        }
        match self.selected_hold() {
            Some(h) if h.resolution.is_none() => {
                let call_id = h.call_id.clone();
                self.say(format!("extending {} by 5 minutes…", short(&call_id)));
                vec![Command::Extend {
                    call_id,
                    secs: EXTEND_SECS,
                }]
            }
            Some(_) => {
                self.say("that hold is already resolved");
                Vec::new()
            }
            None => {
                self.say("no held call selected");
                Vec::new()
            }
        }
    }

    /// `e` in the policy view: the text of the selected version (the one in force, or
    /// an older one to bring back) goes to the editor; a draft closed unpushed comes
    /// back first.
    fn edit_policy(&mut self) -> Vec<Command> {
        if let Some(since) = self.stale_since() {
            self.say(format!(
                "the gateway is unreachable (since {}): the policy cannot be changed until it is back",
                super::text::clock(since)
            ));
            return Vec::new();
        }
        let (Some(in_force), Some(shown)) = (self.policy.versions.first(), &self.policy.text)
        else {
            self.say("the policy is still loading");
            return Vec::new();
        };
        if self.model.policy_version > Some(in_force.version) {
            self.say("the policy just changed; loading the new version first");
            return vec![Command::FetchPolicy];
        }
        let selected = self
            .policy
            .selected()
            .map_or(in_force.version, |v| v.version);
        if shown.stored.version != selected {
            self.say(format!("loading v{selected}'s text first"));
            return vec![Command::FetchPolicyVersion(selected)];
        }
        let store_id = self.model.store_id.clone();
        if let Some(kept) = self.kept.take() {
            let same_base = kept.base.version == in_force.version && kept.base.store_id == store_id;
            let (text, base) = if same_base {
                (kept.text.clone(), kept.base.clone())
            } else {
                let note = format!(
                    "your closed draft, begun from v{}; v{} ({} by {}) is in force now: merge its change (toolgate policy diff {} {}), then save. An empty file discards the draft. toolgate removes these lines.",
                    kept.base.version,
                    in_force.version,
                    in_force.at,
                    in_force.by,
                    kept.base.version,
                    in_force.version
                );
                let base = Base {
                    version: in_force.version,
                    from: in_force.version,
                    original: String::new(),
                    store_id,
                };
                (mark_at(&kept.text, 1, &note).0, base)
            };
            self.say("your closed draft opens again (save the file empty to drop it)");
            return vec![Command::Edit(Box::new(EditRequest {
                text,
                line: None,
                draft: None,
                base,
            }))];
        }
        let base = Base {
            version: in_force.version,
            from: shown.stored.version,
            original: shown.text.clone(),
            store_id,
        };
        vec![Command::Edit(Box::new(EditRequest {
            text: shown.text.clone(),
            line: None,
            draft: None,
            base,
        }))]
    }

    fn on_event(&mut self, event: Event) {
        let applied = self.model.apply(event, self.now());
        if let Some(seq) = applied.decision
            && let Some(row) = self.model.rows().next().filter(|r| r.seq == seq)
        {
            self.live.on_decision(&row.clone());
        }
        if let Some(seq) = applied.evicted
            && self.live.on_evicted(seq, &self.model)
        {
            self.say("the selected row left the ring (--ring); the oldest row left is selected");
        }
        self.ring_bell |= applied.new_hold;
        self.want_tools |= applied.tools_changed;
        self.want_policy |= applied.policy_changed;
        if let Some(notice) = applied.notice {
            self.say(notice);
        }
    }

    fn on_risk_edited(
        &mut self,
        upstream: String,
        tool: String,
        outcome: Result<Box<Event>, RiskFailure>,
    ) {
        match outcome {
            Ok(event) => match event.body {
                EventBody::RiskChanged {
                    version,
                    by,
                    to,
                    from,
                    ..
                } => {
                    self.model.edit_done(&upstream, &tool, to, version, by);
                    let key = (upstream.clone(), tool.clone());
                    if self.tools.undoing.as_ref() == Some(&key) {
                        self.tools.undoing = None;
                    } else {
                        self.tools.last_edit = Some(LastEdit {
                            upstream: upstream.clone(),
                            tool: tool.clone(),
                            from,
                            to,
                            version,
                        });
                    }
                    self.say(format!("{upstream}/{tool} is now {to}"));
                }
                _ => {
                    self.model.edit_failed(&upstream, &tool);
                    self.say(format!(
                        "not changed: the gateway answered a {}",
                        event.body.kind()
                    ));
                }
            },
            Err(RiskFailure::Stale(current)) => {
                self.tools.undoing = None;
                let by = current
                    .updated_by
                    .clone()
                    .unwrap_or_else(|| "someone".into());
                let risk = current.risk;
                self.model.edit_stale(&upstream, &tool, *current);
                self.say(format!(
                    "not changed: {by} set {tool} to {risk} first; try again"
                ));
            }
            Err(RiskFailure::Other(message)) => {
                self.tools.undoing = None;
                self.model.edit_failed(&upstream, &tool);
                self.say(format!("not changed: {message}"));
            }
        }
    }

    fn on_resolved(&mut self, call_id: String, outcome: Result<Box<HoldView>, ResolveFailure>) {
        let message = match &outcome {
            // One approval of several: it waits for another operator.
            Ok(hold) if hold.resolution.is_none() => {
                self.model.record_resolution(hold);
                Ok(format!(
                    "approval {} of {} recorded for {}; it needs another operator",
                    hold.approvals.len(),
                    hold.call.approvals_required,
                    short(&call_id)
                ))
            }
            Ok(hold) => {
                let verb = hold.resolution.map_or("resolved", Resolution::as_str);
                self.model.record_resolution(hold);
                Ok(format!("{verb} {}", short(&call_id)))
            }
            Err(ResolveFailure::AlreadyResolved(hold)) => {
                // A race lost is news, not an error.
                let how = hold.resolution.map_or("resolved", Resolution::as_str);
                let who = hold.resolved_by.clone().unwrap_or_else(|| "someone".into());
                self.model.record_resolution(hold);
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

    /// Drops resolved holds that have lingered long enough; true if any went.
    pub fn expire_fates(&mut self, now: Instant) -> bool {
        let (changed, open) = self.model.expire_fates(now);
        self.held.marked.retain(|id| open.contains(id));
        self.reanchor();
        changed
    }

    // --- keys ------------------------------------------------------------------------

    pub fn on_key(&mut self, key: crossterm::event::KeyEvent) -> Vec<Command> {
        self.dirty = true;
        self.hint = None;
        // Nothing acts on a screen too small to show what it would act on.
        if self.too_small() {
            // While text is being typed, a `q` is a letter: only ctrl-c quits then.
            let typing =
                matches!(self.mode, Mode::Prompt(_)) || self.asking().is_some_and(|a| a.editing);
            let ctrl_c = key.code == crossterm::event::KeyCode::Char('c')
                && key
                    .modifiers
                    .contains(crossterm::event::KeyModifiers::CONTROL);
            let quit = if typing {
                ctrl_c
            } else {
                self.keymap.action_among(&key, &[Action::Quit]) == Some(Action::Quit)
            };
            return if quit {
                vec![Command::Quit]
            } else {
                Vec::new()
            };
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Prompt(prompt) => self.on_prompt_key(prompt, key),
            Mode::Help => Vec::new(),
            Mode::Confirm(mut confirm)
                if !confirm.ask.editing
                    && self.keymap.action_among(&key, &confirm.actions())
                        == Some(Action::Grant) =>
            {
                confirm.next_grant();
                self.mode = Mode::Confirm(confirm);
                Vec::new()
            }
            Mode::Confirm(mut confirm) => match confirm.ask.on_key(key, &self.keymap) {
                Answer::Stay => {
                    self.mode = Mode::Confirm(confirm);
                    Vec::new()
                }
                Answer::Cancel => {
                    let ids = confirm.holds.iter().map(|h| h.call_id.clone()).collect();
                    match confirm.ask.value() {
                        Some(reason) => {
                            self.say("cancelled; the reason is kept for this call");
                            self.draft = Some((ids, reason));
                        }
                        None => self.say("cancelled"),
                    }
                    Vec::new()
                }
                Answer::Confirm => {
                    self.draft = None;
                    self.confirmed(*confirm)
                }
            },
            Mode::Reclassify(mut dialog) => match dialog.ask.on_key(key, &self.keymap) {
                Answer::Stay => {
                    self.mode = Mode::Reclassify(dialog);
                    Vec::new()
                }
                Answer::Cancel => {
                    self.say(format!("{} stays {}", dialog.tool, dialog.from));
                    Vec::new()
                }
                Answer::Confirm => {
                    let note = dialog.ask.value();
                    if dialog.undo_of.is_some() {
                        // An undo is not itself undone by the next `U`.
                        self.tools.last_edit = None;
                        self.tools.undoing = Some((dialog.upstream.clone(), dialog.tool.clone()));
                    }
                    self.set_risk(
                        &dialog.upstream,
                        &dialog.tool,
                        dialog.to,
                        note,
                        dialog.undo_of,
                    )
                }
            },
            Mode::Revoke(dialog) => match self.keymap.action_among(&key, &dialog.actions()) {
                Some(Action::Confirm) => {
                    self.say(format!("revoking grant {}…", short(&dialog.grant.id)));
                    vec![Command::RevokeGrant(dialog.grant.id.clone())]
                }
                Some(Action::Cancel) => {
                    self.say("cancelled; the grant stands");
                    Vec::new()
                }
                _ => {
                    self.mode = Mode::Revoke(dialog);
                    Vec::new()
                }
            },
            Mode::Draft(mut draft) => match draft.on_key(key, &self.keymap) {
                DraftAnswer::Stay => {
                    self.mode = Mode::Draft(draft);
                    Vec::new()
                }
                DraftAnswer::Quit => {
                    self.mode = Mode::Draft(draft);
                    vec![Command::Quit]
                }
                DraftAnswer::Discard => {
                    self.say("draft closed, nothing pushed; e in :policy opens it again");
                    self.kept = Some(draft);
                    Vec::new()
                }
                DraftAnswer::Edit(request) => {
                    self.mode = Mode::Draft(draft);
                    vec![Command::Edit(Box::new(request))]
                }
                answer @ (DraftAnswer::Push { .. } | DraftAnswer::Shadow) => {
                    if let Some(since) = self.stale_since() {
                        self.say(format!(
                            "the gateway is unreachable (since {}): the draft is kept until it is back",
                            super::text::clock(since)
                        ));
                        self.mode = Mode::Draft(draft);
                        return Vec::new();
                    }
                    if draft.base.store_id != self.model.store_id {
                        draft.state = DraftState::Failed(
                            "the gateway's store is not the one this draft began on".into(),
                        );
                        self.mode = Mode::Draft(draft);
                        return Vec::new();
                    }
                    let (id, text) = (draft.id, draft.text.clone());
                    let command = match answer {
                        DraftAnswer::Push { note } => {
                            draft.state = DraftState::Sending("pushing…");
                            Command::PushDraft {
                                id,
                                text,
                                note,
                                expected_version: draft.base.version,
                            }
                        }
                        _ => {
                            draft.state = DraftState::Sending("installing as the shadow…");
                            Command::ShadowDraft { id, text }
                        }
                    };
                    self.mode = Mode::Draft(draft);
                    vec![command]
                }
            },
            Mode::ClassPicker(mut picker) => {
                let action = self.keymap.action_among(&key, &Picker::actions());
                match action.map(|a| picker.on_action(a)) {
                    Some(Picked::Set(risk)) => self.edit_risk(&picker.upstream, &picker.tool, risk),
                    Some(Picked::Cancel) => Vec::new(),
                    Some(Picked::Stay) | None => {
                        self.mode = Mode::ClassPicker(picker);
                        Vec::new()
                    }
                }
            }
            Mode::Normal => match self.keymap.action_among(&key, &self.actions()) {
                Some(action) => self.act(action),
                None => Vec::new(),
            },
        }
    }

    fn confirmed(&mut self, confirm: Confirm) -> Vec<Command> {
        let reason = confirm.ask.value();
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
                self.held.marked.clear();
            }
        }
        confirm
            .holds
            .into_iter()
            .map(|h| Command::Resolve {
                call_id: h.call_id,
                approve: confirm.approve,
                reason: reason.clone(),
                grant: confirm.grant,
            })
            .collect()
    }

    fn on_prompt_key(
        &mut self,
        mut prompt: Prompt,
        key: crossterm::event::KeyEvent,
    ) -> Vec<Command> {
        use crossterm::event::KeyCode;
        match (&mut prompt.kind, key.code) {
            (PromptKind::Command, KeyCode::Esc) => return Vec::new(),
            (PromptKind::Command, KeyCode::Enter) => {
                return self.run_command(prompt.text().trim().to_owned().as_str());
            }
            (PromptKind::Command, KeyCode::Tab) => {
                let (completed, candidates) =
                    complete(prompt.text(), &self.context_names, &self.theme_names);
                if candidates.len() > 1 {
                    self.say(candidates.join("  "));
                }
                prompt.input = tui_input::Input::new(completed);
            }
            // `before` parsed when it was set, so putting it back cannot fail.
            (PromptKind::Filter { before, .. }, KeyCode::Esc) => {
                let before = before.clone();
                let _ = self.set_filter(&before);
                return Vec::new();
            }
            (PromptKind::Filter { before, error }, KeyCode::Enter) => {
                if let Some(e) = error.take() {
                    let before = before.clone();
                    self.say(format!("filter not applied: {e}"));
                    let _ = self.set_filter(&before);
                }
                return Vec::new();
            }
            (PromptKind::Filter { .. }, _) => {
                super::popups::edit(&mut prompt.input, key);
                // The view follows the typing; a token that does not parse yet keeps the
                // last filter that did, and says why.
                let result = self.set_filter(prompt.text());
                if let PromptKind::Filter { error, .. } = &mut prompt.kind {
                    *error = result.err();
                }
            }
            (PromptKind::Command, _) => super::popups::edit(&mut prompt.input, key),
        }
        self.mode = Mode::Prompt(prompt);
        Vec::new()
    }

    /// The command line's text while it is open.
    pub fn command_text(&self) -> Option<&str> {
        match &self.mode {
            Mode::Prompt(p) if p.kind == PromptKind::Command => Some(p.text()),
            _ => None,
        }
    }

    /// The filter line's error while it is open.
    pub fn filter_error(&self) -> Option<&str> {
        match &self.mode {
            Mode::Prompt(Prompt {
                kind: PromptKind::Filter { error, .. },
                ..
            }) => error.as_deref(),
            _ => None,
        }
    }

    fn run_command(&mut self, command: &str) -> Vec<Command> {
        let (name, argument) = match command.split_once(char::is_whitespace) {
            Some((n, a)) => (n, a.trim()),
            None => (command, ""),
        };
        match (name, argument) {
            ("live", "") => self.view = View::Live,
            ("held", "") => {
                // Entering the queue selects its first row; from then on the selection
                // follows that call.
                self.view = View::Held;
                self.select_hold(0);
            }
            ("tools", "") => {
                self.view = View::Tools;
                return vec![Command::FetchTools];
            }
            ("stats", "") => self.view = View::Stats,
            ("grants", "") => {
                self.view = View::Grants;
                return vec![Command::FetchGrants];
            }
            ("tokens", "") => {
                self.view = View::Tokens;
                return vec![Command::FetchTokens];
            }
            ("policy", "") => {
                self.view = View::Policy;
                return vec![Command::FetchPolicy];
            }
            ("q" | "quit", "") => return vec![Command::Quit],
            ("reconnect", "") => {
                self.say("reconnecting…");
                return vec![Command::Reconnect];
            }
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
                "unknown command :{command} (try :live, :held, :tools, :stats, :policy, :ctx NAME, :reconnect, :theme NAME, :q)"
            )),
        }
        Vec::new()
    }

    /// Applies `text` as the current view's filter, unless it does not parse.
    pub fn set_filter(&mut self, text: &str) -> Result<(), String> {
        let filter = super::filter::Filter::parse(text).map_err(|e| e.to_string())?;
        let view_filter = ViewFilter {
            text: text.trim().to_owned(),
            filter,
        };
        // Selections index the filtered rows; start again from the top.
        match self.view {
            View::Live => {
                self.live.filter = view_filter;
                self.live.resume();
            }
            View::Held => {
                self.held.filter = view_filter;
                // A mark the filter hides would be decided unseen: it goes.
                let visible: HashSet<String> = self
                    .held
                    .visible(&self.model)
                    .iter()
                    .map(|h| h.call_id.clone())
                    .collect();
                let before = self.held.marked.len();
                self.held.marked.retain(|id| visible.contains(id));
                if self.held.marked.len() < before {
                    self.say(format!(
                        "{} marks dropped: the filter hides their calls",
                        before - self.held.marked.len()
                    ));
                }
                self.reanchor();
            }
            View::Tools => {
                self.tools.filter = view_filter;
                self.tools.list = Default::default();
                self.tools.reanchor(&self.model, self.page());
            }
            View::Stats | View::Policy | View::Grants | View::Tokens => {
                return Err("this view has no filter".into());
            }
        }
        Ok(())
    }

    fn act(&mut self, action: Action) -> Vec<Command> {
        if action.mutates() && self.read_only {
            self.say("read-only: approving, denying, class and policy edits are off");
            return Vec::new();
        }
        let page = self.page();
        // While following, no row is highlighted: a key that acts on a row first stops
        // on the newest one, so that what it acts on is on screen and stays put.
        if self.view == View::Live && self.live.follow && self.model.row_count() > 0 {
            match action {
                Action::Detail => self.live.pause_at_top(&self.model),
                Action::Approve | Action::Deny | Action::CopyId | Action::CopyJson => {
                    self.live.pause_at_top(&self.model);
                    self.say(format!(
                        "paused at the newest row: press {} again to act on it",
                        self.keymap.key_for(action).unwrap_or("the key")
                    ));
                    return Vec::new();
                }
                _ => {}
            }
        }
        // With the details open, the page keys scroll them; other moves start at their top.
        if self.detail {
            match action {
                Action::PageDown => {
                    self.detail_scroll = self.detail_scroll.saturating_add(page as u16 / 2);
                    return Vec::new();
                }
                Action::PageUp => {
                    self.detail_scroll = self.detail_scroll.saturating_sub(page as u16 / 2);
                    return Vec::new();
                }
                _ => self.detail_scroll = 0,
            }
        }
        let navigated = match self.view {
            View::Live => self.live.navigate(action, &self.model, page),
            View::Held => self.held.navigate(action, &self.model, page),
            View::Tools => self.tools.navigate(action, &self.model, page),
            View::Stats => false,
            View::Policy => self.policy.navigate(action, page),
            View::Grants => self.grants.navigate(action, &self.model, page),
            View::Tokens => self
                .tokens
                .navigate(action, self.model.tokens.as_deref(), page),
        };
        if navigated {
            return Vec::new();
        }
        match action {
            Action::Quit => return vec![Command::Quit],
            Action::Command => self.mode = Mode::Prompt(Prompt::command()),
            Action::Help => self.mode = Mode::Help,
            Action::Back => {
                if self.detail {
                    self.detail = false;
                } else if self.view != View::Live {
                    self.view = View::Live;
                }
            }
            Action::Detail if self.view == View::Policy => {
                if let Some(version) = self.policy.selected().map(|v| v.version) {
                    self.policy.scroll = 0;
                    return vec![Command::FetchPolicyVersion(version)];
                }
            }
            Action::Detail => self.detail = !self.detail,
            Action::Filter => {
                if let Some(current) = self.filter(self.view).map(|f| f.text.clone()) {
                    self.mode = Mode::Prompt(Prompt::filter(&current));
                }
            }
            Action::CopyId | Action::CopyJson => return self.copy(action == Action::CopyJson),
            Action::Mark => {
                if let Err(message) = self.held.toggle_mark(&self.model, page) {
                    self.say(message);
                }
            }
            Action::EditClass => match self.tools.selected(&self.model) {
                Some(entry) => self.mode = Mode::ClassPicker(Picker::open(entry)),
                None => self.say("no tool selected"),
            },
            Action::SetRead
            | Action::SetWrite
            | Action::SetDestructive
            | Action::SetUnclassified => {
                let Some(entry) = self.tools.selected(&self.model) else {
                    self.say("no tool selected");
                    return Vec::new();
                };
                let (upstream, tool) = (entry.tool.upstream.clone(), entry.tool.name.clone());
                return self.edit_risk(&upstream, &tool, action.risk().expect("a risk action"));
            }
            Action::Undo => {
                let Some(last) = self.tools.last_edit.clone() else {
                    self.say("nothing to undo: this console changed no class yet");
                    return Vec::new();
                };
                // It names the tool, which may be off screen, and asks first.
                self.mode = Mode::Reclassify(Box::new(Reclassify::undo(
                    &last.upstream,
                    &last.tool,
                    last.to,
                    last.from,
                    last.version,
                )));
                return vec![Command::Preview {
                    upstream: last.upstream,
                    tool: last.tool,
                    risk: last.from,
                }];
            }
            Action::Approve | Action::Deny => return self.open_confirm(action == Action::Approve),
            Action::EditPolicy => return self.edit_policy(),
            Action::Extend => return self.extend_selected(),
            Action::Revoke => self.open_revoke(),
            // The approve dialog's.
            Action::Grant => {}
            Action::Confirm
            | Action::Reason
            | Action::Cancel
            | Action::Choose
            | Action::Shadow
            | Action::EditAgain => {}
            // Handled by the views above.
            Action::Up
            | Action::Down
            | Action::PageUp
            | Action::PageDown
            | Action::Top
            | Action::Bottom
            | Action::Follow
            | Action::Sort
            | Action::Soonest => {}
        }
        Vec::new()
    }

    /// Opens the approve/deny dialog on what the operator sees selected: the marked
    /// holds, the selected hold, or in the live view the selected row's hold.
    fn open_confirm(&mut self, approve: bool) -> Vec<Command> {
        if let Some(since) = self.stale_since() {
            self.say(format!(
                "the gateway is unreachable (since {}): nothing can be approved or denied until it is back",
                super::text::clock(since)
            ));
            return Vec::new();
        }
        let holds: Vec<HoldView> = match self.view {
            View::Held if !self.held.marked.is_empty() => {
                // Only what the view shows: a marked call the filter hides is not decided.
                let holds: Vec<HoldView> = self
                    .visible_holds()
                    .into_iter()
                    .filter(|h| h.resolution.is_none() && self.held.marked.contains(&h.call_id))
                    .cloned()
                    .collect();
                if holds.is_empty() {
                    self.held.marked.clear();
                    self.say("the marked holds were resolved meanwhile");
                    return Vec::new();
                }
                holds
            }
            View::Held => match self.selected_hold() {
                Some(h) if h.resolution.is_none() => vec![h.clone()],
                Some(_) => {
                    self.say("that hold is already resolved");
                    return Vec::new();
                }
                None => {
                    self.say("no held call selected");
                    return Vec::new();
                }
            },
            View::Live => {
                let Some(row) = self.selected_row() else {
                    self.say("no call selected");
                    return Vec::new();
                };
                match self.model.hold(row.call_id()) {
                    Some(h) if !self.model.may_resolve(h) => {
                        self.say(format!(
                            "you may not resolve holds of {}/{} (approves in the gateway's config)",
                            h.call.upstream, h.call.tool
                        ));
                        return Vec::new();
                    }
                    Some(h) if h.resolution.is_none() => vec![h.clone()],
                    Some(h) => {
                        let how = h.resolution.map_or("resolved", Resolution::as_str);
                        self.say(format!("that call's hold is already {how}"));
                        return Vec::new();
                    }
                    None => {
                        match self.model.fates.get(row.call_id()) {
                            Some(fate) => {
                                self.say(format!("that call's hold is already {}", fate.label()))
                            }
                            None => self.say("the selected call is not waiting for approval"),
                        }
                        return Vec::new();
                    }
                }
            }
            View::Tools | View::Stats | View::Policy | View::Grants | View::Tokens => {
                return Vec::new();
            }
        };
        let mut confirm = Confirm::new(approve, holds);
        let ids: Vec<String> = confirm.holds.iter().map(|h| h.call_id.clone()).collect();
        if let Some((_, reason)) = self.draft.as_ref().filter(|(for_ids, _)| *for_ids == ids) {
            confirm.ask.text = tui_input::Input::new(reason.clone());
        }
        // The status line starts clean under a new dialog.
        self.flash = None;
        self.mode = Mode::Confirm(Box::new(confirm));
        Vec::new()
    }

    /// Asks before revoking the selected grant.
    fn open_revoke(&mut self) {
        if let Some(since) = self.stale_since() {
            self.say(format!(
                "the gateway is unreachable (since {}): nothing can be revoked until it is back",
                clock(since)
            ));
            return;
        }
        match self.grants.selected(&self.model) {
            Some(grant) if !grant.is_active(Utc::now()) => {
                self.say("that grant has ended already; it lets nothing through")
            }
            Some(grant)
                if self
                    .model
                    .me
                    .as_ref()
                    .is_some_and(|me| !me.may_resolve(&grant.upstream, &grant.tool)) =>
            {
                self.say(format!(
                    "you may not revoke grants of {}/{} (approves in the gateway's config)",
                    grant.upstream, grant.tool
                ))
            }
            Some(grant) => self.mode = Mode::Revoke(Box::new(Revoke::new(grant.clone()))),
            None => self.say("no grant selected"),
        }
    }

    /// Changes a tool's class; a less strict class asks first.
    fn edit_risk(&mut self, upstream: &str, tool: &str, risk: Risk) -> Vec<Command> {
        let Some(entry) = self
            .model
            .tools
            .iter()
            .find(|t| t.tool.upstream == upstream && t.tool.name == tool)
        else {
            self.say(format!("{upstream}/{tool} is no longer in the catalog"));
            return Vec::new();
        };
        let from = entry.tool.risk;
        if self.model.edit_pending(upstream, tool) {
            self.say(format!(
                "{tool}: the last change is still being saved; try again"
            ));
            return Vec::new();
        }
        if from == risk {
            self.say(format!("{tool} is already {risk}"));
            return Vec::new();
        }
        // Every change asks, after a look at what it would have done.
        self.mode = Mode::Reclassify(Box::new(Reclassify::new(upstream, tool, from, risk)));
        vec![Command::Preview {
            upstream: upstream.to_owned(),
            tool: tool.to_owned(),
            risk,
        }]
    }

    /// Shows the new class at once and asks the gateway, at `version` or the version on
    /// screen; the answer confirms or undoes it. One edit of a tool at a time.
    fn set_risk(
        &mut self,
        upstream: &str,
        tool: &str,
        risk: Risk,
        note: Option<String>,
        version: Option<u64>,
    ) -> Vec<Command> {
        let Some(index) = self
            .model
            .tools
            .iter()
            .position(|t| t.tool.upstream == upstream && t.tool.name == tool)
        else {
            self.say(format!("{upstream}/{tool} is no longer in the catalog"));
            return Vec::new();
        };
        if self.model.edit_pending(upstream, tool) {
            self.say(format!(
                "{tool}: the last change is still being saved; try again"
            ));
            return Vec::new();
        }
        let Some((upstream, tool, shown_version)) = self.model.begin_edit(index, risk) else {
            return Vec::new();
        };
        let expected_version = version.unwrap_or(shown_version);
        vec![Command::SetRisk {
            upstream,
            tool,
            risk,
            expected_version,
            note,
        }]
    }

    /// The selected row's call id (a tool's `upstream/name`), or its whole JSON.
    fn copy(&mut self, json: bool) -> Vec<Command> {
        let picked: Option<(String, String)> = match self.view {
            View::Live => self.selected_row().map(|r| {
                let record = DecisionRecord {
                    seq: r.seq,
                    ts: r.ts.clone(),
                    call: r.call.clone(),
                    hold: None,
                };
                (
                    r.call_id().to_owned(),
                    serde_json::to_string(&record).unwrap_or_default(),
                )
            }),
            View::Held => self.selected_hold().map(|h| {
                (
                    h.call_id.clone(),
                    serde_json::to_string(h).unwrap_or_default(),
                )
            }),
            View::Tools => self.tools.selected(&self.model).map(|t| {
                (
                    format!("{}/{}", t.tool.upstream, t.tool.name),
                    serde_json::to_string(t).unwrap_or_default(),
                )
            }),
            View::Grants => self
                .grants
                .selected(&self.model)
                .map(|g| (g.id.clone(), serde_json::to_string(g).unwrap_or_default())),
            View::Tokens => self
                .tokens
                .selected(self.model.tokens.as_deref())
                .map(|t| (t.name.clone(), serde_json::to_string(t).unwrap_or_default())),
            View::Stats | View::Policy => None,
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

    /// The mouse wheel: up or down the list, as the arrow keys move.
    pub fn scroll(&mut self, up: bool) {
        self.dirty = true;
        if self.mode == Mode::Normal && !self.too_small() {
            let page = self.page();
            let action = if up { Action::Up } else { Action::Down };
            match self.view {
                View::Live => self.live.navigate(action, &self.model, page),
                View::Held => self.held.navigate(action, &self.model, page),
                View::Tools => self.tools.navigate(action, &self.model, page),
                View::Stats => false,
                View::Policy => self.policy.navigate(action, page),
                View::Grants => self.grants.navigate(action, &self.model, page),
                View::Tokens => self
                    .tokens
                    .navigate(action, self.model.tokens.as_deref(), page),
            };
        }
    }

    /// The status line's message, cut at a word to `width`.
    pub fn message(&self, width: usize) -> Option<String> {
        let text = self
            .flash
            .as_ref()
            .map(|(m, _)| m.as_str())
            .or(self.hint.as_deref())?;
        Some(fit_words(text, width))
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

const COMMANDS: [&str; 11] = [
    "live",
    "held",
    "tools",
    "stats",
    "policy",
    "grants",
    "tokens",
    "ctx",
    "reconnect",
    "theme",
    "quit",
];

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
            // The longest start every candidate shares, cut at a character boundary.
            let first = &many[0];
            let common = first
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .take_while(|&n| many.iter().all(|c| c.starts_with(&first[..n])))
                .last()
                .unwrap_or(0)
                .max(word.len());
            format!("{prefix}{}", first.get(..common).unwrap_or(word))
        }
    };
    (completed, candidates)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod oncall;

#[cfg(test)]
mod drafts;

#[cfg(test)]
mod grants;

#[cfg(test)]
mod tokens;
