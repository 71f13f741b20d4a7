//! One module per view: each owns its selection, says which actions apply, handles
//! them, and draws its table.

pub mod grants;
pub mod held;
pub mod live;
pub mod policy;
pub mod stats;
pub mod tokens;
pub mod tools;

use chrono::{DateTime, Utc};

use super::filter::{Filter, Filterable};
use super::model::Model;
use super::theme::Theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Live,
    Held,
    Tools,
    Stats,
    Policy,
    Grants,
    Tokens,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Live => "live",
            View::Held => "held",
            View::Tools => "tools",
            View::Stats => "stats",
            View::Policy => "policy",
            View::Grants => "grants",
            View::Tokens => "tokens",
        }
    }
}

/// A view's filter as typed, and parsed.
#[derive(Debug, Clone, Default)]
pub struct ViewFilter {
    pub text: String,
    pub filter: Filter,
}

impl ViewFilter {
    pub fn shows(&self, row: &impl Filterable) -> bool {
        self.filter.is_empty() || self.filter.matches(row)
    }

    /// The text, when a filter is set.
    pub fn active(&self) -> Option<&str> {
        Some(self.text.as_str()).filter(|t| !t.is_empty())
    }
}

/// What a view draws from.
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub theme: &'a Theme,
    pub now: DateTime<Utc>,
    /// Since when the gateway is out of reach: rows are dimmed and clocks stop there.
    pub stale_since: Option<DateTime<Utc>>,
}

impl Ctx<'_> {
    /// The time clocks show: now, or the moment the connection was lost.
    pub fn clock(&self) -> DateTime<Utc> {
        self.stale_since.map_or(self.now, |s| s.min(self.now))
    }
}

/// A table's title, with its filter and how many rows pass it.
pub fn title(name: &str, filter: Option<&str>, shown: usize, total: usize) -> String {
    match filter {
        Some(f) => format!(" {name} · /{f} · {shown} of {total} "),
        None => format!(" {name} "),
    }
}

/// The upstream every row shares, if they share one: then the tool column can leave it
/// out and show whole tool names.
pub fn shared_upstream<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let first = names.next()?;
    names.all(|n| n == first).then_some(first)
}

pub fn tool_label(upstream: &str, tool: &str, shared: Option<&str>) -> String {
    match shared {
        Some(_) => tool.to_owned(),
        None => format!("{upstream}/{tool}"),
    }
}

pub fn tool_header(shared: Option<&str>) -> String {
    match shared {
        Some(upstream) => format!("tool ({upstream})"),
        None => "upstream/tool".to_owned(),
    }
}

pub fn risk_style(risk: crate::api::Risk, theme: &Theme) -> ratatui::style::Style {
    use crate::api::Risk;
    match risk {
        Risk::Read => theme.risk_read,
        Risk::Write => theme.risk_write,
        Risk::Destructive => theme.risk_destructive,
        Risk::Unclassified => theme.risk_unclassified,
    }
}
