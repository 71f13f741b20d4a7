//! The policy draft: an edit of the policy text, shown with what it would have done to
//! the recent recorded calls before anything goes live. It opens when the editor closes
//! on a changed text and replays the last 10,000 decisions with it. Then `y` pushes it
//! at the version the edit started from (Cancel is the default), `s` installs it as the
//! shadow instead, `e` opens the editor again, and Cancel discards it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{Answer, Ask};
use crate::api::{PolicyVersion, ReplayReport};
use crate::console::keymap::{Action, Keymap};
use crate::console::text::{fit, fit_words, short, target_label, time_label};
use crate::console::theme::Theme;

/// How many recent decisions a draft is replayed against.
pub const DRAFT_WINDOW: u64 = 10_000;
/// How many changed calls the draft lists.
pub const SAMPLE: usize = 8;

/// Lines the console writes into the file for the operator to read (an error at its
/// line, a conflict); they are taken out again when the file is read back.
const MARK: &str = "// ✗ ";

/// Where an edit starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    /// The version in force when the edit began: the push is refused (409) if the
    /// policy has moved on since.
    pub version: u64,
    /// The version whose text the editor opened: the one in force, or an older one
    /// being brought back.
    pub from: u64,
    /// That text, to tell a save that changed nothing.
    pub original: String,
    /// The store the edit began on: a draft is never pushed to another one (a store
    /// recreated, a failover behind the same address).
    pub store_id: Option<String>,
}

/// A push refused because someone stored a version after the edit began.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The version they stored.
    pub now: PolicyVersion,
    /// The draft's text when the push was refused: saving it again unchanged merges
    /// nothing, and is refused.
    pub before: String,
    /// What they changed, as a unified diff from the version the edit began on, once
    /// fetched.
    pub diff: Option<String>,
}

/// What the editor opens: a file with `text`, the cursor at `line` (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct EditRequest {
    pub text: String,
    pub line: Option<usize>,
    /// The draft being edited again, or `None` for a new edit from the policy view.
    pub draft: Option<u64>,
    pub base: Base,
}

/// Where a draft stands.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftState {
    Replaying,
    Ready(Box<ReplayReport>),
    /// The gateway refused the text as Cedar (400 `invalid_policy`).
    Invalid {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The replay, the push or the shadow failed for another reason.
    Failed(String),
    /// A push or a shadow is on its way; keys wait for the answer (but quit).
    Sending(&'static str),
    /// Someone stored this version after the edit began: the push was refused.
    Stale(Box<PolicyVersion>),
}

/// What a key in the draft asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum DraftAnswer {
    Stay,
    Quit,
    Discard,
    Push { note: Option<String> },
    Shadow,
    Edit(EditRequest),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub id: u64,
    /// The text as saved, the console's own lines taken out.
    pub text: String,
    pub base: Base,
    pub state: DraftState,
    /// The push's keys and its note.
    pub ask: Ask,
    /// Set once a push was refused for a newer version; kept through edits.
    pub conflict: Option<Conflict>,
}

impl Draft {
    pub fn new(id: u64, text: String, base: Base) -> Draft {
        Draft {
            id,
            text,
            base,
            state: DraftState::Replaying,
            ask: Ask::new(false),
            conflict: None,
        }
    }

    pub fn actions(&self) -> Vec<Action> {
        if self.ask.editing {
            return Vec::new();
        }
        match self.state {
            DraftState::Ready(_) => vec![
                Action::Confirm,
                Action::Shadow,
                Action::Reason,
                Action::EditAgain,
                Action::Cancel,
            ],
            DraftState::Sending(_) => vec![Action::Quit],
            _ => vec![Action::EditAgain, Action::Cancel],
        }
    }

    pub fn on_key(&mut self, key: crossterm::event::KeyEvent, keymap: &Keymap) -> DraftAnswer {
        use crossterm::event::KeyCode;
        if self.ask.editing {
            // Esc leaves the note, not the draft: an edit is too dear to lose to it.
            if let Answer::Cancel = self.ask.on_key(key, keymap) {
                self.ask.editing = false;
            }
            return DraftAnswer::Stay;
        }
        // Enter, which cancels other dialogs, does nothing here: a second Enter after
        // `:wq` must not throw the edit away.
        if key.code == KeyCode::Enter {
            return DraftAnswer::Stay;
        }
        match keymap.action_among(&key, &self.actions()) {
            Some(Action::Quit) => DraftAnswer::Quit,
            Some(Action::Confirm) => DraftAnswer::Push {
                note: self.ask.value(),
            },
            Some(Action::Shadow) => DraftAnswer::Shadow,
            Some(Action::Reason) => {
                self.ask.editing = true;
                DraftAnswer::Stay
            }
            Some(Action::EditAgain) => DraftAnswer::Edit(self.edit_again()),
            Some(Action::Cancel) => DraftAnswer::Discard,
            _ => DraftAnswer::Stay,
        }
    }

    /// The editor again: at the error's line with the error written above it, or after
    /// a conflict from the version now in force, with who stored it written at the top.
    fn edit_again(&self) -> EditRequest {
        let again = |text: String, line, base| EditRequest {
            text,
            line,
            draft: Some(self.id),
            base,
        };
        match &self.state {
            DraftState::Invalid {
                message,
                line: Some(line),
                column,
            } => {
                let at = match column {
                    Some(c) => format!("line {line}, column {c}"),
                    None => format!("line {line}"),
                };
                let note = format!("{message} ({at}; toolgate removes these lines)");
                let (text, line) = mark_at(&self.text, *line, &note);
                again(text, Some(line), self.base.clone())
            }
            DraftState::Invalid { message, .. } => {
                let (text, line) = mark_at(&self.text, 1, message);
                again(text, Some(line), self.base.clone())
            }
            DraftState::Stale(now) => {
                let mut note = format!(
                    "{} stored v{} at {} after this edit began from v{}: merge their change \
                     into this draft (below, as a diff), then save; the push then goes over \
                     v{}. Saved unchanged, it stays refused. An empty file discards the \
                     draft. toolgate removes these lines.",
                    now.by, now.version, now.at, self.base.version, now.version
                );
                match self.conflict.as_ref().and_then(|c| c.diff.as_deref()) {
                    Some(diff) if !diff.is_empty() => {
                        note.push('\n');
                        note.push_str(diff);
                    }
                    Some(_) => {
                        note.push_str("\n(their text is the same as the one this edit began from)")
                    }
                    None => note.push_str(&format!(
                        "\n(`toolgate policy diff {} {}` shows their change)",
                        self.base.version, now.version
                    )),
                }
                let (text, _) = mark_at(&self.text, 1, &note);
                let base = Base {
                    version: now.version,
                    ..self.base.clone()
                };
                again(text, None, base)
            }
            _ => again(self.text.clone(), None, self.base.clone()),
        }
    }

    /// The push's title line: what it replaces.
    fn heading(&self, in_force: Option<u64>) -> String {
        let mut line = if let Some(c) = &self.conflict {
            format!(
                "your edit, over v{} by {} (their change is in it only if you merged it)",
                c.now.version, c.now.by
            )
        } else if self.base.from == self.base.version {
            format!("an edit of v{} (in force)", self.base.version)
        } else {
            format!(
                "v{}'s text, to replace v{} in force",
                self.base.from, self.base.version
            )
        };
        if let Some(now) = in_force.filter(|v| *v > self.base.version) {
            line.push_str(&format!(
                " · v{now} was stored meanwhile: a push will be refused"
            ));
        }
        line
    }

    pub fn draw(
        &self,
        frame: &mut Frame,
        area: Rect,
        around: &Around,
        keymap: &Keymap,
        theme: &Theme,
    ) {
        let (in_force, now) = (around.in_force, around.now);
        let width = area.width.saturating_sub(4).min(110);
        let inner = width.saturating_sub(2) as usize;
        let key = |a| keymap.key_for(a).unwrap_or("?");
        let mut lines = vec![Line::from(fit(&self.heading(in_force), inner))];
        match &self.state {
            DraftState::Replaying => lines.push(Line::from(format!(
                "validating and replaying the last {DRAFT_WINDOW} decisions…"
            ))),
            DraftState::Sending(what) => lines.push(Line::from(format!(
                "{what} ({} quits; what was sent may still take effect)",
                key(Action::Quit)
            ))),
            DraftState::Failed(why) => {
                lines.push(Line::from(Span::styled(fit_words(why, inner), theme.deny)));
                lines.push(Line::from(fit_words(
                    &format!(
                        "{} opens it again; saved unchanged, it is replayed again",
                        key(Action::EditAgain)
                    ),
                    inner,
                )));
            }
            DraftState::Invalid {
                message,
                line,
                column,
            } => {
                let at = match (line, column) {
                    (Some(l), Some(c)) => format!(": line {l}, column {c}"),
                    (Some(l), None) => format!(": line {l}"),
                    _ => String::new(),
                };
                lines.push(Line::from(Span::styled(
                    format!("the draft is not valid Cedar{at}"),
                    theme.deny,
                )));
                for l in message.lines().take(6) {
                    lines.push(Line::from(fit(&format!("  {l}"), inner)));
                }
                lines.push(Line::from("Nothing was pushed."));
            }
            DraftState::Stale(v) => {
                lines.push(Line::from(Span::styled(
                    fit_words(
                        &format!(
                            "not pushed: {} stored v{} at {}{} after this edit began from v{}",
                            v.by,
                            v.version,
                            time_label(&v.at, now),
                            v.note
                                .as_ref()
                                .map(|n| format!(" ({n})"))
                                .unwrap_or_default(),
                            self.base.version
                        ),
                        inner,
                    ),
                    theme.deny,
                )));
                lines.push(Line::from(fit_words(
                    &format!(
                        "{} opens this draft again with that written at its top, to merge before pushing over v{}",
                        key(Action::EditAgain),
                        v.version
                    ),
                    inner,
                )));
            }
            DraftState::Ready(report) => lines.extend(report_lines(report, inner, now, theme)),
        }
        if matches!(self.state, DraftState::Ready(_)) {
            lines.push(Line::from(format!("note: {}", self.ask.shown(inner - 6))));
        }
        lines.push(Line::from(""));
        let keys = if self.ask.editing {
            "type the note · enter done · esc leaves the note".to_owned()
        } else {
            let mut parts = Vec::new();
            for action in self.actions() {
                let what = match action {
                    Action::Confirm => format!("push over v{}", self.base.version),
                    Action::Shadow => match &around.shadow_by {
                        Some(by) => format!("replace {by}'s shadow"),
                        None => "install as shadow".to_owned(),
                    },
                    Action::Reason => "note".to_owned(),
                    Action::EditAgain => "edit again".to_owned(),
                    Action::Cancel | Action::Quit => continue,
                    other => other.hint().to_owned(),
                };
                parts.push(format!("{} {what}", key(action)));
            }
            if self.actions().contains(&Action::Cancel) {
                // Enter does not discard a draft (see `on_key`).
                let keys = super::cancel_keys(keymap);
                let keys: Vec<&str> = keys.split('/').filter(|k| *k != "enter").collect();
                parts.push(format!("{} discard", keys.join("/")));
            }
            parts.join(" · ")
        };
        lines.push(Line::from(Span::styled(
            fit(&keys, inner),
            Style::new().add_modifier(Modifier::BOLD),
        )));
        let height = (lines.len() as u16 + 2).min(area.height);
        let rect = super::centered(area, width, height);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(" Policy draft ")
                    .border_style(theme.urgent),
            ),
            rect,
        );
    }
}

/// What the draft shows besides itself.
pub struct Around {
    /// The version in force, as the console last heard.
    pub in_force: Option<u64>,
    /// Who installed the shadow `s` would replace, if one is installed.
    pub shadow_by: Option<String>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// The replay's answer, as the draft shows it: the transitions, the tools and
/// identities that change most, and a sample of the changed calls.
fn report_lines(
    report: &ReplayReport,
    inner: usize,
    now: chrono::DateTime<chrono::Utc>,
    theme: &Theme,
) -> Vec<Line<'static>> {
    let changes: u64 = report
        .transitions
        .iter()
        .filter(|(k, _)| *k != "unchanged")
        .map(|(_, n)| n)
        .sum();
    let mut lines = vec![Line::from(fit(
        &format!(
            "valid · replayed the last {} decisions in {} ms:",
            report.decisions, report.took_ms
        ),
        inner,
    ))];
    if changes == 0 {
        lines.push(Line::from("  no decision would change"));
    } else {
        let counts: Vec<String> = report
            .transitions
            .iter()
            .filter(|(k, _)| *k != "unchanged")
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        lines.push(Line::from(Span::styled(
            fit_words(&format!("  {}", counts.join(" · ")), inner),
            theme.urgent,
        )));
    }
    lines.push(Line::from(format!(
        "  unchanged {}",
        report.transitions.get("unchanged").copied().unwrap_or(0)
    )));
    let groups = |label: &str, groups: &[crate::api::ReplayGroup]| {
        let top: Vec<String> = groups
            .iter()
            .take(3)
            .map(|g| {
                let moved: Vec<String> = g
                    .transitions
                    .iter()
                    .filter(|(k, _)| *k != "unchanged")
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                format!("{} {}", g.key, moved.join(", "))
            })
            .collect();
        Line::from(fit(&format!("{label}{}", top.join("; ")), inner))
    };
    if changes > 0 {
        lines.push(groups("tools       ", &report.by_tool));
        lines.push(groups("identities  ", &report.by_identity));
        lines.push(Line::from(format!(
            "changed calls (oldest first, {} of {changes}):",
            report.changed.len().min(SAMPLE)
        )));
        for c in report.changed.iter().take(SAMPLE) {
            let to = c.to.map_or("unknown", |o| o.as_str());
            let why = if c.to.is_none() {
                c.reason.clone()
            } else {
                c.to_policy_ids.join(",")
            };
            lines.push(Line::from(fit(
                &format!(
                    "  {} {} {}/{} {} {} {}→{} {}",
                    short(&c.call_id),
                    time_label(&c.ts, now),
                    c.upstream,
                    c.tool,
                    c.identity.label(),
                    target_label(c.target.as_ref()),
                    c.from.as_str(),
                    to,
                    why
                ),
                inner,
            )));
        }
    }
    lines
}

/// `text` with `note` written as comment lines above line `line` (1-based), and the
/// line the cursor should go to: the one the note is about.
pub fn mark_at(text: &str, line: usize, note: &str) -> (String, usize) {
    let mut lines: Vec<&str> = text.lines().collect();
    let at = line.saturating_sub(1).min(lines.len());
    let marks: Vec<String> = note
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{MARK}{l}"))
        .collect();
    let added = marks.len();
    let tail = lines.split_off(at);
    let mut out: Vec<&str> = lines;
    out.extend(marks.iter().map(String::as_str));
    out.extend(tail);
    let mut text = out.join("\n");
    text.push('\n');
    (text, at + added + 1)
}

/// The file as saved, less the lines the console wrote into it.
pub fn unmark(text: &str) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with(MARK))
        .collect();
    let mut out = kept.join("\n");
    if text.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_written_above_its_line_and_taken_out_again() {
        let text = "permit (principal, action, resource);\nforbid (principal action, resource);\n";
        let (marked, line) = mark_at(
            text,
            2,
            "unexpected token `action`\n  expected `,`\n(line 2, column 19)",
        );
        let lines: Vec<&str> = marked.lines().collect();
        assert_eq!(
            lines,
            [
                "permit (principal, action, resource);",
                "// ✗ unexpected token `action`",
                "// ✗   expected `,`",
                "// ✗ (line 2, column 19)",
                "forbid (principal action, resource);",
            ]
        );
        assert_eq!(line, 5, "the cursor goes to the bad line, below the note");
        assert_eq!(unmark(&marked), text);
        // A line past the end puts the note last.
        let (marked, line) = mark_at("a;\n", 9, "x");
        assert_eq!((marked.as_str(), line), ("a;\n// ✗ x\n", 3));
        // Only the console's own lines go.
        assert_eq!(unmark("// why\n// ✗ x\na;"), "// why\na;");
    }
}
