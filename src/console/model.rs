//! What the console knows about one gateway: decisions, holds and their fates, how
//! calls ended, and the tool catalog, all typed as the control API sends them. Views
//! read it; only network events change it. Starting over is `Model::new`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::api::{
    CallResult, DecisionEvent, DecisionRecord, Event, EventBody, HoldView, Outcome, Resolution,
    ToolEntry, ToolRow,
};

/// How long a resolved hold stays on screen with its fate.
pub const FATE_LINGER: Duration = Duration::from_secs(10);

/// One decision of the live view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub seq: u64,
    pub ts: String,
    pub call: DecisionEvent,
}

impl Row {
    pub fn call_id(&self) -> &str {
        &self.call.call_id
    }
}

/// How a hold ended, kept to show beside its row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fate {
    pub resolution: Resolution,
    pub by: String,
    /// The reason the operator typed.
    pub reason: Option<String>,
    /// When, as the gateway recorded it.
    pub when: Option<String>,
    /// An approved call that then ran: the screen keeps saying who approved it, and adds
    /// that it ran, so the wording never flips between `approved` and `consumed`.
    pub ran: bool,
    pub at: Instant,
}

impl Fate {
    /// `approved`, `approved (ran)`, `denied`, …
    pub fn word(&self) -> String {
        format!("{}{}", self.resolution.as_str(), self.ran_note())
    }

    /// `approved by olga`, `approved by olga (ran)`, …
    pub fn label(&self) -> String {
        format!(
            "{} by {}{}",
            self.resolution.as_str(),
            self.by,
            self.ran_note()
        )
    }

    fn ran_note(&self) -> &'static str {
        if self.ran { " (ran)" } else { "" }
    }

    pub fn lets_through(&self) -> bool {
        matches!(self.resolution, Resolution::Approved | Resolution::Consumed)
    }
}

/// How a call that went upstream ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion {
    pub result: CallResult,
    pub upstream_status: Option<u16>,
    pub duration_ms: u64,
}

/// What a change to the model means for the screen around it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// A decision row was added.
    pub decision: Option<u64>,
    /// A new hold waits for an operator.
    pub new_hold: bool,
    /// The catalog changed: fetch it again.
    pub tools_changed: bool,
    /// The policy in force changed.
    pub policy_changed: bool,
    /// Something worth a line on the status bar (a policy or class changed elsewhere).
    pub notice: Option<String>,
    /// The ring dropped its oldest row, of this seq.
    pub evicted: Option<u64>,
}

/// Decisions per second over the last minutes, and counts by outcome, as the stream
/// brought them.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    /// Decisions in each of the last `RATE_WINDOW` seconds, oldest first, with the
    /// second each count is for.
    per_second: VecDeque<(i64, u64)>,
    pub seen: crate::api::CallCounts,
    /// How far behind the console's clock events arrive (arrival − `ts`, in seconds), for
    /// the last live decisions: the smallest is the gateway's clock skew plus the
    /// network, without the age of anything replayed.
    lags: VecDeque<i64>,
}

/// How many seconds of decision rates are kept.
pub const RATE_WINDOW: usize = 300;

/// How many live decisions the skew estimate looks back over.
const LAGS_KEPT: usize = 64;

impl Rates {
    /// Counts a decision made at `ts` that arrived at `arrived` (`None`: loaded, not
    /// streamed).
    fn count(&mut self, ts: &str, outcome: Outcome, arrived: Option<DateTime<Utc>>) {
        self.seen.add(outcome, 1);
        let Ok(t) = DateTime::parse_from_rfc3339(ts) else {
            return;
        };
        let second = t.timestamp();
        if let Some(arrived) = arrived {
            self.lags.push_back(arrived.timestamp() - second);
            if self.lags.len() > LAGS_KEPT {
                self.lags.pop_front();
            }
        }
        match self.per_second.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            Some((s, _)) if *s > second => {
                // An older event (a replay): count it where it belongs, if still kept.
                if let Some((_, n)) = self.per_second.iter_mut().find(|(s, _)| *s == second) {
                    *n += 1;
                }
            }
            _ => self.per_second.push_back((second, 1)),
        }
        while self.per_second.len() > RATE_WINDOW {
            self.per_second.pop_front();
        }
    }

    /// Decisions per second for each of the `seconds` seconds up to `now` (the console's
    /// clock, turned into the gateway's with the skew seen), oldest first.
    pub fn series(&self, now: DateTime<Utc>, seconds: usize) -> Vec<u64> {
        let skew = self.lags.iter().copied().min().unwrap_or(0);
        let end = now.timestamp() - skew;
        let start = end - seconds as i64 + 1;
        let mut out = vec![0; seconds];
        for (s, n) in &self.per_second {
            if (start..=end).contains(s) {
                out[(s - start) as usize] = *n;
            }
        }
        out
    }
}

pub struct Model {
    ring: VecDeque<Row>,
    ring_size: usize,
    /// The highest seq seen; the stream resumes after it.
    pub max_seq: u64,
    pub store_id: Option<String>,
    /// Open holds and resolved ones lingering with their fate, soonest expiry first.
    pub holds: Vec<HoldView>,
    pub fates: HashMap<String, Fate>,
    pub completions: HashMap<String, Completion>,
    pub tools: Vec<ToolEntry>,
    /// Each tool's row before an edit the gateway has not confirmed yet.
    pending_edits: HashMap<(String, String), ToolEntry>,
    /// The versions this console's own edits made: their `risk.changed` events are news
    /// to nobody here. Bounded: the oldest go first.
    own_versions: VecDeque<(String, String, u64)>,
    pub rates: Rates,
    /// The newest policy version the stream announced.
    pub policy_version: Option<u64>,
    /// The operator this console's token belongs to, once the gateway said.
    pub me: Option<crate::api::OperatorView>,
    /// Active grants, soonest to end first: as `GET /grants` gave them, then as the
    /// stream made, used and revoked them.
    pub grants: Vec<crate::api::Grant>,
    /// The token report, once fetched (`:tokens`).
    pub tokens: Option<Box<crate::api::TokensView>>,
}

impl Model {
    pub fn new(ring_size: usize) -> Model {
        Model {
            ring: VecDeque::with_capacity(ring_size.min(4096)),
            ring_size: ring_size.max(1),
            max_seq: 0,
            store_id: None,
            holds: Vec::new(),
            fates: HashMap::new(),
            completions: HashMap::new(),
            tools: Vec::new(),
            pending_edits: HashMap::new(),
            own_versions: VecDeque::new(),
            rates: Rates::default(),
            policy_version: None,
            me: None,
            grants: Vec::new(),
            tokens: None,
        }
    }

    /// Whether this console's operator may resolve `hold` (`approves` in the gateway's
    /// config); until the gateway has said who this is, the gateway decides.
    pub fn may_resolve(&self, hold: &crate::api::HoldView) -> bool {
        self.me
            .as_ref()
            .is_none_or(|me| me.may_resolve(&hold.call.upstream, &hold.call.tool))
    }

    pub fn ring_size(&self) -> usize {
        self.ring_size
    }

    /// Rows, newest first.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.ring.iter().rev()
    }

    pub fn row_count(&self) -> usize {
        self.ring.len()
    }

    pub fn newest_seq(&self) -> Option<u64> {
        self.ring.back().map(|r| r.seq)
    }

    pub fn row_of(&self, call_id: &str) -> Option<&Row> {
        self.ring.iter().rev().find(|r| r.call_id() == call_id)
    }

    pub fn hold(&self, call_id: &str) -> Option<&HoldView> {
        self.holds.iter().find(|h| h.call_id == call_id)
    }

    /// Open holds this operator may resolve: the queue the header counts.
    pub fn pending_count(&self) -> usize {
        self.holds
            .iter()
            .filter(|h| h.resolution.is_none() && self.may_resolve(h))
            .count()
    }

    /// The open hold that has waited longest, by its decision's time.
    pub fn oldest_pending(&self) -> Option<&HoldView> {
        self.holds
            .iter()
            .filter(|h| h.resolution.is_none())
            .min_by(|a, b| a.call.call_id.cmp(&b.call.call_id))
    }

    /// Adds a decision unless its seq was seen: the seam after a reconnect may repeat
    /// what a backfill brought, and must never show a row twice.
    fn push_decision(
        &mut self,
        seq: u64,
        ts: String,
        call: DecisionEvent,
        arrived: Option<DateTime<Utc>>,
    ) -> Applied {
        let mut applied = Applied::default();
        if seq <= self.max_seq {
            return applied;
        }
        self.max_seq = seq;
        self.rates.count(&ts, call.outcome, arrived);
        // A call a grant let through is one more use of it.
        if let Some(id) = &call.grant
            && let Some(g) = self.grants.iter_mut().find(|g| &g.id == id)
        {
            g.uses += 1;
            g.last_used_at = Some(ts.clone());
        }
        if self.ring.len() == self.ring_size
            && let Some(old) = self.ring.pop_front()
        {
            // What the ring forgets, the side tables forget too, so memory stays bounded.
            if self.hold(old.call_id()).is_none() {
                self.fates.remove(old.call_id());
            }
            self.completions.remove(old.call_id());
            applied.evicted = Some(old.seq);
        }
        self.ring.push_back(Row { seq, ts, call });
        applied.decision = Some(seq);
        applied
    }

    /// The newest decisions, newest first, as `GET /decisions` gave them.
    pub fn backfill(&mut self, newest_first: Vec<DecisionRecord>) {
        for record in newest_first.into_iter().rev() {
            if let Some(hold) = &record.hold
                && let Some(resolution) = hold.resolution
            {
                // Old fates are shown in the outcome cell, not lingering in the queue.
                let ran = resolution == Resolution::Consumed;
                self.fates.insert(
                    record.call.call_id.clone(),
                    Fate {
                        // An approval that ran still reads as the approval it was.
                        resolution: if ran {
                            Resolution::Approved
                        } else {
                            resolution
                        },
                        by: hold.resolved_by.clone().unwrap_or_default(),
                        reason: hold.reason.clone(),
                        when: hold.resolved_at.clone(),
                        ran,
                        at: Instant::now() - FATE_LINGER,
                    },
                );
            }
            self.push_decision(record.seq, record.ts, record.call, None);
        }
    }

    /// The open holds as `GET /holds` gave them; lingering fates stay.
    pub fn set_holds(&mut self, holds: Vec<HoldView>) {
        let lingering: Vec<HoldView> = self
            .holds
            .drain(..)
            .filter(|h| h.resolution.is_some())
            .collect();
        self.holds = holds;
        self.holds.extend(lingering);
        self.sort_holds();
    }

    /// An event from the stream, which arrived at `arrived` by the console's clock.
    pub fn apply(&mut self, event: Event, arrived: DateTime<Utc>) -> Applied {
        let Event { seq, ts, body } = event;
        if !matches!(body, EventBody::Decision(_)) {
            self.max_seq = self.max_seq.max(seq);
        }
        let mut applied = Applied::default();
        match body {
            EventBody::Decision(call) => return self.push_decision(seq, ts, call, Some(arrived)),
            EventBody::HoldCreated {
                call_id,
                expires_at,
                phase,
                ..
            } => {
                let call = self.row_of(&call_id).map(|r| r.call.clone());
                if let Some(call) = call
                    && self.hold(&call_id).is_none()
                {
                    // The bell is for holds this operator may resolve.
                    let theirs = self
                        .me
                        .as_ref()
                        .is_none_or(|me| me.may_resolve(&call.upstream, &call.tool));
                    self.holds.push(HoldView {
                        call_id,
                        phase,
                        expires_at,
                        call,
                        resolution: None,
                        resolved_by: None,
                        resolved_at: None,
                        reason: None,
                        approvals: Vec::new(),
                        grant: None,
                    });
                    self.sort_holds();
                    applied.new_hold = theirs;
                }
            }
            EventBody::HoldPhaseChanged { call_id, phase } => {
                if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == call_id) {
                    h.phase = phase;
                }
            }
            EventBody::HoldExtended {
                call_id,
                expires_at,
                by,
            } => {
                if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == call_id) {
                    h.expires_at = expires_at;
                    applied.notice = Some(format!(
                        "{by} extended {}",
                        crate::console::text::short(&call_id)
                    ));
                }
                self.sort_holds();
            }
            EventBody::HoldApproval {
                call_id,
                by,
                reason,
                required,
                grant,
                ..
            } => {
                if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == call_id) {
                    // A policy tightened meanwhile raises what it needs.
                    h.call.approvals_required = h.call.approvals_required.max(required);
                    if !h.approvals.iter().any(|a| a.by == by) {
                        h.approvals.push(crate::api::HoldApproval {
                            by,
                            at: ts.clone(),
                            reason,
                            grant,
                        });
                    }
                }
            }
            EventBody::HoldResolved {
                call_id,
                resolution,
                by,
                reason,
                ..
            } => {
                // That an approved call ran is its consequence, not a new fate: the screen
                // keeps who approved it, and says that it ran.
                let approved = self
                    .fates
                    .get_mut(&call_id)
                    .filter(|f| f.resolution == Resolution::Approved);
                match (resolution, approved) {
                    (Resolution::Consumed, Some(fate)) => fate.ran = true,
                    _ => self.resolve(&call_id, resolution, by, reason, Some(ts)),
                }
            }
            EventBody::CallCompleted {
                call_id,
                result,
                upstream_status,
                duration_ms,
            } => {
                if self.row_of(&call_id).is_some() {
                    self.completions.insert(
                        call_id,
                        Completion {
                            result,
                            upstream_status,
                            duration_ms,
                        },
                    );
                }
            }
            EventBody::ToolDiscovered(_) | EventBody::ToolChanged { .. } => {
                applied.tools_changed = true;
            }
            EventBody::RiskChanged {
                upstream,
                tool,
                from,
                to,
                by,
                version,
                ..
            } => {
                applied.tools_changed = true;
                // Our own edits are announced by their answer; others' by this line.
                let key = (upstream.clone(), tool.clone());
                let ours = self.pending_edits.contains_key(&key)
                    || self
                        .own_versions
                        .iter()
                        .any(|(u, t, v)| *u == upstream && *t == tool && *v == version);
                if !ours {
                    applied.notice = Some(format!("{by} set {upstream}/{tool}: {from} → {to}"));
                }
            }
            EventBody::PolicyChanged { version, by, .. } => {
                self.policy_version = Some(version);
                applied.policy_changed = true;
                applied.notice = Some(format!("policy v{version} is in force (by {by})"));
            }
            EventBody::StoreRecovered { denied_unlogged } => {
                applied.notice = Some(format!(
                    "the gateway's store recovered; {denied_unlogged} calls were denied while it could not log"
                ));
            }
            EventBody::GrantCreated(grant) => {
                if !self.grants.iter().any(|g| g.id == grant.id) {
                    applied.notice = Some(format!(
                        "{} granted {} {} calls of {}/{} until {}",
                        grant.approvers.join(" and "),
                        grant.identity.label(),
                        grant.scope.as_str(),
                        grant.upstream,
                        grant.tool,
                        crate::console::text::clock(
                            chrono::DateTime::parse_from_rfc3339(&grant.expires_at)
                                .map(|t| t.with_timezone(&Utc))
                                .unwrap_or(arrived)
                        )
                    ));
                    self.grants.push(grant);
                    self.grants.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
                }
            }
            EventBody::GrantRevoked { id, by } => {
                if let Some(at) = self.grants.iter().position(|g| g.id == id) {
                    let gone = self.grants.remove(at);
                    applied.notice = Some(format!(
                        "{by} revoked the grant to {} on {}/{}",
                        gone.identity.label(),
                        gone.upstream,
                        gone.tool
                    ));
                }
            }
            EventBody::ShadowChanged { sha256, by } => {
                applied.policy_changed = true;
                applied.notice = Some(match sha256 {
                    Some(sha) => format!(
                        "{by} installed a shadow policy ({})",
                        sha.get(..12).unwrap_or(&sha)
                    ),
                    None => format!("{by} removed the shadow policy"),
                });
            }
        }
        applied
    }

    /// The active grants as `GET /grants` gave them.
    pub fn set_grants(&mut self, mut grants: Vec<crate::api::Grant>) {
        grants.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
        self.grants = grants;
    }

    /// Records how a hold ended, from its event or an approve/deny answer.
    pub fn resolve(
        &mut self,
        call_id: &str,
        resolution: Resolution,
        by: String,
        reason: Option<String>,
        when: Option<String>,
    ) {
        let ran = resolution == Resolution::Consumed;
        self.fates.insert(
            call_id.to_owned(),
            Fate {
                resolution,
                by: by.clone(),
                reason: reason.clone(),
                when: when.clone(),
                ran,
                at: Instant::now(),
            },
        );
        if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == call_id) {
            h.resolution = Some(resolution);
            h.resolved_by = Some(by);
            h.reason = reason;
            h.resolved_at = when;
        }
    }

    /// An approve or deny's answer, or the hold a lost race returned.
    pub fn record_resolution(&mut self, hold: &HoldView) {
        // An approval that is not the last: the hold stays, with its approvals.
        if hold.resolution.is_none() {
            if let Some(h) = self.holds.iter_mut().find(|h| h.call_id == hold.call_id) {
                h.approvals = hold.approvals.clone();
            }
            return;
        }
        if let Some(resolution) = hold.resolution {
            let already = self
                .fates
                .get(&hold.call_id)
                .is_some_and(|f| f.resolution == Resolution::Approved);
            if resolution == Resolution::Consumed && already {
                return;
            }
            self.resolve(
                &hold.call_id,
                resolution,
                hold.resolved_by.clone().unwrap_or_default(),
                hold.reason.clone(),
                hold.resolved_at.clone(),
            );
        }
    }

    fn sort_holds(&mut self) {
        self.holds.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
    }

    /// Drops resolved holds that have lingered long enough; returns the ids still open.
    pub fn expire_fates(&mut self, now: Instant) -> (bool, HashSet<String>) {
        let before = self.holds.len();
        let fates = &self.fates;
        self.holds.retain(|h| {
            h.resolution.is_none()
                || fates
                    .get(&h.call_id)
                    .is_none_or(|f| now.duration_since(f.at) < FATE_LINGER)
        });
        let open = self
            .holds
            .iter()
            .filter(|h| h.resolution.is_none())
            .map(|h| h.call_id.clone())
            .collect();
        (before != self.holds.len(), open)
    }

    pub fn set_tools(&mut self, tools: Vec<ToolEntry>) {
        self.tools = tools;
    }

    pub fn tool_mut(&mut self, upstream: &str, name: &str) -> Option<&mut ToolEntry> {
        self.tools
            .iter_mut()
            .find(|t| t.tool.upstream == upstream && t.tool.name == name)
    }

    /// Shows a class at once, remembering the row to roll back to.
    pub fn begin_edit(
        &mut self,
        index: usize,
        risk: crate::api::Risk,
    ) -> Option<(String, String, u64)> {
        let entry = self.tools.get_mut(index)?;
        let before = entry.clone();
        let key = (entry.tool.upstream.clone(), entry.tool.name.clone());
        let version = entry.tool.version;
        entry.tool.risk = risk;
        entry.tool.source = "saving…".into();
        self.pending_edits.insert(key.clone(), before);
        Some((key.0, key.1, version))
    }

    /// Whether an edit of this tool waits for the gateway's answer.
    pub fn edit_pending(&self, upstream: &str, tool: &str) -> bool {
        self.pending_edits
            .contains_key(&(upstream.to_owned(), tool.to_owned()))
    }

    /// The gateway took the edit: the row is at the class and version it answered.
    pub fn edit_done(
        &mut self,
        upstream: &str,
        tool: &str,
        risk: crate::api::Risk,
        version: u64,
        by: String,
    ) {
        self.pending_edits
            .remove(&(upstream.to_owned(), tool.to_owned()));
        self.own_versions
            .push_back((upstream.to_owned(), tool.to_owned(), version));
        if self.own_versions.len() > 64 {
            self.own_versions.pop_front();
        }
        if let Some(entry) = self.tool_mut(upstream, tool) {
            entry.tool.risk = risk;
            entry.tool.version = version;
            entry.tool.source = "operator".into();
            entry.tool.updated_by = Some(by);
        }
    }

    /// Someone changed the tool first: the row becomes what the gateway says it is now.
    pub fn edit_stale(&mut self, upstream: &str, tool: &str, current: ToolRow) {
        let before = self
            .pending_edits
            .remove(&(upstream.to_owned(), tool.to_owned()));
        if let Some(entry) = self.tool_mut(upstream, tool) {
            entry.tool = current;
            if let Some(before) = before {
                entry.calls = before.calls;
            }
        }
    }

    /// The edit failed for another reason: the row goes back to what it was.
    pub fn edit_failed(&mut self, upstream: &str, tool: &str) {
        let before = self
            .pending_edits
            .remove(&(upstream.to_owned(), tool.to_owned()));
        if let (Some(before), Some(entry)) = (before, self.tool_mut(upstream, tool)) {
            *entry = before;
        }
    }
}
