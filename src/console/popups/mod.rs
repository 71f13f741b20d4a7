//! One module per popup: each owns its state, says which actions apply, handles its
//! keys and draws itself over the view.

pub mod confirm;
pub mod help;
pub mod picker;
pub mod prompt;

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
