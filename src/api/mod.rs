//! The wire contract shared by the gateway and its clients (the console among them).
//! Nothing else is shared between the two halves.

use serde::{Deserialize, Serialize};

/// A tool's risk class. Operators set it; the policy decides from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Read,
    Write,
    Destructive,
    Unclassified,
}

impl Risk {
    pub const ALL: [Risk; 4] = [
        Risk::Read,
        Risk::Write,
        Risk::Destructive,
        Risk::Unclassified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
            Risk::Unclassified => "unclassified",
        }
    }

    pub fn parse(s: &str) -> Option<Risk> {
        Risk::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    Oauth,
    ApiToken,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Oauth => "oauth",
            IdentityKind::ApiToken => "api_token",
        }
    }
}

/// The identity on whose behalf an agent calls a tool, as events and APIs show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRef {
    pub kind: IdentityKind,
    pub name: String,
    pub groups: Vec<String>,
}

impl IdentityRef {
    /// How people read it: `user:alice@example.com`, `token:ci-bot`.
    pub fn label(&self) -> String {
        let kind = match self.kind {
            IdentityKind::Oauth => "user",
            IdentityKind::ApiToken => "token",
        };
        format!("{kind}:{}", self.name)
    }
}

/// The short id people use for a call: its last 8 characters. A call id is a UUIDv7,
/// whose start is a timestamp shared by the calls of a minute; its end is random.
pub fn short_id(call_id: &str) -> &str {
    call_id
        .get(call_id.len().saturating_sub(8)..)
        .unwrap_or(call_id)
}

/// What the gateway decided for one `tools/call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    Hold,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Hold => "hold",
        }
    }
}

/// The resource a call targets, as found in its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: String,
    pub id: String,
}

impl Target {
    /// `kind:id`, as people read and filter it.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// The workflow a call belongs to, as the agent declared it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_window: Option<bool>,
}

/// One stored event: a dense sequence number, a timestamp and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum EventBody {
    #[serde(rename = "decision")]
    Decision(DecisionEvent),
    #[serde(rename = "hold.created")]
    HoldCreated {
        call_id: String,
        expires_at: String,
        ttl_ms: u64,
        phase: HoldPhase,
    },
    #[serde(rename = "hold.resolved")]
    HoldResolved {
        call_id: String,
        resolution: Resolution,
        by: String,
        reason: Option<String>,
        /// For a hold that needed several approvals: every approver, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
    },
    /// One approval of a hold that needs more than one (`@approvals("2")`): it stays
    /// held until `required` approvals are in, and a single deny ends it.
    #[serde(rename = "hold.approval")]
    HoldApproval {
        call_id: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// How many approvals it has now, and how many it needs.
        approvals: u32,
        required: u32,
        /// The grant this approval asked for, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grant: Option<GrantRequest>,
    },
    /// An operator gave a pending hold more time before it expires (as a deny).
    #[serde(rename = "hold.extended")]
    HoldExtended {
        call_id: String,
        expires_at: String,
        by: String,
    },
    /// The client stopped waiting on its open stream (its wait ended, or it went away):
    /// the hold is now `pending`, and only an identical retry can run it once approved.
    #[serde(rename = "hold.phase")]
    HoldPhaseChanged { call_id: String, phase: HoldPhase },
    #[serde(rename = "call.completed")]
    CallCompleted {
        call_id: String,
        result: CallResult,
        upstream_status: Option<u16>,
        duration_ms: u64,
    },
    #[serde(rename = "tool.discovered")]
    ToolDiscovered(ToolRow),
    #[serde(rename = "tool.changed")]
    ToolChanged {
        #[serde(flatten)]
        tool: ToolRow,
        old_definition: serde_json::Value,
        new_definition: serde_json::Value,
    },
    #[serde(rename = "risk.changed")]
    RiskChanged {
        upstream: String,
        tool: String,
        from: Risk,
        to: Risk,
        version: u64,
        by: String,
        note: Option<String>,
    },
    #[serde(rename = "policy.changed")]
    PolicyChanged {
        version: u64,
        sha256: String,
        by: String,
        /// Why, as the edit said; absent when it said nothing (and in older events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    #[serde(rename = "store.recovered")]
    StoreRecovered { denied_unlogged: u64 },
    /// A shadow policy was installed (`sha256`) or removed (`null`).
    #[serde(rename = "policy.shadow")]
    ShadowChanged { sha256: Option<String>, by: String },
    /// An approval came with a grant: the identity's identical calls (or calls of the
    /// tool) that the policy would hold run without a hold until it expires.
    #[serde(rename = "grant.created")]
    GrantCreated(Grant),
    /// A grant was revoked before its time: it lets nothing through from now on.
    #[serde(rename = "grant.revoked")]
    GrantRevoked { id: String, by: String },
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Decision(_) => "decision",
            EventBody::HoldCreated { .. } => "hold.created",
            EventBody::HoldResolved { .. } => "hold.resolved",
            EventBody::HoldApproval { .. } => "hold.approval",
            EventBody::HoldExtended { .. } => "hold.extended",
            EventBody::HoldPhaseChanged { .. } => "hold.phase",
            EventBody::CallCompleted { .. } => "call.completed",
            EventBody::ToolDiscovered(_) => "tool.discovered",
            EventBody::ToolChanged { .. } => "tool.changed",
            EventBody::RiskChanged { .. } => "risk.changed",
            EventBody::PolicyChanged { .. } => "policy.changed",
            EventBody::StoreRecovered { .. } => "store.recovered",
            EventBody::ShadowChanged { .. } => "policy.shadow",
            EventBody::GrantCreated(_) => "grant.created",
            EventBody::GrantRevoked { .. } => "grant.revoked",
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        match self {
            EventBody::Decision(d) => Some(&d.call_id),
            EventBody::HoldCreated { call_id, .. }
            | EventBody::HoldResolved { call_id, .. }
            | EventBody::HoldApproval { call_id, .. }
            | EventBody::HoldExtended { call_id, .. }
            | EventBody::HoldPhaseChanged { call_id, .. }
            | EventBody::CallCompleted { call_id, .. } => Some(call_id),
            _ => None,
        }
    }
}

/// A decision as events and the API show it. Arguments are already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionEvent {
    /// UUIDv7, minted at decision; a hold's id is its call's id.
    pub call_id: String,
    pub upstream: String,
    pub tool: String,
    pub risk: Risk,
    pub identity: IdentityRef,
    pub target: Option<Target>,
    pub workflow: Option<Workflow>,
    pub outcome: Outcome,
    pub policy_ids: Vec<String>,
    pub reason: String,
    /// Time spent deciding, in microseconds.
    pub decision_us: u64,
    /// The redacted arguments; a string holding their first 16 KiB when cut.
    pub args: serde_json::Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// What the shadow policy decided, when one is installed and it disagrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowVerdict>,
    /// For an identical retry an approval let run: the held call it ran as. The policy
    /// held it; the approval decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_as: Option<String>,
    /// For a hold: how many operators must approve it (`@approvals("N")`); 1 otherwise.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub approvals_required: u32,
    /// For a call the policy held that a grant let run: the grant's id (its reason
    /// names the grant too). The policy held it; the grant decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The W3C `traceparent` the call came with (header or `params._meta`), when it was
    /// a valid one: the call can be followed across systems. It goes upstream unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// One operator's approval of a hold that needs several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldApproval {
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The grant this approval asked for: a hold that needs several approvals becomes a
    /// grant only when every approval asked for the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRequest>,
}

/// What a grant lets through besides the approved call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantScope {
    /// The same identity's identical calls: same upstream, tool and exact canonical
    /// arguments.
    Identical,
    /// The same identity's calls of the same tool, with any arguments, that the policy
    /// would hold (never one it denies).
    Tool,
}

impl GrantScope {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantScope::Identical => "identical",
            GrantScope::Tool => "tool",
        }
    }
}

/// An approver's ask to turn an approval into a grant: `{"for_secs": 900, "scope": "identical"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// How long it lasts, from the approval; at most `[gateway] max_grant_secs`.
    pub for_secs: u64,
    pub scope: GrantScope,
}

/// A time-boxed grant, as the API and events show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub scope: GrantScope,
    /// Whose calls it lets through: the held call's identity.
    pub identity: IdentityRef,
    pub upstream: String,
    pub tool: String,
    /// The tool's class and definition when the grant was made: a grant covers the tool
    /// only as it was approved, so a class change or a changed definition (which sends
    /// the tool back to review) ends its effect.
    pub risk: Risk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_sha256: Option<String>,
    /// For scope `identical`: the keyed hash of the exact call (identity, upstream,
    /// tool, canonical arguments). It reveals nothing of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_hash: Option<String>,
    /// The held call whose approval made it.
    pub call_id: String,
    /// Who approved, in order. A grant covers only calls that need at most this many
    /// approvals: one approver's grant never stands in for a two-person rule.
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub for_secs: u64,
    pub created_at: String,
    pub expires_at: String,
    /// How many calls it has let through.
    #[serde(default)]
    pub uses: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}

impl Grant {
    /// Whether it lets calls through at `now`.
    pub fn is_active(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.revoked_at.is_none()
            && chrono::DateTime::parse_from_rfc3339(&self.expires_at).is_ok_and(|at| at > now)
    }

    /// How reasons and logs name it: `grant 1a2b3c4d (tool of jira/delete_issue, by alice)`.
    pub fn label(&self) -> String {
        format!(
            "grant {} ({} of {}/{}, by {})",
            short_id(&self.id),
            self.scope.as_str(),
            self.upstream,
            self.tool,
            self.approvers.join(" and ")
        )
    }
}

/// `GET /api/v1/grants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantList {
    pub grants: Vec<Grant>,
}

impl ShadowView {
    /// `agree 40, allow→hold 3`, or `no call decided yet`.
    pub fn compared_line(&self) -> String {
        if self.compared.is_empty() {
            return "no call decided yet".to_owned();
        }
        self.compared
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The body of `POST /policy/shadow/promote`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The version in force the shadow was compared against.
    pub expected_version: u64,
    /// The shadow the operator looked at: its sha256, or its first 12 digits at least.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A shadow policy's decision of a call, beside the enforced one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowVerdict {
    pub outcome: Outcome,
    pub policy_ids: Vec<String>,
}

/// The shadow policy, as `GET /api/v1/policy/shadow` shows it: who installed it, when,
/// and how its decisions compared with the enforced ones since (`allow→hold`, …, and
/// `agree`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowView {
    pub sha256: String,
    pub by: String,
    pub since: String,
    pub compared: Transitions,
    pub text: String,
}

/// A tool in the catalog, as `GET /tools` and tool events show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolRow {
    pub upstream: String,
    pub name: String,
    pub title: Option<String>,
    pub annotations: Option<serde_json::Value>,
    pub definition_sha256: Option<String>,
    pub suggested_risk: Risk,
    pub risk: Risk,
    /// Where the class came from: annotations, default, seed, operator or reset.
    pub source: String,
    pub version: u64,
    pub updated_by: Option<String>,
    pub updated_at: String,
    pub note: Option<String>,
}

/// Where a held call is: its client still waiting on the open stream, or told to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldPhase {
    Waiting,
    Pending,
}

impl HoldPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldPhase::Waiting => "waiting",
            HoldPhase::Pending => "pending",
        }
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// An operator approved it; the call runs once (on its open stream, or on retry).
    Approved,
    /// An operator denied it, or the policy did when it was re-evaluated at approval.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The client withdrew the call.
    Cancelled,
    /// The approved call ran.
    Consumed,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Approved => "approved",
            Resolution::Denied => "denied",
            Resolution::Expired => "expired",
            Resolution::Cancelled => "cancelled",
            Resolution::Consumed => "consumed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Resolution::Approved,
            Resolution::Denied,
            Resolution::Expired,
            Resolution::Cancelled,
            Resolution::Consumed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A hold as the control API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldView {
    pub call_id: String,
    pub phase: HoldPhase,
    /// When the hold stops being approvable (RFC 3339).
    pub expires_at: String,
    /// The held call, as its decision recorded it (arguments redacted).
    pub call: DecisionEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approvals given so far, for a hold that needs several
    /// (`call.approvals_required`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<HoldApproval>,
    /// The grant its approval made, if it asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// The body of `POST /api/v1/holds/{call_id}/extend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// How much longer the hold stays approvable, from now or from its expiry,
    /// whichever is later.
    pub secs: u64,
}

/// `GET /api/v1/me`: the operator a token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorView {
    pub name: String,
    /// `viewer`, `approver` or `admin`.
    pub role: String,
    /// The holds they may resolve, as `upstream/tool` globs; absent, every hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approves: Option<Vec<String>>,
}

impl OperatorView {
    pub fn may_resolve(&self, upstream: &str, tool: &str) -> bool {
        may_resolve(self.approves.as_deref(), upstream, tool)
    }
}

/// Whether `approves` (`upstream/tool` globs; `None`, everything) covers a hold of
/// `upstream/tool`: the gateway's rule, which a client applies to hide what its
/// operator cannot resolve.
pub fn may_resolve(approves: Option<&[String]>, upstream: &str, tool: &str) -> bool {
    let Some(scopes) = approves else {
        return true;
    };
    // Each part on its own: `atl*/x` never reaches across the `/` into a tool name.
    scopes.iter().any(|scope| match scope.split_once('/') {
        Some((u, t)) => {
            wildmatch::WildMatch::new(u).matches(upstream)
                && wildmatch::WildMatch::new(t).matches(tool)
        }
        None => false,
    })
}

#[cfg(test)]
mod scope_tests {
    use super::may_resolve;

    #[test]
    fn a_scope_matches_upstream_and_tool_each_on_its_own() {
        let scopes = vec!["jira/*".to_owned(), "git*/merge_*".to_owned()];
        let may = |u, t| may_resolve(Some(&scopes), u, t);
        assert!(may("jira", "delete_issue"));
        assert!(may("github", "merge_pr"));
        assert!(!may("github", "push"));
        assert!(!may("jira2", "x"), "the upstream part is whole");
        assert!(
            !may_resolve(Some(&["*".to_owned()]), "a", "b"),
            "no part, no match"
        );
        assert!(may_resolve(Some(&["*/*".to_owned()]), "a", "b"));
        assert!(may_resolve(None, "a", "b"), "unset: everything");
        assert!(!may_resolve(Some(&[]), "a", "b"), "empty: nothing");
    }
}

/// The body of an approve or deny.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    #[serde(default)]
    pub reason: Option<String>,
    /// On an approve: also let through, for a time, the same identity's identical calls
    /// or calls of the same tool that the policy would hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantRequest>,
}

/// The control API's error body: `{"error": {"code": ..., "message": ...}}`, with the
/// hold on a 409 for an approve or deny.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
    /// On a 409 for an approve or deny: the hold as it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
    /// On a 409 for a risk edit: the tool as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolRow>,
    /// On a 409 for a policy edit: the version in force now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyVersion>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
    /// For `invalid_policy`: where in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// For `invalid_risk`: the classes that are valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<Vec<Risk>>,
}

/// The body of `PUT /tools/{upstream}/{tool}/risk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskEdit {
    pub risk: String,
    pub expected_version: u64,
    #[serde(default)]
    pub note: Option<String>,
}

/// One stored policy version, as `GET /policy/versions` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub version: u64,
    /// Of the text, as stored.
    pub sha256: String,
    /// Who stored it: an operator, `default`, or `config:<file>` for `[policy] file`.
    pub by: String,
    /// When it was stored (RFC 3339, UTC, milliseconds).
    pub at: String,
    /// Why, as the edit said.
    #[serde(default)]
    pub note: Option<String>,
}

/// A stored policy version and its text: `GET /policy` (the one in force) and
/// `GET /policy/versions/{v}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyText {
    #[serde(flatten)]
    pub stored: PolicyVersion,
    pub text: String,
}

/// The JSON body of `PUT /policy` (sent as `application/json`); a body of any other
/// type is the Cedar text alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEdit {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The version the edit was made from: a policy at any other version is not
    /// replaced (409 `stale_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// How a call that went upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    Ok,
    /// The tool ran and reported an error (`isError`).
    ToolError,
    /// The upstream failed: unreachable, a non-2xx status, or a JSON-RPC error.
    UpstreamError,
    /// The client went away before the answer was through.
    ClientGone,
    /// The answer stream ended without the call's response (it may have gone to the
    /// session's GET stream, where the gateway does not follow it).
    NoAnswer,
}

impl CallResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CallResult::Ok => "ok",
            CallResult::ToolError => "tool_error",
            CallResult::UpstreamError => "upstream_error",
            CallResult::ClientGone => "client_gone",
            CallResult::NoAnswer => "no_answer",
        }
    }
}

/// A hold as `GET /decisions` folds it into its decision row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HoldSummary {
    pub expires_at: Option<String>,
    pub resolution: Option<Resolution>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
    pub reason: Option<String>,
}

/// One row of `GET /decisions`: the stored decision event, with its hold if it had one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub seq: u64,
    pub ts: String,
    #[serde(flatten)]
    pub call: DecisionEvent,
    #[serde(default)]
    pub hold: Option<HoldSummary>,
}

/// How many decisions of each outcome a tool has had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    #[serde(default)]
    pub allow: u64,
    #[serde(default)]
    pub hold: u64,
    #[serde(default)]
    pub deny: u64,
}

impl CallCounts {
    /// Every decision, whatever its outcome.
    pub fn total(&self) -> u64 {
        self.allow + self.hold + self.deny
    }

    pub fn add(&mut self, outcome: Outcome, n: u64) {
        match outcome {
            Outcome::Allow => self.allow += n,
            Outcome::Hold => self.hold += n,
            Outcome::Deny => self.deny += n,
        }
    }
}

/// `GET /api/v1/tokens`: the standing privilege of every API token, and what OAuth users
/// used, over the last 30 days of decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokensView {
    /// When the report was made (RFC 3339), and the window it read.
    pub at: String,
    pub window_days: u32,
    /// False when the window held more decisions than the report reads (the newest
    /// 500,000): what was used early in it may be missing.
    #[serde(default = "yes")]
    pub window_complete: bool,
    pub tokens: Vec<TokenReport>,
    pub users: Vec<IdentityUse>,
}

/// One API token: its age and expiry, its use, what the policy lets it reach, and flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenReport {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub issued: String,
    pub age_days: i64,
    /// `None`: it never expires (flagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    #[serde(flatten)]
    pub usage: IdentityUse,
    /// The tools (`upstream/tool`) the policy in force would allow or hold for it, with
    /// no arguments, of the tools in the catalog.
    pub reachable: Vec<String>,
    pub flags: Vec<TokenFlag>,
    /// A Cedar policy that narrows it to the tools it used, when it is flagged broad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrowing_policy: Option<String>,
}

/// What one identity did in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityUse {
    /// `token:ci-bot`, `user:alice@example.com`.
    pub identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
    pub calls_7d: CallCounts,
    pub calls_30d: CallCounts,
    /// The tools it called (`upstream/tool`).
    pub used: Vec<String>,
    /// The targets it touched (`kind:id`).
    pub targets: Vec<String>,
}

/// Something to fix about a token, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFlag {
    /// `unused`, `never_expires`, `old`, `broad`, `cross_project`.
    pub flag: String,
    /// What was found, and what to do.
    pub says: String,
}

/// One row of `GET /tools`: the catalog row and its decisions so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolEntry {
    #[serde(flatten)]
    pub tool: ToolRow,
    #[serde(default)]
    pub calls: CallCounts,
}

/// A frame of the event stream that is not an event: where the stream stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StreamNotice {
    /// The first frame: events up to `last_seq` are replayed, then live ones follow.
    Hello { last_seq: u64, store_id: String },
    /// This subscriber fell behind; resume with `since=last_seq`.
    Lagged { last_seq: u64, message: String },
    /// The gateway is stopping; reconnect with `since=last_seq`.
    Shutdown { last_seq: u64, message: String },
    /// The store is not the one the client knew: reload everything.
    Reset {
        last_seq: u64,
        store_id: String,
        message: String,
    },
}

/// One frame of the event stream as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFrame {
    Notice(StreamNotice),
    Event(Box<Event>),
    /// A frame this client does not know (a newer gateway's event kind): kept readable,
    /// with its seq so that a resume does not replay it.
    Unknown {
        seq: Option<u64>,
        value: serde_json::Value,
    },
}

impl StreamFrame {
    /// Reads one frame; `None` when it is not JSON at all.
    pub fn parse(text: &str) -> Option<StreamFrame> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        let notice = matches!(
            value["kind"].as_str(),
            Some("hello" | "lagged" | "shutdown" | "reset")
        );
        if notice && let Ok(n) = StreamNotice::deserialize(&value) {
            return Some(StreamFrame::Notice(n));
        }
        Some(match Event::deserialize(&value) {
            Ok(event) => StreamFrame::Event(Box::new(event)),
            Err(_) => StreamFrame::Unknown {
                seq: value["seq"].as_u64(),
                value,
            },
        })
    }

    /// The event's seq, for a frame that is an event.
    pub fn seq(&self) -> Option<u64> {
        match self {
            StreamFrame::Event(e) => Some(e.seq),
            StreamFrame::Unknown { seq, .. } => *seq,
            StreamFrame::Notice(_) => None,
        }
    }
}

/// An upstream as `GET /status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStatus {
    pub name: String,
    /// Its URL, or `stdio: PROGRAM` for a stdio server.
    pub url: String,
    pub tools: usize,
    pub health: String,
    /// A stdio upstream's processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdio: Option<StdioStatus>,
}

/// A stdio upstream's children, as `GET /status` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StdioStatus {
    /// Running (or starting) now.
    pub processes: usize,
    pub max_processes: usize,
    /// 2025-11-25 sessions open, each with its own process.
    pub sessions: usize,
    /// 2026-07-28 calls whose server asked their client something, waiting (each with
    /// its process) for the client's call again.
    #[serde(default)]
    pub waiting_for_input: usize,
    /// Started since the gateway started.
    pub started: u64,
    /// Started to replace one that died.
    pub restarts: u64,
    /// The last that died without being stopped (or did not start, or did not answer
    /// `initialize` in time).
    pub last_exit: Option<StdioExit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StdioExit {
    pub at: chrono::DateTime<chrono::Utc>,
    /// `killed by signal 9`, `exited with status 1`, …
    pub how: String,
    /// Its last stderr lines.
    pub stderr: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusCounters {
    pub decisions: CallCounts,
    pub holds_open: usize,
    pub event_subscribers: usize,
}

/// The policy in force, as `GET /status` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyInForce {
    pub version: u64,
    pub sha256: String,
}

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub uptime_secs: u64,
    pub store_id: String,
    pub ready: bool,
    pub last_seq: u64,
    pub upstreams: Vec<UpstreamStatus>,
    pub counters: StatusCounters,
    #[serde(default)]
    pub policy: Option<PolicyInForce>,
    /// Hex of the Ed25519 public key that signs the audit chain's checkpoints (`toolgate
    /// audit verify --pubkey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_public_key: Option<String>,
}

/// Which recorded decisions a replay re-decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ReplayWindow {
    /// The newest N decisions.
    Last(u64),
    /// Every decision from this moment (RFC 3339) on.
    Since(String),
}

/// A candidate class for one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskCandidate {
    pub upstream: String,
    pub tool: String,
    pub risk: Risk,
}

/// Which changed decisions a replay lists: those after `after` (a seq), `limit` of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayPage {
    #[serde(default)]
    pub after: Option<u64>,
    /// The report's `upto`, to page through the same window while new calls arrive.
    #[serde(default)]
    pub upto: Option<u64>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The body of `POST /api/v1/replay`: a candidate policy text, candidate classes, or
/// both, and the window of recorded decisions to re-decide with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk: Vec<RiskCandidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<ReplayWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<ReplayPage>,
}

/// How many decisions went from one outcome to another. Keys are `allow→hold` and the
/// like, `unchanged`, and `unknown` (the candidate could not be evaluated honestly).
pub type Transitions = std::collections::BTreeMap<String, u64>;

/// Transitions for one tool or one identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayGroup {
    /// `upstream/tool`, or an identity as `token:ci-bot` / `user:alice@example.com`.
    pub key: String,
    pub transitions: Transitions,
}

/// One recorded decision the candidate decides differently (or cannot decide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayChange {
    pub seq: u64,
    pub ts: String,
    pub call_id: String,
    pub upstream: String,
    pub tool: String,
    pub identity: IdentityRef,
    pub target: Option<Target>,
    /// What the policy in force then decided.
    pub from: Outcome,
    pub from_policy_ids: Vec<String>,
    /// What the candidate decides; `None` when it cannot be known (`reason` says why).
    pub to: Option<Outcome>,
    pub to_policy_ids: Vec<String>,
    pub reason: String,
}

/// The answer of `POST /api/v1/replay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// The seqs the window covered (a consistent snapshot), and how many decisions.
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub decisions: u64,
    pub transitions: Transitions,
    /// The tools and identities with a change, most changes first.
    pub by_tool: Vec<ReplayGroup>,
    pub by_identity: Vec<ReplayGroup>,
    /// Changed (and unknown) decisions, oldest first, one page of them.
    pub changed: Vec<ReplayChange>,
    /// Ask again with `page.after` set to this (and `page.upto` to `upto`) for the next
    /// page.
    pub next_after: Option<u64>,
    /// The newest seq the snapshot held: the window's end.
    #[serde(default)]
    pub upto: u64,
    pub took_ms: u64,
}
