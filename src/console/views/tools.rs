//! The tools view: the catalog and each tool's risk class, which an admin edits here.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;

use super::{Ctx, ViewFilter, shared_upstream, title, tool_header, tool_label};
use crate::api::{Risk, ToolEntry};
use crate::console::keymap::Action;
use crate::console::model::Model;
use crate::console::table::{self, Column, ListState};
use crate::console::text::time_label;

/// A class change this console made, to undo.
#[derive(Debug, Clone, PartialEq)]
pub struct LastEdit {
    pub upstream: String,
    pub tool: String,
    pub from: Risk,
    pub to: Risk,
    /// The version the change made.
    pub version: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Tools {
    pub list: ListState,
    /// The selected tool, `(upstream, name)`, which the selection follows.
    anchor: Option<(String, String)>,
    pub filter: ViewFilter,
    pub last_edit: Option<LastEdit>,
    /// The tool an undo is being saved for, so that it is not itself recorded to undo.
    pub undoing: Option<(String, String)>,
}

impl Tools {
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::EditClass,
            Action::SetRead,
            Action::SetWrite,
            Action::SetDestructive,
            Action::SetUnclassified,
            Action::Undo,
            Action::Up,
            Action::Down,
            Action::Detail,
            Action::Filter,
            Action::PageUp,
            Action::PageDown,
            Action::Top,
            Action::Bottom,
            Action::CopyId,
            Action::CopyJson,
            Action::Back,
        ]
    }

    /// Indexes into the catalog of the rows the filter lets through.
    pub fn visible(&self, model: &Model) -> Vec<usize> {
        (0..model.tools.len())
            .filter(|&i| self.filter.shows(&model.tools[i]))
            .collect()
    }

    pub fn selected_index(&self, model: &Model) -> Option<usize> {
        self.visible(model).get(self.list.selected).copied()
    }

    pub fn selected<'a>(&self, model: &'a Model) -> Option<&'a ToolEntry> {
        self.selected_index(model).map(|i| &model.tools[i])
    }

    pub fn reanchor(&mut self, model: &Model, page: usize) {
        let keys: Vec<(String, String)> = self
            .visible(model)
            .iter()
            .map(|&i| {
                (
                    model.tools[i].tool.upstream.clone(),
                    model.tools[i].tool.name.clone(),
                )
            })
            .collect();
        self.list.reanchor(&mut self.anchor, &keys, page);
    }

    pub fn navigate(&mut self, action: Action, model: &Model, page: usize) -> bool {
        let len = self.visible(model).len();
        let Some(to) = self.list.target(action, len, page) else {
            return false;
        };
        self.list.select(to, len, page);
        self.anchor = self
            .selected(model)
            .map(|t| (t.tool.upstream.clone(), t.tool.name.clone()));
        true
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let model = ctx.model;
        let theme = ctx.theme;
        let visible = self.visible(model);
        let page = table::page(area.height);
        let window = self.list.window(visible.len(), page);
        let shared = shared_upstream(model.tools.iter().map(|t| t.tool.upstream.as_str()));
        let rows: Vec<(Vec<table::Text>, Style)> = visible[window.clone()]
            .iter()
            .map(|&i| {
                let entry = &model.tools[i];
                let t = &entry.tool;
                let annotations = t
                    .annotations
                    .as_ref()
                    .and_then(|a| a.as_object())
                    .map(|a| {
                        a.iter()
                            .filter(|(_, v)| v.as_bool() == Some(true))
                            .map(|(k, _)| k.trim_end_matches("Hint"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "none".into());
                let changed = t.source == "reset";
                let note = t
                    .note
                    .as_deref()
                    .map(|n| format!(" “{n}”"))
                    .unwrap_or_default();
                (
                    vec![
                        (tool_label(&t.upstream, &t.name, shared), Style::new()),
                        (t.risk.as_str().to_owned(), super::risk_style(t.risk, theme)),
                        (t.source.clone(), Style::new()),
                        (t.suggested_risk.as_str().to_owned(), Style::new()),
                        (
                            if changed { "CHANGED" } else { "" }.to_owned(),
                            theme.urgent,
                        ),
                        (annotations, Style::new()),
                        (
                            format!(
                                "{} {} v{}{note}",
                                t.updated_by.as_deref().unwrap_or("—"),
                                time_label(&t.updated_at, ctx.now),
                                t.version
                            ),
                            Style::new(),
                        ),
                        (
                            format!(
                                "{}/{}/{}",
                                entry.calls.allow, entry.calls.hold, entry.calls.deny
                            ),
                            Style::new(),
                        ),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let columns = [
            Column::new(tool_header(shared), 14, 48),
            Column::new("risk", 5, 12),
            Column::new("set by", 6, 11),
            Column::new("suggested", 5, 12),
            Column::new("", 0, 7),
            Column::new("annotations", 6, 24).optional(),
            Column::new("last change", 10, 40).optional(),
            Column::new("a/h/d", 5, 12),
        ];
        let title = title(
            "tools",
            self.filter.active(),
            visible.len(),
            model.tools.len(),
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
