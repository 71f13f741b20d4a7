//! How `toolgate holds` and `toolgate events` show holds and events to a person: a header,
//! then one line a row. Programs get JSON lines instead, printed as the API sent them.
//!
//! Everything here is a pure function of the wire types in `api` and the clock it is
//! given, so it is tested without a gateway. Strings an agent chose (targets, tool and
//! OAuth subject names) reach the operator's terminal with their control characters
//! escaped: a call must not be able to move the cursor or forge a row.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::api::{Event, EventBody, HoldView, IdentityRef, PolicyText, PolicyVersion, Target};

pub use crate::api::short_id;

/// An approve's or deny's answer for a person: `approved 0000beef (token:ci-bot,
/// py/write_page, page:P-1) by olga: CHG-7`.
pub fn resolution_line(hold: &HoldView) -> String {
    // One approval of several: still held, and it says who else must approve.
    if hold.resolution.is_none() && hold.call.approvals_required > 1 {
        let who: Vec<String> = hold
            .approvals
            .iter()
            .map(|a| printable(&a.by).into_owned())
            .collect();
        return format!(
            "approval {} of {} recorded for {} ({}, {}); still held: it needs {} more from other operators (so far: {})",
            hold.approvals.len(),
            hold.call.approvals_required,
            short_id(&hold.call_id),
            identity_label(&hold.call.identity),
            tool_label(&hold.call.upstream, &hold.call.tool),
            (hold.call.approvals_required as usize).saturating_sub(hold.approvals.len()),
            who.join(", ")
        );
    }
    let mut line = format!(
        "{} {} ({}, {}",
        hold.resolution.map_or("resolved", |r| r.as_str()),
        short_id(&hold.call_id),
        identity_label(&hold.call.identity),
        tool_label(&hold.call.upstream, &hold.call.tool)
    );
    if let Some(target) = hold.call.target.as_ref() {
        line.push_str(&format!(", {}", target_label(Some(target))));
    }
    line.push(')');
    if let Some(by) = &hold.resolved_by {
        line.push_str(&format!(" by {}", printable(by)));
    }
    if let Some(reason) = &hold.reason {
        line.push_str(&format!(": {}", printable(reason)));
    }
    if let Some(grant) = &hold.grant {
        line.push_str(&format!(
            "; {} until {}",
            printable(&grant.label()),
            printable(&grant.expires_at)
        ));
    } else if hold.resolution == Some(crate::api::Resolution::Approved)
        && hold.approvals.iter().any(|a| a.grant.is_some())
    {
        line.push_str("; no grant: not every approval asked for the same one");
    }
    line
}

/// The token report for people: a line a token, each flag under it.
pub fn tokens_table(view: &crate::api::TokensView) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<20}  {:>5}  {:<10}  {:<19}  {:>6}  {:>9}  FLAGS",
        "TOKEN", "AGE", "EXPIRES", "LAST USED", "30D", "USED/REACH"
    )];
    let day = |t: &str| t.get(..10).unwrap_or(t).to_owned();
    for t in &view.tokens {
        let c = t.usage.calls_30d;
        lines.push(format!(
            "{:<20}  {:>4}d  {:<10}  {:<19}  {:>6}  {:>4}/{:<4}  {}",
            printable(&t.name),
            t.age_days,
            t.expires.as_deref().map_or("never".to_owned(), day),
            t.usage.last_used.as_deref().map_or("—".to_owned(), |l| l
                .get(..19)
                .unwrap_or(l)
                .replace('T', " ")),
            c.total(),
            t.usage.used.len(),
            t.reachable.len(),
            t.flags
                .iter()
                .map(|f| f.flag.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for f in &t.flags {
            lines.push(format!("    {}: {}", f.flag, printable(&f.says)));
        }
    }
    if !view.users.is_empty() {
        lines.push(String::new());
        lines.push(format!("OAuth users, last {} days:", view.window_days));
        for u in &view.users {
            let c = u.calls_30d;
            lines.push(format!(
                "  {:<32}  {:>6} calls  {} tools  last {}",
                printable(&u.identity),
                c.total(),
                u.used.len(),
                u.last_used.as_deref().unwrap_or("—")
            ));
        }
    }
    lines
}

/// The active grants as a table: short id, identity, tool, scope, time left, uses, by.
pub fn grants_table(grants: &[crate::api::Grant], now: DateTime<Utc>) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<8}  {:<24}  {:<32}  {:<9}  {:>8}  {:>5}  BY",
        "GRANT", "IDENTITY", "TOOL", "SCOPE", "LEFT", "USES"
    )];
    for g in grants {
        lines.push(format!(
            "{:<8}  {:<24}  {:<32}  {:<9}  {:>8}  {:>5}  {}",
            short_id(&g.id),
            identity_label(&g.identity),
            tool_label(&g.upstream, &g.tool),
            g.scope.as_str(),
            time_left(&g.expires_at, now),
            g.uses,
            printable(&g.approvers.join(", "))
        ));
    }
    lines
}

/// `user:alice@example.com` for an OAuth user, `token:ci-bot` for an API token.
pub fn identity_label(identity: &IdentityRef) -> String {
    printable(&identity.label()).into_owned()
}

/// `kind:id`, or nothing for a call without a target.
pub fn target_label(target: Option<&Target>) -> String {
    target
        .map(|t| printable(&t.label()).into_owned())
        .unwrap_or_default()
}

/// `s` with its control characters (C0, DEL and C1, where terminal escapes start)
/// written as `\u{1b}`.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// How long until `expires_at`: `MM:SS`, `HhMMm` from an hour on, `00:00` once past, and
/// `?` for a time that does not parse.
pub fn time_left(expires_at: &str, now: DateTime<Utc>) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(expires_at) else {
        return "?".to_owned();
    };
    let secs = (at.with_timezone(&Utc) - now).num_seconds().max(0);
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

/// Pads every column but the last to its widest cell, two spaces apart.
fn columns(rows: &[Vec<String>]) -> Vec<String> {
    let count = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..count)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// The pending holds as a table: the header, then a line a hold in the order given.
pub fn holds_table(holds: &[HoldView], now: DateTime<Utc>) -> Vec<String> {
    let mut rows = vec![
        [
            "call",
            "state",
            "left",
            "identity",
            "upstream/tool",
            "risk",
            "target",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    rows.extend(holds.iter().map(|h| {
        vec![
            printable(short_id(&h.call_id)).into_owned(),
            format!("{:?}", h.phase).to_lowercase(),
            time_left(&h.expires_at, now),
            identity_label(&h.call.identity),
            tool_label(&h.call.upstream, &h.call.tool),
            h.call.risk.to_string(),
            target_label(h.call.target.as_ref()),
        ]
    }));
    columns(&rows)
}

/// Holds as `approve` and `deny` list them when a part of a call id matches several:
/// the whole call id, who called, and what.
pub fn hold_list(holds: &[&HoldView]) -> Vec<String> {
    let rows: Vec<Vec<String>> = holds
        .iter()
        .map(|h| {
            vec![
                printable(&h.call_id).into_owned(),
                identity_label(&h.call.identity),
                tool_label(&h.call.upstream, &h.call.tool),
                target_label(h.call.target.as_ref()),
            ]
        })
        .collect();
    columns(&rows)
}

fn tool_label(upstream: &str, tool: &str) -> String {
    format!("{}/{}", printable(upstream), printable(tool))
}

/// Events as a table, a line each as they arrive, so its columns have fixed widths.
pub struct EventTable {
    /// 8 for `HH:MM:SS`, 19 with a date; unknown until a replay's first event.
    time_width: Option<usize>,
    header_shown: bool,
}

/// `tool.discovered`, the longest kind.
const KIND_WIDTH: usize = 15;
const SEQ_WIDTH: usize = 6;
const DATED_WIDTH: usize = 19;

impl EventTable {
    /// For a stream that starts with a replay of stored events (`replay`), whose first
    /// event may be from an earlier day, or a live one, whose events are today's.
    pub fn new(replay: bool) -> Self {
        Self {
            time_width: (!replay).then_some(8),
            header_shown: false,
        }
    }

    /// The header, when it can be shown before any event arrives (a live stream).
    pub fn header_now(&mut self) -> Option<String> {
        let width = self.time_width?;
        self.header_shown = true;
        Some(header(width))
    }

    /// The lines for one event as the API sent it: the header first, if not shown yet.
    /// An event this version cannot read (a newer gateway's) is shown as it came.
    pub fn lines(&mut self, json: &str, now: DateTime<Utc>) -> Vec<String> {
        let event = serde_json::from_str::<Event>(json).ok();
        let time = event.as_ref().map(|e| clock(&e.ts, now));
        let width = *self.time_width.get_or_insert_with(|| {
            time.as_ref()
                .map_or(DATED_WIDTH, |t| t.chars().count().max(8))
        });
        let mut lines = Vec::with_capacity(2);
        if !std::mem::replace(&mut self.header_shown, true) {
            lines.push(header(width));
        }
        lines.push(match (event, time) {
            (Some(event), Some(time)) => format!(
                "{:>SEQ_WIDTH$}  {time:<width$}  {:<KIND_WIDTH$}  {}",
                event.seq,
                event.body.kind(),
                summary(&event.body, now),
            ),
            _ => printable(json).into_owned(),
        });
        lines
    }
}

fn header(time_width: usize) -> String {
    format!(
        "{:>SEQ_WIDTH$}  {:<time_width$}  {:<KIND_WIDTH$}  summary",
        "seq", "time", "kind"
    )
}

/// `HH:MM:SS` (UTC, as the console shows times) for today, with the date before it for
/// any other day.
fn clock(ts: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) if t.with_timezone(&Utc).date_naive() == now.date_naive() => {
            t.with_timezone(&Utc).format("%H:%M:%S").to_string()
        }
        _ => dated(ts),
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), or the text as it came (escaped) when it is no time.
fn dated(ts: &str) -> String {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => printable(ts).into_owned(),
    }
}

/// Where in a file: `:LINE:COLUMN`, `:LINE`, or nothing, to follow its name.
pub fn place(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// The first 12 hex digits of a SHA-256, as people compare them.
pub fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// A replay's report for a person: the window, each transition, the tools and identities
/// with changes, and the changed calls listed.
pub fn replay_summary(r: &crate::api::ReplayReport, now: DateTime<Utc>) -> Vec<String> {
    let window = match (r.first_seq, r.last_seq) {
        (Some(first), Some(last)) => format!(" (seq {first}–{last})"),
        _ => String::new(),
    };
    let mut lines = vec![format!(
        "replayed {} decisions{window} in {} ms",
        r.decisions, r.took_ms
    )];
    let mut transitions: Vec<(&String, &u64)> = r.transitions.iter().collect();
    transitions.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut rows: Vec<Vec<String>> = transitions
        .iter()
        .map(|(k, n)| vec![format!("  {k}"), n.to_string()])
        .collect();
    lines.extend(columns(&rows));
    let group = |lines: &mut Vec<String>, title: &str, groups: &[crate::api::ReplayGroup]| {
        if groups.is_empty() {
            return;
        }
        lines.push(title.to_owned());
        let rows: Vec<Vec<String>> = groups
            .iter()
            .take(10)
            .map(|g| {
                let changes = g
                    .transitions
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![format!("  {}", printable(&g.key)), changes]
            })
            .collect();
        lines.extend(columns(&rows));
    };
    group(&mut lines, "changed, by tool:", &r.by_tool);
    group(&mut lines, "changed, by identity:", &r.by_identity);
    if !r.changed.is_empty() {
        lines.push("changed calls:".to_owned());
        rows = r
            .changed
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", short_id(&c.call_id)),
                    clock(&c.ts, now),
                    identity_label(&c.identity),
                    tool_label(&c.upstream, &c.tool),
                    target_label(c.target.as_ref()),
                    format!(
                        "{}→{}",
                        c.from.as_str(),
                        c.to.map_or("unknown", |o| o.as_str())
                    ),
                    match c.to {
                        Some(_) => c.to_policy_ids.join(","),
                        None => printable(&c.reason).into_owned(),
                    },
                ]
            })
            .collect();
        lines.extend(columns(&rows));
        if r.next_after.is_some() {
            lines.push("  … more: --limit N, or --output json".to_owned());
        }
    }
    lines
}

/// The shadow policy for a person: who installed it, when, and how it compares.
pub fn shadow_summary(v: &crate::api::ShadowView) -> Vec<String> {
    let compared = v.compared_line();
    vec![
        format!(
            "shadow {} installed by {} at {}",
            short_sha(&v.sha256),
            printable(&v.by),
            dated(&v.since)
        ),
        format!("compared with the policy in force: {compared}"),
    ]
}

/// Stored policy versions as a table, in the order given (the API's: newest first).
pub fn policy_log(versions: &[PolicyVersion]) -> Vec<String> {
    let mut rows = vec![
        ["version", "stored (UTC)", "by", "sha256", "note"]
            .map(str::to_owned)
            .to_vec(),
    ];
    rows.extend(versions.iter().map(|v| {
        vec![
            v.version.to_string(),
            dated(&v.at),
            printable(&v.by).into_owned(),
            printable(short_sha(&v.sha256)).into_owned(),
            v.note
                .as_deref()
                .map(printable)
                .unwrap_or_default()
                .into_owned(),
        ]
    }));
    columns(&rows)
}

/// How a version names itself in a diff's header and a refusal: `v3 (2026-03-04
/// 09:59:58 by ada: roll back)`.
pub fn policy_label(v: &PolicyVersion) -> String {
    let mut label = format!("v{} ({} by {}", v.version, dated(&v.at), printable(&v.by));
    if let Some(note) = &v.note {
        label.push_str(&format!(": {}", printable(note)));
    }
    label.push(')');
    label
}

/// The unified diff from `old`'s text to `new`'s (3 lines of context), or "" when the
/// texts are the same.
pub fn policy_diff(old: &PolicyText, new: &PolicyText) -> String {
    similar::TextDiff::from_lines(&old.text, &new.text)
        .unified_diff()
        .context_radius(3)
        .header(&policy_label(&old.stored), &policy_label(&new.stored))
        .to_string()
}

/// One event in a few words; the call's short id joins the events of one call.
fn summary(body: &EventBody, now: DateTime<Utc>) -> String {
    match body {
        EventBody::Decision(d) => {
            let mut s = format!(
                "{} {} {} {}",
                short_id(&d.call_id),
                d.outcome.as_str(),
                identity_label(&d.identity),
                tool_label(&d.upstream, &d.tool)
            );
            if let Some(target) = d.target.as_ref() {
                s.push(' ');
                s.push_str(&target_label(Some(target)));
            }
            s
        }
        EventBody::HoldCreated {
            call_id,
            expires_at,
            phase,
            ..
        } => format!(
            "{} held ({}), expires {} ({} left)",
            short_id(call_id),
            phase.as_str(),
            clock(expires_at, now),
            time_left(expires_at, now)
        ),
        EventBody::HoldExtended {
            call_id,
            expires_at,
            by,
        } => format!(
            "{} extended by {} to {} ({} left)",
            short_id(call_id),
            printable(by),
            clock(expires_at, now),
            time_left(expires_at, now)
        ),
        EventBody::HoldApproval {
            call_id,
            by,
            approvals,
            required,
            ..
        } => format!(
            "{} approval {approvals} of {required} by {}",
            short_id(call_id),
            printable(by)
        ),
        EventBody::HoldResolved {
            call_id,
            resolution,
            by,
            reason,
            ..
        } => {
            let mut s = format!(
                "{} {} by {}",
                short_id(call_id),
                resolution.as_str(),
                printable(by)
            );
            if let Some(reason) = reason {
                s.push_str(&format!(": {}", printable(reason)));
            }
            s
        }
        EventBody::HoldPhaseChanged { call_id, phase } => format!(
            "{} {} (its client stopped waiting)",
            short_id(call_id),
            phase.as_str()
        ),
        EventBody::CallCompleted {
            call_id,
            result,
            upstream_status,
            duration_ms,
        } => {
            let result = result.as_str();
            let status = upstream_status
                .map(|s| format!(", HTTP {s}"))
                .unwrap_or_default();
            format!("{} {result} in {duration_ms} ms{status}", short_id(call_id))
        }
        EventBody::ToolDiscovered(t) => format!(
            "{} {} ({})",
            tool_label(&t.upstream, &t.name),
            t.risk,
            printable(&t.source)
        ),
        EventBody::ToolChanged { tool, .. } => format!(
            "{} definition changed, now {} ({})",
            tool_label(&tool.upstream, &tool.name),
            tool.risk,
            printable(&tool.source)
        ),
        EventBody::RiskChanged {
            upstream,
            tool,
            from,
            to,
            by,
            ..
        } => format!(
            "{} {from} → {to} by {}",
            tool_label(upstream, tool),
            printable(by)
        ),
        EventBody::PolicyChanged {
            version,
            sha256,
            by,
            note,
        } => {
            let mut s = format!(
                "version {version} ({}) by {}",
                printable(short_sha(sha256)),
                printable(by)
            );
            if let Some(note) = note {
                s.push_str(&format!(": {}", printable(note)));
            }
            s
        }
        EventBody::GrantCreated(g) => format!(
            "{} {} of {} {} for {} until {}",
            short_id(&g.call_id),
            printable(&g.label()),
            identity_label(&g.identity),
            tool_label(&g.upstream, &g.tool),
            g.scope.as_str(),
            clock(&g.expires_at, now),
        ),
        EventBody::GrantRevoked { id, by } => {
            format!("grant {} revoked by {}", short_id(id), printable(by))
        }
        EventBody::StoreRecovered { denied_unlogged } => {
            format!("{denied_unlogged} calls denied while the store could not commit")
        }
        EventBody::ShadowChanged { sha256, by } => match sha256 {
            Some(sha) => format!("shadow {} installed by {}", short_sha(sha), printable(by)),
            None => format!("shadow removed by {}", printable(by)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-03-04T10:00:00Z".parse().unwrap()
    }

    fn hold(call_id: &str, kind: &str, name: &str, target: serde_json::Value) -> HoldView {
        serde_json::from_value(json!({
            "call_id": call_id, "phase": "pending", "expires_at": "2026-03-04T10:09:30.000Z",
            "call": {"call_id": call_id, "upstream": "atlassian", "tool": "jira_add_comment",
                "risk": "write", "identity": {"kind": kind, "name": name, "groups": []},
                "target": target, "workflow": null, "outcome": "hold", "policy_ids": [],
                "reason": "", "decision_us": 1, "args": {}}
        }))
        .unwrap()
    }

    #[test]
    fn holds_show_as_aligned_columns_under_a_header() {
        let holds = [
            hold(
                "019b0d2e-6a41-7c3e-9f00-0123456789ab",
                "oauth",
                "alice@example.com",
                json!({"kind": "jira_issue", "id": "PAY-2"}),
            ),
            hold(
                "019b0d2e-6a42-7d11-8e00-fedcba987654",
                "api_token",
                "ci-bot",
                json!(null),
            ),
        ];
        assert_eq!(
            holds_table(&holds, now()),
            [
                "call      state    left   identity                upstream/tool               risk   target",
                "456789ab  pending  09:30  user:alice@example.com  atlassian/jira_add_comment  write  jira_issue:PAY-2",
                "ba987654  pending  09:30  token:ci-bot            atlassian/jira_add_comment  write",
            ]
        );
    }

    #[test]
    fn an_agents_control_characters_cannot_reach_the_terminal() {
        let h = hold(
            "019b0d2e-6a41-7c3e-9f00-0123456789ab",
            "oauth",
            "eve\u{1b}[2J",
            json!({"kind": "page", "id": "1\r\n456789ab  approved\u{9b}"}),
        );
        let table = holds_table(&[h], now()).join("\n");
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains(r"user:eve\u{1b}[2J"), "{table}");
        assert!(
            table.contains(r"page:1\u{d}\u{a}456789ab  approved\u{9b}"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2);
    }

    #[test]
    fn time_left_counts_down_to_zero() {
        assert_eq!(time_left("2026-03-04T10:09:30Z", now()), "09:30");
        assert_eq!(time_left("2026-03-04T11:05:00Z", now()), "1h05m");
        assert_eq!(time_left("2026-03-04T09:00:00Z", now()), "00:00");
        assert_eq!(time_left("soon", now()), "?");
    }

    fn event(seq: u64, ts: &str, body: serde_json::Value) -> String {
        let mut v = json!({"seq": seq, "ts": ts});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        v.to_string()
    }

    #[test]
    fn each_kind_of_event_is_one_line_under_a_header_shown_at_once_when_live() {
        let mut table = EventTable::new(false);
        let id = "019b0d2e-6a41-7c3e-9f00-0123456789ab";
        let today = "2026-03-04T09:59:58.123Z";
        assert_eq!(
            table.header_now().as_deref(),
            Some("   seq  time      kind             summary")
        );
        let lines: Vec<String> = [
            json!({"kind": "decision", "call_id": id, "upstream": "atlassian",
                "tool": "jira_add_comment", "risk": "write",
                "identity": {"kind": "api_token", "name": "ci-bot", "groups": []},
                "target": {"kind": "jira_issue", "id": "PAY-2"}, "workflow": null,
                "outcome": "hold", "policy_ids": ["token-write-held"], "reason": "",
                "decision_us": 40, "args": {}}),
            json!({"kind": "hold.created", "call_id": id, "expires_at": "2026-03-04T10:10:00.000Z",
                "ttl_ms": 600000, "phase": "waiting"}),
            json!({"kind": "hold.resolved", "call_id": id, "resolution": "approved",
                "by": "operator", "reason": "CHG-9"}),
            json!({"kind": "call.completed", "call_id": id, "result": "tool_error",
                "upstream_status": 200, "duration_ms": 12}),
            json!({"kind": "risk.changed", "upstream": "atlassian", "tool": "jira_add_comment",
                "from": "unclassified", "to": "write", "version": 2, "by": "ada", "note": null}),
            json!({"kind": "policy.changed", "version": 3, "sha256": "ab".repeat(32), "by": "ada"}),
            json!({"kind": "policy.changed", "version": 4, "sha256": "cd".repeat(32), "by": "ada",
                "note": "roll back\u{1b}[2J"}),
            json!({"kind": "store.recovered", "denied_unlogged": 4}),
        ]
        .into_iter()
        .enumerate()
        .flat_map(|(i, body)| table.lines(&event(i as u64 + 1, today, body), now()))
        .collect();
        assert_eq!(
            lines,
            [
                "     1  09:59:58  decision         456789ab hold token:ci-bot atlassian/jira_add_comment jira_issue:PAY-2",
                "     2  09:59:58  hold.created     456789ab held (waiting), expires 10:10:00 (10:00 left)",
                "     3  09:59:58  hold.resolved    456789ab approved by operator: CHG-9",
                "     4  09:59:58  call.completed   456789ab tool_error in 12 ms, HTTP 200",
                "     5  09:59:58  risk.changed     atlassian/jira_add_comment unclassified → write by ada",
                "     6  09:59:58  policy.changed   version 3 (abababababab) by ada",
                r"     7  09:59:58  policy.changed   version 4 (cdcdcdcdcdcd) by ada: roll back\u{1b}[2J",
                "     8  09:59:58  store.recovered  4 calls denied while the store could not commit",
            ]
        );
    }

    #[test]
    fn a_replay_sizes_its_time_column_by_its_first_event() {
        let recovered = json!({"kind": "store.recovered", "denied_unlogged": 0});
        let mut table = EventTable::new(true);
        assert_eq!(table.header_now(), None);
        let old = event(1, "2026-03-01T23:00:00.000Z", recovered.clone());
        let new = event(2, "2026-03-04T09:00:00.000Z", recovered.clone());
        assert_eq!(
            [table.lines(&old, now()), table.lines(&new, now())].concat(),
            [
                "   seq  time                 kind             summary",
                "     1  2026-03-01 23:00:00  store.recovered  0 calls denied while the store could not commit",
                "     2  09:00:00             store.recovered  0 calls denied while the store could not commit",
            ]
        );
        let mut table = EventTable::new(true);
        assert_eq!(
            table.lines(&new, now()),
            [
                "   seq  time      kind             summary",
                "     2  09:00:00  store.recovered  0 calls denied while the store could not commit",
            ]
        );
    }

    #[test]
    fn an_event_this_version_cannot_read_shows_as_sent_without_its_control_characters() {
        let mut table = EventTable::new(false);
        table.header_now();
        let newer =
            r#"{"seq":2,"ts":"2026-03-04T09:00:00.000Z","kind":"quota.exceeded","who":"x"}"#;
        assert_eq!(table.lines(newer, now()), [newer]);
        let hostile = "{\"kind\":\"x\u{9b}2J\"}";
        assert_eq!(table.lines(hostile, now()), ["{\"kind\":\"x\\u{9b}2J\"}"]);
    }

    fn version(v: u64, by: &str, note: Option<&str>, text: &str) -> PolicyText {
        PolicyText {
            stored: PolicyVersion {
                version: v,
                sha256: format!("{v}").repeat(64),
                by: by.into(),
                at: format!("2026-03-0{v}T09:59:58.123Z"),
                note: note.map(Into::into),
            },
            text: text.into(),
        }
    }

    #[test]
    fn the_policy_log_is_a_line_a_version_in_the_order_given() {
        let versions = [
            version(2, "ada", Some("hold ci\u{1b}[2J reads"), ""),
            version(1, "default", None, ""),
        ]
        .map(|p| p.stored);
        assert_eq!(
            policy_log(&versions),
            [
                "version  stored (UTC)         by       sha256        note",
                r"2        2026-03-02 09:59:58  ada      222222222222  hold ci\u{1b}[2J reads",
                "1        2026-03-01 09:59:58  default  111111111111",
            ]
        );
        assert_eq!(policy_log(&[]), ["version  stored (UTC)  by  sha256  note"]);
    }

    #[test]
    fn a_policy_diff_is_unified_with_three_lines_of_context_and_empty_for_the_same_text() {
        let old = version(1, "default", None, "a\nb\nc\nd\ne\nf\ng\nh\n");
        let new = version(3, "ada", Some("roll back"), "a\nb\nc\nd\nE\nf\ng\nh\ni");
        assert_eq!(
            policy_diff(&old, &new),
            "--- v1 (2026-03-01 09:59:58 by default)\n\
             +++ v3 (2026-03-03 09:59:58 by ada: roll back)\n\
             @@ -2,7 +2,8 @@\n \
             b\n c\n d\n-e\n+E\n f\n g\n h\n+i\n\\ No newline at end of file\n"
        );
        assert_eq!(policy_diff(&old, &old), "");
    }

    #[test]
    fn a_place_names_what_is_known_of_line_and_column() {
        assert_eq!(place(Some(2), Some(8)), ":2:8");
        assert_eq!(place(Some(2), None), ":2");
        assert_eq!(place(None, Some(8)), "");
        assert_eq!(place(None, None), "");
    }
}
