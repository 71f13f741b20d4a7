//! The class picker: the selected tool's class, chosen from a list. It edits the tool it
//! was opened on, whatever the list does meanwhile.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::api::{Risk, ToolEntry};
use crate::console::keymap::{Action, Keymap};
use crate::console::theme::Theme;

/// The classes in the order the picker lists them.
pub const CLASSES: [Risk; 4] = [
    Risk::Read,
    Risk::Write,
    Risk::Destructive,
    Risk::Unclassified,
];

#[derive(Debug, Clone, PartialEq)]
pub struct Picker {
    pub index: usize,
    pub upstream: String,
    pub tool: String,
}

/// What a key in the picker asks for.
pub enum Picked {
    Stay,
    Cancel,
    Set(Risk),
}

impl Picker {
    pub fn open(entry: &ToolEntry) -> Picker {
        Picker {
            index: CLASSES
                .iter()
                .position(|r| *r == entry.tool.risk)
                .unwrap_or(0),
            upstream: entry.tool.upstream.clone(),
            tool: entry.tool.name.clone(),
        }
    }

    pub fn actions() -> Vec<Action> {
        vec![
            Action::Choose,
            Action::Cancel,
            Action::Up,
            Action::Down,
            Action::SetRead,
            Action::SetWrite,
            Action::SetDestructive,
            Action::SetUnclassified,
        ]
    }

    pub fn on_action(&mut self, action: Action) -> Picked {
        if let Some(risk) = action.risk() {
            return Picked::Set(risk);
        }
        match action {
            Action::Up => self.index = self.index.saturating_sub(1),
            Action::Down => self.index = (self.index + 1).min(CLASSES.len() - 1),
            Action::Choose => return Picked::Set(CLASSES[self.index]),
            Action::Cancel => return Picked::Cancel,
            _ => {}
        }
        Picked::Stay
    }

    pub fn draw(
        &self,
        frame: &mut Frame,
        area: Rect,
        entry: Option<&ToolEntry>,
        keymap: &Keymap,
        theme: &Theme,
    ) {
        let (current, suggested) = entry.map_or((None, None), |e| {
            (Some(e.tool.risk), Some(e.tool.suggested_risk))
        });
        let mut lines = vec![
            Line::from(format!("{}/{}", self.upstream, self.tool)),
            Line::from(""),
        ];
        for (n, class) in CLASSES.iter().enumerate() {
            let mut notes = Vec::new();
            if Some(*class) == current {
                notes.push("current");
            }
            if Some(*class) == suggested {
                notes.push("suggested");
            }
            let text = format!(
                "{} {:<3} {:<13}{}",
                if n == self.index { "▶" } else { " " },
                keymap.key_for(Action::for_risk(*class)).unwrap_or(""),
                class.as_str(),
                notes.join(", ")
            );
            let mut line = Line::from(text);
            if n == self.index {
                line = line.style(theme.selection);
            }
            lines.push(line);
        }
        lines.push(Line::from(""));
        lines.push(Line::from(Span::styled(
            format!(
                "{} set · {} cancel",
                keymap.key_for(Action::Choose).unwrap_or("enter"),
                keymap.key_for(Action::Cancel).unwrap_or("esc")
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )));
        let rect = super::centered(area, 44, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(" class ")
                    .border_style(theme.border),
            ),
            rect,
        );
    }
}
