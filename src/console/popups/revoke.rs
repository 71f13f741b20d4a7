//! The dialog before a grant is revoked: what it lets through and how often it did, with
//! Cancel as the default.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::Ask;
use crate::api::{Grant, GrantScope};
use crate::console::keymap::{Action, Keymap};
use crate::console::text::{countdown, fit, short};
use crate::console::theme::Theme;

#[derive(Debug, Clone, PartialEq)]
pub struct Revoke {
    pub grant: Grant,
    /// Only the confirm and cancel keys: the gateway records who revoked it.
    pub ask: Ask,
}

impl Revoke {
    pub fn new(grant: Grant) -> Revoke {
        Revoke {
            grant,
            ask: Ask::new(false),
        }
    }

    pub fn actions(&self) -> Vec<Action> {
        vec![Action::Confirm, Action::Cancel]
    }

    pub fn draw(
        &self,
        frame: &mut Frame,
        area: Rect,
        clock: chrono::DateTime<chrono::Utc>,
        keymap: &Keymap,
        theme: &Theme,
    ) {
        let width: u16 = 64;
        let inner = width as usize - 2;
        let g = &self.grant;
        let left = chrono::DateTime::parse_from_rfc3339(&g.expires_at)
            .map(|e| (e.with_timezone(&chrono::Utc) - clock).num_seconds())
            .unwrap_or(0);
        let what = match g.scope {
            GrantScope::Identical => "its identical calls",
            GrantScope::Tool => "any call of the tool the policy holds",
        };
        let key = |a| keymap.key_for(a).unwrap_or("?");
        let lines = vec![
            Line::from(format!("Revoke grant {}?", short(&g.id))),
            Line::from(fit(&format!("identity  {}", g.identity.label()), inner)),
            Line::from(fit(&format!("tool      {}/{}", g.upstream, g.tool), inner)),
            Line::from(fit(&format!("lets      {what}"), inner)),
            Line::from(fit(
                &format!(
                    "left      {} · used {} times · by {}",
                    countdown(left),
                    g.uses,
                    g.approvers.join(", ")
                ),
                inner,
            )),
            Line::from("From the next call on, such calls are held again."),
            Line::from(""),
            Line::from(Span::styled(
                format!(
                    "{} revoke · [{}] cancel",
                    key(Action::Confirm),
                    super::cancel_keys(keymap)
                ),
                Style::new().add_modifier(Modifier::BOLD),
            )),
        ];
        let rect = super::centered(area, width, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(" Revoke grant ")
                    .border_style(theme.deny),
            ),
            rect,
        );
    }
}
