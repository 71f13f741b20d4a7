//! The summary view (`:stats`): how fast decisions come and how they split, the queue,
//! each upstream's health and the policy in force, from the event stream and
//! `GET /status`. Its first line is also the header's strip.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Sparkline};

use super::Ctx;
use crate::api::{CallCounts, StatusView};
use crate::console::keymap::Action;
use crate::console::model::Model;
use crate::console::text::{countdown, fit};

/// Seconds over which the header's rate is averaged.
const RATE_SECS: usize = 10;

pub fn actions() -> Vec<Action> {
    vec![Action::Back]
}

/// Decisions a second over the last `RATE_SECS` seconds.
pub fn rate(model: &Model, now: DateTime<Utc>) -> f64 {
    let series = model.rates.series(now, RATE_SECS);
    series.iter().sum::<u64>() as f64 / RATE_SECS as f64
}

fn shares(c: &CallCounts) -> String {
    let total = (c.allow + c.hold + c.deny).max(1) as f64;
    let pct = |n: u64| (n as f64 * 100.0 / total).round() as u64;
    format!(
        "allow {} ({}%) · hold {} ({}%) · deny {} ({}%)",
        c.allow,
        pct(c.allow),
        c.hold,
        pct(c.hold),
        c.deny,
        pct(c.deny)
    )
}

/// How long the oldest open hold has waited, as `mm:ss`.
pub fn oldest_wait(model: &Model, now: DateTime<Utc>) -> Option<String> {
    let hold = model.oldest_pending()?;
    let minted = uuid::Uuid::parse_str(&hold.call_id).ok()?.get_timestamp()?;
    let (secs, nanos) = minted.to_unix();
    let at = DateTime::from_timestamp(secs as i64, nanos)?;
    Some(countdown((now - at).num_seconds()))
}

/// The header's one-line summary: rate, pending and the oldest, the policy version.
/// While out of date (`stale_since`), the rate is unknown and the clock stops there.
pub fn strip(model: &Model, now: DateTime<Utc>, stale_since: Option<DateTime<Utc>>) -> Vec<String> {
    let clock = stale_since.map_or(now, |s| s.min(now));
    let mut parts = vec![match stale_since {
        Some(_) => "—/s".to_owned(),
        None => format!("{:.1}/s", rate(model, now)),
    }];
    if let Some(wait) = oldest_wait(model, clock) {
        parts.push(format!("oldest {wait}"));
    }
    if let Some(v) = model.policy_version {
        parts.push(format!("policy v{v}"));
    }
    parts
}

pub fn draw(frame: &mut Frame, area: Rect, ctx: &Ctx, status: Option<&StatusView>) {
    let model = ctx.model;
    let now = ctx.clock();
    let width = area.width as usize;
    let [title, spark, rest] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(if area.height >= 30 { 8 } else { 4 }),
        Constraint::Min(1),
    ])
    .areas(area);
    // One bar a second, as many seconds as the screen is wide (up to the five minutes kept).
    let seconds = (area.width as usize).min(crate::console::model::RATE_WINDOW);
    let series = model.rates.series(now, seconds);
    let peak = series.iter().copied().max().unwrap_or(0);
    frame.render_widget(
        Block::new()
            .borders(Borders::TOP)
            .border_style(ctx.theme.border)
            .title(fit(
                &format!(
                    " decisions a second, last {seconds} s (peak {peak}/s, now {:.1}/s) ",
                    rate(model, now)
                ),
                width,
            )),
        title,
    );
    frame.render_widget(
        Sparkline::default().data(&series).style(ctx.theme.allow),
        spark,
    );
    let mut lines = vec![Line::from(fit(
        &format!("seen here  {}", shares(&model.rates.seen)),
        width,
    ))];
    if let Some(s) = status {
        lines.push(Line::from(fit(
            &format!("gateway    {} since start", shares(&s.counters.decisions)),
            width,
        )));
    }
    let pending = model.pending_count();
    let oldest = oldest_wait(model, now).unwrap_or_else(|| "—".to_owned());
    lines.push(Line::from(format!(
        "held       {pending} open · the oldest has waited {oldest}"
    )));
    let policy = match (model.policy_version, status.and_then(|s| s.policy.as_ref())) {
        (Some(v), Some(p)) if p.version == v => {
            format!("v{v} ({})", &p.sha256.get(..12).unwrap_or(""))
        }
        (Some(v), _) => format!("v{v}"),
        (None, _) => "—".to_owned(),
    };
    lines.push(Line::from(format!("policy     {policy}")));
    lines.push(Line::from(""));
    match status {
        Some(s) => {
            lines.push(Line::from(fit(
                &format!(
                    "gateway {} · up {} · store {} · {} subscribers",
                    s.version,
                    countdown(s.uptime_secs as i64),
                    if s.ready { "ready" } else { "NOT READY" },
                    s.counters.event_subscribers
                ),
                width,
            )));
            for u in &s.upstreams {
                let style = match u.health.as_str() {
                    "ok" => ctx.theme.allow,
                    "unknown" => Style::new(),
                    _ => ctx.theme.deny,
                };
                let processes = u.stdio.as_ref().map_or(String::new(), |p| {
                    format!(
                        " · {}/{} processes · {} restart{}",
                        p.processes,
                        p.max_processes,
                        p.restarts,
                        if p.restarts == 1 { "" } else { "s" }
                    )
                });
                lines.push(Line::from(vec![
                    Span::raw(fit(&format!("  {:<16} ", u.name), 19)),
                    Span::styled(format!("{:<12}", u.health), style),
                    Span::raw(fit(
                        &format!(" {} tools · {}{processes}", u.tools, u.url),
                        width.saturating_sub(31),
                    )),
                ]));
                // A stdio server that died: how, when, and what it said last.
                if let Some(exit) = u.stdio.as_ref().and_then(|p| p.last_exit.as_ref()) {
                    let said = exit
                        .stderr
                        .last()
                        .map(|l| {
                            let shown: String = l
                                .chars()
                                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                                .collect();
                            format!(" · stderr: {shown}")
                        })
                        .unwrap_or_default();
                    lines.push(Line::from(vec![
                        Span::raw(" ".repeat(19)),
                        Span::styled(
                            fit(
                                &format!(
                                    "last exit {}: {}{said}",
                                    exit.at.format("%Y-%m-%d %H:%M:%S UTC"),
                                    exit.how
                                ),
                                width.saturating_sub(19),
                            ),
                            ctx.theme.deny,
                        ),
                    ]));
                }
            }
        }
        None => lines.push(Line::from("gateway status not loaded yet")),
    }
    frame.render_widget(Paragraph::new(lines), rest);
}
