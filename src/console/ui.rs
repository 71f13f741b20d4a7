//! Drawing: a pure function of the app's state. It never changes state and never
//! waits on anything.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, Wrap};
use serde_json::Value;

use super::app::{App, CLASSES, Connection, Mode, View, identity_label, short, target_label};
use crate::api::Resolution;

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;
/// From this width, tables show every column but the live view's decision time.
pub const WIDE: u16 = 120;
/// From this width, the live view shows each decision's time too.
const ROOMY: u16 = 140;
/// Below this many seconds left, a hold's countdown turns red.
const NEAR_EXPIRY_SECS: i64 = 60;

pub use super::theme::Theme;

pub fn draw(frame: &mut Frame, app: &App, theme: &Theme, now: DateTime<Utc>) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "terminal too small: {}x{}, toolgate needs {MIN_WIDTH}x{MIN_HEIGHT}",
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
        View::Live => draw_live(frame, app, theme, table),
        View::Held => draw_held(frame, app, theme, table, now),
        View::Tools => draw_tools(frame, app, theme, table),
    }
    draw_hints(frame, app, theme, hints);
    draw_status(frame, app, theme, status);
    if let Some((area, over)) = detail {
        draw_detail(frame, app, theme, area, over);
    }
    match &app.mode {
        Mode::Help => draw_help(frame, app, area),
        Mode::Confirm(confirm) => draw_confirm(frame, confirm, theme, area),
        Mode::ClassPicker { index } => draw_class_picker(frame, app, *index, theme, area),
        _ => {}
    }
}

fn draw_header(frame: &mut Frame, app: &App, theme: &Theme, area: Rect, now: DateTime<Utc>) {
    let connection = match &app.connection {
        Connection::Connecting => "connecting…".to_owned(),
        Connection::Connected => "● connected".to_owned(),
        Connection::Reconnecting { attempt, next_try } => {
            let secs = (*next_try - now).num_seconds().max(0);
            format!("○ reconnecting (attempt {attempt}, next in {secs}s)")
        }
        Connection::Disconnected { since } => {
            format!("✕ disconnected since {}", since.format("%H:%M:%S"))
        }
    };
    let view = match app.view {
        View::Live => "live",
        View::Held => "held",
        View::Tools => "tools",
    };
    let context = app
        .context
        .as_deref()
        .map(|c| format!("{c} · "))
        .unwrap_or_default();
    let mut spans = vec![Span::raw(format!(
        " toolgate · {context}{view} · {connection} · held: {} ",
        app.pending_count()
    ))];
    if !app.follow && app.view == View::Live {
        spans.push(Span::raw(format!(
            "· paused +{} new ",
            app.new_while_paused
        )));
    }
    if app.read_only {
        spans.push(Span::styled(" RO ", theme.urgent));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(theme.header), area);
}

fn outcome_cell<'a>(app: &App, row: &Value, theme: &Theme) -> Cell<'a> {
    let outcome = row["outcome"].as_str().unwrap_or("?");
    let call_id = row["call_id"].as_str().unwrap_or("");
    let text = match app.fates.get(call_id) {
        Some(fate) if outcome == "hold" => format!("hold→{}", fate.resolution.as_str()),
        _ => outcome.to_owned(),
    };
    let style = match (outcome, app.fates.get(call_id).map(|f| f.resolution)) {
        (_, Some(Resolution::Approved | Resolution::Consumed)) | ("allow", _) => theme.allow,
        ("hold", None) => theme.hold,
        _ => theme.deny,
    };
    Cell::from(text).style(style)
}

fn risk_cell<'a>(risk: &str, theme: &Theme) -> Cell<'a> {
    let style = match risk {
        "read" => theme.risk_read,
        "write" => theme.risk_write,
        "destructive" => theme.risk_destructive,
        _ => theme.risk_unclassified,
    };
    Cell::from(risk.to_owned()).style(style)
}

fn time_of(row: &Value) -> String {
    row["ts"]
        .as_str()
        .and_then(|t| t.get(11..19))
        .unwrap_or("")
        .to_owned()
}

/// The upstream every row shares, if they share one: then the tool column can leave it
/// out and show whole tool names.
fn shared_upstream<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let first = names.next()?;
    names.all(|n| n == first).then_some(first)
}

fn tool_label(upstream: &str, tool: &str, shared: Option<&str>) -> String {
    match shared {
        Some(_) => tool.to_owned(),
        None => format!("{upstream}/{tool}"),
    }
}

fn tool_header(shared: Option<&str>) -> String {
    match shared {
        Some(upstream) => format!("tool ({upstream})"),
        None => "upstream/tool".to_owned(),
    }
}

/// `2026-11-26T10:04:05.123Z` as `11-26 10:04`: enough to tell today from last week.
fn short_time(ts: &str) -> String {
    ts.get(5..16).unwrap_or(ts).replace('T', " ")
}

fn draw_live(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let stale = !app.is_connected();
    let visible = area.height.saturating_sub(2) as usize;
    let selected = if app.follow { 0 } else { app.selected };
    // Keep the selection in view: the window starts so the selected row fits.
    let skip = selected.saturating_sub(visible.saturating_sub(1));
    let window: Vec<(usize, &super::app::Row)> = app
        .visible_rows()
        .enumerate()
        .skip(skip)
        .take(visible)
        .collect();
    // Only the rows on screen: a frame must not cost a walk over the whole ring.
    let shared = shared_upstream(
        window
            .iter()
            .map(|(_, r)| r.event["upstream"].as_str().unwrap_or("")),
    );
    let rows: Vec<TableRow> = window
        .into_iter()
        .map(|(i, r)| {
            let e = &r.event;
            let mut row = TableRow::new(vec![
                Cell::from(time_of(e)),
                Cell::from(identity_label(e)),
                Cell::from(tool_label(
                    e["upstream"].as_str().unwrap_or(""),
                    e["tool"].as_str().unwrap_or(""),
                    shared,
                )),
                risk_cell(e["risk"].as_str().unwrap_or(""), theme),
                outcome_cell(app, e, theme),
                Cell::from(target_label(e)),
                Cell::from(
                    e["policy_ids"]
                        .as_array()
                        .map(|ids| {
                            ids.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default(),
                ),
                Cell::from(format!("{}µs", e["decision_us"].as_u64().unwrap_or(0))),
            ]);
            if stale {
                row = row.style(theme.stale);
            }
            if !app.follow && i == selected {
                row = row.style(theme.selection);
            }
            row
        })
        .collect();
    let title = title(
        if stale {
            "decisions (stale)"
        } else {
            "decisions"
        },
        app.filter_text(View::Live),
        || (app.visible_rows().count(), app.row_count()),
    );
    // Below 120 columns the policy and timing columns give their room to the rest;
    // beside the detail pane, identity and target go too (the pane shows them).
    let wide = area.width >= WIDE;
    let compact = area.width < MIN_WIDTH;
    let widths: Vec<Constraint> = if compact {
        vec![
            Constraint::Length(8),
            Constraint::Length(0),
            Constraint::Min(16),
            Constraint::Length(11),
            Constraint::Length(13),
        ]
    } else if wide {
        let mut widths = vec![
            Constraint::Length(8),
            Constraint::Length(22),
            Constraint::Min(23),
            Constraint::Length(12),
            Constraint::Length(13),
            Constraint::Length(20),
            Constraint::Length(16),
        ];
        // The decision time needs 140 columns; the details show it anyway.
        if area.width >= ROOMY {
            widths.push(Constraint::Length(8));
        }
        widths
    } else {
        vec![
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Min(18),
            Constraint::Length(11),
            Constraint::Length(13),
            Constraint::Length(12),
        ]
    };
    let tool_header = tool_header(shared);
    let header: &[&str] = if wide {
        &[
            "time",
            "identity",
            &tool_header,
            "risk",
            "outcome",
            "target",
            "policy",
            "took",
        ]
    } else {
        &[
            "time",
            "identity",
            &tool_header,
            "risk",
            "outcome",
            "target",
        ]
    };
    let table = Table::new(rows, widths)
        .header(TableRow::new(header.to_vec()).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(
            Block::new()
                .borders(Borders::TOP)
                .border_style(theme.border)
                .title(title),
        );
    frame.render_widget(table, area);
}

/// A table's title, with its filter and how many rows pass it.
fn title(name: &str, filter: Option<&str>, counts: impl Fn() -> (usize, usize)) -> String {
    match filter {
        Some(f) => {
            let (shown, total) = counts();
            format!(" {name} · /{f} · {shown} of {total} ")
        }
        None => format!(" {name} "),
    }
}

fn draw_held(frame: &mut Frame, app: &App, theme: &Theme, area: Rect, now: DateTime<Utc>) {
    let visible = app.visible_holds();
    let shared = shared_upstream(app.holds.iter().map(|h| h.call.upstream.as_str()));
    let rows: Vec<TableRow> = visible
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let left = DateTime::parse_from_rfc3339(&h.expires_at)
                .map(|e| (e.with_timezone(&Utc) - now).num_seconds().max(0))
                .unwrap_or(0);
            let (state, state_style) = match (h.resolution, &h.resolved_by) {
                (Some(r), Some(by)) => (
                    format!("{} by {by}", r.as_str()),
                    if matches!(r, Resolution::Approved | Resolution::Consumed) {
                        theme.allow
                    } else {
                        theme.deny
                    },
                ),
                (Some(r), None) => (r.as_str().to_owned(), theme.deny),
                (None, _) => (format!("{:?}", h.phase).to_lowercase(), theme.hold),
            };
            let countdown = if h.resolution.is_some() {
                Cell::from("")
            } else {
                let style = if left < NEAR_EXPIRY_SECS {
                    theme.urgent
                } else {
                    Style::new()
                };
                Cell::from(format!("{:02}:{:02}", left / 60, left % 60)).style(style)
            };
            let call = serde_json::to_value(&h.call).unwrap_or_default();
            let mark = if app.marked.contains(&h.call_id) {
                "*"
            } else {
                ""
            };
            let mut row = TableRow::new(vec![
                Cell::from(mark).style(theme.urgent),
                countdown,
                Cell::from(state).style(state_style),
                Cell::from(identity_label(&call)),
                Cell::from(tool_label(&h.call.upstream, &h.call.tool, shared)),
                risk_cell(h.call.risk.as_str(), theme),
                Cell::from(target_label(&call)),
                Cell::from(short(&h.call_id).to_owned()),
            ]);
            if i == app.held_selected {
                row = row.style(theme.selection);
            }
            row
        })
        .collect();
    let wide = area.width >= WIDE;
    let compact = area.width < MIN_WIDTH;
    let widths: Vec<Constraint> = if compact {
        vec![
            Constraint::Length(1),
            Constraint::Length(5),
            Constraint::Length(12),
            Constraint::Length(0),
            Constraint::Min(16),
            Constraint::Length(11),
        ]
    } else if wide {
        vec![
            Constraint::Length(1),
            Constraint::Length(6),
            Constraint::Length(20),
            Constraint::Length(20),
            Constraint::Min(25),
            Constraint::Length(12),
            Constraint::Length(20),
            Constraint::Length(9),
        ]
    } else {
        vec![
            Constraint::Length(1),
            Constraint::Length(5),
            Constraint::Length(18),
            Constraint::Length(14),
            Constraint::Min(16),
            Constraint::Length(11),
            Constraint::Length(10),
        ]
    };
    let tool_header = tool_header(shared);
    let header = [
        "",
        "left",
        "state",
        "identity",
        &tool_header,
        "risk",
        "target",
        "call",
    ];
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(
            Block::new()
                .borders(Borders::TOP)
                .border_style(theme.border)
                .title(title(
                    &if app.marked.is_empty() {
                        "held calls".to_owned()
                    } else {
                        format!("held calls · {} marked", app.marked.len())
                    },
                    app.filter_text(View::Held),
                    || (visible.len(), app.holds.len()),
                )),
        );
    frame.render_widget(table, area);
}

fn draw_tools(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let visible = app.visible_tools();
    let shared = shared_upstream(
        app.tools
            .iter()
            .map(|t| t["upstream"].as_str().unwrap_or("")),
    );
    let rows: Vec<TableRow> = visible
        .iter()
        .map(|&i| &app.tools[i])
        .enumerate()
        .map(|(i, t)| {
            let annotations = t["annotations"]
                .as_object()
                .map(|a| {
                    a.iter()
                        .filter(|(_, v)| v.as_bool() == Some(true))
                        .map(|(k, _)| k.trim_end_matches("Hint"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "none".into());
            let changed = t["source"] == "reset";
            let calls = &t["calls"];
            let mut row = TableRow::new(vec![
                Cell::from(tool_label(
                    t["upstream"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or(""),
                    shared,
                )),
                risk_cell(t["risk"].as_str().unwrap_or(""), theme),
                Cell::from(format!(
                    "{} ({})",
                    t["suggested_risk"].as_str().unwrap_or(""),
                    t["source"].as_str().unwrap_or("")
                )),
                Cell::from(if changed { "CHANGED" } else { "" }).style(theme.urgent),
                Cell::from(annotations),
                Cell::from(format!(
                    "{} {} v{}{}",
                    t["updated_by"].as_str().unwrap_or("—"),
                    short_time(t["updated_at"].as_str().unwrap_or("")),
                    t["version"].as_u64().unwrap_or(0),
                    t["note"]
                        .as_str()
                        .map(|n| format!(" “{n}”"))
                        .unwrap_or_default()
                )),
                Cell::from(format!(
                    "{}/{}/{}",
                    calls["allow"].as_u64().unwrap_or(0),
                    calls["hold"].as_u64().unwrap_or(0),
                    calls["deny"].as_u64().unwrap_or(0)
                )),
            ]);
            if i == app.tools_selected {
                row = row.style(theme.selection);
            }
            row
        })
        .collect();
    // Below 120 columns, annotations and the last change give their room to the rest.
    let wide = area.width >= WIDE;
    let compact = area.width < MIN_WIDTH;
    let hidden = Constraint::Length(0);
    let widths = [
        Constraint::Min(24),
        Constraint::Length(12),
        if compact {
            hidden
        } else {
            Constraint::Length(if wide { 26 } else { 22 })
        },
        Constraint::Length(8),
        if wide { Constraint::Length(16) } else { hidden },
        if wide { Constraint::Min(24) } else { hidden },
        Constraint::Length(10),
    ];
    let tool_header = tool_header(shared);
    let header = [
        tool_header.as_str(),
        "risk",
        "suggested (source)",
        "",
        "annotations",
        "last change",
        "a/h/d",
    ];
    let table = Table::new(rows, widths)
        .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(
            Block::new()
                .borders(Borders::TOP)
                .border_style(theme.border)
                .title(title("tools", app.filter_text(View::Tools), || {
                    (visible.len(), app.tools.len())
                })),
        );
    frame.render_widget(table, area);
}

/// The current view's keys, most useful first, so the narrowest terminal still shows them.
fn draw_hints(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    use super::keymap::Action;
    let typing = match app.mode {
        Mode::Filter { .. } => {
            Some(" enter keep · esc undo · tool: outcome: risk: identity: upstream: · ! inverts")
        }
        Mode::Command(_) => Some(" tab completes · enter runs · esc cancels"),
        _ => None,
    };
    if let Some(text) = typing {
        frame.render_widget(Paragraph::new(text).style(theme.muted), area);
        return;
    }
    let relevant = |a: Action| match app.view {
        View::Live => !a.mutates(),
        View::Held => a != Action::Follow && a != Action::EditClass && a.risk().is_none(),
        View::Tools => !matches!(
            a,
            Action::Follow | Action::Approve | Action::Deny | Action::Mark
        ),
    };
    let mut entries: Vec<_> = app
        .keymap
        .entries(app.read_only)
        .into_iter()
        .filter(|(_, a)| relevant(*a))
        .collect();
    entries.sort_by_key(|(_, a)| !a.mutates());
    let text: Vec<String> = entries
        .into_iter()
        .map(|(keys, a)| format!("{} {}", keys[0], a.hint()))
        .collect();
    frame.render_widget(
        Paragraph::new(format!(" {}", text.join("  "))).style(theme.muted),
        area,
    );
}

fn draw_status(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let line = match &app.mode {
        Mode::Command(cmd) => Line::from(format!(":{cmd}▏")),
        Mode::Filter { text, error, .. } => {
            let mut spans = vec![Span::raw(format!("/{text}▏"))];
            if let Some(e) = error {
                spans.push(Span::styled(format!("  {e}"), theme.deny));
            }
            Line::from(spans)
        }
        _ => match (&app.flash, &app.hint) {
            (Some((m, _)), _) => Line::from(format!(" {m}")),
            (None, Some(hint)) => Line::from(Span::styled(format!(" {hint}"), theme.header)),
            (None, None) => Line::default(),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// The selected row in full: beside the table from 120 columns, over it below that.
fn draw_detail(frame: &mut Frame, app: &App, theme: &Theme, area: Rect, over: bool) {
    let lines = match app.view {
        View::Live => app
            .selected_row()
            .map(|row| call_lines(app, theme, &row.event, Some(row.seq))),
        View::Held => app.selected_hold().map(|h| {
            let mut call = serde_json::to_value(&h.call).unwrap_or_default();
            call["call_id"] = Value::String(h.call_id.clone());
            let mut lines = call_lines(app, theme, &call, None);
            lines.insert(1, Line::from(format!("expires {}", h.expires_at)));
            lines
        }),
        View::Tools => app
            .visible_tools()
            .get(app.tools_selected)
            .map(|&i| tool_lines(&app.tools[i])),
    };
    let Some(lines) = lines else {
        return;
    };
    let rect = if over {
        popup(
            area,
            area.width.saturating_sub(8),
            area.height.saturating_sub(2),
        )
    } else {
        area
    };
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .border_style(theme.border)
                .title(" details (esc closes) "),
        ),
        rect,
    );
}

fn call_lines<'a>(app: &App, theme: &Theme, e: &Value, seq: Option<u64>) -> Vec<Line<'a>> {
    let call_id = e["call_id"].as_str().unwrap_or("");
    let fate = match app.fates.get(call_id) {
        Some(f) => format!("{} by {}", f.resolution.as_str(), f.by),
        None => "—".into(),
    };
    let upstream = match app.completions.get(call_id) {
        Some(c) => format!(
            "{} (HTTP {}, {} ms)",
            c["result"].as_str().unwrap_or("?"),
            c["upstream_status"]
                .as_u64()
                .map_or("-".into(), |s| s.to_string()),
            c["duration_ms"].as_u64().unwrap_or(0)
        ),
        None => "—".into(),
    };
    let seq = seq.map(|s| format!("  seq {s}")).unwrap_or_default();
    let mut lines = vec![
        Line::from(format!("call {call_id}{seq}")),
        Line::from(vec![
            Span::raw("outcome "),
            Span::styled(
                e["outcome"].as_str().unwrap_or("").to_owned(),
                match e["outcome"].as_str() {
                    Some("allow") => theme.allow,
                    Some("hold") => theme.hold,
                    _ => theme.deny,
                },
            ),
        ]),
        Line::from(format!("reason  {}", e["reason"].as_str().unwrap_or(""))),
        Line::from(format!("policy  {}", e["policy_ids"])),
        Line::from(format!("hold    {fate}")),
        Line::from(format!("result  {upstream}")),
        Line::from(format!(
            "took    {}µs",
            e["decision_us"].as_u64().unwrap_or(0)
        )),
        Line::from("arguments:"),
    ];
    let args = serde_json::to_string_pretty(&e["args"]).unwrap_or_default();
    lines.extend(args.lines().map(|l| Line::from(format!("  {l}"))));
    lines
}

fn tool_lines<'a>(t: &Value) -> Vec<Line<'a>> {
    let text = |k: &str| t[k].as_str().unwrap_or("—").to_owned();
    let mut lines = vec![
        Line::from(format!("tool       {}/{}", text("upstream"), text("name"))),
        Line::from(format!("title      {}", text("title"))),
        Line::from(format!(
            "risk       {} (source {})",
            text("risk"),
            text("source")
        )),
        Line::from(format!("suggested  {}", text("suggested_risk"))),
        Line::from(format!(
            "changed    by {} at {}, v{}",
            text("updated_by"),
            text("updated_at"),
            t["version"].as_u64().unwrap_or(0)
        )),
        Line::from(format!("note       {}", text("note"))),
        Line::from(format!("definition {}", text("definition_sha256"))),
        Line::from(format!("calls      {}", t["calls"])),
        Line::from("annotations:"),
    ];
    let annotations = serde_json::to_string_pretty(&t["annotations"]).unwrap_or_default();
    lines.extend(annotations.lines().map(|l| Line::from(format!("  {l}"))));
    lines
}

fn draw_help(frame: &mut Frame, app: &App, area: Rect) {
    let lines: Vec<Line> = app
        .keymap
        .entries(app.read_only)
        .into_iter()
        .map(|(keys, action)| Line::from(format!(" {:<14} {}", keys.join(" "), action.describe())))
        .collect();
    let rect = popup(area, 72, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        rect,
    );
}

fn draw_confirm(frame: &mut Frame, confirm: &super::app::Confirm, theme: &Theme, area: Rect) {
    let verb = if confirm.approve { "Approve" } else { "Deny" };
    let mut lines = match confirm.holds.as_slice() {
        [h] => {
            let call = serde_json::to_value(&h.call).unwrap_or_default();
            let mut lines = vec![
                Line::from(format!("{verb} held call {}?", short(&h.call_id))),
                Line::from(format!("identity  {}", identity_label(&call))),
                Line::from(format!("tool      {}/{}", h.call.upstream, h.call.tool)),
                Line::from(format!("target    {}", target_label(&call))),
                Line::from(format!("risk      {}", h.call.risk.as_str())),
                Line::from("arguments:"),
            ];
            let args = serde_json::to_string_pretty(&h.call.args).unwrap_or_default();
            lines.extend(args.lines().take(8).map(|l| Line::from(format!("  {l}"))));
            lines
        }
        many => bulk_summary(verb, many),
    };
    let cursor = if confirm.editing { "▏" } else { "" };
    lines.push(Line::from(format!("reason: {}{cursor}", confirm.reason)));
    lines.push(Line::from(""));
    let keys = if confirm.editing {
        "type the reason · enter done"
    } else {
        "y confirm · r reason · [enter] cancel"
    };
    lines.push(Line::from(Span::styled(
        keys,
        Style::new().add_modifier(Modifier::BOLD),
    )));
    let style = if confirm.approve {
        theme.allow
    } else {
        theme.deny
    };
    let rect = popup(area, 72, lines.len() as u16 + 2);
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

/// One summary for a bulk decision: how many, of which classes, by whom, then each call.
fn bulk_summary<'a>(verb: &str, holds: &[crate::api::HoldView]) -> Vec<Line<'a>> {
    let count_of = |label: &dyn Fn(&crate::api::HoldView) -> String| {
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
    let as_value = |h: &crate::api::HoldView| serde_json::to_value(&h.call).unwrap_or_default();
    let mut lines = vec![
        Line::from(Span::styled(
            format!("{verb} {} held calls?", holds.len()),
            Style::new().add_modifier(Modifier::BOLD),
        )),
        Line::from(format!(
            "risk      {}",
            count_of(&|h| h.call.risk.as_str().to_owned())
        )),
        Line::from(format!(
            "identity  {}",
            count_of(&|h| identity_label(&as_value(h)))
        )),
        Line::from(""),
    ];
    const LISTED: usize = 8;
    for h in holds.iter().take(LISTED) {
        lines.push(Line::from(format!(
            "  {:<12} {:<28} {:<16} {}",
            h.call.risk.as_str(),
            format!("{}/{}", h.call.upstream, h.call.tool),
            target_label(&as_value(h)),
            short(&h.call_id)
        )));
    }
    if holds.len() > LISTED {
        lines.push(Line::from(format!("  … and {} more", holds.len() - LISTED)));
    }
    lines
}

fn draw_class_picker(frame: &mut Frame, app: &App, index: usize, theme: &Theme, area: Rect) {
    let Some(&i) = app.visible_tools().get(app.tools_selected) else {
        return;
    };
    let tool = &app.tools[i];
    let current = tool["risk"].as_str().unwrap_or("");
    let suggested = tool["suggested_risk"].as_str().unwrap_or("");
    let mut lines = vec![
        Line::from(format!(
            "{}/{}",
            tool["upstream"].as_str().unwrap_or(""),
            tool["name"].as_str().unwrap_or("")
        )),
        Line::from(""),
    ];
    for (n, class) in CLASSES.iter().enumerate() {
        let name = class.as_str();
        let key = match class {
            crate::api::Risk::Read => super::keymap::Action::SetRead,
            crate::api::Risk::Write => super::keymap::Action::SetWrite,
            crate::api::Risk::Destructive => super::keymap::Action::SetDestructive,
            crate::api::Risk::Unclassified => super::keymap::Action::SetUnclassified,
        };
        let mut notes = Vec::new();
        if name == current {
            notes.push("current");
        }
        if name == suggested {
            notes.push("suggested");
        }
        let text = format!(
            "{} {:<3} {name:<13}{}",
            if n == index { "▶" } else { " " },
            app.keymap.key_for(key).unwrap_or(""),
            notes.join(", ")
        );
        let mut line = Line::from(text);
        if n == index {
            line = line.style(theme.selection);
        }
        lines.push(line);
    }
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "enter set · esc cancel",
        Style::new().add_modifier(Modifier::BOLD),
    )));
    let rect = popup(area, 44, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" class ")
                .border_style(theme.border),
        ),
        rect,
    );
}
