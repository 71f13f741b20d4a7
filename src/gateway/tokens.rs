//! The standing privilege of every API token: how old it is, whether it expires, what it
//! used in the last 30 days, what the policy lets it reach, and what to do about it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde_json::Map;

use super::Gateway;
use super::identity::Identity;
use super::policy::CallFacts;
use super::store::StoreError;
use crate::api::{
    IdentityRef, IdentityUse, Outcome, ReplayWindow, TokenFlag, TokenReport, TokensView,
};
use crate::time::rfc3339;

/// The window the report reads.
pub const WINDOW_DAYS: u32 = 30;
/// The most decisions it reads (the newest of the window); a window cut short is said.
const MOST_DECISIONS: u64 = 500_000;

/// One report at a time: each reads up to `MOST_DECISIONS` decisions.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Why there is no report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("a token report is being made already; try again in a moment")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}
const PAGE: u32 = 5_000;

/// What the report's flags are measured against (`[gateway] token_*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Older than this many days: rotate.
    pub max_age_days: i64,
    /// Reaching this many more tools than it used: narrow.
    pub broad_unused_tools: usize,
    /// Touching targets in more than this many projects: cross-project.
    pub cross_project_max: usize,
}

impl Limits {
    pub fn from_config(g: &crate::config::GatewaySection) -> Self {
        Self {
            max_age_days: g.token_max_age_days as i64,
            broad_unused_tools: g.token_broad_unused_tools,
            cross_project_max: g.token_cross_project_max,
        }
    }
}

/// Every configured API token's report, and the OAuth users seen in the window.
pub async fn report(gw: &Gateway, now: DateTime<Utc>) -> Result<TokensView, ReportError> {
    let _one = ONE_AT_A_TIME.try_acquire().map_err(|_| ReportError::Busy)?;
    let (uses, complete) = usage(gw, now).await?;
    let tools: Vec<(String, String, crate::api::Risk)> = gw
        .store
        .tool_rows()
        .await?
        .into_iter()
        .map(|(row, _)| (row.upstream, row.name, row.risk))
        .collect();
    let limits = Limits::from_config(&gw.config.gateway);
    let engine = gw.policy();
    let mut tokens: Vec<TokenReport> = gw
        .config
        .identities
        .iter()
        .map(|id| {
            let identity = Identity::of_token(id);
            let label = identity.to_wire().label();
            let empty = Map::new();
            let reachable: Vec<String> = tools
                .iter()
                .filter(|(upstream, tool, risk)| {
                    let facts = CallFacts {
                        identity: &identity,
                        upstream,
                        tool,
                        risk: *risk,
                        args: &empty,
                        target: None,
                        workflow: None,
                        now,
                    };
                    // Not `decide`: its cache is the live decisions'.
                    engine.evaluate(&facts).outcome != Outcome::Deny
                })
                .map(|(u, t, _)| format!("{u}/{t}"))
                .collect();
            let usage = uses.get(&label).cloned().unwrap_or_else(|| IdentityUse {
                identity: label.clone(),
                ..Default::default()
            });
            token_report(&identity, usage, reachable, limits, now)
        })
        .collect();
    tokens.sort_by(|a, b| b.flags.len().cmp(&a.flags.len()).then(a.name.cmp(&b.name)));
    let users = uses
        .into_values()
        .filter(|u| u.identity.starts_with("user:"))
        .collect();
    Ok(TokensView {
        at: rfc3339(now),
        window_days: WINDOW_DAYS,
        window_complete: complete,
        tokens,
        users,
    })
}

/// What each identity did in the window, by its label, from the recorded decisions, and
/// whether the whole window was read.
async fn usage(
    gw: &Gateway,
    now: DateTime<Utc>,
) -> Result<(BTreeMap<String, IdentityUse>, bool), StoreError> {
    let since = rfc3339(now - Duration::days(WINDOW_DAYS as i64));
    let week = rfc3339(now - Duration::days(7));
    let mut snapshot = gw
        .store
        .decision_snapshot(&ReplayWindow::Since(since), None, MOST_DECISIONS)
        .await?;
    let mut seen: BTreeMap<String, (IdentityUse, BTreeSet<String>, BTreeSet<String>)> =
        BTreeMap::new();
    let mut read = 0u64;
    loop {
        let page = snapshot.next_page(PAGE).await?;
        if page.is_empty() {
            break;
        }
        read += page.len() as u64;
        for record in page {
            let d = &record.call;
            let label = d.identity.label();
            let (u, tools, targets) = seen.entry(label.clone()).or_insert_with(|| {
                (
                    IdentityUse {
                        identity: label,
                        ..Default::default()
                    },
                    BTreeSet::new(),
                    BTreeSet::new(),
                )
            });
            u.calls_30d.add(d.outcome, 1);
            if record.ts >= week {
                u.calls_7d.add(d.outcome, 1);
            }
            if u.last_used.as_ref().is_none_or(|l| *l < record.ts) {
                u.last_used = Some(record.ts.clone());
            }
            // What it used is what it got through; a denied call reached nothing.
            if d.outcome != Outcome::Deny {
                tools.insert(format!("{}/{}", d.upstream, d.tool));
                if let Some(t) = &d.target {
                    targets.insert(t.label());
                }
            }
        }
    }
    let uses = seen
        .into_iter()
        .map(|(label, (mut u, tools, targets))| {
            u.used = tools.into_iter().collect();
            u.targets = targets.into_iter().collect();
            (label, u)
        })
        .collect();
    Ok((uses, read < MOST_DECISIONS))
}

/// The targets of a kind that names a project (`project:OPS`, `jira_project:OPS`, ...).
fn projects(targets: &[String]) -> BTreeSet<&str> {
    targets
        .iter()
        .filter(|t| {
            t.split_once(':')
                .is_some_and(|(kind, _)| kind.to_ascii_lowercase().contains("project"))
        })
        .map(String::as_str)
        .collect()
}

/// One token's report: its flags, each with what to do.
pub fn token_report(
    identity: &Identity,
    usage: IdentityUse,
    reachable: Vec<String>,
    limits: Limits,
    now: DateTime<Utc>,
) -> TokenReport {
    let issued = identity.issued.unwrap_or(now);
    let age_days = (now - issued).num_days();
    let mut flags = Vec::new();
    let flag = |flag: &str, says: String| TokenFlag {
        flag: flag.to_owned(),
        says,
    };
    // Only a token old enough to have had the whole window.
    if usage.calls_30d.total() == 0 && age_days >= i64::from(WINDOW_DAYS) {
        flags.push(flag(
            "unused",
            format!(
                "no call in {WINDOW_DAYS} days: remove its [[identity]] (or rotate it if it is still needed)"
            ),
        ));
    }
    if identity.expires.is_none() {
        flags.push(flag(
            "never_expires",
            "it never expires: set `expires` on its [[identity]] (90 days, say) so a leaked copy dies on its own".into(),
        ));
    }
    if age_days > limits.max_age_days {
        flags.push(flag(
            "old",
            format!(
                "issued {age_days} days ago, more than {}: rotate it (toolgate token new, then swap token_sha256 and issued)",
                limits.max_age_days
            ),
        ));
    }
    let unused: Vec<&String> = reachable
        .iter()
        .filter(|t| !usage.used.contains(t))
        .collect();
    // An unused token is to be removed, not narrowed.
    let broad = usage.calls_30d.total() > 0 && unused.len() >= limits.broad_unused_tools;
    let narrowing_policy = broad.then(|| {
        flags.push(flag(
            "broad",
            format!(
                "the policy lets it reach {} tools; it used {}: narrow it to what it used (the policy below)",
                reachable.len(),
                usage.used.len()
            ),
        ));
        narrowing(&identity.to_wire(), &usage.used)
    })
    .flatten();
    let projects = projects(&usage.targets);
    if projects.len() > limits.cross_project_max {
        flags.push(flag(
            "cross_project",
            format!(
                "it touched {} projects ({}), more than {}: split it into a token per project, or bound it with a policy on context.target",
                projects.len(),
                projects.iter().copied().collect::<Vec<_>>().join(", "),
                limits.cross_project_max
            ),
        ));
    }
    TokenReport {
        name: identity.name.clone(),
        groups: identity.groups.clone(),
        owner: identity.owner.clone(),
        issued: rfc3339(issued),
        age_days,
        expires: identity.expires.map(rfc3339),
        usage,
        reachable,
        flags,
        narrowing_policy,
    }
}

/// A Cedar policy that forbids the token every tool but those it used, if one can be
/// written for its names (it is compiled before it is offered).
fn narrowing(identity: &IdentityRef, used: &[String]) -> Option<String> {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let id = format!(
        "narrow-{}",
        identity
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    );
    // Nothing used: every call is forbidden.
    let unless = if used.is_empty() {
        String::new()
    } else {
        let allowed = used
            .iter()
            .map(|t| format!("resource == Tool::{}", quoted(t)))
            .collect::<Vec<_>>()
            .join(" ||\n         ");
        format!("\nunless {{ {allowed} }}")
    };
    let text = format!(
        "@id({})\n@reason({})\nforbid (principal == Token::{}, action == Action::\"call_tool\", resource){unless};\n",
        quoted(&id),
        quoted(&format!(
            "{} may call only the tools it used (narrowed by the token report)",
            identity.name
        )),
        quoted(&identity.name)
    );
    super::policy::PolicyEngine::compile(&text)
        .is_ok()
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(days_old: i64, expires: bool) -> Identity {
        let now = Utc::now();
        Identity {
            kind: crate::api::IdentityKind::ApiToken,
            name: "ci-bot".into(),
            groups: vec![],
            issued: Some(now - Duration::days(days_old)),
            expires: expires.then(|| now + Duration::days(30)),
            owner: None,
        }
    }

    const LIMITS: Limits = Limits {
        max_age_days: 90,
        broad_unused_tools: 3,
        cross_project_max: 2,
    };

    fn used(tools: &[&str], targets: &[&str]) -> IdentityUse {
        IdentityUse {
            identity: "token:ci-bot".into(),
            last_used: Some("2026-11-27T00:00:00.000Z".into()),
            calls_7d: Default::default(),
            calls_30d: crate::api::CallCounts {
                allow: 3,
                hold: 0,
                deny: 0,
            },
            used: tools.iter().map(|s| s.to_string()).collect(),
            targets: targets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn flags(r: &TokenReport) -> Vec<&str> {
        r.flags.iter().map(|f| f.flag.as_str()).collect()
    }

    #[test]
    fn each_flag_trips_on_its_own_and_says_what_to_do() {
        let reach: Vec<String> = ["a/1", "a/2", "a/3", "a/4"].map(String::from).to_vec();
        let fine = token_report(
            &token(10, true),
            used(&["a/1", "a/2"], &[]),
            reach.clone(),
            LIMITS,
            Utc::now(),
        );
        assert!(fine.flags.is_empty(), "{:?}", fine.flags);

        let idle = IdentityUse {
            identity: "token:ci-bot".into(),
            ..Default::default()
        };
        let r = token_report(&token(10, true), idle.clone(), vec![], LIMITS, Utc::now());
        assert!(r.flags.is_empty(), "too new to have had the whole window");
        let r = token_report(&token(40, true), idle, vec![], LIMITS, Utc::now());
        assert_eq!(flags(&r), ["unused"]);

        let r = token_report(
            &token(10, false),
            used(&["a/1"], &[]),
            vec!["a/1".into()],
            LIMITS,
            Utc::now(),
        );
        assert_eq!(flags(&r), ["never_expires"]);
        assert!(r.flags[0].says.contains("set `expires`"));

        let r = token_report(
            &token(400, true),
            used(&["a/1"], &[]),
            vec!["a/1".into()],
            LIMITS,
            Utc::now(),
        );
        assert_eq!(flags(&r), ["old"]);

        let r = token_report(
            &token(10, true),
            used(&["a/1"], &[]),
            reach.clone(),
            LIMITS,
            Utc::now(),
        );
        assert_eq!(flags(&r), ["broad"]);
        let policy = r.narrowing_policy.unwrap();
        assert!(
            policy.contains(r#"principal == Token::"ci-bot""#),
            "{policy}"
        );
        assert!(policy.contains(r#"resource == Tool::"a/1""#), "{policy}");
        crate::gateway::policy::PolicyEngine::compile(&format!(
            "{}\n{policy}",
            crate::gateway::policy::DEFAULT_POLICY
        ))
        .expect("the narrowing policy is valid Cedar");

        let r = token_report(
            &token(10, true),
            used(
                &["a/1"],
                &["project:OPS", "jira_project:DEV", "project:SEC", "page:9"],
            ),
            vec!["a/1".into()],
            LIMITS,
            Utc::now(),
        );
        assert_eq!(flags(&r), ["cross_project"]);
        assert!(
            r.flags[0].says.contains("3 projects"),
            "{}",
            r.flags[0].says
        );
    }
}
