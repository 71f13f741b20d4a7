//! The `:` command line and the `/` filter line, with real line editing.

use tui_input::Input;

#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    Command,
    /// The filter applies as it is typed; Esc goes back to `before`.
    Filter {
        before: String,
        error: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Prompt {
    pub kind: PromptKind,
    pub input: Input,
}

impl PartialEq for Prompt {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.input.value() == other.input.value()
    }
}

impl Prompt {
    pub fn command() -> Prompt {
        Prompt {
            kind: PromptKind::Command,
            input: Input::default(),
        }
    }

    pub fn filter(current: &str) -> Prompt {
        Prompt {
            kind: PromptKind::Filter {
                before: current.to_owned(),
                error: None,
            },
            input: Input::new(current.to_owned()),
        }
    }

    pub fn text(&self) -> &str {
        self.input.value()
    }

    /// The hint bar while typing.
    pub fn hint(&self) -> &'static str {
        match self.kind {
            PromptKind::Command => {
                " tab completes · enter runs · esc cancels · ctrl-u/ctrl-w delete · ctrl-a/ctrl-e move"
            }
            PromptKind::Filter { .. } => {
                " tool: outcome: risk: identity: upstream: target: ticket: since:10m · !not · esc undo"
            }
        }
    }

    /// The status line in `width` columns: the prompt, the text and its cursor in view.
    pub fn line(&self, width: usize) -> String {
        let sign = match self.kind {
            PromptKind::Command => ':',
            PromptKind::Filter { .. } => '/',
        };
        format!(
            "{sign}{}",
            super::with_cursor_in(&self.input, width.saturating_sub(1))
        )
    }
}
