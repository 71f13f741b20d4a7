//! The held view: the approval queue. The selection is a call, not a position: holds
//! that arrive, resolve or re-sort never move it onto another call.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;

use super::{Ctx, ViewFilter, shared_upstream, title, tool_header, tool_label};
use crate::api::{HoldView, Resolution};
use crate::console::keymap::Action;
use crate::console::model::Model;
use crate::console::table::{self, Column, ListState};
use crate::console::text::{countdown, short, target_label};

/// Below this many seconds left, a hold's countdown turns red.
const NEAR_EXPIRY_SECS: i64 = 60;

/// The held view's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HoldSort {
    /// Soonest expiry first.
    #[default]
    Expiry,
    /// Longest waiting first.
    Age,
    /// Most dangerous first.
    Risk,
    Identity,
}

impl HoldSort {
    pub fn next(self) -> HoldSort {
        match self {
            HoldSort::Expiry => HoldSort::Age,
            HoldSort::Age => HoldSort::Risk,
            HoldSort::Risk => HoldSort::Identity,
            HoldSort::Identity => HoldSort::Expiry,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HoldSort::Expiry => "expiry",
            HoldSort::Age => "age",
            HoldSort::Risk => "risk",
            HoldSort::Identity => "identity",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Held {
    pub list: ListState,
    /// The selected call, which the selection follows when the list changes.
    anchor: Option<String>,
    pub sort: HoldSort,
    /// Held calls marked for one bulk decision, by call id.
    pub marked: BTreeSet<String>,
    pub filter: ViewFilter,
}

fn risk_rank(h: &HoldView) -> u8 {
    use crate::api::Risk;
    match h.call.risk {
        Risk::Destructive => 0,
        Risk::Unclassified => 1,
        Risk::Write => 2,
        Risk::Read => 3,
    }
}

impl Held {
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::Approve,
            Action::Deny,
            Action::Extend,
            Action::Mark,
            Action::Up,
            Action::Down,
            Action::Detail,
            Action::Filter,
            Action::Sort,
            Action::Soonest,
            Action::PageUp,
            Action::PageDown,
            Action::Top,
            Action::Bottom,
            Action::CopyId,
            Action::CopyJson,
            Action::Back,
        ]
    }

    /// Holds the filter lets through, in the chosen order.
    pub fn visible<'a>(&self, model: &'a Model) -> Vec<&'a HoldView> {
        let mut holds: Vec<&HoldView> = model
            .holds
            .iter()
            // The queue is the holds this operator may resolve (`approves`).
            .filter(|h| model.may_resolve(h) && self.filter.shows(*h))
            .collect();
        // Ties keep expiry order (the model's), so the order never flickers.
        match self.sort {
            HoldSort::Expiry => {}
            HoldSort::Age => holds.sort_by(|a, b| a.call_id.cmp(&b.call_id)),
            HoldSort::Risk => holds.sort_by_key(|h| risk_rank(h)),
            HoldSort::Identity => holds.sort_by_cached_key(|h| h.call.identity.label()),
        }
        holds
    }

    pub fn selected<'a>(&self, model: &'a Model) -> Option<&'a HoldView> {
        self.visible(model).get(self.list.selected).copied()
    }

    /// Puts the selection back on its call after the list changed, or keeps its place
    /// when that call is gone.
    /// Returns the call that was selected when it left the list (the selection then
    /// moved to another call).
    pub fn reanchor(&mut self, model: &Model, page: usize) -> Option<String> {
        let keys: Vec<String> = self
            .visible(model)
            .iter()
            .map(|h| h.call_id.clone())
            .collect();
        self.list.reanchor(&mut self.anchor, &keys, page)
    }

    pub fn select(&mut self, index: usize, model: &Model, page: usize) {
        let visible = self.visible(model);
        self.list.select(index, visible.len(), page);
        self.anchor = visible.get(self.list.selected).map(|h| h.call_id.clone());
    }

    pub fn navigate(&mut self, action: Action, model: &Model, page: usize) -> bool {
        let len = self.visible(model).len();
        let to = match action {
            Action::Soonest => {
                let visible = self.visible(model);
                visible
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.resolution.is_none())
                    .min_by(|a, b| a.1.expires_at.cmp(&b.1.expires_at))
                    .map_or(self.list.selected, |(i, _)| i)
            }
            Action::Sort => {
                self.sort = self.sort.next();
                self.reanchor(model, page);
                return true;
            }
            other => match self.list.target(other, len, page) {
                Some(to) => to,
                None => return false,
            },
        };
        self.select(to, model, page);
        true
    }

    /// Marks or unmarks the selected hold, and moves down.
    pub fn toggle_mark(&mut self, model: &Model, page: usize) -> Result<(), &'static str> {
        match self.selected(model) {
            Some(h) if h.resolution.is_none() => {
                let id = h.call_id.clone();
                if !self.marked.remove(&id) {
                    self.marked.insert(id);
                }
                self.navigate(Action::Down, model, page);
                Ok(())
            }
            Some(_) => Err("that hold is already resolved"),
            None => Err("no held call selected"),
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let model = ctx.model;
        let theme = ctx.theme;
        let visible = self.visible(model);
        let page = table::page(area.height);
        let window = self.list.window(visible.len(), page);
        let shared = shared_upstream(model.holds.iter().map(|h| h.call.upstream.as_str()));
        let clock = ctx.clock();
        let stale = ctx.stale_since.is_some();
        let rows: Vec<(Vec<table::Text>, Style)> = visible[window.clone()]
            .iter()
            .map(|h| {
                let left = chrono::DateTime::parse_from_rfc3339(&h.expires_at)
                    .map(|e| (e.with_timezone(&chrono::Utc) - clock).num_seconds().max(0))
                    .unwrap_or(0);
                let fate = model.fates.get(&h.call_id);
                let (state, state_style) = match (h.resolution, fate) {
                    (Some(_), Some(f)) => (
                        f.label(),
                        if f.lets_through() {
                            theme.allow
                        } else {
                            theme.deny
                        },
                    ),
                    (Some(r), None) => (
                        r.as_str().to_owned(),
                        if r == Resolution::Approved {
                            theme.allow
                        } else {
                            theme.deny
                        },
                    ),
                    // A hold that needs several approvals says how far it is.
                    (None, _) if h.call.approvals_required > 1 => (
                        // The count first: a narrow column cuts the end.
                        format!(
                            "{}/{} {}",
                            h.approvals.len(),
                            h.call.approvals_required,
                            h.phase.as_str()
                        ),
                        theme.hold,
                    ),
                    (None, _) => (h.phase.as_str().to_owned(), theme.hold),
                };
                let countdown = match h.resolution {
                    Some(_) => (String::new(), Style::new()),
                    None => (
                        countdown(left),
                        if left < NEAR_EXPIRY_SECS {
                            theme.urgent
                        } else {
                            Style::new()
                        },
                    ),
                };
                let mark = if self.marked.contains(&h.call_id) {
                    "*"
                } else {
                    ""
                };
                (
                    vec![
                        (mark.to_owned(), theme.urgent),
                        countdown,
                        (state, state_style),
                        (h.call.identity.label(), Style::new()),
                        (
                            tool_label(&h.call.upstream, &h.call.tool, shared),
                            Style::new(),
                        ),
                        (
                            h.call.risk.as_str().to_owned(),
                            super::risk_style(h.call.risk, theme),
                        ),
                        (target_label(h.call.target.as_ref()), Style::new()),
                        (short(&h.call_id).to_owned(), Style::new()),
                    ],
                    if stale { theme.stale } else { Style::new() },
                )
            })
            .collect();
        // A resolved row says who resolved it: the state column then keeps room for that.
        let resolved_shown = visible[window.clone()]
            .iter()
            .any(|h| h.resolution.is_some());
        let columns = [
            Column::new("", 1, 1),
            Column::new("left", 5, 10),
            Column::new("state", if resolved_shown { 20 } else { 7 }, 22),
            Column::new("identity", 8, 32),
            Column::new(tool_header(shared), 10, 48),
            Column::new("risk", 5, 12),
            // The target and the short id tell similar calls apart: they keep their room.
            Column::new("target", 14, 32),
            Column::new("call", 8, 8),
        ];
        let mut name = String::from("held calls");
        if self.sort != HoldSort::Expiry {
            name.push_str(&format!(" · by {}", self.sort.name()));
        }
        if !self.marked.is_empty() {
            name.push_str(&format!(" · {} marked", self.marked.len()));
        }
        if stale {
            name.push_str(" (stale)");
        }
        let title = title(
            &name,
            self.filter.active(),
            visible.len(),
            model.holds.len(),
        );
        let page = table::Page {
            title,
            columns: &columns,
            rows,
            window,
            selected: self.list.selected_in(visible.len()),
        };
        table::draw(frame, area, theme, page);
    }
}
