//! The policy view (`:policy`): the version in force, the shadow and how it compares,
//! the history of versions, and the text of the selected one.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph};

use super::Ctx;
use crate::api::{PolicyText, PolicyVersion, ShadowView};
use crate::console::keymap::Action;
use crate::console::table::{self, Column, ListState};
use crate::console::text::{fit, fit_words, time_label};

/// What the gateway said about its policy, as last fetched.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub versions: Vec<PolicyVersion>,
    pub shadow: Option<ShadowView>,
    /// The text shown: the selected version's, once fetched.
    pub text: Option<PolicyText>,
    pub list: ListState,
    /// How far the text is scrolled.
    pub scroll: u16,
}

impl PolicyState {
    pub fn actions(&self) -> Vec<Action> {
        vec![
            Action::EditPolicy,
            Action::Up,
            Action::Down,
            Action::Detail,
            Action::PageUp,
            Action::PageDown,
            Action::Back,
        ]
    }

    /// The version under the selection.
    pub fn selected(&self) -> Option<&PolicyVersion> {
        self.versions.get(self.list.selected)
    }

    pub fn navigate(&mut self, action: Action, page: usize) -> bool {
        match action {
            Action::PageDown => self.scroll = self.scroll.saturating_add(page as u16 / 2),
            Action::PageUp => self.scroll = self.scroll.saturating_sub(page as u16 / 2),
            other => match self.list.target(other, self.versions.len(), page) {
                Some(to) => self.list.select(to, self.versions.len(), page),
                None => return false,
            },
        }
        true
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, ctx: &Ctx) {
        let theme = ctx.theme;
        let width = area.width as usize;
        let [summary, history, text] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(((self.versions.len() as u16) + 2).clamp(3, 8)),
            Constraint::Min(3),
        ])
        .areas(area);
        let in_force = match self.versions.first() {
            Some(v) => format!("in force   {}", label(v)),
            None => "in force   (loading…)".to_owned(),
        };
        let shadow = match &self.shadow {
            Some(s) => {
                let compared = s.compared_line();
                format!(
                    "shadow     {} by {} since {}: {compared}",
                    s.sha256.get(..12).unwrap_or(&s.sha256),
                    s.by,
                    time_label(&s.since, ctx.now)
                )
            }
            None => "shadow     none (toolgate policy shadow FILE installs one)".to_owned(),
        };
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(fit(&in_force, width)),
                Line::from(fit_words(&shadow, width)),
            ])
            .block(
                Block::new()
                    .borders(Borders::TOP)
                    .border_style(theme.border)
                    .title(" policy "),
            ),
            summary,
        );
        let page = table::page(history.height);
        let window = self.list.window(self.versions.len(), page);
        let rows: Vec<(Vec<table::Text>, Style)> = self.versions[window.clone()]
            .iter()
            .map(|v| {
                (
                    vec![
                        (format!("v{}", v.version), Style::new()),
                        (time_label(&v.at, ctx.now), Style::new()),
                        (v.by.clone(), Style::new()),
                        (
                            v.sha256.get(..12).unwrap_or(&v.sha256).to_owned(),
                            Style::new(),
                        ),
                        (v.note.clone().unwrap_or_default(), Style::new()),
                    ],
                    Style::new(),
                )
            })
            .collect();
        let columns = [
            Column::new("version", 7, 8),
            Column::new("stored", 8, 11),
            Column::new("by", 6, 24),
            Column::new("sha256", 12, 12),
            Column::new("note", 4, 80),
        ];
        table::draw(
            frame,
            history,
            theme,
            table::Page {
                title: format!(
                    " versions ({}) · enter shows the text ",
                    self.versions.len()
                ),
                columns: &columns,
                rows,
                window,
                selected: self.list.selected_in(self.versions.len()),
            },
        );
        let (title, body) = match &self.text {
            Some(t) => (
                format!(" v{} text (pgup/pgdn scroll) ", t.stored.version),
                t.text.as_str(),
            ),
            None => (" text ".to_owned(), "(loading…)"),
        };
        frame.render_widget(
            Paragraph::new(body).scroll((self.scroll, 0)).block(
                Block::new()
                    .borders(Borders::TOP)
                    .border_style(theme.border)
                    .title(title),
            ),
            text,
        );
    }
}

/// `v5 (11-26 10:04 by ada: deny ci reads)`.
fn label(v: &PolicyVersion) -> String {
    let mut out = format!(
        "v{} ({}, {}",
        v.version,
        v.sha256.get(..12).unwrap_or(&v.sha256),
        v.by
    );
    if let Some(note) = &v.note {
        out.push_str(&format!(": {note}"));
    }
    out.push(')');
    out
}
