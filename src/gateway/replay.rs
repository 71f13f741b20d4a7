//! Replay (what-if): the recorded decisions of a window, decided again with a candidate
//! policy and/or candidate risk classes, exactly as the gateway would have decided them
//! then: the same identity (a token's age at the time), the same tool entity (its class
//! then, or the candidate's), the stored target, workflow and (redacted) arguments. A
//! decision the candidate cannot decide honestly (it reads a redacted argument, or the
//! stored arguments were cut) is `unknown`, with the reason, never guessed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::holds::policy_outcome;
use super::identity::Identity;
use super::policy::{CallFacts, PolicyEngine};
use super::redact;
use super::store::{DecisionSnapshot, StoreError};
use crate::api::{
    DecisionRecord, IdentityKind, Outcome, ReplayChange, ReplayGroup, ReplayReport, Risk,
    Transitions,
};
use crate::config::IdentityConfig;

/// Decisions read from the snapshot at a time.
const PAGE: u32 = 2_000;
/// Changed decisions listed in one answer, unless the request asks for fewer.
pub const DEFAULT_LISTED: usize = 100;
pub const MAX_LISTED: usize = 1_000;
/// Groups listed by tool and by identity.
const MAX_GROUPS: usize = 50;

/// What a replay decides with.
pub struct Candidate {
    pub engine: Arc<PolicyEngine>,
    /// What a decision is compared with: the policy in force with the recorded classes
    /// (so that a class-only candidate shows what the class changes, not what policy
    /// edits in the window did); `None` compares with the recorded outcome.
    pub baseline: Option<Arc<PolicyEngine>>,
    /// Classes to use instead of the recorded ones, by (upstream, tool).
    pub risk: HashMap<(String, String), Risk>,
    /// API tokens as configured, by name: their issue and expiry dates.
    pub tokens: HashMap<String, IdentityConfig>,
}

/// What the candidate makes of one recorded decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Redecided {
    Same,
    Changed {
        /// What the baseline decided: the recorded outcome, or the policy in force with
        /// the recorded class.
        from: Outcome,
        to: Outcome,
        policy_ids: Vec<String>,
        reason: String,
    },
    Unknown(String),
}

impl Candidate {
    /// The identity as it was at `ts`, or why it cannot be known.
    fn identity(&self, d: &DecisionRecord) -> Result<Identity, String> {
        let who = &d.call.identity;
        let mut identity = Identity {
            kind: who.kind,
            name: who.name.clone(),
            groups: who.groups.clone(),
            issued: None,
            expires: None,
            owner: None,
        };
        if who.kind == IdentityKind::ApiToken {
            let Some(config) = self.tokens.get(&who.name) else {
                return Err(format!(
                    "the token {:?} is no longer configured, so its age at the time is not known",
                    who.name
                ));
            };
            // A token issued after the call is another token under the same name.
            if DateTime::parse_from_rfc3339(&d.ts).is_ok_and(|t| t < config.issued) {
                return Err(format!(
                    "the token {:?} was issued again after this call, so its age then is not known",
                    who.name
                ));
            }
            identity.issued = Some(config.issued);
            identity.expires = config.expires;
        }
        Ok(identity)
    }

    /// Decides one recorded call again.
    pub fn redecide(&self, d: &DecisionRecord) -> Redecided {
        let call = &d.call;
        // The gateway's own limits decided these before any policy: so would they now.
        if call
            .policy_ids
            .iter()
            .any(|p| p == super::policy::ARGUMENT_LIMIT_POLICY)
        {
            return Redecided::Same;
        }
        let identity = match self.identity(d) {
            Ok(i) => i,
            Err(why) => return Redecided::Unknown(why),
        };
        let Some(args) = call.args.as_object().filter(|_| !call.args_truncated) else {
            // The arguments were cut when stored: only a candidate that reads none of
            // them can decide the call.
            let readers =
                self.engine
                    .policies_reading(&call.upstream, &call.tool, &[String::new()]);
            if !readers.is_empty() {
                return Redecided::Unknown(format!(
                    "{} reads the arguments, which were cut when stored",
                    readers.join(", ")
                ));
            }
            return self.decide(&identity, d, &serde_json::Map::new());
        };
        let redacted = redact::redacted_pointers(args);
        if !redacted.is_empty() {
            let readers = self
                .engine
                .policies_reading(&call.upstream, &call.tool, &redacted);
            if !readers.is_empty() {
                return Redecided::Unknown(format!(
                    "{} reads {}, redacted before it was stored",
                    readers.join(", "),
                    redacted.join(", ")
                ));
            }
        }
        self.decide(&identity, d, args)
    }

    fn decide(
        &self,
        identity: &Identity,
        d: &DecisionRecord,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Redecided {
        let call = &d.call;
        let now = DateTime::parse_from_rfc3339(&d.ts)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now());
        let risk = self
            .risk
            .get(&(call.upstream.clone(), call.tool.clone()))
            .copied()
            .unwrap_or(call.risk);
        let facts = |risk| CallFacts {
            identity,
            upstream: &call.upstream,
            tool: &call.tool,
            risk,
            args,
            target: call.target.as_ref(),
            workflow: call.workflow.as_ref(),
            now,
        };
        let decision = self.engine.decide(&facts(risk));
        let before = match &self.baseline {
            Some(baseline) => baseline.decide(&facts(call.risk)).outcome,
            None => policy_outcome(call),
        };
        if decision.outcome == before {
            Redecided::Same
        } else {
            Redecided::Changed {
                from: before,
                to: decision.outcome,
                policy_ids: decision.policy_ids,
                reason: decision.reason,
            }
        }
    }
}

/// Counts of one replay, filled page by page.
#[derive(Default)]
struct Tally {
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    decisions: u64,
    transitions: Transitions,
    by_tool: HashMap<String, Transitions>,
    by_identity: HashMap<String, Transitions>,
    changed: Vec<ReplayChange>,
    more: bool,
}

fn transition(to: &Redecided) -> String {
    match to {
        Redecided::Same => "unchanged".into(),
        Redecided::Unknown(_) => "unknown".into(),
        Redecided::Changed { from, to, .. } => format!("{}→{}", from.as_str(), to.as_str()),
    }
}

/// Groups kept while counting: callers choose tool names, so the map is bounded; past
/// it, changes count under one `(others)` group.
const MAX_COUNTED_GROUPS: usize = 10_000;

fn count_in(groups: &mut HashMap<String, Transitions>, key: String, transition: &str) {
    let key = if groups.len() >= MAX_COUNTED_GROUPS && !groups.contains_key(&key) {
        "(others)".to_owned()
    } else {
        key
    };
    *groups
        .entry(key)
        .or_default()
        .entry(transition.to_owned())
        .or_default() += 1;
}

impl Tally {
    fn add(&mut self, d: &DecisionRecord, redecided: Redecided, after: u64, listed: usize) {
        self.first_seq.get_or_insert(d.seq);
        self.last_seq = Some(d.seq);
        self.decisions += 1;
        let recorded = policy_outcome(&d.call);
        let key = transition(&redecided);
        *self.transitions.entry(key.clone()).or_default() += 1;
        if redecided == Redecided::Same {
            return;
        }
        let tool = format!("{}/{}", d.call.upstream, d.call.tool);
        count_in(&mut self.by_tool, tool, &key);
        count_in(&mut self.by_identity, d.call.identity.label(), &key);
        if d.seq <= after {
            return;
        }
        if self.changed.len() == listed {
            self.more = true;
            return;
        }
        let (from, to, to_policy_ids, reason) = match redecided {
            Redecided::Changed {
                from,
                to,
                policy_ids,
                reason,
            } => (from, Some(to), policy_ids, reason),
            Redecided::Unknown(why) => (recorded, None, Vec::new(), why),
            Redecided::Same => unreachable!("returned above"),
        };
        self.changed.push(ReplayChange {
            seq: d.seq,
            ts: d.ts.clone(),
            call_id: d.call.call_id.clone(),
            upstream: d.call.upstream.clone(),
            tool: d.call.tool.clone(),
            identity: d.call.identity.clone(),
            target: d.call.target.clone(),
            from,
            from_policy_ids: d.call.policy_ids.clone(),
            to,
            to_policy_ids,
            reason,
        });
    }

    fn report(self, started: Instant, upto: u64) -> ReplayReport {
        let groups = |map: HashMap<String, Transitions>| {
            let mut groups: Vec<ReplayGroup> = map
                .into_iter()
                .map(|(key, transitions)| ReplayGroup { key, transitions })
                .collect();
            let total = |g: &ReplayGroup| g.transitions.values().sum::<u64>();
            groups.sort_by(|a, b| total(b).cmp(&total(a)).then_with(|| a.key.cmp(&b.key)));
            groups.truncate(MAX_GROUPS);
            groups
        };
        let next_after = self
            .more
            .then(|| self.changed.last().map(|c| c.seq))
            .flatten();
        ReplayReport {
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            decisions: self.decisions,
            transitions: self.transitions,
            by_tool: groups(self.by_tool),
            by_identity: groups(self.by_identity),
            changed: self.changed,
            next_after,
            upto,
            took_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// Replays a snapshot's decisions with `candidate`, listing up to `listed` changed ones
/// after seq `after`. Deciding runs off the async threads, a page at a time, so a long
/// replay never stalls the data plane's tasks.
pub async fn replay(
    candidate: Arc<Candidate>,
    mut snapshot: DecisionSnapshot,
    after: u64,
    listed: usize,
) -> Result<ReplayReport, StoreError> {
    let started = Instant::now();
    let upto = snapshot.upto();
    let mut tally = Tally::default();
    loop {
        let page = snapshot.next_page(PAGE).await?;
        if page.is_empty() {
            break;
        }
        let candidate = candidate.clone();
        let mut moved = std::mem::take(&mut tally);
        tally = tokio::task::spawn_blocking(move || {
            for d in &page {
                let redecided = candidate.redecide(d);
                moved.add(d, redecided, after, listed);
            }
            moved
        })
        .await
        .map_err(|e| StoreError::Sql(format!("the replay task failed: {e}")))?;
    }
    Ok(tally.report(started, upto))
}
