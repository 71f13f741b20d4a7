//! Log fields that carry what a client (or an upstream) sent.
//!
//! tracing's formatter writes a `%value` as it is, so a newline in a request path or a
//! tool name would start a line of the attacker's choosing in the gateway's log, and
//! spaces could add fields of their choosing to a line. [`Escaped`] writes any `Display`
//! value quoted, with control and invisible formatting characters escaped:
//! `upstream = %Escaped(&name)`.

use std::fmt::{self, Write as _};

/// A `Display` value, written as one quoted token that cannot break out of its field.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write!(EscapingWriter(f), "{}", self.0)?;
        f.write_char('"')
    }
}

impl<T: fmt::Display> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if needs_escape(c) => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// C0 and C1 controls (ANSI sequences among them), DEL, the Unicode line and paragraph
/// separators, and the bidirectional overrides that make a line read other than it is.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn a_value_cannot_start_a_line_or_a_field_of_its_own() {
        let forged =
            "x\n2026-01-01T00:00:00Z  INFO forged\r\x1b[31m\u{2028}\u{202e} outcome=\"allow\\\"";
        assert_eq!(
            Escaped(forged).to_string(),
            r#""x\n2026-01-01T00:00:00Z  INFO forged\r\u{1b}[31m\u{2028}\u{202e} outcome=\"allow\\\"""#
        );
        assert_eq!(Escaped("docs").to_string(), "\"docs\"");
        assert_eq!(Escaped("Café ü").to_string(), "\"Café ü\"");
    }

    #[test]
    fn errors_are_escaped_through_their_display() {
        let e = std::io::Error::other("bad\nline");
        assert_eq!(Escaped(&e).to_string(), r#""bad\nline""#);
    }
}
