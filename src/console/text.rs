//! How the console words things: labels for identities, targets and ids, times, and
//! text cut to a width with `…`.

use chrono::{DateTime, Utc};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use crate::api::Target;

/// A call's target as `kind:id`, or nothing. (Control characters an agent put in a name
/// never reach the terminal: ratatui's buffer drops them.)
pub fn target_label(target: Option<&Target>) -> String {
    target.map(Target::label).unwrap_or_default()
}

/// The short id the console shows and `toolgate approve` accepts.
pub use crate::api::short_id as short;

/// `text` cut to `width` columns, ending with `…` when anything was cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// A message cut to `width` at a word boundary, with `…`: never a stray half word.
pub fn fit_words(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    for word in text.split(' ') {
        let next = if out.is_empty() {
            word.width()
        } else {
            out.width() + 1 + word.width()
        };
        if next + 1 > width {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if out.is_empty() {
        return fit(text, width);
    }
    out.push('…');
    out
}

/// Spans cut to `width` columns as a whole line, `…` where it was cut.
pub fn fit_line<'a>(spans: Vec<Span<'a>>, width: usize) -> Line<'a> {
    let total: usize = spans.iter().map(|s| s.content.width()).sum();
    if total <= width {
        return Line::from(spans);
    }
    // Whole spans, while they fit with room for `…`; only a first span too wide for the
    // line is itself cut. A span is a unit of meaning (`oldest 04:21`), never half shown.
    let mut out = Vec::new();
    let mut left = width;
    for span in spans {
        let w = span.content.width();
        if w < left {
            left -= w;
            out.push(span);
        } else {
            if out.is_empty() {
                out.push(Span::styled(fit(&span.content, left), span.style));
            } else {
                out.push(Span::raw("…"));
            }
            break;
        }
    }
    Line::from(out)
}

/// An event's RFC 3339 time as the operator reads it, in UTC like every time the
/// gateway, its logs and the CLI print: `10:04:05` today, `11-26 10:04` on another day.
pub fn time_label(ts: &str, now: DateTime<Utc>) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(ts) else {
        return ts.get(11..19).unwrap_or(ts).to_owned();
    };
    let t = t.with_timezone(&Utc);
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

/// A moment as `HH:MM:SS` UTC, for "since" in the header and messages.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// Seconds as `mm:ss`, `h:mm:ss` from an hour, `Nd HHh` from a day.
pub fn countdown(secs: i64) -> String {
    let secs = secs.max(0);
    if secs >= 86_400 {
        format!("{}d {:02}h", secs / 86_400, secs / 3600 % 24)
    } else if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_ends_with_an_ellipsis_and_fits() {
        assert_eq!(fit("confluence_update_page", 10), "confluenc…");
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("abc", 0), "");
        assert_eq!(
            fit_words("approved 3 of 4; already denied by bob", 20),
            "approved 3 of 4;…"
        );
        assert_eq!(fit_words("oneverylongword", 6), "oneve…");
        let line = fit_line(vec![Span::raw("a b c"), Span::raw(" d e f")], 7);
        assert_eq!(
            line.to_string(),
            "a b c…",
            "a span is shown whole or not at all"
        );
        let line = fit_line(vec![Span::raw("abcdefghij")], 5);
        assert_eq!(line.to_string(), "abcd…");
    }

    #[test]
    fn times_show_the_date_when_not_from_today() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time_label("2026-11-27T08:59:58.120Z", now), "08:59:58");
        assert_eq!(time_label("2026-11-26T23:59:58.120Z", now), "11-26 23:59");
    }

    #[test]
    fn countdowns_and_short_ids() {
        assert_eq!(countdown(75), "01:15");
        assert_eq!(countdown(3725), "1:02:05");
        assert_eq!(countdown(-3), "00:00");
        assert_eq!(countdown(2 * 86_400 + 7300), "2d 02h");
        assert_eq!(short("0190abcd-0000-7000-8000-00000000beef"), "0000beef");
    }
}
