//! The one scrolling table every list uses: a selection that always stays on screen,
//! columns that share the width by what they hold, and cells cut with `…`.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Row, Table};
use unicode_width::UnicodeWidthStr;

use super::keymap::Action;
use super::text::fit;
use super::theme::Theme;

/// A list's selection and the first row on screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListState {
    pub selected: usize,
    pub offset: usize,
}

impl ListState {
    /// Moves by `delta` rows within `len`, and scrolls so that the selection shows on a
    /// page of `page` rows.
    pub fn move_by(&mut self, delta: i64, len: usize, page: usize) {
        let last = len.saturating_sub(1) as i64;
        self.selected = (self.selected as i64 + delta).clamp(0, last.max(0)) as usize;
        self.scroll_into_view(len, page);
    }

    pub fn select(&mut self, index: usize, len: usize, page: usize) {
        self.selected = index.min(len.saturating_sub(1));
        self.scroll_into_view(len, page);
    }

    /// Keeps the selection on a page of `page` rows, moving the page as little as it can.
    pub fn scroll_into_view(&mut self, len: usize, page: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
        let page = page.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
        // No empty space below the last row when the list could fill the page.
        self.offset = self.offset.min(len.saturating_sub(page));
    }

    /// Puts the selection back on the row keyed `anchor` after the list (now `keys`, in
    /// order) changed, or keeps its place when that row is gone, and returns the gone
    /// row's key; then anchors the row selected. A selection is a row, not a position.
    pub fn reanchor<K: PartialEq + Clone>(
        &mut self,
        anchor: &mut Option<K>,
        keys: &[K],
        page: usize,
    ) -> Option<K> {
        let found = anchor
            .as_ref()
            .and_then(|a| keys.iter().position(|k| k == a));
        if let Some(i) = found {
            self.selected = i;
        }
        self.scroll_into_view(keys.len(), page);
        let gone = anchor
            .take()
            .filter(|_| found.is_none() && !keys.is_empty());
        *anchor = keys.get(self.selected).cloned();
        gone
    }

    /// Where a navigation key moves the selection in a list of `len`, or `None` for a key
    /// that does not navigate.
    pub fn target(&self, action: Action, len: usize, page: usize) -> Option<usize> {
        let index = self.selected as i64;
        let to = match action {
            Action::Up => index - 1,
            Action::Down => index + 1,
            Action::PageUp => index - page as i64,
            Action::PageDown => index + page as i64,
            Action::Top => 0,
            Action::Bottom => len as i64,
            _ => return None,
        };
        Some(to.clamp(0, len.saturating_sub(1) as i64) as usize)
    }

    /// The selected index in a list of `len`, if the list has rows.
    pub fn selected_in(&self, len: usize) -> Option<usize> {
        (len > 0).then(|| self.selected.min(len - 1))
    }

    /// The rows on a page of `page` rows, with the selection among them whatever the
    /// stored offset says: drawing never shows a page without the selected row. Unlike a
    /// key's move, it never pulls rows up to fill the page: a list that loses rows at
    /// its end (a paused view whose oldest rows leave the ring) does not move on screen.
    pub fn window(&self, len: usize, page: usize) -> std::ops::Range<usize> {
        let page = page.max(1);
        let selected = self.selected.min(len.saturating_sub(1));
        let mut offset = self.offset.min(selected);
        if selected >= offset + page {
            offset = selected + 1 - page;
        }
        // A selection past the end was lost anyway: then the page is filled.
        if self.selected >= len {
            offset = offset.min(len.saturating_sub(page));
        }
        offset..(offset + page).min(len)
    }
}

/// A column: its header, the narrowest it may get, and the widest it is useful.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: String,
    pub min: u16,
    pub max: u16,
    /// Left out first when the rest would have to be cut to make room for it.
    pub optional: bool,
}

impl Column {
    pub fn new(header: impl Into<String>, min: u16, max: u16) -> Column {
        Column {
            header: header.into(),
            min,
            max,
            optional: false,
        }
    }

    pub fn optional(mut self) -> Column {
        self.optional = true;
        self
    }
}

/// One cell's text and style.
pub type Text = (String, Style);

/// Shares `total` columns among `columns` (one space between each): every column gets
/// what its widest cell needs when all fit; otherwise optional columns go first (from
/// the right), then short columns keep their text and long ones are cut to one common
/// width, never below their minimum. Columns that do not fit even at their minimum are
/// dropped from the right.
pub fn widths(columns: &[Column], rows: &[Vec<Text>], total: u16) -> Vec<u16> {
    let mut want: Vec<u16> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let widest = rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|(t, _)| t.width())
                .chain([c.header.width()])
                .max()
                .unwrap_or(0) as u16;
            widest.clamp(c.min, c.max.max(c.min))
        })
        .collect();
    let space = |n: usize| (n as u16).saturating_sub(1);
    let used = |want: &[u16]| {
        let n = want.iter().filter(|w| **w > 0).count();
        want.iter().sum::<u16>() + space(n)
    };
    for i in (0..columns.len()).rev() {
        if used(&want) <= total {
            break;
        }
        if columns[i].optional {
            want[i] = 0;
        }
    }
    let kept: Vec<usize> = (0..columns.len())
        .filter(|&i| want[i] > 0 || !columns[i].optional)
        .collect();
    let mut out = vec![0; columns.len()];
    let kept_columns: Vec<Column> = kept.iter().map(|&i| columns[i].clone()).collect();
    let kept_want: Vec<u16> = kept.iter().map(|&i| want[i]).collect();
    for (w, &i) in share(&kept_columns, &kept_want, total)
        .into_iter()
        .zip(&kept)
    {
        out[i] = w;
    }
    out
}

/// Shares `total` among columns that each want a width (see `widths`).
fn share(columns: &[Column], want: &[u16], total: u16) -> Vec<u16> {
    let mut shown = columns.len();
    let space = |n: usize| (n as u16).saturating_sub(1);
    while shown > 1 && columns[..shown].iter().map(|c| c.min).sum::<u16>() + space(shown) > total {
        shown -= 1;
    }
    let available = total.saturating_sub(space(shown));
    let mut out: Vec<u16> = want[..shown].to_vec();
    if out.iter().sum::<u16>() > available {
        // The common width: the largest level at which everything still fits.
        let level = (0..=available)
            .rev()
            .find(|&level| {
                (0..shown)
                    .map(|i| want[i].min(level.max(columns[i].min)))
                    .sum::<u16>()
                    <= available
            })
            .unwrap_or(0);
        for (i, w) in out.iter_mut().enumerate() {
            *w = want[i].min(level.max(columns[i].min));
        }
    }
    out.resize(columns.len(), 0);
    out
}

/// What one frame of a list shows: the rows of `window` (only those are built), and the
/// selected row's index in the whole list, if one is highlighted.
pub struct Page<'a> {
    pub title: String,
    pub columns: &'a [Column],
    pub rows: Vec<(Vec<Text>, Style)>,
    pub window: std::ops::Range<usize>,
    pub selected: Option<usize>,
}

pub fn draw(frame: &mut Frame, area: Rect, theme: &Theme, page: Page) {
    let Page {
        title,
        columns,
        rows,
        window,
        selected,
    } = page;
    let selected = selected
        .filter(|s| window.contains(s))
        .map(|s| s - window.start);
    let title = Line::from(title);
    let (border, selection) = (theme.border, theme.selection);
    let cells: Vec<Vec<Text>> = rows.iter().map(|(c, _)| c.clone()).collect();
    let widths = widths(columns, &cells, area.width);
    // Columns left out get no cell at all: ratatui would still put spacing beside them.
    let shown: Vec<usize> = (0..columns.len()).filter(|&i| widths[i] > 0).collect();
    let cut = |text: &str, i: usize| fit(text, widths[i] as usize);
    let header = Row::new(
        shown
            .iter()
            .map(|&i| Cell::from(cut(&columns[i].header, i))),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let body: Vec<Row> = rows
        .into_iter()
        .enumerate()
        .map(|(n, (cells, style))| {
            let row = Row::new(shown.iter().filter_map(|&i| {
                cells
                    .get(i)
                    .map(|(text, s)| Cell::from(cut(text, i)).style(*s))
            }))
            .style(style);
            if Some(n) == selected {
                row.style(selection)
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(body, shown.iter().map(|&i| Constraint::Length(widths[i])))
        .column_spacing(1)
        .header(header)
        .block(
            Block::new()
                .borders(Borders::TOP)
                .border_style(border)
                .title(title),
        );
    frame.render_widget(table, area);
}

/// How many rows a table in `area` shows: the area less its title and header lines.
pub fn page(area_height: u16) -> usize {
    area_height.saturating_sub(2).max(1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_stays_on_a_page_whatever_the_moves() {
        let mut s = ListState::default();
        for step in 0..100 {
            s.move_by(1, 100, 17);
            assert!(
                s.window(100, 17).contains(&s.selected),
                "step {step}: {s:?}"
            );
        }
        assert_eq!((s.selected, s.offset), (99, 83));
        s.move_by(-20, 100, 17);
        assert_eq!((s.selected, s.offset), (79, 79));
        s.move_by(-1000, 100, 17);
        assert_eq!((s.selected, s.offset), (0, 0));
        // A list that shrank under the selection keeps it on the last row.
        let stale = ListState {
            selected: 50,
            offset: 40,
        };
        assert_eq!(stale.window(10, 17), 0..10);
    }

    #[test]
    fn columns_share_the_width_by_what_they_hold() {
        let columns = [
            Column::new("time", 8, 11),
            Column::new("identity", 8, 40),
            Column::new("tool", 10, 60),
            Column::new("target", 8, 40),
        ];
        let cell = |t: &str| (t.to_owned(), Style::new());
        let rows = vec![vec![
            cell("10:00:01"),
            cell("user:alice@example.com"),
            cell("atlassian/confluence_update_page_with_a_very_long_name_indeed"),
            cell("confluence_page:12345"),
        ]];
        // Room for everything: each column as wide as its text.
        assert_eq!(widths(&columns, &rows, 200), [8, 22, 60, 21]);
        // Not enough: short columns keep their text, the long ones share what is left.
        let w = widths(&columns, &rows, 80);
        assert_eq!(w.iter().sum::<u16>() + 3, 80, "{w:?}");
        assert_eq!(w[0], 8);
        assert!(w[2] <= 26 && w[1] >= 21, "{w:?}");
        // Too narrow for every minimum: the rightmost columns go.
        assert_eq!(widths(&columns, &rows, 30)[3], 0);
    }
}
