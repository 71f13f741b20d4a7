//! The `/` filter: free text and `field:value` tokens, each optionally inverted with `!`.
//! Every token must hold for a row to show (they are ANDed), and matching ignores case.
//!
//! `risk:dest` and `outcome:d` match by prefix, because classes and outcomes are short
//! closed sets; text, `tool:`, `identity:`, `upstream:`, `target:` and `ticket:` match
//! anywhere in the value. `since:10m`, `since:2h`, `since:09:00` (UTC, today) keep rows
//! from that time on. A `word:` that is no field is refused, never silently matched as
//! text: a target is searched as `target:page:OPS-1`.

use chrono::{DateTime, NaiveTime, Utc};

/// A field a token can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tool,
    Outcome,
    Risk,
    Identity,
    Upstream,
    Target,
    Ticket,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Tool,
        Field::Outcome,
        Field::Risk,
        Field::Identity,
        Field::Upstream,
        Field::Target,
        Field::Ticket,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Tool => "tool",
            Field::Outcome => "outcome",
            Field::Risk => "risk",
            Field::Identity => "identity",
            Field::Upstream => "upstream",
            Field::Target => "target",
            Field::Ticket => "ticket",
        }
    }

    fn parse(name: &str) -> Option<Field> {
        Field::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Closed sets match by prefix; open ones anywhere.
    fn by_prefix(self) -> bool {
        matches!(self, Field::Outcome | Field::Risk)
    }
}

/// Where a `since:` range starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(chrono::Duration),
    /// This time of day, UTC: today's, or yesterday's while it is still to come.
    Clock(NaiveTime),
}

impl Since {
    fn parse(value: &str) -> Option<Since> {
        if let Ok(t) = NaiveTime::parse_from_str(value, "%H:%M") {
            return Some(Since::Clock(t));
        }
        let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit())?);
        let n: i64 = digits.parse().ok()?;
        // At most ten years back: anything longer reads as "everything", and the sums
        // below can never overflow.
        let ago = match unit {
            "s" => chrono::Duration::try_seconds(n),
            "m" => chrono::Duration::try_minutes(n),
            "h" => chrono::Duration::try_hours(n),
            "d" => chrono::Duration::try_days(n),
            _ => return None,
        }?;
        (ago <= chrono::Duration::days(3653)).then_some(Since::Ago(ago))
    }

    /// The first moment the range keeps, seen at `now`.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Since::Ago(d) => now
                .checked_sub_signed(d)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            Since::Clock(t) => {
                let today = now.date_naive().and_time(t).and_utc();
                if today > now {
                    today - chrono::Duration::days(1)
                } else {
                    today
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Free text, matched against every field and the row's other text.
    Text,
    Field(Field),
    Since(Since),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub what: Match,
    /// Lowercased.
    pub value: String,
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A token of the form `word:value` whose word is not a field.
    #[error(
        "unknown field `{0}:` (use tool:, outcome:, risk:, identity:, upstream:, target:, ticket:, since:, or plain text; a target is target:{0}:…)"
    )]
    UnknownField(String),
    #[error("since:{0} is not a time: use since:10m, since:2h, since:1d or since:09:00 (UTC)")]
    BadSince(String),
}

/// What a row offers to a filter.
pub trait Filterable {
    /// The field's value, or `None` when this kind of row has no such field.
    fn field(&self, field: Field) -> Option<String>;
    /// Everything else free text may match (call id, reason, …).
    fn text(&self) -> String;
    /// When it happened, for `since:`; rows without a time never match one.
    fn time(&self) -> Option<DateTime<Utc>> {
        None
    }
}

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        let mut terms = Vec::new();
        for token in input.split_whitespace() {
            let (negated, body) = match token.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, token),
            };
            if body.is_empty() {
                continue;
            }
            let (what, value) = match body.split_once(':') {
                // `https://…` is text: only a bare word before the colon names a field.
                Some((name, value)) if is_word(name) && !value.starts_with("//") => {
                    if name.eq_ignore_ascii_case("since") {
                        let since = Since::parse(value)
                            .ok_or_else(|| FilterError::BadSince(value.into()))?;
                        (Match::Since(since), value)
                    } else {
                        match Field::parse(name) {
                            Some(field) => (Match::Field(field), value),
                            None => return Err(FilterError::UnknownField(name.to_owned())),
                        }
                    }
                }
                _ => (Match::Text, body),
            };
            terms.push(Term {
                what,
                value: value.to_lowercase(),
                negated,
            });
        }
        Ok(Filter { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, row: &impl Filterable) -> bool {
        self.matches_at(row, Utc::now())
    }

    /// As `matches`, with `since:` measured from `now`.
    pub fn matches_at(&self, row: &impl Filterable, now: DateTime<Utc>) -> bool {
        self.terms.iter().all(|t| t.matches(row, now) != t.negated)
    }
}

impl Term {
    fn matches(&self, row: &impl Filterable, now: DateTime<Utc>) -> bool {
        match self.what {
            Match::Field(field) => match row.field(field) {
                Some(v) => {
                    let v = v.to_lowercase();
                    if field.by_prefix() {
                        v.starts_with(&self.value)
                    } else {
                        v.contains(&self.value)
                    }
                }
                // A field this view lacks never matches, so `!field:` keeps every row.
                None => false,
            },
            Match::Since(since) => row.time().is_some_and(|t| t >= since.start(now)),
            Match::Text => {
                Field::ALL.into_iter().any(|f| {
                    row.field(f)
                        .is_some_and(|v| v.to_lowercase().contains(&self.value))
                }) || row.text().to_lowercase().contains(&self.value)
            }
        }
    }
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic() || c == '_')
}

impl Filterable for crate::api::DecisionEvent {
    fn field(&self, field: Field) -> Option<String> {
        Some(match field {
            Field::Tool => self.tool.clone(),
            Field::Upstream => self.upstream.clone(),
            Field::Risk => self.risk.as_str().to_owned(),
            Field::Outcome => self.outcome.as_str().to_owned(),
            Field::Identity => self.identity.label(),
            Field::Target => self.target.as_ref()?.label(),
            Field::Ticket => self.workflow.as_ref()?.ticket.clone()?,
        })
    }

    fn text(&self) -> String {
        format!("{} {}", self.call_id, self.reason)
    }
}

/// A decision row: the decision, and when it was made.
impl Filterable for super::model::Row {
    fn field(&self, field: Field) -> Option<String> {
        self.call.field(field)
    }

    fn text(&self) -> String {
        self.call.text()
    }

    fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.ts)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl Filterable for crate::api::HoldView {
    fn field(&self, field: Field) -> Option<String> {
        match field {
            Field::Outcome => Some("hold".into()),
            other => self.call.field(other),
        }
    }

    fn text(&self) -> String {
        self.call.text()
    }

    /// A hold is as old as its call: UUIDv7 ids carry the moment they were minted.
    fn time(&self) -> Option<DateTime<Utc>> {
        uuid::Uuid::parse_str(&self.call_id)
            .ok()?
            .get_timestamp()
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default()
            })
    }
}

impl Filterable for crate::api::ToolEntry {
    fn field(&self, field: Field) -> Option<String> {
        match field {
            Field::Tool => Some(self.tool.name.clone()),
            Field::Upstream => Some(self.tool.upstream.clone()),
            Field::Risk => Some(self.tool.risk.as_str().to_owned()),
            Field::Outcome | Field::Identity | Field::Target | Field::Ticket => None,
        }
    }

    fn text(&self) -> String {
        format!(
            "{} {}",
            self.tool.suggested_risk.as_str(),
            self.tool.title.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        tool: &'static str,
        outcome: Option<&'static str>,
        risk: &'static str,
        identity: Option<&'static str>,
        upstream: &'static str,
        target: Option<&'static str>,
        ticket: Option<&'static str>,
        at: Option<&'static str>,
    }

    impl Filterable for R {
        fn field(&self, field: Field) -> Option<String> {
            match field {
                Field::Tool => Some(self.tool.into()),
                Field::Outcome => self.outcome.map(Into::into),
                Field::Risk => Some(self.risk.into()),
                Field::Identity => self.identity.map(Into::into),
                Field::Upstream => Some(self.upstream.into()),
                Field::Target => self.target.map(Into::into),
                Field::Ticket => self.ticket.map(Into::into),
            }
        }
        fn text(&self) -> String {
            "0190abcd because".into()
        }
        fn time(&self) -> Option<DateTime<Utc>> {
            self.at
                .map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc))
        }
    }

    const DELETE: R = R {
        tool: "delete_page",
        outcome: Some("deny"),
        risk: "destructive",
        identity: Some("token:ci-bot"),
        upstream: "atlassian",
        target: Some("page:OPS-1"),
        ticket: Some("CHG-7"),
        at: Some("2026-11-27T08:55:00Z"),
    };
    const READ: R = R {
        tool: "get_issue",
        outcome: Some("allow"),
        risk: "read",
        identity: Some("user:alice@example.com"),
        upstream: "jira",
        target: Some("jira_issue:OPS-7"),
        ticket: None,
        at: Some("2026-11-26T23:00:00Z"),
    };
    const TOOL_ROW: R = R {
        tool: "get_issue",
        outcome: None,
        risk: "read",
        identity: None,
        upstream: "jira",
        target: None,
        ticket: None,
        at: None,
    };

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn shows(filter: &str, row: &R) -> bool {
        Filter::parse(filter).unwrap().matches_at(row, now())
    }

    #[test]
    fn fields_match_their_own_values_and_ignore_case() {
        assert!(shows("outcome:deny", &DELETE));
        assert!(!shows("outcome:deny", &READ));
        assert!(shows("risk:DEST", &DELETE), "closed sets match by prefix");
        assert!(!shows("risk:est", &DELETE), "…and only by prefix");
        assert!(shows("tool:page", &DELETE), "open fields match anywhere");
        assert!(shows("identity:alice", &READ));
        assert!(shows("upstream:jira", &READ));
        assert!(!shows("upstream:jira", &DELETE));
        assert!(shows("target:OPS", &DELETE), "target:OPS finds page:OPS-1");
        assert!(
            shows("target:jira_issue:ops-7", &READ),
            "a whole target label"
        );
        assert!(shows("ticket:chg", &DELETE));
        assert!(!shows("ticket:chg", &READ), "no ticket, no match");
    }

    #[test]
    fn text_matches_any_field_or_the_rest_of_the_row() {
        assert!(shows("ci-bot", &DELETE));
        assert!(shows("ops-7", &READ), "text finds targets too");
        assert!(!shows("ops-7", &DELETE));
        assert!(shows("because", &DELETE));
        assert!(shows("", &DELETE), "an empty filter shows everything");
        assert!(shows("https://x", &DELETE) == shows("https://x", &READ));
    }

    #[test]
    fn since_keeps_rows_from_a_time_on() {
        assert!(shows("since:10m", &DELETE));
        assert!(!shows("since:10m", &READ));
        assert!(shows("since:12h", &READ));
        assert!(shows("since:08:50", &DELETE), "today 08:50 UTC");
        assert!(!shows("since:08:56", &DELETE));
        assert!(
            shows("since:23:00", &READ),
            "a time still to come today means yesterday's"
        );
        assert!(
            !shows("since:1d", &TOOL_ROW),
            "rows without a time never match"
        );
        assert!(shows("!since:10m", &READ));
        for bad in [
            "since:",
            "since:10x",
            "since:ten",
            "since:25:00",
            "since:9999999999999d",
            "since:99999999d",
            "since:99999999999999999999s",
        ] {
            assert!(
                matches!(Filter::parse(bad), Err(FilterError::BadSince(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bang_inverts_a_token_and_tokens_are_anded() {
        assert!(!shows("!outcome:deny", &DELETE));
        assert!(shows("!outcome:deny", &READ));
        assert!(shows("!ci-bot", &READ));
        assert!(!shows("!ci-bot", &DELETE));
        assert!(shows("upstream:atlassian !risk:read", &DELETE));
        assert!(!shows("upstream:atlassian risk:read", &DELETE));
        assert!(
            shows("!outcome:allow", &TOOL_ROW),
            "a field the row lacks never matches, so its inversion always does"
        );
        assert!(!shows("outcome:allow", &TOOL_ROW));
        assert_eq!(Filter::parse("! tool:x").unwrap().terms.len(), 1);
    }

    #[test]
    fn an_unknown_field_is_refused_and_named() {
        let err = Filter::parse("outcom:deny").unwrap_err();
        assert_eq!(err, FilterError::UnknownField("outcom".into()));
        assert!(err.to_string().contains("unknown field `outcom:`"), "{err}");
        let err = Filter::parse("jira_issue:OPS-7").unwrap_err();
        assert!(
            err.to_string().contains("a target is target:jira_issue:…"),
            "the message says how to search a target: {err}"
        );
        assert!(Filter::parse("toll:x").is_err());
        assert!(Filter::parse("target:OPS").is_ok());
    }
}
