//! The hold queue: calls waiting for a person, and the rules for resolving them.
//!
//! Every change happens under one lock, including its commit, so two operators who
//! resolve the same hold at once get exactly one winner. The gateway never runs a held
//! call on its own: an approval either reaches the client still waiting on its stream,
//! or waits for that client's identical retry.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::time::rfc3339;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, oneshot};

use super::grants::Grants;
use super::identity::Identity;
use super::keys::CallMac;
use super::policy::Decision;
use super::store::{HoldState, Store, StoreError, StoredHold, WriteOp, decision_of};
use crate::api::{
    DecisionEvent, EventBody, Grant, GrantRequest, HoldApproval, HoldPhase, HoldView, IdentityKind,
    Outcome, Resolution,
};

/// What a waiting client is told when its hold is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Denied { by: String, reason: Option<String> },
    Expired,
    Cancelled,
}

/// How many calls may be held, and how big one may be: a held call's arguments stay
/// in memory, unredacted, until it is resolved and run.
#[derive(Debug, Clone, Copy)]
pub struct HoldLimits {
    pub per_identity: usize,
    pub total: usize,
    /// The most bytes one held call may keep: its request body, which holds its
    /// arguments, id and `_meta`, and is kept whole to be sent on approval.
    pub call_bytes: usize,
}

impl HoldLimits {
    pub fn from_config(gateway: &crate::config::GatewaySection) -> Self {
        Self {
            per_identity: gateway.max_holds_per_identity,
            total: gateway.max_holds,
            call_bytes: gateway.max_held_call_bytes,
        }
    }

    /// No limit: for tests and benchmarks of the queue itself.
    pub fn none() -> Self {
        Self {
            per_identity: usize::MAX,
            total: usize::MAX,
            call_bytes: usize::MAX,
        }
    }
}

/// The policy id a deny for a hold limit names.
pub const HOLD_LIMIT_POLICY: &str = "toolgate-hold-limit";

/// The reason of an allow that an approval gave an identical retry.
pub fn approved_retry_reason(approver: &str, call_id: &str) -> String {
    format!("approved by {approver} as {call_id}")
}

/// What the policy itself decided for a recorded decision: a call denied for a hold
/// limit, or run by an approval or a grant, was one the policy held. (Decisions
/// recorded before `approved_as` existed are told by their reason.)
pub fn policy_outcome(d: &DecisionEvent) -> Outcome {
    let limited = d.policy_ids.iter().any(|p| p == HOLD_LIMIT_POLICY);
    let approved = d.outcome == Outcome::Allow
        && (d.approved_as.is_some()
            || d.grant.is_some()
            || (d.reason.starts_with("approved by ") && d.reason.contains(" as ")));
    if limited || approved {
        Outcome::Hold
    } else {
        d.outcome
    }
}

/// A hold that was opened.
#[derive(Debug)]
pub struct Created {
    /// What the waiting client listens on.
    pub verdict: oneshot::Receiver<Verdict>,
    /// When the hold stops being approvable (RFC 3339).
    pub expires_at: String,
    /// The committed decision.
    pub decision: DecisionEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A limit was reached: the call was committed as this deny instead.
    #[error("{}", .0.reason)]
    Refused(Box<DecisionEvent>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What became of a retry that may have been approved as an earlier identical call.
#[derive(Debug)]
pub enum Retry {
    /// An approval was waiting: the retry runs, with this committed decision.
    Ran(DecisionEvent),
    /// None was: the decision as it came, not yet committed.
    NotApproved(DecisionEvent),
}

/// How a 2026-07-28 client's retried wait on a hold (its `requestState`) goes on.
#[derive(Debug)]
pub enum Rejoined {
    /// Still held, or approved and not yet run (`approved`): the verdict comes (or
    /// came) here.
    Waiting {
        verdict: oneshot::Receiver<Verdict>,
        expires_at: String,
        approved: bool,
    },
    /// It ended: how.
    Ended(Box<HoldView>),
}

/// Someone resolving holds: an operator's name and the identities that are them.
#[derive(Debug, Clone)]
pub struct Approver {
    pub name: String,
    pub principals: Vec<String>,
    /// The holds this operator may resolve (`upstream/tool` globs); `None`, every hold.
    pub approves: Option<Vec<String>>,
}

impl From<&crate::config::OperatorConfig> for Approver {
    fn from(op: &crate::config::OperatorConfig) -> Self {
        Self {
            name: op.name.clone(),
            principals: op.principals.clone(),
            approves: op.approves.clone(),
        }
    }
}

impl Approver {
    /// Whether this operator may resolve a hold of `upstream/tool`.
    pub fn may_resolve(&self, upstream: &str, tool: &str) -> bool {
        may_resolve(self.approves.as_deref(), upstream, tool)
    }
}

use crate::api::may_resolve;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no hold with that call id")]
    NotFound,
    #[error("{0} may not resolve a call they made or whose token they own")]
    SelfApproval(String),
    #[error("the hold is already resolved")]
    AlreadyResolved(Box<HoldView>),
    /// The hold's tool is outside what this operator may resolve (`approves`).
    #[error("{0} may not resolve holds of {1} (approves)")]
    OutOfScope(String, String),
    /// This operator has approved this hold already; it waits for another.
    #[error("already approved by this operator")]
    AlreadyApproved(Box<HoldView>),
    /// An approval of a hold that needs several asked for a grant other than the one
    /// an earlier approval asked for.
    #[error(
        "the approvals so far asked for {0}; a grant needs every approval to ask for the same one"
    )]
    GrantMismatch(String, Box<HoldView>),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ResolveError {
    /// A resolution the store refused because the hold was resolved first (elsewhere)
    /// is a race lost, answered with how the hold ended.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::HoldTaken(stored) => match restore(&stored) {
                Some(hold) => ResolveError::AlreadyResolved(Box::new(hold.view(&stored.call_id))),
                None => ResolveError::Store(StoreError::HoldTaken(stored)),
            },
            StoreError::NoSuchHold => ResolveError::NotFound,
            other => ResolveError::Store(other),
        }
    }
}

/// What re-evaluating a held call needs.
#[derive(Debug, Clone)]
pub struct HeldCall {
    pub identity: Arc<Identity>,
    /// The unredacted arguments; gone after a restart.
    pub args: Option<Map<String, Value>>,
    pub decision: DecisionEvent,
}

struct Hold {
    call: HeldCall,
    call_hash: String,
    /// The exact call, while it is in memory: a retry must match it byte for byte.
    canonical: Option<Vec<u8>>,
    session_id: Option<String>,
    request_id: Value,
    expires_at: DateTime<Utc>,
    waiter: Option<oneshot::Sender<Verdict>>,
    resolution: Option<Resolved>,
    /// For a hold that needs several approvals: those given so far.
    approvals: Vec<HoldApproval>,
    /// The grant its approval made.
    grant: Option<Grant>,
}

#[derive(Clone)]
struct Resolved {
    resolution: Resolution,
    by: String,
    reason: Option<String>,
    at: String,
}

impl Hold {
    /// Whether the call is still kept in memory: until it is resolved, and while an
    /// approval waits for its retry.
    fn keeps_call(&self) -> bool {
        matches!(
            self.resolution.as_ref().map(|r| r.resolution),
            None | Some(Resolution::Approved)
        )
    }

    fn phase(&self) -> HoldPhase {
        match &self.waiter {
            Some(w) if !w.is_closed() => HoldPhase::Waiting,
            _ => HoldPhase::Pending,
        }
    }

    fn view(&self, call_id: &str) -> HoldView {
        HoldView {
            call_id: call_id.to_owned(),
            phase: self.phase(),
            expires_at: rfc3339(self.expires_at),
            call: self.call.decision.clone(),
            resolution: self.resolution.as_ref().map(|r| r.resolution),
            resolved_by: self.resolution.as_ref().map(|r| r.by.clone()),
            resolved_at: self.resolution.as_ref().map(|r| r.at.clone()),
            reason: self.resolution.as_ref().and_then(|r| r.reason.clone()),
            approvals: self.approvals.clone(),
            grant: self.grant.clone(),
        }
    }

    /// How many operators must approve it.
    fn required(&self) -> u32 {
        self.call.decision.approvals_required.max(1)
    }
}

/// What makes two calls identical: the same identity, upstream, tool and exact
/// canonical arguments (numbers as written, see `exact`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallKey {
    /// HMAC-SHA-256 of `canonical` under the deployment key: stored, and safe to store,
    /// since nobody without the key can test a guess of a redacted value against it.
    pub hash: String,
    /// `[principal, upstream, tool, arguments]` as canonical JSON. Unredacted, so it
    /// lives only in memory, beside the hold's arguments.
    pub canonical: Vec<u8>,
}

impl CallKey {
    pub fn new(
        mac: &CallMac,
        identity: &Identity,
        upstream: &str,
        tool: &str,
        canonical_args: &[u8],
    ) -> Self {
        let mut canonical = Vec::with_capacity(canonical_args.len() + 128);
        canonical.push(b'[');
        for part in [identity.principal().as_str(), upstream, tool] {
            serde_json::to_writer(&mut canonical, part).expect("writing to a Vec");
            canonical.push(b',');
        }
        canonical.extend_from_slice(canonical_args);
        canonical.push(b']');
        Self {
            hash: mac.hex(&canonical),
            canonical,
        }
    }
}

/// A new hold, as the data plane asks for it.
pub struct NewHold {
    pub call: HeldCall,
    pub key: CallKey,
    /// The bytes of the request, kept until the hold is resolved.
    pub size: usize,
    pub session_id: Option<String>,
    pub request_id: Value,
    pub ttl: chrono::Duration,
}

pub struct Holds {
    store: Store,
    /// The grants approvals made: what lets a held call's like through later.
    pub grants: Grants,
    holds: Mutex<HashMap<String, Hold>>,
    /// Approved holds not yet run, by call hash, so that every held call's look for an
    /// approved identical one is a lookup, not a walk over all holds. Changed only while
    /// `holds` is locked.
    approved: std::sync::Mutex<HashMap<String, Vec<String>>>,
    limits: HoldLimits,
}

impl Holds {
    /// Loads the holds that survived a restart: all pending now, none with a client.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let grants = Grants::load(store.clone()).await?;
        let mut holds = HashMap::new();
        let mut approved: HashMap<String, Vec<String>> = HashMap::new();
        for stored in store.open_holds().await? {
            match restore(&stored).map(|h| with_grant(h, &grants, &stored.call_id)) {
                Some(hold) => {
                    if stored.resolution == Some(Resolution::Approved) {
                        approved
                            .entry(hold.call_hash.clone())
                            .or_default()
                            .push(stored.call_id.clone());
                    }
                    holds.insert(stored.call_id.clone(), hold);
                }
                None => {
                    tracing::error!(call_id = %stored.call_id, "stored hold unreadable; it stays unresolved until it expires")
                }
            }
        }
        Ok(Self {
            grants,
            store,
            holds: Mutex::new(holds),
            approved: std::sync::Mutex::new(approved),
            limits: HoldLimits::none(),
        })
    }

    /// A stored hold in memory's form, with the grant its approval made.
    fn restored(&self, stored: &StoredHold) -> Option<Hold> {
        restore(stored).map(|h| with_grant(h, &self.grants, &stored.call_id))
    }

    /// A grant made on another replica: known here, and shown with the hold it came from.
    pub async fn grant_made(&self, grant: Grant) {
        if let Some(hold) = self.holds.lock().await.get_mut(&grant.call_id) {
            hold.grant = Some(grant.clone());
        }
        self.grants.learned(grant);
    }

    /// The same holds, with these limits for new ones.
    pub fn with_limits(mut self, limits: HoldLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Commits a held call's decision and its hold together, or, when the hold would
    /// pass a limit, commits the call as a deny that says which limit and why.
    pub async fn create(&self, mut new: NewHold) -> Result<Created, CreateError> {
        let mut holds = self.holds.lock().await;
        if let Some(why) = self.over_limit(&holds, &new) {
            let d = &mut new.call.decision;
            d.outcome = Outcome::Deny;
            d.policy_ids = vec![HOLD_LIMIT_POLICY.into()];
            d.reason = why;
            let denied = self
                .store
                .commit_decision(EventBody::Decision(new.call.decision))
                .await?;
            return Err(CreateError::Refused(Box::new(decision_of(denied))));
        }
        let call_id = new.call.decision.call_id.clone();
        let created = Utc::now();
        let expires_at = created + new.ttl;
        let stored = StoredHold {
            call_id: call_id.clone(),
            call_hash: new.key.hash.clone(),
            identity: serde_json::to_string(&*new.call.identity)
                .map_err(|e| StoreError::Sql(e.to_string()))?,
            decision: serde_json::to_string(&new.call.decision)
                .map_err(|e| StoreError::Sql(e.to_string()))?,
            session_id: new.session_id.clone(),
            request_id: new.request_id.to_string(),
            created_at: rfc3339(created),
            expires_at: rfc3339(expires_at),
            ttl_ms: new.ttl.num_milliseconds().max(0) as u64,
            resolution: None,
            resolved_by: None,
            reason: None,
            resolved_at: None,
            approvals: Vec::new(),
        };
        let (tx, rx) = oneshot::channel();
        let committed = self
            .store
            .commit_decision_with(
                EventBody::Decision(new.call.decision.clone()),
                WriteOp::HoldCreated(Box::new(stored)),
            )
            .await?;
        let decision = committed.into_decision();
        holds.insert(
            call_id,
            Hold {
                call: new.call,
                call_hash: new.key.hash,
                canonical: Some(new.key.canonical),
                session_id: new.session_id,
                request_id: new.request_id,
                expires_at,
                waiter: Some(tx),
                approvals: Vec::new(),
                resolution: None,
                grant: None,
            },
        );
        Ok(Created {
            verdict: rx,
            expires_at: rfc3339(expires_at),
            decision,
        })
    }

    /// Which limit a new hold would pass, if any. Holds whose call is still in memory
    /// count: unresolved ones, and approved ones waiting for their retry.
    fn over_limit(&self, holds: &HashMap<String, Hold>, new: &NewHold) -> Option<String> {
        let limits = &self.limits;
        let size = new.size.max(new.key.canonical.len());
        if size > limits.call_bytes {
            return Some(format!(
                "the call is {size} bytes, over the {} bytes a held call may keep in memory (max_held_call_bytes); the call is denied",
                limits.call_bytes
            ));
        }
        let identity = &new.call.identity;
        let (mut total, mut mine) = (0usize, 0usize);
        for hold in holds.values().filter(|h| h.keeps_call()) {
            total += 1;
            let other = &hold.call.identity;
            mine += usize::from(other.kind == identity.kind && other.name == identity.name);
        }
        if mine >= limits.per_identity {
            return Some(format!(
                "{} already has {mine} held calls, the most max_holds_per_identity allows; the call is denied",
                identity.principal()
            ));
        }
        if total >= limits.total {
            return Some(format!(
                "the gateway already holds {total} calls, the most max_holds allows; the call is denied"
            ));
        }
        None
    }

    /// The client stopped waiting (its wait ended, or it went away): the hold stays
    /// pending, and an approval will serve only an identical retry. A waiter a newer leg
    /// of the wait put in place (its receiver alive) is that leg's, and stays.
    pub async fn release_waiter(&self, call_id: &str) {
        let now_pending = match self.holds.lock().await.get_mut(call_id) {
            Some(hold) if hold.waiter.as_ref().is_some_and(|w| w.is_closed()) => {
                hold.waiter = None;
                hold.resolution.is_none()
            }
            _ => false,
        };
        // Consoles show the phase live: the stream says when a waiting hold turns pending.
        if now_pending {
            self.store
                .record(WriteOp::Event(Box::new(EventBody::HoldPhaseChanged {
                    call_id: call_id.to_owned(),
                    phase: HoldPhase::Pending,
                })));
        }
    }

    /// A retried wait on hold `call_id` (a 2026-07-28 client's `requestState`, whose seal
    /// was verified and whose call hashes to `call_hash`): the new request waits on the
    /// hold, here or on whichever replica made it, and is answered as the first would
    /// have been; the newest leg takes the wait over from an older one (whose client is
    /// most likely gone). `None`: no such hold of that call.
    pub async fn rejoin(
        &self,
        call_id: &str,
        call_hash: &str,
        request_id: Value,
    ) -> Result<Option<Rejoined>, StoreError> {
        // Made on another replica, or before a restart: the store has it, read without
        // holding the queue.
        let known = self.holds.lock().await.contains_key(call_id);
        let stored = match known {
            true => None,
            false => match self.store.hold(call_id).await? {
                Some(stored) => Some(stored),
                None => return Ok(None),
            },
        };
        let mut holds = self.holds.lock().await;
        if let Some(stored) = stored
            && !holds.contains_key(call_id)
        {
            let Some(hold) = self.restored(&stored) else {
                return Ok(None);
            };
            if !hold.keeps_call() {
                return Ok(Some(Rejoined::Ended(Box::new(hold.view(call_id)))));
            }
            if stored.resolution == Some(Resolution::Approved) {
                self.approved_index()
                    .entry(hold.call_hash.clone())
                    .or_default()
                    .push(call_id.to_owned());
            }
            holds.insert(call_id.to_owned(), hold);
        }
        let Some(hold) = holds.get_mut(call_id) else {
            return Ok(None);
        };
        if hold.call_hash != call_hash {
            return Ok(None);
        }
        if hold.resolution.is_none() && hold.expires_at <= Utc::now() {
            match self
                .resolve(hold, call_id, Resolution::Expired, "toolgate", None)
                .await
            {
                Ok(view) => return Ok(Some(Rejoined::Ended(Box::new(view)))),
                Err(StoreError::HoldTaken(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let (tx, rx) = oneshot::channel();
        let approved = match hold.resolution.as_ref().map(|r| r.resolution) {
            None => {
                // An older leg still waiting hears that it was taken over.
                let was_waiting = hold.waiter.replace(tx).is_some_and(|w| !w.is_closed());
                hold.request_id = request_id;
                if !was_waiting {
                    self.store
                        .record(WriteOp::Event(Box::new(EventBody::HoldPhaseChanged {
                            call_id: call_id.to_owned(),
                            phase: HoldPhase::Waiting,
                        })));
                }
                false
            }
            // Approved while the client was between two waits: it may run on this one.
            Some(Resolution::Approved) => {
                let _ = tx.send(Verdict::Approved);
                true
            }
            Some(_) => return Ok(Some(Rejoined::Ended(Box::new(hold.view(call_id))))),
        };
        Ok(Some(Rejoined::Waiting {
            verdict: rx,
            expires_at: rfc3339(hold.expires_at),
            approved,
        }))
    }

    /// Unresolved holds, soonest expiry first.
    pub async fn open(&self) -> Vec<HoldView> {
        let holds = self.holds.lock().await;
        let mut open: Vec<HoldView> = holds
            .iter()
            .filter(|(_, h)| h.resolution.is_none())
            .map(|(id, h)| h.view(id))
            .collect();
        open.sort_by(|a, b| a.expires_at.cmp(&b.expires_at));
        open
    }

    /// Approves a hold after re-evaluating its call under the current policy. If the
    /// policy now denies it, the hold resolves `denied` by `policy`, and the approver
    /// learns so as a conflict.
    pub async fn approve(
        &self,
        call_id: &str,
        approver: &Approver,
        reason: Option<String>,
        grant: Option<GrantRequest>,
        reevaluate: impl FnOnce(&HeldCall) -> Decision,
    ) -> Result<HoldView, ResolveError> {
        let mut holds = self.holds.lock().await;
        let hold = self.unresolved(&mut holds, call_id, approver).await?;
        if hold.approvals.iter().any(|a| a.by == approver.name) {
            return Err(ResolveError::AlreadyApproved(Box::new(hold.view(call_id))));
        }
        // A grant from a two-person hold needs every approval to ask for it: one that
        // asks for another is refused, rather than silently making none.
        if let Some(asked) = grant
            && let Some(other) = hold.approvals.iter().find(|a| a.grant != Some(asked))
        {
            let theirs = match other.grant {
                Some(g) => format!("a grant of scope {} for {} s", g.scope.as_str(), g.for_secs),
                None => "no grant".to_owned(),
            };
            return Err(ResolveError::GrantMismatch(
                theirs,
                Box::new(hold.view(call_id)),
            ));
        }
        // Every approval re-evaluates the call under the policy in force now: a policy
        // that now denies it ends the hold, and one that now asks more approvals than
        // when it was held is followed (never fewer).
        let decision = reevaluate(&hold.call);
        if decision.outcome == Outcome::Deny {
            let why = format!("re-evaluated at approval: {}", decision.reason);
            let view = self
                .resolve(
                    hold,
                    call_id,
                    Resolution::Denied,
                    "policy",
                    Some(why.clone()),
                )
                .await?;
            notify(
                hold,
                Verdict::Denied {
                    by: "policy".into(),
                    reason: Some(why),
                },
            );
            return Err(ResolveError::AlreadyResolved(Box::new(view)));
        }
        let required = hold.required().max(decision.approvals);
        if required > 1 {
            hold.call.decision.approvals_required = required;
            return self
                .approve_one_of_several(hold, call_id, approver, reason, grant, required)
                .await;
        }
        let committed = self
            .commit_resolution(
                call_id,
                Resolution::Approved,
                &approver.name,
                &reason,
                None,
                grant,
            )
            .await;
        let view = self.resolved(
            hold,
            call_id,
            committed,
            Resolution::Approved,
            &approver.name,
            reason,
        )?;
        self.approved_index()
            .entry(hold.call_hash.clone())
            .or_default()
            .push(call_id.to_owned());
        notify(hold, Verdict::Approved);
        Ok(view)
    }

    /// One approval of a hold that needs `required`: the store records it and, when it
    /// makes `required` (counting the approvals given on any replica), resolves the hold
    /// in the same transaction.
    async fn approve_one_of_several(
        &self,
        hold: &mut Hold,
        call_id: &str,
        approver: &Approver,
        reason: Option<String>,
        grant: Option<GrantRequest>,
        required: u32,
    ) -> Result<HoldView, ResolveError> {
        let approval = WriteOp::HoldApproval {
            call_id: call_id.to_owned(),
            by: approver.name.clone(),
            reason: reason.clone(),
            required,
            grant,
        };
        let committed = match self.store.write_in_time(approval).await {
            Ok(committed) => committed,
            Err(StoreError::AlreadyApproved) => {
                // This replica had not heard of it yet: the store's list is the truth.
                if let Ok(Some(stored)) = self.store.hold(call_id).await {
                    hold.approvals = stored.approvals;
                }
                return Err(ResolveError::AlreadyApproved(Box::new(hold.view(call_id))));
            }
            Err(StoreError::HoldTaken(stored)) => {
                self.apply_stored(hold, &stored);
                return Err(ResolveError::AlreadyResolved(Box::new(hold.view(call_id))));
            }
            Err(e) => return Err(ResolveError::Store(e)),
        };
        for event in committed.events {
            match event.body {
                EventBody::HoldApproval {
                    by, reason, grant, ..
                } if !hold.approvals.iter().any(|a| a.by == by) => {
                    hold.approvals.push(HoldApproval {
                        by,
                        at: event.ts,
                        reason,
                        grant,
                    });
                }
                EventBody::GrantCreated(grant) => {
                    self.grants.learned(grant.clone());
                    hold.grant = Some(grant);
                }
                EventBody::HoldResolved { by, reason, .. } => {
                    mark_resolved(
                        hold,
                        Resolved {
                            resolution: Resolution::Approved,
                            by,
                            reason,
                            at: event.ts,
                        },
                    );
                    self.approved_index()
                        .entry(hold.call_hash.clone())
                        .or_default()
                        .push(call_id.to_owned());
                    notify(hold, Verdict::Approved);
                }
                _ => {}
            }
        }
        Ok(hold.view(call_id))
    }

    /// Gives a pending hold `secs` more before it expires (as a deny), counted from now
    /// or from its expiry, whichever is later. The same operators may extend it as may
    /// resolve it.
    pub async fn extend(
        &self,
        call_id: &str,
        approver: &Approver,
        secs: u64,
    ) -> Result<HoldView, ResolveError> {
        let mut holds = self.holds.lock().await;
        let hold = self.unresolved(&mut holds, call_id, approver).await?;
        let from = hold.expires_at.max(Utc::now());
        let expires_at = from + chrono::Duration::seconds(secs.min(i64::MAX as u64 / 2) as i64);
        match self
            .store
            .write_in_time(WriteOp::HoldExtended {
                call_id: call_id.to_owned(),
                expires_at: rfc3339(expires_at),
                by: approver.name.clone(),
            })
            .await
        {
            Ok(_) => {
                hold.expires_at = expires_at;
                Ok(hold.view(call_id))
            }
            Err(StoreError::HoldTaken(stored)) => {
                self.apply_stored(hold, &stored);
                Err(ResolveError::AlreadyResolved(Box::new(hold.view(call_id))))
            }
            Err(e) => Err(ResolveError::Store(e)),
        }
    }

    /// A new expiry given on another replica: known here.
    pub async fn extended_elsewhere(&self, call_id: &str, expires_at: &str) {
        let mut holds = self.holds.lock().await;
        if let Some(hold) = holds.get_mut(call_id)
            && hold.resolution.is_none()
            && let Ok(at) = DateTime::parse_from_rfc3339(expires_at)
        {
            hold.expires_at = hold.expires_at.max(at.with_timezone(&Utc));
        }
    }

    pub async fn deny(
        &self,
        call_id: &str,
        approver: &Approver,
        reason: Option<String>,
    ) -> Result<HoldView, ResolveError> {
        let mut holds = self.holds.lock().await;
        let hold = self.unresolved(&mut holds, call_id, approver).await?;
        let view = self
            .resolve(
                hold,
                call_id,
                Resolution::Denied,
                &approver.name,
                reason.clone(),
            )
            .await?;
        notify(
            hold,
            Verdict::Denied {
                by: approver.name.clone(),
                reason,
            },
        );
        Ok(view)
    }

    /// Resolves every unresolved hold past its expiry, and forgets resolved ones.
    pub async fn expire_due(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut holds = self.holds.lock().await;
        let due: Vec<String> = holds
            .iter()
            .filter(|(_, h)| h.resolution.is_none() && h.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for call_id in &due {
            let hold = holds.get_mut(call_id).expect("listed above");
            // Another replica may have resolved it (or expired it) first: `resolve` has
            // then put that in memory, and told the waiting client.
            match self
                .resolve(hold, call_id, Resolution::Expired, "toolgate", None)
                .await
            {
                Ok(_) => notify(hold, Verdict::Expired),
                Err(StoreError::HoldTaken(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Only what may still be resolved or run stays in memory: unresolved holds, and
        // approved ones until their retry or expiry. A late resolver of any other is
        // answered from the store (`unresolved`).
        holds.retain(|_, h| h.resolution.is_none() || (h.keeps_call() && h.expires_at > now));
        self.approved_index().retain(|_, ids| {
            ids.retain(|id| holds.contains_key(id));
            !ids.is_empty()
        });
        Ok(due.len())
    }

    /// A `notifications/cancelled` from the client that made the call: the hold
    /// resolves `cancelled`, and later approvals or denials get 409.
    pub async fn cancel(
        &self,
        principal: &str,
        upstream: &str,
        session_id: Option<&str>,
        request_id: &Value,
    ) -> Result<Option<String>, StoreError> {
        let mut holds = self.holds.lock().await;
        let found = holds.iter().find(|(_, h)| {
            h.resolution.is_none()
                && h.call.identity.principal() == principal
                && h.call.decision.upstream == upstream
                && h.session_id.as_deref() == session_id
                && &h.request_id == request_id
        });
        let Some(call_id) = found.map(|(id, _)| id.clone()) else {
            return Ok(None);
        };
        let hold = holds.get_mut(&call_id).expect("found above");
        match self
            .resolve(hold, &call_id, Resolution::Cancelled, "client", None)
            .await
        {
            Ok(_) => notify(hold, Verdict::Cancelled),
            // Resolved elsewhere first: that resolution stands.
            Err(StoreError::HoldTaken(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(call_id))
    }

    /// Marks an approved hold as run by its waiting client. When it is not approved any
    /// more (an identical retry ran it first), says what became of it instead.
    pub async fn consume(&self, call_id: &str) -> Result<Result<(), HoldView>, StoreError> {
        let mut holds = self.holds.lock().await;
        let Some(hold) = holds.get_mut(call_id) else {
            // Resolved and forgotten from memory: the store says what became of it.
            let stored = self.store.hold(call_id).await?;
            let hold = stored.as_ref().and_then(|s| self.restored(s));
            return match hold {
                Some(h) => Ok(Err(h.view(call_id))),
                None => Err(StoreError::Sql(format!("hold {call_id} is gone"))),
            };
        };
        if hold.resolution.as_ref().map(|r| r.resolution) != Some(Resolution::Approved) {
            return Ok(Err(hold.view(call_id)));
        }
        let call_hash = hold.call_hash.clone();
        let ran = match self
            .resolve(hold, call_id, Resolution::Consumed, "client", None)
            .await
        {
            Ok(_) => Ok(()),
            // An identical retry on another replica ran it first.
            Err(StoreError::HoldTaken(_)) => Err(hold.view(call_id)),
            Err(e) => return Err(e),
        };
        self.unindex_approved(&call_hash, call_id);
        Ok(ran)
    }

    /// Runs the approval of an identical earlier call on this retry, once: the retry's
    /// decision (an allow naming the approval) and the hold's `consumed` commit in one
    /// transaction, so a failed commit loses neither the audit record nor the approval.
    pub async fn consume_identical(
        &self,
        key: &CallKey,
        now: DateTime<Utc>,
        mut decision: DecisionEvent,
    ) -> Result<Retry, StoreError> {
        let mut holds = self.holds.lock().await;
        // Beside other replicas, an approval given a moment ago elsewhere may not have
        // reached this one's memory yet: the store is asked.
        if self.store.is_shared() && !self.approved_index().contains_key(&key.hash) {
            for stored in self.store.approved_holds(&key.hash).await? {
                if !holds.contains_key(&stored.call_id)
                    && let Some(hold) = self.restored(&stored)
                {
                    self.approved_index()
                        .entry(key.hash.clone())
                        .or_default()
                        .push(stored.call_id.clone());
                    holds.insert(stored.call_id.clone(), hold);
                }
            }
        }
        let candidates = self
            .approved_index()
            .get(&key.hash)
            .cloned()
            .unwrap_or_default();
        let found = candidates.into_iter().find(|id| {
            holds.get(id).is_some_and(|h| {
                h.expires_at > now
                    && h.resolution.as_ref().map(|r| r.resolution) == Some(Resolution::Approved)
                    // Byte for byte while the original is in memory; after a restart,
                    // the keyed hash of the same canonical bytes.
                    && h.canonical.as_ref().is_none_or(|c| *c == key.canonical)
            })
        });
        let Some(call_id) = found else {
            return Ok(Retry::NotApproved(decision));
        };
        let hold = holds.get_mut(&call_id).expect("found above");
        let approver = hold
            .resolution
            .as_ref()
            .map_or("an operator", |r| r.by.as_str());
        // As it was decided, for when another replica runs the approval first.
        let undecided = decision.clone();
        decision.outcome = Outcome::Allow;
        decision.reason = approved_retry_reason(approver, &call_id);
        decision.approved_as = Some(call_id.clone());
        let reason = Some(format!("run as the identical retry {}", decision.call_id));
        let consumed = WriteOp::HoldResolved {
            call_id: call_id.clone(),
            approvers: Vec::new(),
            due_by: None,
            from: HoldState::Approved,
            resolution: Resolution::Consumed,
            by: "client".into(),
            reason: reason.clone(),
            grant: None,
        };
        let committed = match self
            .store
            .commit_decision_with(EventBody::Decision(decision), consumed)
            .await
        {
            Ok(committed) => committed,
            // Run first elsewhere (an identical retry on another replica): this call is
            // decided as if no approval were waiting.
            Err(StoreError::HoldTaken(stored)) => {
                self.apply_stored(hold, &stored);
                self.unindex_approved(&key.hash, &call_id);
                return Ok(Retry::NotApproved(undecided));
            }
            Err(e) => return Err(e),
        };
        let at = committed
            .events
            .get(1)
            .map(|e| e.ts.clone())
            .unwrap_or_default();
        mark_resolved(
            hold,
            Resolved {
                resolution: Resolution::Consumed,
                by: "client".into(),
                reason,
                at,
            },
        );
        self.unindex_approved(&key.hash, &call_id);
        Ok(Retry::Ran(committed.into_decision()))
    }

    fn approved_index(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.approved.lock().expect("approved holds index")
    }

    fn unindex_approved(&self, call_hash: &str, call_id: &str) {
        let mut index = self.approved_index();
        if let Some(ids) = index.get_mut(call_hash) {
            ids.retain(|id| id != call_id);
            if ids.is_empty() {
                index.remove(call_hash);
            }
        }
    }

    /// Finds a hold an approver may still resolve.
    async fn unresolved<'h>(
        &self,
        holds: &'h mut HashMap<String, Hold>,
        call_id: &str,
        approver: &Approver,
    ) -> Result<&'h mut Hold, ResolveError> {
        if !holds.contains_key(call_id) {
            // Forgotten after its expiry, never here, or created a moment ago on another
            // replica (whose event has not arrived yet): the store knows which.
            let stored = self.store.hold(call_id).await?;
            let restored = stored.as_ref().and_then(|s| self.restored(s));
            match (stored, restored) {
                (Some(stored), Some(hold)) if stored.resolution.is_none() => {
                    holds.insert(call_id.to_owned(), hold);
                }
                (Some(_), Some(h)) => {
                    return Err(ResolveError::AlreadyResolved(Box::new(h.view(call_id))));
                }
                _ => return Err(ResolveError::NotFound),
            }
        }
        let hold = holds
            .get_mut(call_id)
            .expect("in memory, or taken in above");
        if hold.resolution.is_some() {
            return Err(ResolveError::AlreadyResolved(Box::new(hold.view(call_id))));
        }
        // Past its expiry a hold cannot be approved, whether or not the expiry timer
        // has run yet: it expires now, and the operator hears so.
        if hold.expires_at <= Utc::now() {
            match self
                .resolve(hold, call_id, Resolution::Expired, "toolgate", None)
                .await
            {
                Ok(view) => {
                    notify(hold, Verdict::Expired);
                    return Err(ResolveError::AlreadyResolved(Box::new(view)));
                }
                // Extended elsewhere meanwhile: `resolve` took the new time; go on.
                Err(StoreError::HoldTaken(stored)) if stored.resolution.is_none() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let identity = &hold.call.identity;
        let own_token = identity.kind == IdentityKind::ApiToken
            && identity.owner.as_deref() == Some(&approver.name);
        if own_token || approver.principals.contains(&identity.principal()) {
            return Err(ResolveError::SelfApproval(approver.name.clone()));
        }
        let (upstream, tool) = (&hold.call.decision.upstream, &hold.call.decision.tool);
        if !approver.may_resolve(upstream, tool) {
            return Err(ResolveError::OutOfScope(
                approver.name.clone(),
                format!("{upstream}/{tool}"),
            ));
        }
        Ok(hold)
    }

    async fn resolve(
        &self,
        hold: &mut Hold,
        call_id: &str,
        resolution: Resolution,
        by: &str,
        reason: Option<String>,
    ) -> Result<HoldView, StoreError> {
        // An expiry is of the expiry this replica knows: one extended elsewhere
        // meanwhile is not expired (the store refuses, and its new time is taken).
        let due_by = (resolution == Resolution::Expired).then(|| rfc3339(hold.expires_at));
        let committed = self
            .commit_resolution(call_id, resolution, by, &reason, due_by, None)
            .await;
        self.resolved(hold, call_id, committed, resolution, by, reason)
    }

    /// Puts a resolution's commit (or its refusal) in memory.
    fn resolved(
        &self,
        hold: &mut Hold,
        call_id: &str,
        committed: Result<super::store::Committed, StoreError>,
        resolution: Resolution,
        by: &str,
        reason: Option<String>,
    ) -> Result<HoldView, StoreError> {
        let committed = match committed {
            Ok(c) => c,
            Err(StoreError::HoldTaken(stored)) => {
                // Resolved elsewhere first: memory takes that resolution, and the
                // client waiting here (if any) hears it. Still open (an expiry of a hold
                // extended elsewhere): memory takes its new time.
                if stored.resolution.is_none()
                    && let Ok(at) = DateTime::parse_from_rfc3339(&stored.expires_at)
                {
                    hold.expires_at = hold.expires_at.max(at.with_timezone(&Utc));
                }
                self.apply_stored(hold, &stored);
                return Err(StoreError::HoldTaken(stored));
            }
            Err(e) => return Err(e),
        };
        let at = committed
            .events
            .first()
            .map(|e| e.ts.clone())
            .unwrap_or_default();
        for event in committed.events {
            if let EventBody::GrantCreated(grant) = event.body {
                self.grants.learned(grant.clone());
                hold.grant = Some(grant);
            }
        }
        mark_resolved(
            hold,
            Resolved {
                resolution,
                by: by.to_owned(),
                reason,
                at,
            },
        );
        Ok(hold.view(call_id))
    }

    /// An approval of a hold that needs several, given on another replica: known here.
    pub async fn approval_elsewhere(&self, call_id: &str, approval: HoldApproval, required: u32) {
        let mut holds = self.holds.lock().await;
        if let Some(hold) = holds.get_mut(call_id) {
            let d = &mut hold.call.decision;
            d.approvals_required = d.approvals_required.max(required);
            if !hold.approvals.iter().any(|a| a.by == approval.by) {
                hold.approvals.push(approval);
            }
        }
    }

    async fn commit_resolution(
        &self,
        call_id: &str,
        resolution: Resolution,
        by: &str,
        reason: &Option<String>,
        due_by: Option<String>,
        grant: Option<GrantRequest>,
    ) -> Result<super::store::Committed, StoreError> {
        self.store
            .write_in_time(WriteOp::HoldResolved {
                call_id: call_id.to_owned(),
                // Only an approved hold is run; anything else resolves an open one.
                from: if resolution == Resolution::Consumed {
                    HoldState::Approved
                } else {
                    HoldState::Unresolved
                },
                resolution,
                by: by.to_owned(),
                reason: reason.clone(),
                approvers: Vec::new(),
                due_by,
                grant,
            })
            .await
    }

    /// Puts in memory a resolution the store holds (committed elsewhere), once, and
    /// tells the waiting client, if it waits here.
    fn apply_stored(&self, hold: &mut Hold, stored: &StoredHold) {
        let Some(resolution) = stored.resolution else {
            return;
        };
        self.apply_resolution(
            hold,
            &stored.call_id,
            Resolved {
                resolution,
                by: stored.resolved_by.clone().unwrap_or_default(),
                reason: stored.reason.clone(),
                at: stored.resolved_at.clone().unwrap_or_default(),
            },
        );
    }

    /// A resolution already committed, applied to memory if it is news: an approval
    /// joins the approved index, a run leaves it, and the waiting client hears it.
    fn apply_resolution(&self, hold: &mut Hold, call_id: &str, resolved: Resolved) {
        let current = hold.resolution.as_ref().map(|r| r.resolution);
        let news = match resolved.resolution {
            Resolution::Consumed => current != Some(Resolution::Consumed),
            _ => current.is_none(),
        };
        if !news {
            return;
        }
        let verdict = match resolved.resolution {
            Resolution::Approved => Some(Verdict::Approved),
            Resolution::Denied => Some(Verdict::Denied {
                by: resolved.by.clone(),
                reason: resolved.reason.clone(),
            }),
            Resolution::Expired => Some(Verdict::Expired),
            Resolution::Cancelled => Some(Verdict::Cancelled),
            Resolution::Consumed => None,
        };
        match resolved.resolution {
            Resolution::Approved => self
                .approved_index()
                .entry(hold.call_hash.clone())
                .or_default()
                .push(call_id.to_owned()),
            _ => self.unindex_approved(&hold.call_hash, call_id),
        }
        mark_resolved(hold, resolved);
        if let Some(verdict) = verdict {
            notify(hold, verdict);
        }
    }

    /// A hold another replica created: known here too, so that an approver here can
    /// resolve it and an identical retry here can run it. No client waits on it here.
    pub async fn adopt(&self, call_id: &str) -> Result<(), StoreError> {
        let mut holds = self.holds.lock().await;
        if holds.contains_key(call_id) {
            return Ok(());
        }
        let Some(stored) = self.store.hold(call_id).await? else {
            return Ok(());
        };
        match self.restored(&stored) {
            Some(hold) => {
                if stored.resolution == Some(Resolution::Approved) {
                    self.approved_index()
                        .entry(hold.call_hash.clone())
                        .or_default()
                        .push(call_id.to_owned());
                }
                if stored.resolution.is_none() || stored.resolution == Some(Resolution::Approved) {
                    holds.insert(call_id.to_owned(), hold);
                }
            }
            None => tracing::error!(%call_id, "a stored hold does not read; it is not adopted"),
        }
        Ok(())
    }

    /// A resolution another replica committed: applied here once, and the client
    /// waiting here (if it is this replica's) told.
    pub async fn resolved_elsewhere(
        &self,
        call_id: &str,
        resolution: Resolution,
        by: &str,
        reason: Option<String>,
        at: &str,
    ) {
        let mut holds = self.holds.lock().await;
        if let Some(hold) = holds.get_mut(call_id) {
            self.apply_resolution(
                hold,
                call_id,
                Resolved {
                    resolution,
                    by: by.to_owned(),
                    reason,
                    at: at.to_owned(),
                },
            );
        }
    }

    /// Reads again from the store every hold memory has not seen resolved (or run), and
    /// applies what happened to it elsewhere: a denial or an expiry committed while this
    /// replica's events were missed reaches the client waiting here.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let open: Vec<String> = self
            .holds
            .lock()
            .await
            .iter()
            .filter(|(_, h)| {
                matches!(
                    h.resolution.as_ref().map(|r| r.resolution),
                    None | Some(Resolution::Approved)
                )
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Read without holding the queue: calls go on meanwhile.
        for call_id in open {
            if let Some(stored) = self.store.hold(&call_id).await?
                && let Some(hold) = self.holds.lock().await.get_mut(&call_id)
            {
                if stored.resolution.is_none() {
                    hold.approvals = stored.approvals.clone();
                    if let Ok(at) = DateTime::parse_from_rfc3339(&stored.expires_at) {
                        hold.expires_at = hold.expires_at.max(at.with_timezone(&Utc));
                    }
                }
                self.apply_stored(hold, &stored);
            }
        }
        Ok(())
    }

    /// Loads every open hold the store has that memory does not: after the stream of
    /// another replica's events was interrupted.
    pub async fn adopt_all(&self) -> Result<(), StoreError> {
        for stored in self.store.open_holds().await? {
            self.adopt(&stored.call_id).await?;
            if let Some(resolution) = stored.resolution {
                self.resolved_elsewhere(
                    &stored.call_id,
                    resolution,
                    stored.resolved_by.as_deref().unwrap_or_default(),
                    stored.reason.clone(),
                    stored.resolved_at.as_deref().unwrap_or_default(),
                )
                .await;
            }
        }
        Ok(())
    }
}

/// Records a committed resolution in memory. A resolved call's arguments are not
/// needed again; an approved one's exact bytes are, to recognise its retry.
fn mark_resolved(hold: &mut Hold, resolved: Resolved) {
    if resolved.resolution != Resolution::Approved {
        hold.canonical = None;
    }
    hold.call.args = None;
    hold.resolution = Some(resolved);
}

fn notify(hold: &mut Hold, verdict: Verdict) {
    if let Some(waiter) = hold.waiter.take() {
        let _ = waiter.send(verdict);
    }
}

fn with_grant(mut hold: Hold, grants: &Grants, call_id: &str) -> Hold {
    hold.grant = grants.made_by(call_id);
    hold
}

fn restore(stored: &StoredHold) -> Option<Hold> {
    let identity: Identity = serde_json::from_str(&stored.identity).ok()?;
    let decision: DecisionEvent = serde_json::from_str(&stored.decision).ok()?;
    Some(Hold {
        call: HeldCall {
            identity: Arc::new(identity),
            args: None,
            decision,
        },
        call_hash: stored.call_hash.clone(),
        canonical: None,
        session_id: stored.session_id.clone(),
        request_id: serde_json::from_str(&stored.request_id).unwrap_or(Value::Null),
        expires_at: DateTime::parse_from_rfc3339(&stored.expires_at)
            .ok()?
            .with_timezone(&Utc),
        waiter: None,
        approvals: stored.approvals.clone(),
        grant: None,
        resolution: stored.resolution.map(|resolution| Resolved {
            resolution,
            by: stored.resolved_by.clone().unwrap_or_default(),
            reason: stored.reason.clone(),
            at: stored.resolved_at.clone().unwrap_or_default(),
        }),
    })
}

#[cfg(test)]
mod tests;
