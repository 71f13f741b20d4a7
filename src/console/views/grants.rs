//! The grants view (`:grants`): the approvals that still let calls through, each with
//! its time left and uses, which an approver revokes here.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;

use super::{Ctx, shared_upstream, tool_header, tool_label};
use crate::api::{Grant, GrantScope};
use crate::console::keymap::Action;
use crate::console::model::Model;
use crate::console::table::{self, Column, ListState};
use crate::console::text::{countdown, short, time_label};

/// Below this many seconds left, a grant's countdown is shown as ending.
const ENDING_SECS: i64 = 60;

#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub list: ListState,
    /// The selected grant's id, which the selection follows.
    anchor: Option<String>,
}

impl Grants {
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::Revoke,
            Action::Up,
            Action::Down,
            Action::PageUp,
            Action::PageDown,
            Action::Top,
            Action::Bottom,
            Action::CopyId,
            Action::CopyJson,
            Action::Back,
        ]
    }

    /// The grants the gateway last said were active (or made since), soonest to end
    /// first; one whose time ran out meanwhile shows as ended until the view is opened
    /// again.
    pub fn visible<'a>(&self, model: &'a Model) -> Vec<&'a Grant> {
        model.grants.iter().collect()
    }

    pub fn selected<'a>(&self, model: &'a Model) -> Option<&'a Grant> {
        self.visible(model).get(self.list.selected).copied()
    }

    pub fn reanchor(&mut self, model: &Model, page: usize) {
        let keys: Vec<String> = self.visible(model).iter().map(|g| g.id.clone()).collect();
        self.list.reanchor(&mut self.anchor, &keys, page);
    }

    pub fn navigate(&mut self, action: Action, model: &Model, page: usize) -> bool {
        let len = self.visible(model).len();
        let Some(to) = self.list.target(action, len, page) else {
            return false;
        };
        self.list.select(to, len, page);
        self.anchor = self.selected(model).map(|g| g.id.clone());
        true
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let theme = ctx.theme;
        let clock = ctx.clock();
        let visible = self.visible(ctx.model);
        let page = table::page(area.height);
        let window = self.list.window(visible.len(), page);
        let shared = shared_upstream(visible.iter().map(|g| g.upstream.as_str()));
        let rows: Vec<(Vec<table::Text>, Style)> = visible[window.clone()]
            .iter()
            .map(|g| {
                let left = DateTime::parse_from_rfc3339(&g.expires_at)
                    .map(|e| (e.with_timezone(&Utc) - clock).num_seconds())
                    .unwrap_or(0);
                let last = g
                    .last_used_at
                    .as_deref()
                    .map(|t| format!(" (last {})", time_label(t, ctx.now)))
                    .unwrap_or_default();
                (
                    vec![
                        (short(&g.id).to_owned(), Style::new()),
                        (g.identity.label(), Style::new()),
                        (tool_label(&g.upstream, &g.tool, shared), Style::new()),
                        (
                            match g.scope {
                                GrantScope::Identical => "identical",
                                GrantScope::Tool => "tool",
                            }
                            .to_owned(),
                            if g.scope == GrantScope::Tool {
                                theme.hold
                            } else {
                                Style::new()
                            },
                        ),
                        (
                            if left > 0 {
                                countdown(left)
                            } else {
                                "ended".to_owned()
                            },
                            if left < ENDING_SECS {
                                theme.urgent
                            } else {
                                Style::new()
                            },
                        ),
                        (format!("{}{last}", g.uses), Style::new()),
                        (g.approvers.join(", "), Style::new()),
                        (short(&g.call_id).to_owned(), Style::new()),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let columns = [
            Column::new("grant", 8, 8),
            Column::new("identity", 10, 32),
            Column::new(tool_header(shared), 12, 40),
            Column::new("scope", 5, 9),
            Column::new("left", 5, 10),
            Column::new("uses", 4, 24),
            Column::new("by", 6, 24),
            Column::new("from call", 8, 9).optional(),
        ];
        let page = table::Page {
            title: format!(
                " grants · {} active ",
                visible.iter().filter(|g| g.is_active(clock)).count()
            ),
            columns: &columns,
            rows,
            window,
            selected: self.list.selected_in(visible.len()),
        };
        table::draw(frame, area, theme, page);
    }
}
