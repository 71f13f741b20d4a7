//! Time-boxed grants: an approval that also lets through, until it expires, the same
//! identity's identical calls (scope `identical`) or calls of the same tool (scope
//! `tool`) that the policy would hold. A grant never turns a deny into anything else,
//! and never stands in for more approvers than made it.
//!
//! Memory holds the active grants, to look one up without a read; the store is the
//! truth: each use commits with its decision only while the grant is active there, so a
//! revocation (on any replica) stops the next call.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::holds::CallKey;
use super::identity::Identity;
use super::store::{Store, StoreError, WriteOp};
use crate::api::{DecisionEvent, EventBody, Grant, GrantScope, IdentityRef, Outcome};

/// The principal a grant is for, in the form `Identity::principal` gives.
fn principal_of(identity: &IdentityRef) -> String {
    format!(
        "{}:{}",
        identity.kind.as_str(),
        super::identity::normalize_name(&identity.name)
    )
}

/// The reason of a decision a grant made.
pub fn granted_reason(grant: &Grant, policy_reason: &str) -> String {
    format!(
        "allowed by {} until {}; the policy held it: {policy_reason}",
        grant.label(),
        grant.expires_at
    )
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no active grant with that id")]
    NotFound,
    #[error("{0} may not revoke grants of {1} (approves)")]
    OutOfScope(String, String),
    /// Revoked or expired already: the grant as it is.
    #[error("the grant is no longer active")]
    Ended(Box<Grant>),
    #[error(transparent)]
    Store(StoreError),
}

pub struct Grants {
    store: Store,
    /// Active grants (some may have expired since) by id, each with its principal.
    active: Mutex<HashMap<String, (String, Grant)>>,
}

/// A call the policy held, as a grant must match it.
pub struct Call<'a> {
    pub held: &'a DecisionEvent,
    /// The keyed hash of the exact call.
    pub hash: &'a str,
    /// The tool's definition as the catalog knows it now.
    pub definition_sha256: Option<&'a str>,
}

impl Grants {
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let grants = Self {
            active: Mutex::new(HashMap::new()),
            store,
        };
        grants.reload().await?;
        Ok(grants)
    }

    /// Reads the active grants again: after missed events from another replica.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let stored = self.store.active_grants(None).await?;
        *self.memory() = stored
            .into_iter()
            .map(|g| (g.id.clone(), (principal_of(&g.identity), g)))
            .collect();
        Ok(())
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Grant)>> {
        self.active.lock().expect("grants")
    }

    /// A grant made (here, or on another replica): known from now on.
    pub fn learned(&self, grant: Grant) {
        self.memory()
            .entry(grant.id.clone())
            .or_insert_with(|| (principal_of(&grant.identity), grant));
    }

    /// A grant revoked, or found ended: forgotten.
    pub fn ended(&self, id: &str) {
        self.memory().remove(id);
    }

    /// Active grants, from the store (which counts every replica's uses).
    pub async fn list(&self) -> Result<Vec<Grant>, StoreError> {
        self.store.active_grants(None).await
    }

    /// The active grant an approval of hold `call_id` made, if memory has it.
    pub fn made_by(&self, call_id: &str) -> Option<Grant> {
        self.memory()
            .values()
            .find(|(_, g)| g.call_id == call_id)
            .map(|(_, g)| g.clone())
    }

    /// The grant, if any, that covers a call the policy held: the same identity and
    /// tool, at the class and definition it was approved at, for scope `identical` the
    /// same exact call, made by at least as many approvers as the call needs. The
    /// longest-lasting one wins.
    fn covering(&self, principal: &str, call: &Call<'_>, now: DateTime<Utc>) -> Option<Grant> {
        let held = call.held;
        let mut active = self.memory();
        active.retain(|_, (_, g)| g.is_active(now));
        active
            .values()
            .filter(|(p, g)| {
                p == principal
                    && g.upstream == held.upstream
                    && g.tool == held.tool
                    && g.risk == held.risk
                    && g.definition_sha256.as_deref() == call.definition_sha256
                    && g.approvers.len() as u32 >= held.approvals_required.max(1)
                    && match g.scope {
                        GrantScope::Tool => true,
                        GrantScope::Identical => g.call_hash.as_deref() == Some(call.hash),
                    }
            })
            .max_by(|a, b| a.1.expires_at.cmp(&b.1.expires_at))
            .map(|(_, g)| g.clone())
    }

    /// Lets a call the policy held run under a grant that covers it: its decision (an
    /// allow naming the grant) and the grant's use commit together. `Ok(None)` when no
    /// active grant covers it; the call is then held as decided.
    pub async fn run_under_grant(
        &self,
        identity: &Identity,
        key: &CallKey,
        held: &DecisionEvent,
        definition_sha256: Option<&str>,
    ) -> Result<Option<DecisionEvent>, StoreError> {
        if held.outcome != Outcome::Hold {
            return Ok(None);
        }
        let principal = identity.principal();
        let call = Call {
            held,
            hash: &key.hash,
            definition_sha256,
        };
        // Beside other replicas, a grant made a moment ago elsewhere may not have reached
        // this one's memory yet: the store is asked (by the index) when memory has none.
        let mut found = self.covering(&principal, &call, Utc::now());
        if found.is_none() && self.store.is_shared() {
            let of = (
                principal.as_str(),
                held.upstream.as_str(),
                held.tool.as_str(),
            );
            for grant in self.store.active_grants(Some(of)).await? {
                self.learned(grant);
            }
            found = self.covering(&principal, &call, Utc::now());
        }
        while let Some(grant) = found {
            let mut allowed = held.clone();
            allowed.outcome = Outcome::Allow;
            allowed.reason = granted_reason(&grant, &held.reason);
            allowed.grant = Some(grant.id.clone());
            let used = WriteOp::GrantUsed {
                id: grant.id.clone(),
            };
            match self
                .store
                .commit_decision_with(EventBody::Decision(allowed), used)
                .await
            {
                Ok(committed) => return Ok(Some(committed.into_decision())),
                // Revoked elsewhere, or expired at the commit: another may still cover it.
                Err(StoreError::GrantEnded(_)) => {
                    self.ended(&grant.id);
                    found = self.covering(&principal, &call, Utc::now());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Revokes an active grant. The same operators may revoke it as may resolve holds
    /// of its tool.
    pub async fn revoke(
        &self,
        id: &str,
        approver: &super::holds::Approver,
    ) -> Result<Grant, RevokeError> {
        let grant = match self.store.active_grants(None).await {
            Ok(all) => all.into_iter().find(|g| g.id == id),
            Err(e) => return Err(RevokeError::Store(e)),
        };
        let Some(grant) = grant else {
            return Err(RevokeError::NotFound);
        };
        if !approver.may_resolve(&grant.upstream, &grant.tool) {
            return Err(RevokeError::OutOfScope(
                approver.name.clone(),
                format!("{}/{}", grant.upstream, grant.tool),
            ));
        }
        let revoke = WriteOp::GrantRevoked {
            id: id.to_owned(),
            by: approver.name.clone(),
        };
        match self.store.write_in_time(revoke).await {
            Ok(committed) => {
                self.ended(id);
                let at = committed.events.first().map(|e| e.ts.clone());
                Ok(Grant {
                    revoked_at: at,
                    revoked_by: Some(approver.name.clone()),
                    ..grant
                })
            }
            Err(StoreError::GrantEnded(Some(now))) => {
                self.ended(id);
                Err(RevokeError::Ended(now))
            }
            Err(StoreError::GrantEnded(None)) => Err(RevokeError::NotFound),
            Err(e) => Err(RevokeError::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests;
