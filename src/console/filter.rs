//! The `/` filter: free text and `field:value` tokens, each optionally inverted with `!`.
//! Every token must hold for a row to show (they are ANDed), and matching ignores case.
//!
//! `risk:dest` and `outcome:d` match by prefix, because classes and outcomes are short
//! closed sets; text, `tool:`, `identity:` and `upstream:` match anywhere in the value.

/// A field a token can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Tool,
    Outcome,
    Risk,
    Identity,
    Upstream,
}

impl Field {
    pub const ALL: [Field; 5] = [
        Field::Tool,
        Field::Outcome,
        Field::Risk,
        Field::Identity,
        Field::Upstream,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Tool => "tool",
            Field::Outcome => "outcome",
            Field::Risk => "risk",
            Field::Identity => "identity",
            Field::Upstream => "upstream",
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `None` for free text, matched against every field and the row's other text.
    pub field: Option<Field>,
    /// Lowercased.
    pub value: String,
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    pub terms: Vec<Term>,
}

/// A token of the form `word:value` whose word is not a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field `{0}:` (use tool:, outcome:, risk:, identity:, upstream:, or plain text)")]
pub struct FilterError(pub String);

/// What a row offers to a filter.
pub trait Filterable {
    /// The field's value, or `None` when this kind of row has no such field.
    fn field(&self, field: Field) -> Option<String>;
    /// Everything else free text may match (target, call id, reason, …).
    fn text(&self) -> String;
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
            let term = match body.split_once(':') {
                // `https://…` or `page:123` are text, not fields: only a known word or
                // a bare identifier before the colon counts as a field name.
                Some((name, value)) if is_word(name) => match Field::parse(name) {
                    Some(field) => Term {
                        field: Some(field),
                        value: value.to_lowercase(),
                        negated,
                    },
                    None if looks_like_text(name) => Term {
                        field: None,
                        value: body.to_lowercase(),
                        negated,
                    },
                    None => return Err(FilterError(name.to_owned())),
                },
                _ => Term {
                    field: None,
                    value: body.to_lowercase(),
                    negated,
                },
            };
            terms.push(term);
        }
        Ok(Filter { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn matches(&self, row: &impl Filterable) -> bool {
        self.terms.iter().all(|t| t.matches(row) != t.negated)
    }
}

impl Term {
    fn matches(&self, row: &impl Filterable) -> bool {
        match self.field {
            Some(field) => match row.field(field) {
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
            None => {
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

/// Target kinds seen in rows (`page:abc`, `jira_project:OPS`) read as text, so a pasted
/// target finds its rows; only a near-miss of a field name is an error.
fn looks_like_text(name: &str) -> bool {
    !Field::ALL.into_iter().any(|f| close_to(name, f.name()))
}

/// One edit apart, or a prefix of at least three letters: `outcom:`, `toll:`, `ident:`.
fn close_to(typed: &str, name: &str) -> bool {
    let typed = typed.to_lowercase();
    if typed.len() >= 3 && name.starts_with(&typed) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (typed.chars().collect(), name.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    // Levenshtein distance, small strings only.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 1
}

impl Filterable for crate::api::DecisionEvent {
    fn field(&self, field: Field) -> Option<String> {
        Some(match field {
            Field::Tool => self.tool.clone(),
            Field::Upstream => self.upstream.clone(),
            Field::Risk => self.risk.as_str().to_owned(),
            Field::Outcome => self.outcome.as_str().to_owned(),
            Field::Identity => super::text::identity_label(&self.identity),
        })
    }

    fn text(&self) -> String {
        format!(
            "{} {} {}",
            super::text::target_label(self.target.as_ref()),
            self.call_id,
            self.reason
        )
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
}

impl Filterable for crate::api::ToolEntry {
    fn field(&self, field: Field) -> Option<String> {
        match field {
            Field::Tool => Some(self.tool.name.clone()),
            Field::Upstream => Some(self.tool.upstream.clone()),
            Field::Risk => Some(self.tool.risk.as_str().to_owned()),
            Field::Outcome | Field::Identity => None,
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
        text: &'static str,
    }

    impl Filterable for R {
        fn field(&self, field: Field) -> Option<String> {
            match field {
                Field::Tool => Some(self.tool.into()),
                Field::Outcome => self.outcome.map(Into::into),
                Field::Risk => Some(self.risk.into()),
                Field::Identity => self.identity.map(Into::into),
                Field::Upstream => Some(self.upstream.into()),
            }
        }
        fn text(&self) -> String {
            self.text.into()
        }
    }

    const DELETE: R = R {
        tool: "delete_page",
        outcome: Some("deny"),
        risk: "destructive",
        identity: Some("token:ci-bot"),
        upstream: "atlassian",
        text: "page:OPS-1",
    };
    const READ: R = R {
        tool: "get_issue",
        outcome: Some("allow"),
        risk: "read",
        identity: Some("user:alice@example.com"),
        upstream: "jira",
        text: "jira_issue:OPS-7",
    };
    const TOOL_ROW: R = R {
        tool: "get_issue",
        outcome: None,
        risk: "read",
        identity: None,
        upstream: "jira",
        text: "",
    };

    fn shows(filter: &str, row: &R) -> bool {
        Filter::parse(filter).unwrap().matches(row)
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
    }

    #[test]
    fn text_matches_any_field_or_the_rest_of_the_row() {
        assert!(shows("ci-bot", &DELETE));
        assert!(shows("ops-7", &READ));
        assert!(!shows("ops-7", &DELETE));
        assert!(shows("", &DELETE), "an empty filter shows everything");
        assert!(
            shows("page:ops-1", &DELETE),
            "a target kind before a colon is text"
        );
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
    fn a_misspelt_field_is_an_error_that_names_it() {
        let err = Filter::parse("outcom:deny").unwrap_err();
        assert_eq!(err, FilterError("outcom".into()));
        assert!(err.to_string().contains("unknown field `outcom:`"), "{err}");
        assert!(Filter::parse("toll:x").is_err());
        assert!(Filter::parse("ident:bob").is_err());
        assert!(Filter::parse("jira_issue:OPS-7").is_ok());
    }
}
