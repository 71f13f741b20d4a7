//! The dialog before a tool's class is made less strict (destructive → read, say): such
//! a change lets calls through that were held or denied, so it asks first, with Cancel
//! as the default, and takes a note that the gateway stores with the change.

use super::Ask;
use crate::api::Risk;
use crate::console::keymap::{Action, Keymap};
use crate::console::text::fit;
use crate::console::theme::Theme;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

/// How strict a class is under the default policy: unclassified is treated as
/// destructive.
fn strictness(risk: Risk) -> u8 {
    match risk {
        Risk::Read => 0,
        Risk::Write => 1,
        Risk::Destructive | Risk::Unclassified => 2,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reclassify {
    pub upstream: String,
    pub tool: String,
    pub from: Risk,
    pub to: Risk,
    /// For an undo: the version this console's change made. The gateway refuses the undo
    /// (409) when anyone changed the tool since, instead of overwriting their change.
    pub undo_of: Option<u64>,
    /// What the change would have done to the recent recorded calls.
    pub preview: Preview,
    /// The keys, and the note the operator may type.
    pub ask: Ask,
}

/// The replay of a class change over the recent recorded calls, as the dialog shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Preview {
    Loading,
    /// How many decisions were replayed, and how the tool's changed.
    Ready {
        decisions: u64,
        changed: crate::api::Transitions,
    },
    Failed(String),
}

impl Preview {
    /// From a replay of one class change: the gateway compares with the policy in force
    /// at the recorded classes, so every change it reports is this class change's.
    pub fn of(report: &crate::api::ReplayReport) -> Preview {
        let mut changed = report.transitions.clone();
        changed.remove("unchanged");
        Preview::Ready {
            decisions: report.decisions,
            changed,
        }
    }

    fn line(&self) -> String {
        match self {
            Preview::Loading => "replaying the recent calls…".to_owned(),
            Preview::Failed(why) => format!("no preview: {why}"),
            Preview::Ready { decisions, changed } if changed.is_empty() => {
                format!("over the last {decisions} decisions: no call of it would change")
            }
            Preview::Ready { decisions, changed } => format!(
                "over the last {decisions} decisions: {}",
                changed
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Reclassify {
    pub fn new(upstream: &str, tool: &str, from: Risk, to: Risk) -> Reclassify {
        Reclassify {
            upstream: upstream.to_owned(),
            tool: tool.to_owned(),
            from,
            to,
            undo_of: None,
            preview: Preview::Loading,
            ask: Ask::new(false),
        }
    }

    /// Puts back `to` on a tool this console set to `from` at `version`.
    pub fn undo(upstream: &str, tool: &str, from: Risk, to: Risk, version: u64) -> Reclassify {
        Reclassify {
            undo_of: Some(version),
            ..Reclassify::new(upstream, tool, from, to)
        }
    }

    pub fn looser(&self) -> bool {
        strictness(self.to) < strictness(self.from)
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect, keymap: &Keymap, theme: &Theme) {
        let width: u16 = 64;
        let inner = width as usize - 2;
        let note = self.ask.shown(inner - 6);
        let key = |a| keymap.key_for(a).unwrap_or("?");
        let keys = if self.ask.editing {
            "type the note · enter done · esc cancels".to_owned()
        } else {
            format!(
                "{} confirm · {} note · [{}] cancel",
                key(Action::Confirm),
                key(Action::Reason),
                super::cancel_keys(keymap)
            )
        };
        let mut lines = vec![
            Line::from(fit(&format!("{}/{}", self.upstream, self.tool), inner)),
            Line::from(Span::styled(
                format!(
                    "{} → {}{}",
                    self.from,
                    self.to,
                    if self.looser() { ": less strict" } else { "" }
                ),
                if self.looser() {
                    theme.urgent
                } else {
                    Style::new()
                },
            )),
        ];
        if let Some(version) = self.undo_of {
            lines.push(Line::from(fit(
                &format!("Undo your change (v{version}); refused if anyone changed it since."),
                inner,
            )));
        }
        if self.looser() {
            lines.push(Line::from(
                "Calls that were held or denied for its class may now run.",
            ));
        }
        lines.push(Line::from(crate::console::text::fit_words(
            &self.preview.line(),
            inner,
        )));
        lines.extend([
            Line::from(format!("note: {note}")),
            Line::from(""),
            Line::from(Span::styled(
                keys,
                Style::new().add_modifier(Modifier::BOLD),
            )),
        ]);
        let rect = super::centered(area, width, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(if self.undo_of.is_some() {
                        " Undo "
                    } else {
                        " Reclassify "
                    })
                    .border_style(theme.urgent),
            ),
            rect,
        );
    }
}
