//! The help popup: every action that applies where it was opened, with all its keys.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::console::keymap::{Action, Keymap};

pub fn draw(frame: &mut Frame, area: Rect, keymap: &Keymap, read_only: bool, actions: &[Action]) {
    let entries = keymap.entries(read_only);
    let lines: Vec<Line> = actions
        .iter()
        .filter_map(|a| entries.iter().find(|(_, e)| e == a))
        .map(|(keys, action)| {
            Line::from(crate::console::text::fit(
                &format!(" {:<14} {}", keys.join(" "), action.describe()),
                70,
            ))
        })
        .collect();
    let rect = super::centered(area, 72, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        rect,
    );
}
