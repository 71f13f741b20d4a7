//! Deciding a `tools/call`: Cedar policies over the identity, the tool and its risk
//! class, the target resource, the arguments and the workflow context.
//!
//! Precedence is deny > hold > allow, anything no policy permits is denied, and any
//! evaluation error is a deny: Cedar skips a `forbid` whose condition errors, which
//! would otherwise let a `permit` win.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::identity::Identity;
use crate::api::{IdentityKind, Outcome, Risk, Target, Workflow};

/// The schema every policy is validated against, as `docs/policy.md` documents it.
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The shipped default policy: the risk matrix.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");

/// The most argument leaves a policy can see. Past it, a call is denied rather than
/// decided on a partial view, so padding cannot hide an argument from a `forbid`.
const MAX_ARG_TAGS: usize = 4096;
/// The most JSON nodes (values, nulls and containers) in a call's arguments.
const MAX_ARG_NODES: usize = 2 * MAX_ARG_TAGS;

/// Why a policy text was refused, with where in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(*line, *column))]
pub struct PolicyError {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l}, column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

impl PolicyError {
    fn at(text: &str, diagnostic: &dyn miette::Diagnostic, message: String) -> Self {
        let offset = diagnostic
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|l| l.offset());
        match offset {
            Some(o) => Self::at_offset(text, o, message),
            None => Self::plain(message),
        }
    }

    /// An error at a byte offset into the text, given as line and column from 1.
    fn at_offset(text: &str, offset: usize, message: String) -> Self {
        let before = &text[..offset.min(text.len())];
        Self {
            line: Some(before.matches('\n').count() + 1),
            column: Some(before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1),
            message,
        }
    }

    fn plain(message: String) -> Self {
        Self {
            line: None,
            column: None,
            message,
        }
    }
}

/// Refuses a `User::"…"` or `Token::"…"` literal that can never match: e-mail-like names
/// reach policies lowercased (`identity::normalize_name`), so `User::"Alice@corp.example"`
/// would silently stop matching anyone, and a `forbid` written that way would be
/// bypassed. Found in the text, comments and strings too, which errs on the safe side.
fn check_names_as_matched(text: &str) -> Result<(), PolicyError> {
    for kind in ["User::\"", "Token::\""] {
        let mut from = 0;
        while let Some(found) = text[from..].find(kind) {
            let start = from + found + kind.len();
            let name = text[start..].split('"').next().unwrap_or("");
            from = start;
            let normal = crate::gateway::identity::normalize_name(name);
            if normal != name {
                return Err(PolicyError::at_offset(
                    text,
                    start,
                    format!(
                        "{kind}{name}\" can never match: e-mail-like names are compared in lower case; write {kind}{normal}\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The id a deny for too many argument values carries: the gateway's limit, decided
/// before any policy, whatever the policy.
pub const ARGUMENT_LIMIT_POLICY: &str = "toolgate-argument-limit";
/// Ids toolgate gives its own decisions; no policy may take one.
pub const RESERVED_PREFIX: &str = "toolgate-";

/// The most approvals a hold may ask for.
pub const MAX_APPROVALS: u32 = 10;

/// The result of deciding one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policies that determined the outcome (empty for the default deny).
    pub policy_ids: Vec<String>,
    /// Why, in words an operator and an agent can act on.
    pub reason: String,
    /// For a hold: how many operators must approve it, the most any of its holding
    /// permits asks with `@approvals("N")`; 1 otherwise.
    pub approvals: u32,
}

impl Decision {
    pub fn deny(policy_ids: Vec<String>, reason: String) -> Self {
        Self {
            outcome: Outcome::Deny,
            approvals: 1,
            policy_ids,
            reason,
        }
    }

    /// The policy id a deny message names: the deciding policy, or `default-deny`.
    pub fn named_policy(&self) -> String {
        if self.policy_ids.is_empty() {
            "default-deny".into()
        } else {
            self.policy_ids.join(",")
        }
    }
}

/// What is known about a call when it is decided.
pub struct CallFacts<'a> {
    pub identity: &'a Identity,
    pub upstream: &'a str,
    pub tool: &'a str,
    pub risk: Risk,
    pub args: &'a Map<String, Value>,
    pub target: Option<&'a Target>,
    pub workflow: Option<&'a Workflow>,
    pub now: DateTime<Utc>,
}

/// A slice is for one tool, and for one kind of caller or (`None`) for either.
type SliceKey = (String, String, Option<IdentityKind>);

/// The policies that can apply to one tool and kind of caller.
struct Slice {
    policies: PolicySet,
    /// Whether any of them mentions `context`. If none does, the decision depends only
    /// on the principal and the tool, and is remembered.
    reads_context: bool,
}

/// How many remembered decisions the engine keeps before it starts over.
const MAX_REMEMBERED: usize = 65_536;
/// And how many bytes of names they may hold: callers choose tool names and OAuth
/// groups, so the count alone bounds nothing.
const MAX_REMEMBERED_BYTES: usize = 8 * 1024 * 1024;
/// How many per-tool slices the engine keeps before it starts over. Calls name any
/// tool they like, listed or not; a slice is cheap to build again.
const MAX_SLICES: usize = 4096;

/// Everything Cedar sees of a call whose policies do not read its context: the
/// principal entity (type, name, groups, and a token's ages in days) and the tool
/// entity (upstream, name, risk). Equal facts give an equal decision, because Cedar
/// evaluation is a pure function of the request and the entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeenFacts {
    upstream: String,
    tool: String,
    kind: IdentityKind,
    name: String,
    groups: Vec<String>,
    risk: Risk,
    ages: Option<TokenAges>,
}

impl SeenFacts {
    /// About how many bytes it holds.
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.upstream.len()
            + self.tool.len()
            + self.name.len()
            + self.groups.iter().map(|g| g.len() + 24).sum::<usize>()
    }
}

impl Decision {
    /// About how many bytes it holds.
    fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.reason.len()
            + self.policy_ids.iter().map(|p| p.len() + 24).sum::<usize>()
    }
}

/// A token's age and time to expiry in whole days, as its entity carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenAges {
    age_days: i64,
    expires_in_days: Option<i64>,
}

impl TokenAges {
    fn of(identity: &Identity, now: DateTime<Utc>) -> Option<Self> {
        (identity.kind == IdentityKind::ApiToken).then(|| Self {
            age_days: identity.issued.map_or(0, |i| (now - i).num_days()),
            expires_in_days: identity.expires.map(|e| (e - now).num_days()),
        })
    }
}

/// Looks a call's facts up without copying them.
struct FactsRef<'a> {
    upstream: &'a str,
    tool: &'a str,
    identity: &'a Identity,
    risk: Risk,
    ages: Option<TokenAges>,
}

impl FactsRef<'_> {
    fn hash_with(&self, hasher: &RandomState) -> u64 {
        hasher.hash_one((
            self.upstream,
            self.tool,
            self.identity.kind,
            &self.identity.name,
            &self.identity.groups,
            self.risk,
            self.ages,
        ))
    }

    fn is(&self, seen: &SeenFacts) -> bool {
        self.upstream == seen.upstream
            && self.tool == seen.tool
            && self.identity.kind == seen.kind
            && self.identity.name == seen.name
            && self.identity.groups == seen.groups
            && self.risk == seen.risk
            && self.ages == seen.ages
    }

    fn to_owned(&self) -> SeenFacts {
        SeenFacts {
            upstream: self.upstream.to_owned(),
            tool: self.tool.to_owned(),
            kind: self.identity.kind,
            name: self.identity.name.clone(),
            groups: self.identity.groups.clone(),
            risk: self.risk,
            ages: self.ages,
        }
    }
}

/// Decisions already made for calls whose policies cannot see the call's context,
/// keyed by a hash of everything Cedar saw and checked against those facts in full.
#[derive(Default)]
struct Remembered {
    hasher: RandomState,
    decisions: RwLock<HashMap<u64, (SeenFacts, Decision)>>,
    /// About how much the entries hold; changed only under the `decisions` write lock.
    bytes: std::sync::atomic::AtomicUsize,
}

impl Remembered {
    fn get(&self, facts: &FactsRef<'_>) -> Option<Decision> {
        let key = facts.hash_with(&self.hasher);
        let decisions = self.decisions.read().expect("remembered decisions lock");
        decisions
            .get(&key)
            .filter(|(seen, _)| facts.is(seen))
            .map(|(_, decision)| decision.clone())
    }

    fn keep(&self, facts: &FactsRef<'_>, decision: &Decision) {
        let key = facts.hash_with(&self.hasher);
        use std::sync::atomic::Ordering::Relaxed;
        let seen = facts.to_owned();
        let size = seen.size() + decision.size();
        let mut decisions = self.decisions.write().expect("remembered decisions lock");
        if decisions.len() >= MAX_REMEMBERED
            || self.bytes.load(Relaxed) + size > MAX_REMEMBERED_BYTES
        {
            decisions.clear();
            self.bytes.store(0, Relaxed);
        }
        if let Some((old_seen, old)) = decisions.insert(key, (seen, decision.clone())) {
            self.bytes.fetch_sub(old_seen.size() + old.size(), Relaxed);
        }
        self.bytes.fetch_add(size, Relaxed);
    }
}

/// A compiled, validated policy set, sliced per tool on first use.
pub struct PolicyEngine {
    policies: PolicySet,
    /// Each policy's principal and resource scope, to slice the set per tool and kind
    /// of caller.
    scopes: Vec<(Policy, PrincipalConstraint, ResourceConstraint)>,
    /// Hold permits, and how many approvals each asks for.
    holds: HashMap<PolicyId, u32>,
    reasons: HashMap<PolicyId, String>,
    slices: RwLock<HashMap<SliceKey, Arc<Slice>>>,
    remembered: Remembered,
    authorizer: Authorizer,
    action: EntityUid,
}

fn type_name(name: &str) -> EntityTypeName {
    EntityTypeName::from_str(name).expect("a schema type name")
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(type_name(kind), EntityId::new(id))
}

pub fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA)
        .expect("the built-in schema is valid")
        .0
}

impl PolicyEngine {
    /// Parses and strictly validates a policy text. Policy ids come from `@id`
    /// annotations; `@outcome("hold")` marks a permit that holds the call, and
    /// `@approvals("N")` on it asks N operators (2 to 10) to approve.
    pub fn compile(text: &str) -> Result<Self, PolicyError> {
        let parsed = PolicySet::from_str(text)
            .map_err(|e| PolicyError::at(text, &e, format!("syntax error: {e}")))?;
        check_names_as_matched(text)?;
        let mut policies = PolicySet::new();
        let mut holds = HashMap::new();
        let mut reasons = HashMap::new();
        let mut scopes = Vec::new();
        for policy in parsed.policies() {
            let policy = match policy.annotation("id") {
                Some(id) => policy.new_id(PolicyId::new(id)),
                None => policy.clone(),
            };
            let id = policy.id().clone();
            if id.to_string().starts_with(RESERVED_PREFIX) {
                return Err(PolicyError::plain(format!(
                    "policy {id}: ids starting with {RESERVED_PREFIX:?} are toolgate's own (its limits), not a policy's"
                )));
            }
            let approvals = match policy.annotation("approvals") {
                None => 1,
                Some(n) => match n.parse::<u32>() {
                    Ok(n @ 1..=MAX_APPROVALS) if policy.annotation("outcome") == Some("hold") => n,
                    Ok(_) | Err(_) if policy.annotation("outcome") != Some("hold") => {
                        return Err(PolicyError::plain(format!(
                            "policy {id}: @approvals({n:?}) is only for a permit with @outcome(\"hold\")"
                        )));
                    }
                    _ => {
                        return Err(PolicyError::plain(format!(
                            "policy {id}: @approvals({n:?}) must be a number from 1 to {MAX_APPROVALS}"
                        )));
                    }
                },
            };
            match policy.annotation("outcome") {
                None => {}
                Some("hold") if policy.effect() == cedar_policy::Effect::Permit => {
                    holds.insert(id.clone(), approvals);
                }
                Some(other) => {
                    return Err(PolicyError::plain(format!(
                        "policy {id}: @outcome({other:?}) is not valid; only a permit may carry @outcome(\"hold\")"
                    )));
                }
            }
            if let Some(reason) = policy.annotation("reason") {
                reasons.insert(id.clone(), reason.to_owned());
            }
            scopes.push((
                policy.clone(),
                policy.principal_constraint(),
                policy.resource_constraint(),
            ));
            policies
                .add(policy)
                .map_err(|e| PolicyError::plain(format!("policy {id}: {e}")))?;
        }
        let result = Validator::new(schema()).validate(&policies, ValidationMode::Strict);
        if let Some(error) = result.validation_errors().next() {
            return Err(PolicyError::at(
                text,
                error,
                format!("invalid policy: {error}"),
            ));
        }
        Ok(Self {
            policies,
            scopes,
            holds,
            reasons,
            slices: RwLock::new(HashMap::new()),
            remembered: Remembered::default(),
            authorizer: Authorizer::new(),
            action: uid("Action", "call_tool"),
        })
    }

    pub fn policy_count(&self) -> usize {
        self.policies.policies().count()
    }

    /// The policies that can apply to one tool, and to one kind of caller when `kind`
    /// is given: those whose resource scope admits the tool and whose principal scope
    /// admits the caller's entity type. A policy left out could only have evaluated to
    /// false (Cedar checks the scope before the conditions), so the decision is the same;
    /// each policy left out saves a condition Cedar would build and evaluate.
    fn slice(&self, upstream: &str, tool: &str, kind: Option<IdentityKind>) -> Arc<Slice> {
        let key = (upstream.to_owned(), tool.to_owned(), kind);
        if let Some(s) = self.slices.read().expect("slices lock").get(&key) {
            return s.clone();
        }
        let caller_type = kind.map(|k| type_name(principal_type(k)));
        let admits_caller = |c: &PrincipalConstraint| match (c, &caller_type) {
            (_, None) | (PrincipalConstraint::Any | PrincipalConstraint::In(_), _) => true,
            (PrincipalConstraint::Is(t) | PrincipalConstraint::IsIn(t, _), Some(caller)) => {
                t == caller
            }
            (PrincipalConstraint::Eq(u), Some(caller)) => u.type_name() == caller,
        };
        let tool_uid = uid("Tool", &tool_id(upstream, tool));
        let upstream_uid = uid("Upstream", upstream);
        let tool_type = type_name("Tool");
        let admits = |c: &ResourceConstraint| match c {
            ResourceConstraint::Any => true,
            ResourceConstraint::Is(t) => *t == tool_type,
            ResourceConstraint::Eq(u) => *u == tool_uid,
            ResourceConstraint::In(u) => *u == tool_uid || *u == upstream_uid,
            ResourceConstraint::IsIn(t, u) => {
                *t == tool_type && (*u == tool_uid || *u == upstream_uid)
            }
        };
        let mut policies = PolicySet::new();
        let mut reads_context = false;
        for (policy, principal, resource) in &self.scopes {
            if admits(resource) && admits_caller(principal) {
                // Only the `context` variable reaches the call's arguments, target and
                // workflow; the word anywhere else (a string, an annotation) errs on
                // the safe side.
                reads_context |= policy.to_string().contains("context");
                policies
                    .add(policy.clone())
                    .expect("ids are unique in the full set");
            }
        }
        let slice = Arc::new(Slice {
            policies,
            reads_context,
        });
        let mut slices = self.slices.write().expect("slices lock");
        if slices.len() >= MAX_SLICES {
            slices.clear();
        }
        slices.insert(key, slice.clone());
        slice
    }

    /// The policies for this tool that read any of these argument pointers (or a
    /// value below one). Tag keys in Cedar are string literals, so the text tells.
    pub fn policies_reading(&self, upstream: &str, tool: &str, pointers: &[String]) -> Vec<String> {
        self.slice(upstream, tool, None)
            .policies
            .policies()
            .filter(|p| {
                let text = p.to_string();
                pointers.iter().any(|ptr| {
                    let quoted = format!("\"{ptr}");
                    text.match_indices(&quoted)
                        .any(|(i, m)| matches!(text[i + m.len()..].chars().next(), Some('"' | '/')))
                })
            })
            .map(|p| p.id().to_string())
            .collect()
    }

    /// Decides a call, from memory when its policies cannot see its context and the
    /// same principal already called the same tool at the same risk class.
    pub fn decide(&self, facts: &CallFacts<'_>) -> Decision {
        // Too many arguments is a deny whether or not a policy reads them.
        if let Err(reason) = count_argument_values(facts.args) {
            return Decision::deny(vec![ARGUMENT_LIMIT_POLICY.into()], reason);
        }
        let slice = self.slice(facts.upstream, facts.tool, Some(facts.identity.kind));
        if slice.reads_context {
            return self
                .evaluate_in(&slice, facts)
                .unwrap_or_else(|denied| denied);
        }
        let seen = FactsRef {
            upstream: facts.upstream,
            tool: facts.tool,
            identity: facts.identity,
            risk: facts.risk,
            ages: TokenAges::of(facts.identity, facts.now),
        };
        if let Some(decision) = self.remembered.get(&seen) {
            return decision;
        }
        match self.evaluate_in(&slice, facts) {
            Ok(decision) => {
                self.remembered.keep(&seen, &decision);
                decision
            }
            // A failure is rare and says which call failed; it is not kept.
            Err(denied) => denied,
        }
    }

    /// Decides a call with Cedar, never from memory.
    pub fn evaluate(&self, facts: &CallFacts<'_>) -> Decision {
        let slice = self.slice(facts.upstream, facts.tool, Some(facts.identity.kind));
        self.evaluate_in(&slice, facts)
            .unwrap_or_else(|denied| denied)
    }

    /// Cedar's decision, or (`Err`) the deny for a call that could not be evaluated:
    /// its request could not be built, or a policy failed.
    fn evaluate_in(&self, slice: &Slice, facts: &CallFacts<'_>) -> Result<Decision, Decision> {
        let (request, entities) = match build_request(facts, &self.action) {
            Ok(r) => r,
            Err(reason) => return Err(Decision::deny(Vec::new(), reason)),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &slice.policies, &entities);
        let diagnostics = response.diagnostics();
        let errors: Vec<_> = diagnostics.errors().collect();
        if !errors.is_empty() {
            let ids = errors
                .iter()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(p) => {
                        p.policy_id().to_string()
                    }
                })
                .collect();
            let detail = errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Decision::deny(
                ids,
                format!("policy evaluation failed, so the call is denied: {detail}"),
            ));
        }
        let mut determining: Vec<&PolicyId> = diagnostics.reason().collect();
        determining.sort();
        let reason_of = |id: &PolicyId, fallback: &str| {
            self.reasons
                .get(id)
                .cloned()
                .unwrap_or_else(|| format!("{fallback} {id}"))
        };
        Ok(match response.decision() {
            CedarDecision::Deny => match determining.first() {
                Some(first) => Decision::deny(
                    determining.iter().map(|id| id.to_string()).collect(),
                    reason_of(first, "forbidden by policy"),
                ),
                None => Decision::deny(Vec::new(), "no policy permits this call".into()),
            },
            CedarDecision::Allow => {
                let holding: Vec<&PolicyId> = determining
                    .iter()
                    .copied()
                    .filter(|id| self.holds.contains_key(*id))
                    .collect();
                let approvals = holding
                    .iter()
                    .filter_map(|id| self.holds.get(*id))
                    .copied()
                    .max()
                    .unwrap_or(1);
                let (outcome, ids) = if holding.is_empty() {
                    (Outcome::Allow, determining)
                } else {
                    (Outcome::Hold, holding)
                };
                Decision {
                    outcome,
                    reason: reason_of(ids[0], "permitted by policy"),
                    policy_ids: ids.iter().map(|id| id.to_string()).collect(),
                    approvals,
                }
            }
        })
    }
}

/// The entity type an identity of this kind is in the schema.
fn principal_type(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Oauth => "User",
        IdentityKind::ApiToken => "Token",
    }
}

/// The Cedar id of a tool: its upstream and name.
pub fn tool_id(upstream: &str, tool: &str) -> String {
    format!("{upstream}/{tool}")
}

fn build_request(facts: &CallFacts<'_>, action: &EntityUid) -> Result<(Request, Entities), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot evaluate policy: {e}");
    let identity = facts.identity;
    let groups: Vec<EntityUid> = identity.groups.iter().map(|g| uid("Group", g)).collect();
    let principal = match identity.kind {
        IdentityKind::Oauth => Entity::new(
            uid(principal_type(IdentityKind::Oauth), &identity.name),
            [(
                "name".to_owned(),
                RestrictedExpression::new_string(identity.name.clone()),
            )]
            .into(),
            groups.into_iter().collect(),
        ),
        IdentityKind::ApiToken => {
            let ages = TokenAges::of(identity, facts.now).expect("a token has ages");
            let mut attrs = HashMap::from([
                (
                    "name".to_owned(),
                    RestrictedExpression::new_string(identity.name.clone()),
                ),
                (
                    "age_days".to_owned(),
                    RestrictedExpression::new_long(ages.age_days),
                ),
            ]);
            if let Some(days) = ages.expires_in_days {
                attrs.insert(
                    "expires_in_days".to_owned(),
                    RestrictedExpression::new_long(days),
                );
            }
            Entity::new(
                uid(principal_type(IdentityKind::ApiToken), &identity.name),
                attrs,
                groups.into_iter().collect(),
            )
        }
    }
    .map_err(|e| fail(&e))?;
    let resource = Entity::new(
        uid("Tool", &tool_id(facts.upstream, facts.tool)),
        HashMap::from([
            (
                "name".to_owned(),
                RestrictedExpression::new_string(facts.tool.to_owned()),
            ),
            (
                "upstream".to_owned(),
                RestrictedExpression::new_string(facts.upstream.to_owned()),
            ),
            (
                "risk".to_owned(),
                RestrictedExpression::new_string(facts.risk.as_str().to_owned()),
            ),
        ]),
        [uid("Upstream", facts.upstream)].into(),
    )
    .map_err(|e| fail(&e))?;
    let tags = argument_tags(facts.args)?;
    let args_uid = uid("Args", "call");
    let args = Entity::new_with_tags(
        args_uid.clone(),
        [],
        [],
        tags.into_iter()
            .map(|(k, v)| (k, RestrictedExpression::new_string(v))),
    )
    .map_err(|e| fail(&e))?;
    let mut context = vec![(
        "args".to_owned(),
        RestrictedExpression::new_entity_uid(args_uid),
    )];
    if let Some(t) = facts.target {
        let record = RestrictedExpression::new_record([
            (
                "kind".to_owned(),
                RestrictedExpression::new_string(t.kind.clone()),
            ),
            (
                "id".to_owned(),
                RestrictedExpression::new_string(t.id.clone()),
            ),
        ])
        .map_err(|e| fail(&e))?;
        context.push(("target".to_owned(), record));
    }
    if let Some(w) = facts.workflow {
        let mut fields = Vec::new();
        if let Some(ticket) = &w.ticket {
            fields.push((
                "ticket".to_owned(),
                RestrictedExpression::new_string(ticket.clone()),
            ));
        }
        if let Some(window) = w.change_window {
            fields.push((
                "change_window".to_owned(),
                RestrictedExpression::new_bool(window),
            ));
        }
        let record = RestrictedExpression::new_record(fields).map_err(|e| fail(&e))?;
        context.push(("workflow".to_owned(), record));
    }
    let context = Context::from_pairs(context).map_err(|e| fail(&e))?;
    let request = Request::new(
        principal.uid(),
        action.clone(),
        resource.uid(),
        context,
        None,
    )
    .map_err(|e| fail(&e))?;
    let entities =
        Entities::from_entities([principal, resource, args], None).map_err(|e| fail(&e))?;
    Ok((request, entities))
}

/// Counts the argument values a policy would see (scalars but null), and every node
/// besides (containers, empty ones too, and nulls), without copying them: an error past
/// `MAX_ARG_TAGS` values or `MAX_ARG_NODES` nodes. A million empty arrays cost memory
/// and time like a million values, so they count.
fn count_argument_values(args: &Map<String, Value>) -> Result<(), String> {
    fn count(value: &Value, values: &mut usize, nodes: &mut usize) {
        *nodes += 1;
        match value {
            Value::Null => {}
            Value::Object(map) => map.values().for_each(|v| count(v, values, nodes)),
            Value::Array(items) => items.iter().for_each(|v| count(v, values, nodes)),
            _ => *values += 1,
        }
    }
    let (mut values, mut nodes) = (0, 0);
    args.values()
        .for_each(|v| count(v, &mut values, &mut nodes));
    if values <= MAX_ARG_TAGS && nodes <= MAX_ARG_NODES {
        Ok(())
    } else {
        Err(too_many_values())
    }
}

fn too_many_values() -> String {
    format!(
        "the arguments have more than {MAX_ARG_TAGS} values or {MAX_ARG_NODES} values and containers, too many to evaluate; the call is denied"
    )
}

/// Every scalar in the arguments, keyed by its RFC 6901 JSON pointer.
pub fn argument_tags(args: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let complete = super::pointer::leaves(args, &mut |pointer, value| {
        let text = match value {
            Value::Null => return true,
            Value::String(s) => s.clone(),
            // By value, so no spelling of a number (1e2, 100.0) slips past a rule on 100.
            Value::Number(n) => crate::gateway::exact::number_text(n),
            other => other.to_string(),
        };
        out.push((pointer.to_owned(), text));
        out.len() <= MAX_ARG_TAGS
    });
    if complete {
        Ok(out)
    } else {
        Err(too_many_values())
    }
}

#[cfg(test)]
mod tests;
