//! Keys and what they do. Help and the hint bar are generated from this table, so
//! they cannot drift from the keys. A user's `[keys]` replace the defaults per action.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Quit,
    Command,
    Help,
    Back,
    Up,
    Down,
    PageUp,
    PageDown,
    /// The first row: in the live view, the newest, following again.
    Top,
    /// The last row.
    Bottom,
    Follow,
    Detail,
    Filter,
    CopyId,
    CopyJson,
    Approve,
    Deny,
    /// In the held view: mark a hold for one bulk decision.
    Mark,
    /// In the held view: give the selected hold five more minutes before it expires.
    Extend,
    /// In the held view: the next sort order (expiry, age, risk, identity).
    Sort,
    /// In the held view: select the hold that expires soonest.
    Soonest,
    /// In the tools view: pick the selected tool's class from a list.
    EditClass,
    /// In the tools view: set the selected tool's class.
    SetRead,
    SetWrite,
    SetDestructive,
    SetUnclassified,
    /// In the tools view: put back the class this console changed last.
    Undo,
    /// In the policy view: edit the policy text in `$VISUAL`/`$EDITOR`, then see what it
    /// would have done before pushing it.
    EditPolicy,
    /// In a dialog: do it.
    Confirm,
    /// In the approve/deny dialog: type a reason.
    Reason,
    /// In the class picker: set the class under the cursor. (Before `Cancel`: Enter
    /// chooses in the picker and cancels in the approve/deny dialog.)
    Choose,
    /// In a dialog: close it and do nothing.
    Cancel,
    /// In the policy draft: install it as the shadow instead of enforcing it.
    Shadow,
    /// In the policy draft: open the editor on it again.
    EditAgain,
    /// In the approve dialog: the next grant to make with the approval (none, the
    /// identical call or the tool, for 15 minutes or an hour).
    Grant,
    /// In the grants view: revoke the selected grant.
    Revoke,
}

/// Where an action's keys are read: the views, or an open dialog. A key may mean one
/// thing in a view and another in a dialog, never two things in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    View,
    Dialog,
}

impl Action {
    pub const ALL: [Action; 36] = [
        Action::Quit,
        Action::Command,
        Action::Help,
        Action::Back,
        Action::Up,
        Action::Down,
        Action::PageUp,
        Action::PageDown,
        Action::Top,
        Action::Bottom,
        Action::Follow,
        Action::Detail,
        Action::Filter,
        Action::CopyId,
        Action::CopyJson,
        Action::Approve,
        Action::Deny,
        Action::Mark,
        Action::Extend,
        Action::Sort,
        Action::Soonest,
        Action::EditClass,
        Action::SetRead,
        Action::SetWrite,
        Action::SetDestructive,
        Action::SetUnclassified,
        Action::Undo,
        Action::EditPolicy,
        Action::Confirm,
        Action::Reason,
        Action::Choose,
        Action::Cancel,
        Action::Shadow,
        Action::EditAgain,
        Action::Grant,
        Action::Revoke,
    ];

    /// Actions that change the gateway; read-only mode hides and refuses them.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Action::Approve
                | Action::Deny
                | Action::Mark
                | Action::Extend
                | Action::EditClass
                | Action::SetRead
                | Action::SetWrite
                | Action::SetDestructive
                | Action::SetUnclassified
                | Action::Undo
                | Action::EditPolicy
                | Action::Shadow
                | Action::Grant
                | Action::Revoke
        )
    }

    pub fn scope(self) -> Scope {
        match self {
            Action::Confirm
            | Action::Reason
            | Action::Cancel
            | Action::Choose
            | Action::Shadow
            | Action::EditAgain
            | Action::Grant => Scope::Dialog,
            _ => Scope::View,
        }
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

    /// The action that sets `risk`.
    pub fn for_risk(risk: crate::api::Risk) -> Action {
        use crate::api::Risk;
        match risk {
            Risk::Read => Action::SetRead,
            Risk::Write => Action::SetWrite,
            Risk::Destructive => Action::SetDestructive,
            Risk::Unclassified => Action::SetUnclassified,
        }
    }

    /// The name used in the `[keys]` table of config.toml.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Command => "command",
            Action::Help => "help",
            Action::Back => "back",
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::Follow => "follow",
            Action::Detail => "detail",
            Action::Filter => "filter",
            Action::CopyId => "copy_id",
            Action::CopyJson => "copy_json",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Mark => "mark",
            Action::Extend => "extend",
            Action::Sort => "sort",
            Action::Soonest => "soonest",
            Action::EditClass => "edit_class",
            Action::SetRead => "set_read",
            Action::SetWrite => "set_write",
            Action::SetDestructive => "set_destructive",
            Action::SetUnclassified => "set_unclassified",
            Action::Undo => "undo",
            Action::EditPolicy => "edit_policy",
            Action::Confirm => "confirm",
            Action::Reason => "reason",
            Action::Cancel => "cancel",
            Action::Choose => "choose",
            Action::Shadow => "shadow",
            Action::EditAgain => "edit_again",
            Action::Grant => "grant",
            Action::Revoke => "revoke",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// A word or two for the hint bar.
    pub fn hint(self) -> &'static str {
        match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::Follow => "follow",
            Action::CopyId => "copy id",
            Action::CopyJson => "copy json",
            Action::EditClass => "edit class",
            Action::SetRead => "read",
            Action::SetWrite => "write",
            Action::SetDestructive => "destructive",
            Action::SetUnclassified => "unclassified",
            Action::Reason => "reason/note",
            Action::EditPolicy => "edit policy",
            Action::EditAgain => "edit again",
            other => other.name(),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Command => {
                "command (:live :held :tools :stats :policy :grants :tokens :ctx :reconnect :theme :q)"
            }
            Action::Help => "help",
            Action::Back => "back",
            Action::Up => "up (live: newer)",
            Action::Down => "down (live: older, and pause)",
            Action::PageUp => "a page up",
            Action::PageDown => "a page down",
            Action::Top => "first row (live: newest, and follow)",
            Action::Bottom => "last row",
            Action::Follow => "follow newest",
            Action::Detail => "details",
            Action::Filter => "filter: text, field:value, ! inverts",
            Action::CopyId => "copy the call id (OSC 52)",
            Action::CopyJson => "copy the row's JSON (OSC 52)",
            Action::Approve => "approve",
            Action::Deny => "deny",
            Action::Mark => "mark for a bulk decision",
            Action::Extend => "extend the hold by 5 minutes before it expires",
            Action::Sort => "sort by expiry, age, risk, identity",
            Action::Soonest => "select the hold that expires soonest",
            Action::EditClass => "edit the class",
            Action::SetRead => "class: read",
            Action::SetWrite => "class: write",
            Action::SetDestructive => "class: destructive",
            Action::SetUnclassified => "class: unclassified",
            Action::Undo => "undo this console's last class change",
            Action::EditPolicy => {
                "policy: edit the text shown in $VISUAL/$EDITOR, replay, then push"
            }
            Action::Confirm => "dialog: confirm",
            Action::Reason => "dialog: type a reason or note",
            Action::Cancel => "dialog: cancel",
            Action::Choose => "class picker: set the class",
            Action::Shadow => "policy draft: install as the shadow, enforcing nothing",
            Action::EditAgain => "policy draft: open the editor on it again",
            Action::Grant => {
                "approve dialog: also grant the identical call, or the tool, for 15m or 1h"
            }
            Action::Revoke => "grants: revoke the selected grant",
        }
    }
}

/// One binding: a key shown as `label`, and its action.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub label: String,
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
    pub action: Action,
}

/// A key as written in config.toml: `q`, `G`, `ctrl-c`, `alt-x`, `enter`, `space`, `f5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

impl Key {
    pub fn parse(text: &str) -> Result<Key, String> {
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = text;
        // A lone `-` is a key, so modifiers are only read while something follows them.
        loop {
            let lower = rest.to_ascii_lowercase();
            let (m, len) = if lower.starts_with("ctrl-") && rest.len() > 5 {
                (KeyModifiers::CONTROL, 5)
            } else if lower.starts_with("alt-") && rest.len() > 4 {
                (KeyModifiers::ALT, 4)
            } else {
                break;
            };
            modifiers |= m;
            rest = &rest[len..];
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(if modifiers.is_empty() {
                c
            } else {
                c.to_ascii_lowercase()
            }),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "space" => KeyCode::Char(' '),
                "tab" => KeyCode::Tab,
                "backspace" => KeyCode::Backspace,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                "pageup" => KeyCode::PageUp,
                "pagedown" => KeyCode::PageDown,
                "delete" => KeyCode::Delete,
                f if f.starts_with('f')
                    && f[1..].parse::<u8>().is_ok_and(|n| (1..=12).contains(&n)) =>
                {
                    KeyCode::F(f[1..].parse().unwrap_or(1))
                }
                _ => {
                    return Err(format!(
                        "unknown key {text:?}: use one character, ctrl-X, alt-X, enter, esc, space, tab, \
                         backspace, up, down, left, right, home, end, pageup, pagedown, delete or f1–f12"
                    ));
                }
            },
        };
        Ok(Key { code, modifiers })
    }

    fn matches(&self, b: &Binding) -> bool {
        self.code == b.code && self.modifiers == b.modifiers
    }
}

#[derive(Debug, Clone)]
pub struct Keymap {
    pub bindings: Vec<Binding>,
}

impl Default for Keymap {
    fn default() -> Self {
        let b = |label: &str, code, action| Binding {
            label: label.to_owned(),
            code,
            modifiers: KeyModifiers::NONE,
            action,
        };
        Self {
            bindings: vec![
                b("q", KeyCode::Char('q'), Action::Quit),
                Binding {
                    label: "ctrl-c".into(),
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
                b("pgup", KeyCode::PageUp, Action::PageUp),
                b("pgdn", KeyCode::PageDown, Action::PageDown),
                b("g", KeyCode::Char('g'), Action::Top),
                b("home", KeyCode::Home, Action::Top),
                b("G", KeyCode::Char('G'), Action::Bottom),
                b("end", KeyCode::End, Action::Bottom),
                b("f", KeyCode::Char('f'), Action::Follow),
                b("enter", KeyCode::Enter, Action::Detail),
                b("/", KeyCode::Char('/'), Action::Filter),
                b("c", KeyCode::Char('c'), Action::CopyId),
                b("C", KeyCode::Char('C'), Action::CopyJson),
                b("a", KeyCode::Char('a'), Action::Approve),
                b("d", KeyCode::Char('d'), Action::Deny),
                b("space", KeyCode::Char(' '), Action::Mark),
                b("x", KeyCode::Char('x'), Action::Extend),
                b("e", KeyCode::Char('e'), Action::EditClass),
                b("r", KeyCode::Char('r'), Action::SetRead),
                b("w", KeyCode::Char('w'), Action::SetWrite),
                b("x", KeyCode::Char('x'), Action::SetDestructive),
                b("u", KeyCode::Char('u'), Action::SetUnclassified),
                b("U", KeyCode::Char('U'), Action::Undo),
                b("e", KeyCode::Char('e'), Action::EditPolicy),
                b("s", KeyCode::Char('s'), Action::Sort),
                b("n", KeyCode::Char('n'), Action::Soonest),
                b("y", KeyCode::Char('y'), Action::Confirm),
                b("r", KeyCode::Char('r'), Action::Reason),
                b("enter", KeyCode::Enter, Action::Choose),
                b("esc", KeyCode::Esc, Action::Cancel),
                b("n", KeyCode::Char('n'), Action::Cancel),
                b("enter", KeyCode::Enter, Action::Cancel),
                b("s", KeyCode::Char('s'), Action::Shadow),
                b("e", KeyCode::Char('e'), Action::EditAgain),
                b("g", KeyCode::Char('g'), Action::Grant),
                b("d", KeyCode::Char('d'), Action::Revoke),
            ],
        }
    }
}

impl Keymap {
    /// The view action a key is bound to.
    pub fn action(&self, key: &KeyEvent) -> Option<Action> {
        self.find(key, |a| a.scope() == Scope::View)
    }

    /// The first of `applicable` that `key` is bound to: the one answer a view or a
    /// dialog gives for which actions apply drives both its keys and its hints.
    pub fn action_among(&self, key: &KeyEvent, applicable: &[Action]) -> Option<Action> {
        self.find(key, |a| applicable.contains(&a))
    }

    fn find(&self, key: &KeyEvent, wanted: impl Fn(Action) -> bool) -> Option<Action> {
        let modifiers = key.modifiers - KeyModifiers::SHIFT;
        self.bindings
            .iter()
            .filter(|b| wanted(b.action))
            .find(|b| b.code == key.code && b.modifiers == modifiers)
            .map(|b| b.action)
    }

    /// The defaults with the user's bindings applied: each action the user names loses
    /// its default keys. A key the user gives one action is taken from any other that had
    /// it; every such clash is described in the returned list, for the start screen.
    pub fn with_user(user: &[(Action, Vec<(String, Key)>)]) -> (Keymap, Vec<String>) {
        let mut conflicts = Vec::new();
        let mut map = Keymap::default();
        map.bindings
            .retain(|b| !user.iter().any(|(action, _)| *action == b.action));
        let mut added: Vec<Binding> = Vec::new();
        for (action, keys) in user {
            for (label, key) in keys {
                let clashes = |b: &Binding| key.matches(b) && b.action.scope() == action.scope();
                if let Some(mine) = added.iter().find(|b| clashes(b)) {
                    conflicts.push(format!(
                        "key {label} is set for both {} and {}; {} keeps it",
                        mine.action.name(),
                        action.name(),
                        mine.action.name()
                    ));
                    continue;
                }
                // Every default with that key goes: `e` is edit_class and edit_policy.
                while let Some(theirs) = map.bindings.iter().position(clashes) {
                    let lost = map.bindings.remove(theirs).action;
                    let none_left = !map.bindings.iter().any(|b| b.action == lost);
                    conflicts.push(format!(
                        "key {label} was {}'s by default and is now {}'s{}",
                        lost.name(),
                        action.name(),
                        if none_left {
                            format!("; {} has no key left", lost.name())
                        } else {
                            String::new()
                        }
                    ));
                }
                added.push(Binding {
                    label: label.clone(),
                    code: key.code,
                    modifiers: key.modifiers,
                    action: *action,
                });
            }
        }
        map.bindings.extend(added);
        // Table order decides the help's order, so the user's keys sit with the rest.
        map.bindings.sort_by_key(|b| b.action);
        (map, conflicts)
    }

    /// The first key bound to `action`, for hints in dialogs.
    pub fn key_for(&self, action: Action) -> Option<&str> {
        self.bindings
            .iter()
            .find(|b| b.action == action)
            .map(|b| b.label.as_str())
    }

    /// Each action with every key bound to it, in table order; mutating actions are
    /// left out in read-only mode.
    pub fn entries(&self, read_only: bool) -> Vec<(Vec<&str>, Action)> {
        let mut out: Vec<(Vec<&str>, Action)> = Vec::new();
        for b in &self.bindings {
            if read_only && b.action.mutates() {
                continue;
            }
            match out.iter_mut().find(|(_, a)| *a == b.action) {
                Some((keys, _)) => keys.push(&b.label),
                None => out.push((vec![&b.label], b.action)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    fn user(pairs: &[(Action, &[&str])]) -> Vec<(Action, Vec<(String, Key)>)> {
        pairs
            .iter()
            .map(|(a, keys)| {
                (
                    *a,
                    keys.iter()
                        .map(|k| (k.to_string(), Key::parse(k).unwrap()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_action_has_a_default_key_and_a_unique_name() {
        let map = Keymap::default();
        for a in Action::ALL {
            assert!(map.key_for(a).is_some(), "{a:?} has no key");
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
    }

    #[test]
    fn a_user_binding_replaces_the_default_for_that_action_only() {
        let (map, conflicts) = Keymap::with_user(&user(&[(Action::Approve, &["A", "ctrl-y"])]));
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let none = KeyModifiers::NONE;
        assert_eq!(
            map.action(&press(KeyCode::Char('a'), none)),
            None,
            "the default is gone"
        );
        assert_eq!(
            map.action(&press(KeyCode::Char('A'), KeyModifiers::SHIFT)),
            Some(Action::Approve)
        );
        assert_eq!(
            map.action(&press(KeyCode::Char('y'), KeyModifiers::CONTROL)),
            Some(Action::Approve)
        );
        assert_eq!(
            map.action(&press(KeyCode::Char('d'), none)),
            Some(Action::Deny)
        );
        let help = map.entries(false);
        assert!(
            help.contains(&(vec!["A", "ctrl-y"], Action::Approve)),
            "{help:?}"
        );
    }

    #[test]
    fn a_key_taken_from_another_action_is_reported_and_the_user_wins() {
        let (map, conflicts) = Keymap::with_user(&user(&[(Action::Approve, &["d"])]));
        // `d` denies in the held view and revokes in the grants view: both lose it.
        assert_eq!(
            conflicts,
            [
                "key d was deny's by default and is now approve's; deny has no key left",
                "key d was revoke's by default and is now approve's; revoke has no key left"
            ]
        );
        assert_eq!(
            map.action(&press(KeyCode::Char('d'), KeyModifiers::NONE)),
            Some(Action::Approve)
        );
        assert_eq!(map.key_for(Action::Deny), None);

        // Up keeps its arrow when `k` goes elsewhere, and the report says nothing more.
        let (_, conflicts) = Keymap::with_user(&user(&[(Action::Mark, &["k"])]));
        assert_eq!(conflicts, ["key k was up's by default and is now mark's"]);

        // `e` is two views' default: both lose it, and both are named.
        let (map, conflicts) = Keymap::with_user(&user(&[(Action::Mark, &["e"])]));
        assert_eq!(
            conflicts,
            [
                "key e was edit_class's by default and is now mark's; edit_class has no key left",
                "key e was edit_policy's by default and is now mark's; edit_policy has no key left"
            ]
        );
        let e = press(KeyCode::Char('e'), KeyModifiers::NONE);
        assert_eq!(map.action_among(&e, &[Action::EditPolicy]), None);
        assert_eq!(
            map.action_among(&e, &[Action::EditAgain]),
            Some(Action::EditAgain),
            "a dialog's e stays"
        );

        let (map, conflicts) =
            Keymap::with_user(&user(&[(Action::Approve, &["z"]), (Action::Deny, &["z"])]));
        assert_eq!(
            conflicts,
            ["key z is set for both approve and deny; approve keeps it"]
        );
        assert_eq!(
            map.action(&press(KeyCode::Char('z'), KeyModifiers::NONE)),
            Some(Action::Approve)
        );
    }

    #[test]
    fn key_names_parse_and_typos_are_explained() {
        assert_eq!(
            Key::parse("ctrl-c").unwrap(),
            Key {
                code: KeyCode::Char('c'),
                modifiers: KeyModifiers::CONTROL
            }
        );
        assert_eq!(Key::parse("space").unwrap().code, KeyCode::Char(' '));
        assert_eq!(Key::parse("F5").unwrap().code, KeyCode::F(5));
        assert_eq!(Key::parse("-").unwrap().code, KeyCode::Char('-'));
        let err = Key::parse("ctrl-enterr").unwrap_err();
        assert!(err.starts_with("unknown key \"ctrl-enterr\""), "{err}");
        assert!(Key::parse("f13").is_err());
    }
}
