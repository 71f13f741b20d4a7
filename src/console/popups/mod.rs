//! One module per popup: each owns its state, says which actions apply, handles its
//! keys and draws itself over the view.

pub mod confirm;
pub mod help;
pub mod picker;
pub mod prompt;
pub mod reclassify;

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
pub fn with_cursor(input: &tui_input::Input) -> String {
    let value = input.value();
    let at = value
        .char_indices()
        .nth(input.cursor())
        .map_or(value.len(), |(i, _)| i);
    format!("{}▏{}", &value[..at], &value[at..])
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

    /// The text as the dialog shows it, with a cursor while it is typed.
    pub fn shown(&self) -> String {
        if self.editing {
            with_cursor(&self.text)
        } else {
            self.text.value().to_owned()
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
