//! Turning one `tools/call` into a committed decision: its facts, the policy's
//! answer, and the audit record that must exist before the answer takes effect.

use std::sync::Arc;
use std::time::Instant;

use axum::http::HeaderMap;
use serde_json::{Map, Value};
use wildmatch::WildMatch;

use super::Gateway;
use super::catalog::Catalog;
use super::holds::{CallKey, HeldCall, Retry};
use super::identity::Identity;
use super::mcp::ClientMessage;
use super::policy::{CallFacts, Decision, PolicyEngine};
use super::redact;
use super::store::StoreError;
use crate::api::{DecisionEvent, EventBody, Outcome, ShadowVerdict, Target, Workflow};
use crate::config::ResourceConfig;

/// Where the workflow context travels: in the request's `_meta`, or in a header.
pub const META_CONTEXT: &str = "toolgate/context";
pub const HEADER_CONTEXT: &str = "x-toolgate-context";

/// Argument names that commonly name a call's target, for tools no `[[resource]]`
/// describes. The first one present wins.
const COMMON_TARGETS: &[(&str, &str)] = &[
    ("projectKey", "project"),
    ("project_key", "project"),
    ("project", "project"),
    ("issueKey", "issue"),
    ("issue_key", "issue"),
    ("spaceKey", "space"),
    ("space_key", "space"),
    ("space", "space"),
    ("pageId", "page"),
    ("page_id", "page"),
    ("repository", "repository"),
    ("repo", "repository"),
    ("branch", "branch"),
    ("path", "path"),
    ("url", "url"),
];

/// Finds the target resource in a call's arguments.
pub struct TargetFinder {
    rules: Vec<(WildMatch, String, String)>,
}

impl TargetFinder {
    pub fn new(resources: &[ResourceConfig]) -> Self {
        Self {
            rules: resources
                .iter()
                .map(|r| (WildMatch::new(&r.tool), r.pointer.clone(), r.kind.clone()))
                .collect(),
        }
    }

    pub fn find(&self, tool: &str, args: &Map<String, Value>) -> Option<Target> {
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(super::exact::number_text(n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        for (glob, pointer, kind) in &self.rules {
            if glob.matches(tool)
                && let Some(id) = super::pointer::get(args, pointer).and_then(scalar)
            {
                return Some(Target {
                    kind: kind.clone(),
                    id,
                });
            }
        }
        COMMON_TARGETS.iter().find_map(|(arg, kind)| {
            args.get(*arg).and_then(scalar).map(|id| Target {
                kind: (*kind).to_owned(),
                id,
            })
        })
    }
}

/// The workflow context a call declares, if any. A malformed one is an error rather
/// than silently no context: a typo in `ticket` must not change a decision unseen.
pub fn workflow_of(
    message: &ClientMessage,
    headers: &HeaderMap,
) -> Result<Option<Workflow>, String> {
    let from_meta = message
        .body
        .pointer("/params/_meta")
        .and_then(|m| m.get(META_CONTEXT));
    let parsed = match (from_meta, headers.get(HEADER_CONTEXT)) {
        (Some(value), _) => serde_json::from_value::<Workflow>(value.clone()).map_err(|e| {
            format!("params._meta[\"{META_CONTEXT}\"] is not a valid workflow context: {e}")
        })?,
        (None, Some(header)) => {
            let text = header
                .to_str()
                .map_err(|_| format!("{HEADER_CONTEXT} is not valid text"))?;
            serde_json::from_str::<Workflow>(text)
                .map_err(|e| format!("{HEADER_CONTEXT} is not a valid workflow context: {e}"))?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(parsed))
}

/// The W3C `traceparent` a call carries, from its header or its `params._meta`, when it
/// is well formed (a malformed one is not stored; it still goes upstream as sent).
pub fn traceparent_of(message: &ClientMessage, headers: &HeaderMap) -> Option<String> {
    let from_meta = message
        .body
        .pointer("/params/_meta/traceparent")
        .and_then(Value::as_str);
    // One header only: two are no single trace.
    let mut sent = headers.get_all("traceparent").iter();
    let from_header = match (sent.next(), sent.next()) {
        (Some(one), None) => one.to_str().ok(),
        _ => None,
    };
    // The first well-formed one: a malformed `_meta` value does not hide a good header.
    [from_meta, from_header]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|t| is_traceparent(t))
        .map(str::to_owned)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, with neither id all
/// zeros and not version `ff` (W3C Trace Context). A later version's extra fields are not
/// taken: what is stored is what this gateway can read.
fn is_traceparent(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match parts.as_slice() {
        [version, trace, parent, flags] => {
            hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0')
                && text.len() == 55
        }
        _ => false,
    }
}

/// What a call says of where it comes from, besides its arguments.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub workflow: Option<Workflow>,
    pub traceparent: Option<String>,
}

/// A call decided and, unless it is to be held, committed.
#[derive(Debug)]
pub enum Decided {
    /// An allow or a deny, in the audit log: an allow may run, a deny is answered.
    Committed(DecisionEvent),
    /// A hold, not committed yet: it commits together with its hold.
    ToHold(DecisionEvent, CallKey),
}

impl Gateway {
    /// Decides a `tools/call` and commits the decision. A call the policy would hold
    /// that is the identical retry of an approved one runs instead, once: its allow and
    /// the approval's use commit together (see `Holds::consume_identical`). Failing
    /// that, one an active grant covers runs, naming the grant.
    pub async fn decide_call(
        self: &Arc<Self>,
        identity: &Identity,
        upstream: &str,
        tool: &str,
        args: &Map<String, Value>,
        context: CallContext,
        body: &[u8],
    ) -> Result<Decided, StoreError> {
        let mut decision = self.evaluate_call(identity, upstream, tool, args, context.workflow);
        decision.traceparent = context.traceparent;
        if decision.outcome != Outcome::Hold {
            return self.commit_decision(decision).await.map(Decided::Committed);
        }
        // Only a held call needs its key: for a retry, or for its hold.
        let key = CallKey::new(
            &self.call_mac,
            identity,
            upstream,
            tool,
            &super::exact::canonical_arguments(body),
        );
        // The approval's use and its memory must not part if the client hangs up.
        let (gw, lookup) = (self.clone(), key.clone());
        let retry = super::to_completion(async move {
            gw.holds
                .consume_identical(&lookup, chrono::Utc::now(), decision)
                .await
        })
        .await?;
        let held = match retry {
            Retry::Ran(allowed) => return Ok(Decided::Committed(allowed)),
            Retry::NotApproved(held) => held,
        };
        // A grant an earlier approval made may cover it; its use and the allow commit
        // together, or neither does.
        let (gw, who, lookup, asked) = (self.clone(), identity.clone(), key.clone(), held.clone());
        let definition = self
            .catalog
            .get(upstream, tool)
            .and_then(|t| t.sha256.clone());
        let granted = super::to_completion(async move {
            let grants = &gw.holds.grants;
            grants
                .run_under_grant(&who, &lookup, &asked, definition.as_deref())
                .await
        })
        .await?;
        match granted {
            Some(allowed) => Ok(Decided::Committed(allowed)),
            None => Ok(Decided::ToHold(held, key)),
        }
    }

    /// Decides one call. The decision takes effect only once `commit_decision` stored it.
    pub fn evaluate_call(
        &self,
        identity: &Identity,
        upstream: &str,
        tool: &str,
        args: &Map<String, Value>,
        workflow: Option<Workflow>,
    ) -> DecisionEvent {
        let started = Instant::now();
        let risk = self.catalog.risk(upstream, tool);
        // Everything stored or shown is derived from the redacted arguments, the target
        // too: a URL with a password in it must not reach the log as `target.id`. The
        // policy sees the same target live as it does when a held call is re-decided.
        let redacted = self.redactor.redact(args);
        let target = self.targets.find(tool, &redacted);
        let engine = self.policy();
        let facts = CallFacts {
            identity,
            upstream,
            tool,
            risk,
            args,
            target: target.as_ref(),
            workflow: workflow.as_ref(),
            now: chrono::Utc::now(),
        };
        let decision = engine.decide(&facts);
        let decision_us = started.elapsed().as_micros() as u64;
        // The shadow decides the same facts; the event says so only where it disagrees.
        let shadow = self.shadow().and_then(|shadow| {
            let theirs = shadow.engine.decide(&facts);
            shadow.count(decision.outcome, theirs.outcome);
            (theirs.outcome != decision.outcome).then_some(ShadowVerdict {
                outcome: theirs.outcome,
                policy_ids: theirs.policy_ids,
            })
        });
        let (args, args_truncated) = redact::stored_args(redacted);
        DecisionEvent {
            call_id: uuid::Uuid::now_v7().to_string(),
            upstream: upstream.to_owned(),
            tool: tool.to_owned(),
            risk,
            identity: identity.to_wire(),
            target,
            workflow,
            outcome: decision.outcome,
            policy_ids: decision.policy_ids,
            reason: decision.reason,
            decision_us,
            args,
            args_truncated,
            shadow,
            approved_as: None,
            approvals_required: decision.approvals,
            grant: None,
            traceparent: None,
        }
    }

    /// Stores a decision in the audit log. An error means it could not be stored in
    /// time, and the call must be denied.
    pub async fn commit_decision(&self, event: DecisionEvent) -> Result<DecisionEvent, StoreError> {
        self.store
            .commit_decision(EventBody::Decision(event))
            .await
            .map(super::store::decision_of)
    }
}

/// Decides a held call again under the current policy and risk table, as an approval
/// must. After a restart only the redacted arguments remain: a policy that reads a
/// redacted value cannot be evaluated honestly, so the call is denied.
pub fn reevaluate(
    engine: &PolicyEngine,
    catalog: &Catalog,
    call: &HeldCall,
    now: chrono::DateTime<chrono::Utc>,
) -> Decision {
    let d = &call.decision;
    let risk = catalog.risk(&d.upstream, &d.tool);
    let decide = |args: &Map<String, Value>| {
        engine.decide(&CallFacts {
            identity: &call.identity,
            upstream: &d.upstream,
            tool: &d.tool,
            risk,
            args,
            target: d.target.as_ref(),
            workflow: d.workflow.as_ref(),
            now,
        })
    };
    if let Some(args) = &call.args {
        return decide(args);
    }
    let Some(stored) = d.args.as_object().filter(|_| !d.args_truncated) else {
        return Decision::deny(
            Vec::new(),
            "the call's arguments were cut when stored, and this gateway does not have them (a restart, or the call was held on another replica), so it cannot be re-evaluated".into(),
        );
    };
    let readers = engine.policies_reading(&d.upstream, &d.tool, &redact::redacted_pointers(stored));
    if !readers.is_empty() {
        return Decision::deny(
            readers,
            "the policy reads an argument that was redacted, and this gateway does not have the original (a restart, or the call was held on another replica)".into(),
        );
    }
    decide(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_well_formed_traceparent_is_taken() {
        for good in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ] {
            assert!(is_traceparent(good), "{good}");
        }
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\nx",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn configured_pointers_win_over_common_names() {
        let finder = TargetFinder::new(&[ResourceConfig {
            tool: "jira_*".into(),
            pointer: "/fields/project".into(),
            kind: "jira_project".into(),
        }]);
        let args = json!({"fields": {"project": "OPS"}, "projectKey": "DEV"});
        let args = args.as_object().unwrap();
        assert_eq!(
            finder.find("jira_create_issue", args),
            Some(Target {
                kind: "jira_project".into(),
                id: "OPS".into()
            })
        );
        assert_eq!(
            finder.find("other_tool", args),
            Some(Target {
                kind: "project".into(),
                id: "DEV".into()
            })
        );
        assert_eq!(finder.find("x", json!({"q": 1}).as_object().unwrap()), None);
    }
}
