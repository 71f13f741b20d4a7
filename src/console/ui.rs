//! Drawing: a pure function of the app's state. It never changes state and never
//! waits on anything. The frame is a header, the view (and its details), the hint bar
//! and the status line; popups draw over it.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::app::{App, Connection, MIN_HEIGHT, MIN_WIDTH, Mode, WIDE};
use super::model::Model;
use super::popups::{self, help};
use super::text::{countdown, fit_line, target_label};
use super::views::{Ctx, View};
use crate::api::{DecisionEvent, HoldPhase, HoldView, ToolEntry};

pub use super::theme::Theme;

pub fn draw(frame: &mut Frame, app: &App, theme: &Theme, now: DateTime<Utc>) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small: {}x{}, toolgate needs {MIN_WIDTH}x{MIN_HEIGHT}; keys other than quit do nothing until it is bigger",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, body, hints, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let ctx = Ctx {
        model: &app.model,
        theme,
        now,
        stale_since: app.stale_since(),
    };
    draw_header(frame, app, theme, header, now);
    // From 120 columns the details sit beside the table; below, over it.
    let (table, detail) = if app.detail && body.width >= WIDE {
        let [t, d] = Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
            .areas(body);
        (t, Some((d, false)))
    } else if app.detail {
        (body, Some((body, true)))
    } else {
        (body, None)
    };
    match app.view {
        View::Live => app.live.draw(frame, table, &ctx),
        View::Held => app.held.draw(frame, table, &ctx),
        View::Tools => app.tools.draw(frame, table, &ctx),
        View::Stats => super::views::stats::draw(frame, table, &ctx, app.status.as_ref()),
        View::Policy => app.policy.draw(frame, table, &ctx),
        View::Grants => app.grants.draw(frame, table, &ctx),
        View::Tokens => app
            .tokens
            .draw(frame, table, &ctx, app.model.tokens.as_deref()),
    }
    draw_hints(frame, app, theme, hints);
    draw_status(frame, app, theme, status);
    if let Some((area, over)) = detail {
        draw_detail(frame, app, &ctx, area, over);
    }
    match &app.mode {
        Mode::Help => {
            // The help lists what applies in the view underneath.
            let mut under = app.view_actions();
            under.sort_by_key(|a| !a.mutates());
            help::draw(frame, area, &app.keymap, app.read_only, &under);
        }
        Mode::Confirm(confirm) => {
            confirm.draw(frame, area, &app.model, ctx.clock(), &app.keymap, theme);
        }
        Mode::ClassPicker(picker) => {
            let entry = app
                .model
                .tools
                .iter()
                .find(|t| t.tool.upstream == picker.upstream && t.tool.name == picker.tool);
            picker.draw(frame, area, entry, &app.keymap, theme);
        }
        Mode::Reclassify(dialog) => dialog.draw(frame, area, &app.keymap, theme),
        Mode::Revoke(dialog) => dialog.draw(frame, area, ctx.clock(), &app.keymap, theme),
        Mode::Draft(draft) => draft.draw(
            frame,
            area,
            &popups::draft::Around {
                in_force: app.model.policy_version,
                shadow_by: app.policy.shadow.as_ref().map(|s| s.by.clone()),
                now: ctx.clock(),
            },
            &app.keymap,
            theme,
        ),
        Mode::Prompt(_) | Mode::Normal => {}
    }
}

fn connection_text(connection: &Connection, now: DateTime<Utc>) -> (String, bool) {
    let clock = |t: &DateTime<Utc>| super::text::clock(*t);
    match connection {
        Connection::Connecting => ("connecting…".to_owned(), false),
        Connection::Connected => ("● connected".to_owned(), false),
        Connection::Reconnecting {
            attempt,
            next_try,
            since,
        } => {
            let secs = (*next_try - now).num_seconds().max(0);
            (
                format!(
                    "○ reconnecting since {} (attempt {attempt}, next in {secs}s)",
                    clock(since)
                ),
                true,
            )
        }
        Connection::Disconnected { since } => {
            (format!("✕ disconnected since {}", clock(since)), true)
        }
        Connection::Rejected {
            status, gateway, ..
        } => (format!("✕ token rejected by {gateway} ({status})"), true),
    }
}

fn draw_header(frame: &mut Frame, app: &App, theme: &Theme, area: Rect, now: DateTime<Utc>) {
    let (connection, bad) = connection_text(&app.connection, now);
    let context = app
        .context
        .as_deref()
        .map(|c| format!("{c} · "))
        .unwrap_or_default();
    // Most important first: a narrow terminal cuts from the right, whole parts at a time.
    // The held count is unknown (`—`) until the gateway has answered once.
    let held = match app.model.store_id {
        Some(_) => app.pending_count().to_string(),
        None => "—".to_owned(),
    };
    let mut spans = vec![
        Span::raw(format!(
            " toolgate · {context}{} · held: {held} · ",
            app.view.name()
        )),
        Span::styled(connection, if bad { theme.urgent } else { Style::new() }),
    ];
    if app.read_only {
        spans.push(Span::styled(" RO", theme.urgent));
    }
    if !app.live.follow && app.view == View::Live {
        spans.push(Span::raw(format!(
            " · paused +{} new",
            app.live.new_while_paused
        )));
    }
    for part in super::views::stats::strip(&app.model, now, app.stale_since()) {
        spans.push(Span::raw(format!(" · {part}")));
    }
    frame.render_widget(
        Paragraph::new(fit_line(spans, area.width as usize)).style(theme.header),
        area,
    );
}

/// The current actions' keys, most useful first, cut between entries with `…` when the
/// line is full.
fn draw_hints(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let width = area.width as usize;
    let typing = match &app.mode {
        Mode::Prompt(prompt) => Some(prompt.hint()),
        Mode::Help => Some(" any key closes the help"),
        _ if app.asking().is_some_and(|ask| ask.editing) => {
            Some(" enter done · esc cancels the dialog · ctrl-u/ctrl-w delete · ctrl-a/ctrl-e move")
        }
        _ => None,
    };
    if let Some(text) = typing {
        frame.render_widget(
            Paragraph::new(super::text::fit_words(text, width)).style(theme.muted),
            area,
        );
        return;
    }
    let entries = app.keymap.entries(app.read_only);
    // Help first, so the narrowest terminal still says where the rest is; then the
    // view's own actions, in the order the view gives them.
    let mut actions = app.actions();
    if let Some(i) = actions
        .iter()
        .position(|a| *a == super::keymap::Action::Help)
    {
        let help = actions.remove(i);
        actions.insert(0, help);
    }
    let mut line = String::new();
    for action in actions {
        let Some((keys, _)) = entries.iter().find(|(_, a)| *a == action) else {
            continue;
        };
        let item = format!(" {} {} ", keys[0], action.hint());
        if line.chars().count() + item.chars().count() + 1 > width {
            line.push('…');
            break;
        }
        line.push_str(&item);
    }
    frame.render_widget(Paragraph::new(line).style(theme.muted), area);
}

fn draw_status(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let width = area.width as usize;
    let line = match &app.mode {
        Mode::Prompt(prompt) => {
            // The text gets the line, or half of it when an error stands beside it.
            let room = if app.filter_error().is_some() {
                width / 2
            } else {
                width
            };
            let mut spans = vec![Span::raw(prompt.line(room))];
            if let Some(e) = app.filter_error() {
                spans.push(Span::styled(format!("  {e}"), theme.deny));
            }
            fit_line(spans, width)
        }
        _ => match app.message(width.saturating_sub(1)) {
            Some(m) if app.flash.is_some() => Line::from(format!(" {m}")),
            Some(m) => Line::from(Span::styled(format!(" {m}"), theme.header)),
            None => Line::default(),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The selected row in full: beside the table from 120 columns, over it below that.
fn draw_detail(frame: &mut Frame, app: &App, ctx: &Ctx, area: Rect, over: bool) {
    let lines = match app.view {
        View::Live => app
            .selected_row()
            .map(|row| call_lines(ctx, &row.call, Some(row.seq), Some(&row.ts))),
        View::Held => app.selected_hold().map(|h| {
            let ts = app.model.row_of(&h.call_id).map(|r| r.ts.clone());
            let mut lines = call_lines(ctx, &h.call, None, ts.as_deref());
            // Who has approved a hold that needs several, and how many more it needs.
            if h.call.approvals_required > 1 {
                let who: Vec<String> = h
                    .approvals
                    .iter()
                    .map(|a| match &a.reason {
                        Some(r) => format!("{} ({r})", a.by),
                        None => a.by.clone(),
                    })
                    .collect();
                lines.insert(
                    0,
                    Line::from(Span::styled(
                        format!(
                            "approvals {} of {}{}",
                            h.approvals.len(),
                            h.call.approvals_required,
                            if who.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", who.join(", "))
                            }
                        ),
                        ctx.theme.hold,
                    )),
                );
            }
            lines
        }),
        View::Tools => app.tools.selected(&app.model).map(tool_lines),
        View::Tokens => app
            .tokens
            .selected(app.model.tokens.as_deref())
            .map(|t| super::views::tokens::detail_lines(t, ctx)),
        View::Stats | View::Policy | View::Grants => None,
    };
    let Some(lines) = lines else {
        return;
    };
    let rect = if over {
        popups::centered(
            area,
            area.width.saturating_sub(8),
            area.height.saturating_sub(2),
        )
    } else {
        area
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .scroll((app.detail_scroll, 0))
            .block(
                Block::bordered()
                    .border_style(ctx.theme.border)
                    .title(" details (pgup/pgdn scroll · esc closes) "),
            ),
        rect,
    );
}

/// What the hold line of the details says: open (phase, time left) or how it ended.
fn hold_text(model: &Model, hold: Option<&HoldView>, call_id: &str, ctx: &Ctx) -> String {
    let clock = ctx.clock();
    if let Some(f) = model.fates.get(call_id) {
        let mut text = f.label();
        if let Some(when) = &f.when {
            text.push_str(&format!(" at {}", super::text::time_label(when, ctx.now)));
        }
        if let Some(reason) = &f.reason {
            text.push_str(&format!(": “{reason}”"));
        }
        return text;
    }
    match hold {
        Some(h) => {
            let left = DateTime::parse_from_rfc3339(&h.expires_at)
                .map(|e| (e.with_timezone(&Utc) - clock).num_seconds())
                .unwrap_or(0);
            let phase = match h.phase {
                HoldPhase::Waiting => "waiting: the agent is on the line",
                HoldPhase::Pending => "pending: the agent left; an approval serves its retry",
            };
            format!("{phase}; expires in {}", countdown(left))
        }
        None => "—".to_owned(),
    }
}

fn call_lines<'a>(
    ctx: &Ctx,
    c: &DecisionEvent,
    seq: Option<u64>,
    ts: Option<&str>,
) -> Vec<Line<'a>> {
    let model = ctx.model;
    let theme = ctx.theme;
    let seq = seq.map(|s| format!("  seq {s}")).unwrap_or_default();
    let when = ts
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S%.3fZ")
                .to_string()
        })
        .unwrap_or_else(|| "—".into());
    let groups = if c.identity.groups.is_empty() {
        String::new()
    } else {
        format!(" (groups {})", c.identity.groups.join(", "))
    };
    let workflow = match &c.workflow {
        Some(w) => format!(
            "ticket {} · change window {}",
            w.ticket.as_deref().unwrap_or("—"),
            match w.change_window {
                Some(true) => "open",
                Some(false) => "closed",
                None => "—",
            }
        ),
        None => "—".to_owned(),
    };
    let result = match model.completions.get(&c.call_id) {
        Some(done) => format!(
            "{} (HTTP {}, {} ms)",
            done.result.as_str(),
            done.upstream_status.map_or("-".into(), |s| s.to_string()),
            done.duration_ms
        ),
        None => "—".into(),
    };
    let outcome_style = match c.outcome {
        crate::api::Outcome::Allow => theme.allow,
        crate::api::Outcome::Hold => theme.hold,
        crate::api::Outcome::Deny => theme.deny,
    };
    let mut lines = vec![
        Line::from(format!("call     {}{seq}", c.call_id)),
        Line::from(format!("time     {when}")),
        Line::from(format!("identity {}{groups}", c.identity.label())),
        Line::from(format!("tool     {}/{}", c.upstream, c.tool)),
        Line::from(format!("risk     {}", c.risk)),
        Line::from(format!("target   {}", target_label(c.target.as_ref()))),
        Line::from(format!("workflow {workflow}")),
        Line::from(vec![
            Span::raw("outcome  "),
            Span::styled(c.outcome.as_str().to_owned(), outcome_style),
        ]),
        Line::from(format!("policy   {}", c.policy_ids.join(", "))),
        Line::from(format!("reason   {}", c.reason)),
        Line::from(format!(
            "hold     {}",
            hold_text(model, model.hold(&c.call_id), &c.call_id, ctx)
        )),
        Line::from(format!("upstream {result}")),
        Line::from(format!("took     {}µs", c.decision_us)),
        Line::from(if c.args_truncated {
            "arguments (cut at 16 KiB):"
        } else {
            "arguments:"
        }),
    ];
    let args = serde_json::to_string_pretty(&c.args).unwrap_or_default();
    lines.extend(args.lines().map(|l| Line::from(format!("  {l}"))));
    lines
}

fn tool_lines<'a>(entry: &ToolEntry) -> Vec<Line<'a>> {
    let t = &entry.tool;
    let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "—".into());
    let mut lines = vec![
        Line::from(format!("tool       {}/{}", t.upstream, t.name)),
        Line::from(format!("title      {}", or_dash(&t.title))),
        Line::from(format!("risk       {} (source {})", t.risk, t.source)),
        Line::from(format!("suggested  {}", t.suggested_risk)),
        Line::from(format!(
            "changed    by {} at {}, v{}",
            or_dash(&t.updated_by),
            t.updated_at,
            t.version
        )),
        Line::from(format!("note       {}", or_dash(&t.note))),
        Line::from(format!("definition {}", or_dash(&t.definition_sha256))),
        Line::from(format!(
            "calls      {} allowed, {} held, {} denied",
            entry.calls.allow, entry.calls.hold, entry.calls.deny
        )),
        Line::from("annotations:"),
    ];
    let annotations = serde_json::to_string_pretty(&t.annotations).unwrap_or_default();
    lines.extend(annotations.lines().map(|l| Line::from(format!("  {l}"))));
    lines
}
