//! One module per popup: each owns its state, says which actions apply, handles its
//! keys and draws itself over the view.

pub mod confirm;
pub mod draft;
pub mod help;
pub mod picker;
pub mod prompt;
pub mod reclassify;
pub mod revoke;

use ratatui::layout::Rect;

/// A rectangle of `width` x `height` in the middle of `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// Feeds a key to a line editor (Ctrl-U, Ctrl-W, Ctrl-A/E, Ctrl-H, Home/End, arrows…).
pub fn edit(input: &mut tui_input::Input, key: crossterm::event::KeyEvent) {
    if let Some(request) =
        tui_input::backend::crossterm::to_input_request(&crossterm::event::Event::Key(key))
    {
        input.handle(request);
    }
}

/// The text of a line editor with a bar at its cursor.
fn with_cursor(input: &tui_input::Input) -> String {
    let value = input.value();
    let at = value
        .char_indices()
        .nth(input.cursor())
        .map_or(value.len(), |(i, _)| i);
    format!("{}▏{}", &value[..at], &value[at..])
}

/// As `with_cursor`, in `width` columns: the text scrolls so the cursor stays in view,
/// with `…` where text is out of view.
pub fn with_cursor_in(input: &tui_input::Input, width: usize) -> String {
    let whole: Vec<char> = with_cursor(input).chars().collect();
    let n = whole.len();
    if n <= width || width < 3 {
        return whole.into_iter().collect();
    }
    // A window of `width` characters around the bar (at index `cursor`), its cut ends
    // shown as `…` and never over the bar.
    let cursor = input.cursor();
    let start = (cursor + 2).saturating_sub(width).min(n - width);
    let mut window: Vec<char> = whole[start..start + width].to_vec();
    if start > 0 {
        window[0] = '…';
    }
    if start + width < n {
        window[width - 1] = '…';
    }
    window.into_iter().collect()
}

/// Every key that cancels a dialog, as `esc/n/enter`.
pub fn cancel_keys(keymap: &crate::console::keymap::Keymap) -> String {
    keymap
        .entries(false)
        .into_iter()
        .find(|(_, a)| *a == crate::console::keymap::Action::Cancel)
        .map(|(keys, _)| keys.join("/"))
        .unwrap_or_default()
}

/// What a key in a yes/no dialog asks for.
pub enum Answer {
    Stay,
    Cancel,
    Confirm,
}

/// A yes/no dialog's keys, with one line of text the operator may type (a reason, a
/// note). Its default is Cancel: only the confirm key acts.
#[derive(Debug, Clone)]
pub struct Ask {
    pub text: tui_input::Input,
    /// Typing the text: keys are text then, Enter ends it and Esc closes the dialog.
    pub editing: bool,
}

impl PartialEq for Ask {
    fn eq(&self, other: &Self) -> bool {
        self.text.value() == other.text.value() && self.editing == other.editing
    }
}

impl Ask {
    pub fn new(editing: bool) -> Ask {
        Ask {
            text: tui_input::Input::default(),
            editing,
        }
    }

    /// What applies while the dialog is open; none while the text is typed.
    pub fn actions(&self) -> Vec<crate::console::keymap::Action> {
        use crate::console::keymap::Action;
        if self.editing {
            Vec::new()
        } else {
            vec![Action::Confirm, Action::Reason, Action::Cancel]
        }
    }

    /// The text typed, if any.
    pub fn value(&self) -> Option<String> {
        Some(self.text.value().trim().to_owned()).filter(|t| !t.is_empty())
    }

    /// The text as the dialog shows it in `width` columns, with a cursor (kept in
    /// view) while it is typed.
    pub fn shown(&self, width: usize) -> String {
        if self.editing {
            with_cursor_in(&self.text, width)
        } else {
            crate::console::text::fit(self.text.value(), width)
        }
    }

    pub fn on_key(
        &mut self,
        key: crossterm::event::KeyEvent,
        keymap: &crate::console::keymap::Keymap,
    ) -> Answer {
        use crate::console::keymap::Action;
        use crossterm::event::KeyCode;
        if self.editing {
            match key.code {
                KeyCode::Enter => self.editing = false,
                KeyCode::Esc => return Answer::Cancel,
                _ => edit(&mut self.text, key),
            }
            return Answer::Stay;
        }
        match keymap.action_among(&key, &self.actions()) {
            Some(Action::Confirm) => Answer::Confirm,
            Some(Action::Reason) => {
                self.editing = true;
                Answer::Stay
            }
            Some(Action::Cancel) => Answer::Cancel,
            _ => Answer::Stay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_field_scrolls_to_keep_its_cursor_in_view() {
        let input = tui_input::Input::new(
            "this pipeline run on main is not approved during the incident".into(),
        );
        let shown = with_cursor_in(&input, 20);
        assert_eq!(shown.chars().count(), 20);
        assert!(
            shown.starts_with('…') && shown.ends_with("incident▏"),
            "{shown}"
        );
        let home = input.clone().with_cursor(0);
        let shown = with_cursor_in(&home, 20);
        assert!(
            shown.starts_with("▏this") && shown.ends_with('…'),
            "{shown}"
        );
    }
}
