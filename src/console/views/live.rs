//! The live view: every decision, newest first. It follows the newest row until the
//! operator scrolls; then it is frozen: the rows on screen and the selection stay put,
//! and the header counts what arrived meanwhile.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;

use super::{Ctx, ViewFilter, shared_upstream, title, tool_header, tool_label};
use crate::api::Outcome;
use crate::console::keymap::Action;
use crate::console::model::{Model, Row};
use crate::console::table::{self, Column, ListState};
use crate::console::text::{target_label, time_label};

#[derive(Debug, Clone)]
pub struct Live {
    /// Following the newest row; otherwise frozen at `frozen_at`.
    pub follow: bool,
    /// While paused: the newest seq the view shows. Newer rows wait, counted.
    frozen_at: Option<u64>,
    /// The selection, an index from the newest shown row.
    pub list: ListState,
    /// Rows that arrived while paused and that the filter lets through.
    pub new_while_paused: usize,
    /// While paused: the seq of the selected row, to notice it leaving the ring.
    pinned: Option<u64>,
    pub filter: ViewFilter,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            follow: true,
            frozen_at: None,
            list: ListState::default(),
            new_while_paused: 0,
            pinned: None,
            filter: ViewFilter::default(),
        }
    }
}

impl Live {
    /// The actions that apply here, most useful first.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = vec![Action::Up, Action::Down, Action::Top];
        actions.extend([
            Action::Detail,
            Action::Filter,
            Action::Approve,
            Action::Deny,
            Action::PageUp,
            Action::PageDown,
            Action::Bottom,
            Action::Follow,
            Action::CopyId,
            Action::CopyJson,
        ]);
        actions
    }

    /// Rows on screen, newest first: those the filter lets through, and while paused,
    /// none newer than the row at the top when it froze.
    pub fn rows<'a>(&'a self, model: &'a Model) -> impl Iterator<Item = &'a Row> + 'a {
        let frozen = if self.follow { None } else { self.frozen_at };
        model
            .rows()
            .skip_while(move |r| frozen.is_some_and(|f| r.seq > f))
            .filter(|r| self.filter.shows(*r))
    }

    pub fn selected<'a>(&self, model: &'a Model) -> Option<&'a Row> {
        let frozen = if self.follow { None } else { self.frozen_at };
        let index = if self.follow { 0 } else { self.list.selected };
        model
            .rows()
            .skip_while(move |r| frozen.is_some_and(|f| r.seq > f))
            .filter(|r| self.filter.shows(*r))
            .nth(index)
    }

    /// A new row arrived; while paused it is only counted.
    pub fn on_decision(&mut self, row: &Row) {
        if !self.follow && self.filter.shows(row) {
            self.new_while_paused += 1;
        }
    }

    pub fn resume(&mut self) {
        self.follow = true;
        self.frozen_at = None;
        self.list = ListState::default();
        self.new_while_paused = 0;
        self.pinned = None;
    }

    /// Stops following with the newest row selected and highlighted.
    pub fn pause_at_top(&mut self, model: &Model) {
        self.pause(model);
        self.list = ListState::default();
        self.pinned = self.selected(model).map(|r| r.seq);
    }

    /// The ring dropped the row of `seq`. When it was the selected one, the selection
    /// moves to the oldest row left, and the caller is told so; nothing else moves.
    pub fn on_evicted(&mut self, seq: u64, model: &Model) -> bool {
        if self.follow || self.pinned != Some(seq) {
            return false;
        }
        let len = self.rows(model).count();
        self.list.selected = len.saturating_sub(1);
        self.list.offset = self.list.offset.min(self.list.selected);
        self.pinned = self.selected(model).map(|r| r.seq);
        true
    }

    fn pause(&mut self, model: &Model) {
        if self.follow {
            self.follow = false;
            self.frozen_at = model.newest_seq();
            self.new_while_paused = 0;
        }
    }

    /// Moves the selection down the screen (`by > 0`, toward older rows) or up. Leaving
    /// the newest pauses.
    pub fn move_by(&mut self, by: i64, model: &Model, page: usize) {
        if by > 0 {
            self.pause(model);
        }
        if self.follow {
            return;
        }
        let len = self.rows(model).count();
        self.list.move_by(by, len, page);
        self.pinned = self.selected(model).map(|r| r.seq);
    }

    /// Handles a navigation action; false when it is not one.
    pub fn navigate(&mut self, action: Action, model: &Model, page: usize) -> bool {
        match action {
            Action::Up => self.move_by(-1, model, page),
            Action::Down => self.move_by(1, model, page),
            Action::PageUp => self.move_by(-(page as i64), model, page),
            Action::PageDown => self.move_by(page as i64, model, page),
            Action::Top | Action::Follow => self.resume(),
            Action::Bottom => self.move_by(i64::MAX / 2, model, page),
            _ => return false,
        }
        true
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let model = ctx.model;
        let theme = ctx.theme;
        let page = table::page(area.height);
        let selected = if self.follow { 0 } else { self.list.selected };
        // Only the rows on screen are built: a frame must not cost a walk over the ring.
        let len = self.rows(model).count();
        let state = ListState {
            selected,
            offset: if self.follow { 0 } else { self.list.offset },
        };
        let window = state.window(len, page);
        let window_rows: Vec<&Row> = self
            .rows(model)
            .skip(window.start)
            .take(window.len())
            .collect();
        let shared = shared_upstream(window_rows.iter().map(|r| r.call.upstream.as_str()));
        let stale = ctx.stale_since.is_some();
        let rows: Vec<(Vec<table::Text>, Style)> = window_rows
            .iter()
            .map(|r| {
                let c = &r.call;
                let (outcome, outcome_style) = outcome_cell(model, r, theme);
                (
                    vec![
                        (time_label(&r.ts, ctx.now), Style::new()),
                        (c.identity.label(), Style::new()),
                        (tool_label(&c.upstream, &c.tool, shared), Style::new()),
                        (c.risk.as_str().to_owned(), super::risk_style(c.risk, theme)),
                        (outcome, outcome_style),
                        (target_label(c.target.as_ref()), Style::new()),
                        (c.policy_ids.join(","), Style::new()),
                        (format!("{}µs", c.decision_us), Style::new()),
                    ],
                    if stale { theme.stale } else { Style::new() },
                )
            })
            .collect();
        let columns = [
            Column::new("time", 8, 11),
            Column::new("identity", 10, 32),
            Column::new(tool_header(shared), 12, 48),
            Column::new("risk", 5, 12),
            Column::new("outcome", 7, 20),
            Column::new("target", 14, 32),
            Column::new("policy", 6, 28).optional(),
            Column::new("took", 5, 8).optional(),
        ];
        let name = if stale {
            "decisions (stale)"
        } else {
            "decisions"
        };
        let title = match self.filter.active() {
            Some(f) => title(name, Some(f), len, model.row_count()),
            None => title(name, None, 0, 0),
        };
        let page = table::Page {
            title,
            columns: &columns,
            rows,
            window,
            selected: (!self.follow).then_some(selected),
        };
        table::draw(frame, area, theme, page);
    }
}

/// `allow`, `deny`, `hold`, or a hold with its fate: `hold→approved, ran`.
fn outcome_cell(model: &Model, row: &Row, theme: &crate::console::theme::Theme) -> (String, Style) {
    let fate = model.fates.get(row.call_id());
    let text = match (row.call.outcome, fate) {
        (Outcome::Hold, Some(f)) => format!("hold→{}", f.word()),
        (outcome, _) => outcome.as_str().to_owned(),
    };
    let style = match (row.call.outcome, fate) {
        (_, Some(f)) if f.lets_through() => theme.allow,
        (Outcome::Allow, _) => theme.allow,
        (Outcome::Hold, None) => theme.hold,
        _ => theme.deny,
    };
    (text, style)
}
