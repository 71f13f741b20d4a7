//! The tokens view (`:tokens`): the standing privilege of every API token, flagged where
//! something should be done; Enter shows what, and the policy that would narrow it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use super::Ctx;
use crate::api::{TokenReport, TokensView};
use crate::console::keymap::Action;
use crate::console::table::{self, Column, ListState};

#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub list: ListState,
}

impl Tokens {
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::Up,
            Action::Down,
            Action::Detail,
            Action::PageUp,
            Action::PageDown,
            Action::Top,
            Action::Bottom,
            Action::CopyJson,
            Action::Back,
        ]
    }

    pub fn selected<'a>(&self, view: Option<&'a TokensView>) -> Option<&'a TokenReport> {
        view.and_then(|v| v.tokens.get(self.list.selected))
    }

    pub fn navigate(&mut self, action: Action, view: Option<&TokensView>, page: usize) -> bool {
        let len = view.map_or(0, |v| v.tokens.len());
        let Some(to) = self.list.target(action, len, page) else {
            return false;
        };
        self.list.select(to, len, page);
        true
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx, view: Option<&TokensView>) {
        let theme = ctx.theme;
        let tokens: &[TokenReport] = view.map_or(&[], |v| v.tokens.as_slice());
        let page = table::page(area.height);
        let window = self.list.window(tokens.len(), page);
        let rows: Vec<(Vec<table::Text>, Style)> = tokens[window.clone()]
            .iter()
            .map(|t| {
                let flagged = !t.flags.is_empty();
                (
                    vec![
                        (t.name.clone(), Style::new()),
                        (format!("{}d", t.age_days), Style::new()),
                        (
                            t.expires.as_deref().map_or("never".to_owned(), |e| {
                                e.get(..10).unwrap_or(e).to_owned()
                            }),
                            if t.expires.is_none() {
                                theme.urgent
                            } else {
                                Style::new()
                            },
                        ),
                        (
                            t.usage.last_used.as_deref().map_or("—".to_owned(), |l| {
                                l.get(..16).unwrap_or(l).replace('T', " ")
                            }),
                            Style::new(),
                        ),
                        (
                            format!("{}/{}", t.usage.calls_7d.total(), t.usage.calls_30d.total()),
                            Style::new(),
                        ),
                        (
                            format!("{}/{}", t.usage.used.len(), t.reachable.len()),
                            Style::new(),
                        ),
                        (
                            t.flags
                                .iter()
                                .map(|f| f.flag.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                            if flagged { theme.urgent } else { Style::new() },
                        ),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let columns = [
            Column::new("token", 8, 24),
            Column::new("age", 4, 6),
            Column::new("expires", 5, 10),
            Column::new("last used", 9, 16).optional(),
            Column::new("7d/30d", 6, 11),
            Column::new("used/reach", 10, 10),
            Column::new("flags", 5, 60),
        ];
        let title = match view {
            Some(v) => format!(
                " tokens · last {} days · {} flagged of {} ",
                v.window_days,
                v.tokens.iter().filter(|t| !t.flags.is_empty()).count(),
                v.tokens.len()
            ),
            None => " tokens · loading… ".to_owned(),
        };
        let page = table::Page {
            title,
            columns: &columns,
            rows,
            window,
            selected: self.list.selected_in(tokens.len()),
        };
        table::draw(frame, area, theme, page);
    }
}

/// The selected token in full: what each flag found and what to do, and the policy that
/// would narrow it.
pub fn detail_lines<'a>(t: &TokenReport, ctx: &Ctx) -> Vec<Line<'a>> {
    let mut lines = vec![
        Line::from(format!("token      {}", t.name)),
        Line::from(format!("groups     {}", t.groups.join(", "))),
        Line::from(format!(
            "issued     {} ({} days ago){}",
            t.issued,
            t.age_days,
            t.owner
                .as_deref()
                .map(|o| format!(", owned by {o}"))
                .unwrap_or_default()
        )),
        Line::from(format!(
            "expires    {}",
            t.expires.as_deref().unwrap_or("never")
        )),
        Line::from(format!(
            "calls      {} in 7 days, {} in 30 (allow/hold/deny {}/{}/{})",
            t.usage.calls_7d.total(),
            t.usage.calls_30d.total(),
            t.usage.calls_30d.allow,
            t.usage.calls_30d.hold,
            t.usage.calls_30d.deny
        )),
        Line::from(format!("used       {}", t.usage.used.join(", "))),
        Line::from(format!("reaches    {} tools", t.reachable.len())),
        Line::from(format!("targets    {}", t.usage.targets.join(", "))),
        Line::from(""),
    ];
    for f in &t.flags {
        lines.push(Line::from(Span::styled(
            format!("{}: {}", f.flag, f.says),
            ctx.theme.urgent,
        )));
    }
    if let Some(policy) = &t.narrowing_policy {
        lines.push(Line::from(""));
        lines.push(Line::from(
            "narrowing policy (add it to the policy in force):",
        ));
        lines.extend(policy.lines().map(|l| Line::from(format!("  {l}"))));
    }
    lines
}
