//! The approve/deny dialog, for one hold or every marked one. Its default answer is
//! Cancel; only the confirm key acts. It shows the hold as it is now: time left,
//! whether the agent is still on the line, and a resolution that came meanwhile.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::Ask;
use crate::api::{GrantRequest, GrantScope, HoldPhase, HoldView};
use crate::console::keymap::{Action, Keymap};
use crate::console::model::Model;
use crate::console::text::{countdown, fit, fit_words, short, target_label};
use crate::console::theme::Theme;

#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub approve: bool,
    pub holds: Vec<HoldView>,
    /// The keys, and the reason the operator may type.
    pub ask: Ask,
    /// The grant to make with the approval, if the operator chose one.
    pub grant: Option<GrantRequest>,
}

/// The grants the approve dialog offers, in the order its key steps through them.
const GRANT_CHOICES: [Option<GrantRequest>; 5] = [
    None,
    Some(GrantRequest {
        for_secs: 900,
        scope: GrantScope::Identical,
    }),
    Some(GrantRequest {
        for_secs: 900,
        scope: GrantScope::Tool,
    }),
    Some(GrantRequest {
        for_secs: 3600,
        scope: GrantScope::Identical,
    }),
    Some(GrantRequest {
        for_secs: 3600,
        scope: GrantScope::Tool,
    }),
];

/// A grant as the dialog says it.
pub fn grant_words(grant: Option<GrantRequest>) -> String {
    match grant {
        None => "none: this call runs once".to_owned(),
        Some(g) => format!(
            "{} for {}",
            match g.scope {
                GrantScope::Identical => "identical calls",
                GrantScope::Tool => "any call of this tool the policy holds",
            },
            match g.for_secs {
                s if s % 3600 == 0 => format!("{} h", s / 3600),
                s if s % 60 == 0 => format!("{} min", s / 60),
                s => format!("{s} s"),
            }
        ),
    }
}

impl Confirm {
    pub fn new(approve: bool, holds: Vec<HoldView>) -> Confirm {
        // A hold that needs several approvals makes a grant only when every approval asks
        // for the same one: the choice starts at what the first approver asked for.
        let grant = match holds.as_slice() {
            [one] if approve => one.approvals.first().and_then(|a| a.grant),
            _ => None,
        };
        Confirm {
            approve,
            holds,
            // A deny asks for its reason first.
            ask: Ask::new(!approve),
            grant,
        }
    }

    /// Whether the dialog offers a grant: when approving one hold.
    pub fn offers_grant(&self) -> bool {
        self.approve && self.holds.len() == 1
    }

    /// What applies while the dialog is open.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = self.ask.actions();
        if self.offers_grant() && !self.ask.editing {
            actions.push(Action::Grant);
        }
        actions
    }

    /// The next grant choice.
    pub fn next_grant(&mut self) {
        let at = GRANT_CHOICES
            .iter()
            .position(|g| *g == self.grant)
            .unwrap_or(0);
        self.grant = GRANT_CHOICES[(at + 1) % GRANT_CHOICES.len()];
    }

    pub fn draw(
        &self,
        frame: &mut Frame,
        area: Rect,
        model: &Model,
        clock: chrono::DateTime<chrono::Utc>,
        keymap: &Keymap,
        theme: &Theme,
    ) {
        let verb = if self.approve { "Approve" } else { "Deny" };
        let width: u16 = 72;
        let inner = width as usize - 2;
        let mut lines = match self.holds.as_slice() {
            [h] => {
                // The hold as the model has it now, not as it was when the dialog opened.
                let now = model.hold(&h.call_id).unwrap_or(h);
                let left = chrono::DateTime::parse_from_rfc3339(&now.expires_at)
                    .map(|e| (e.with_timezone(&chrono::Utc) - clock).num_seconds())
                    .unwrap_or(0);
                let line = match (now.resolution, now.phase) {
                    (Some(r), _) => format!(
                        "already {} by {}",
                        r.as_str(),
                        now.resolved_by.as_deref().unwrap_or("someone")
                    ),
                    (None, HoldPhase::Waiting) => {
                        format!(
                            "expires in {} · the agent is waiting on the line",
                            countdown(left)
                        )
                    }
                    (None, HoldPhase::Pending) => format!(
                        "expires in {} · the agent left; an approval serves its identical retry",
                        countdown(left)
                    ),
                };
                let c = &h.call;
                let mut lines = vec![
                    Line::from(format!("{verb} held call {}?", short(&h.call_id))),
                    Line::from(Span::styled(
                        fit_words(&line, inner),
                        if now.resolution.is_some() || left < 60 {
                            theme.urgent
                        } else {
                            Style::new()
                        },
                    )),
                    Line::from(fit(&format!("identity  {}", c.identity.label()), inner)),
                    Line::from(fit(&format!("tool      {}/{}", c.upstream, c.tool), inner)),
                    Line::from(fit(
                        &format!("target    {}", target_label(c.target.as_ref())),
                        inner,
                    )),
                    Line::from(format!("risk      {}", c.risk.as_str())),
                ];
                // A hold that needs several operators: where it stands.
                if c.approvals_required > 1 {
                    let who: Vec<String> = now
                        .approvals
                        .iter()
                        .map(|a| match a.grant {
                            Some(g) => format!("{} asking grant: {}", a.by, grant_words(Some(g))),
                            None => a.by.clone(),
                        })
                        .collect();
                    lines.push(Line::from(Span::styled(
                        fit(
                            &format!(
                                "approvals {} of {}{}",
                                now.approvals.len(),
                                c.approvals_required,
                                if who.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (by {})", who.join(", "))
                                }
                            ),
                            inner,
                        ),
                        theme.hold,
                    )));
                }
                lines.push(Line::from("arguments:"));
                let args = serde_json::to_string_pretty(&c.args).unwrap_or_default();
                lines.extend(
                    args.lines()
                        .take(8)
                        .map(|l| Line::from(fit(&format!("  {l}"), inner))),
                );
                lines
            }
            many => bulk_summary(verb, many, inner),
        };
        lines.push(Line::from(format!("reason: {}", self.ask.shown(inner - 8))));
        if self.offers_grant() {
            lines.push(Line::from(Span::styled(
                fit(&format!("grant:  {}", grant_words(self.grant)), inner),
                if self.grant.is_some() {
                    theme.hold
                } else {
                    Style::new()
                },
            )));
        }
        lines.push(Line::from(""));
        let keys = if self.ask.editing {
            "type the reason · enter done · esc cancels".to_owned()
        } else {
            let key = |a| keymap.key_for(a).unwrap_or("?");
            let grant = if self.offers_grant() {
                format!(" · {} grant", key(Action::Grant))
            } else {
                String::new()
            };
            format!(
                "{} confirm · {} reason{grant} · [{}] cancel",
                key(Action::Confirm),
                key(Action::Reason),
                super::cancel_keys(keymap)
            )
        };
        lines.push(Line::from(Span::styled(
            keys,
            Style::new().add_modifier(Modifier::BOLD),
        )));
        let style = if self.approve {
            theme.allow
        } else {
            theme.deny
        };
        let rect = super::centered(area, width, lines.len() as u16 + 2);
        frame.render_widget(Clear, rect);
        frame.render_widget(
            Paragraph::new(lines).block(
                Block::bordered()
                    .title(format!(" {verb} "))
                    .border_style(style),
            ),
            rect,
        );
    }
}

/// One summary for a bulk decision: how many, of which classes, by whom, then each call.
fn bulk_summary<'a>(verb: &str, holds: &[HoldView], inner: usize) -> Vec<Line<'a>> {
    let count_of = |label: &dyn Fn(&HoldView) -> String| {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for h in holds {
            let l = label(h);
            match counts.iter_mut().find(|(k, _)| *k == l) {
                Some((_, n)) => *n += 1,
                None => counts.push((l, 1)),
            }
        }
        counts
            .into_iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![
        Line::from(Span::styled(
            format!("{verb} {} held calls?", holds.len()),
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::from(fit(
            &format!(
                "risk      {}",
                count_of(&|h| h.call.risk.as_str().to_owned())
            ),
            inner,
        )),
        Line::from(fit(
            &format!("identity  {}", count_of(&|h| h.call.identity.label())),
            inner,
        )),
        Line::from(""),
    ];
    const LISTED: usize = 8;
    // The short id and the target tell the calls apart: they come first and whole.
    for h in holds.iter().take(LISTED) {
        lines.push(Line::from(fit(
            &format!(
                "  {} {:<12} {:<26} {}/{}",
                short(&h.call_id),
                h.call.risk.as_str(),
                fit(&target_label(h.call.target.as_ref()), 26),
                h.call.upstream,
                h.call.tool
            ),
            inner,
        )));
    }
    if holds.len() > LISTED {
        lines.push(Line::from(format!("  … and {} more", holds.len() - LISTED)));
    }
    lines
}
