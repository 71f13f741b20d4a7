//! Keys and what they do. Help and the hint bar are generated from this table, so
//! they cannot drift from the keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Command,
    Help,
    Back,
    Up,
    Down,
    Follow,
    Detail,
    Approve,
    Deny,
    /// In the tools view: set the selected tool's class.
    SetRead,
    SetWrite,
    SetDestructive,
    SetUnclassified,
}

impl Action {
    /// Actions that change the gateway; read-only mode hides and refuses them.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Action::Approve
                | Action::Deny
                | Action::SetRead
                | Action::SetWrite
                | Action::SetDestructive
                | Action::SetUnclassified
        )
    }

    /// The class a risk action sets.
    pub fn risk(self) -> Option<crate::api::Risk> {
        use crate::api::Risk;
        match self {
            Action::SetRead => Some(Risk::Read),
            Action::SetWrite => Some(Risk::Write),
            Action::SetDestructive => Some(Risk::Destructive),
            Action::SetUnclassified => Some(Risk::Unclassified),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Command => "command (:live :held :tools :q)",
            Action::Help => "help",
            Action::Back => "back",
            Action::Up => "older / up",
            Action::Down => "newer / down",
            Action::Follow => "follow newest",
            Action::Detail => "details",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::SetRead => "class: read",
            Action::SetWrite => "class: write",
            Action::SetDestructive => "class: destructive",
            Action::SetUnclassified => "class: unclassified",
        }
    }
}

/// One binding: a key shown as `label`, and its action.
#[derive(Debug, Clone)]
pub struct Binding {
    pub label: &'static str,
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct Keymap {
    pub bindings: Vec<Binding>,
}

impl Default for Keymap {
    fn default() -> Self {
        let b = |label, code, action| Binding {
            label,
            code,
            modifiers: KeyModifiers::NONE,
            action,
        };
        Self {
            bindings: vec![
                b("q", KeyCode::Char('q'), Action::Quit),
                Binding {
                    label: "ctrl-c",
                    code: KeyCode::Char('c'),
                    modifiers: KeyModifiers::CONTROL,
                    action: Action::Quit,
                },
                b(":", KeyCode::Char(':'), Action::Command),
                b("?", KeyCode::Char('?'), Action::Help),
                b("esc", KeyCode::Esc, Action::Back),
                b("k", KeyCode::Char('k'), Action::Up),
                b("up", KeyCode::Up, Action::Up),
                b("j", KeyCode::Char('j'), Action::Down),
                b("down", KeyCode::Down, Action::Down),
                b("G", KeyCode::Char('G'), Action::Follow),
                b("end", KeyCode::End, Action::Follow),
                b("enter", KeyCode::Enter, Action::Detail),
                b("a", KeyCode::Char('a'), Action::Approve),
                b("d", KeyCode::Char('d'), Action::Deny),
                b("r", KeyCode::Char('r'), Action::SetRead),
                b("w", KeyCode::Char('w'), Action::SetWrite),
                b("x", KeyCode::Char('x'), Action::SetDestructive),
                b("u", KeyCode::Char('u'), Action::SetUnclassified),
            ],
        }
    }
}

impl Keymap {
    pub fn action(&self, key: &KeyEvent) -> Option<Action> {
        let modifiers = key.modifiers - KeyModifiers::SHIFT;
        self.bindings
            .iter()
            .find(|b| b.code == key.code && b.modifiers == modifiers)
            .map(|b| b.action)
    }

    /// Each action with every key bound to it, in table order; mutating actions are
    /// left out in read-only mode.
    pub fn entries(&self, read_only: bool) -> Vec<(String, Action)> {
        let mut out: Vec<(String, Action)> = Vec::new();
        for b in &self.bindings {
            if read_only && b.action.mutates() {
                continue;
            }
            match out.iter_mut().find(|(_, a)| *a == b.action) {
                Some((keys, _)) => {
                    keys.push('/');
                    keys.push_str(b.label);
                }
                None => out.push((b.label.to_owned(), b.action)),
            }
        }
        out
    }
}
