//! A reference event-stream reader, after the WHATWG HTML standard's "Server-sent
//! events" parsing rules, giving the data of each event a client would dispatch.

/// How a stream's end is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEnd {
    /// As the standard says: a last line without its end of line is not a line, and
    /// data not yet dispatched by an empty line is discarded.
    Discard,
    /// As if the stream had ended with an end of line and an empty line.
    Dispatch,
}

/// The `data` of each event dispatched from a complete stream body.
pub fn events(body: &[u8], at_end: AtEnd) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut data = String::new();
    let mut dispatch = |data: &mut String| {
        // An empty data buffer dispatches nothing; otherwise drop its last LF.
        if !data.is_empty() {
            data.pop();
            events.push(std::mem::take(data));
        }
    };
    let mut rest = text;
    loop {
        // A line ends at CRLF, LF or CR.
        let (line, next, ended) = match rest.find(['\r', '\n']) {
            Some(i) => {
                let after = if rest[i..].starts_with("\r\n") {
                    i + 2
                } else {
                    i + 1
                };
                (&rest[..i], &rest[after..], true)
            }
            None => (rest, "", false),
        };
        if !ended {
            if at_end == AtEnd::Dispatch {
                if !line.is_empty() {
                    field(line, &mut data);
                }
                dispatch(&mut data);
            }
            break;
        }
        if line.is_empty() {
            dispatch(&mut data);
        } else {
            field(line, &mut data);
        }
        rest = next;
    }
    events
}

fn field(line: &str, data: &mut String) {
    if line.starts_with(':') {
        return; // a comment
    }
    let (name, value) = match line.split_once(':') {
        Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    };
    if name == "data" {
        data.push_str(value);
        data.push('\n');
    }
    // event, id and retry do not change an event's data.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standards_examples() {
        let body = b"data: YHOO\ndata: +2\ndata: 10\n\n";
        assert_eq!(events(body, AtEnd::Discard), ["YHOO\n+2\n10"]);
        let body = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
        assert_eq!(
            events(body, AtEnd::Discard),
            ["first event", "second event"]
        );
        assert_eq!(
            events(body, AtEnd::Dispatch),
            ["first event", "second event", " third event"]
        );
        let body = b"data\n\ndata\ndata\n\ndata:";
        assert_eq!(events(body, AtEnd::Discard), ["", "\n"]);
        assert_eq!(
            events(b"\xef\xbb\xbfdata: a\r\rdata: b\r\n\r\n", AtEnd::Discard),
            ["a", "b"]
        );
    }
}
