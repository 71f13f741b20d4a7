//! Watching an answer go by: finds the JSON-RPC response to one request id in a JSON
//! body or among SSE events, as the bytes pass, keeping at most one event at a time.
//!
//! Both the record of how a call ended and the catalog's reading of a `tools/list`
//! answer need to know the moment the response itself has gone through, because a
//! client may hang up as soon as it has it, long before the upstream ends its stream.

use serde_json::Value;

use super::super::mcp;

/// The most of one event (or one JSON body) kept to read it. Every answer in flight
/// may hold this much; a bigger event is passed unread (and may have been the answer).
pub const MAX_OBSERVED_BYTES: usize = 1024 * 1024;

pub struct AnswerFinder {
    id: Value,
    sse: bool,
    /// SSE: the events as they complete.
    events: SseEvents,
    /// JSON: the body read so far.
    body: Vec<u8>,
    /// The current event (or the body) outgrew `MAX_OBSERVED_BYTES`, and is skipped.
    overflowed: bool,
    answer: Option<Found>,
}

/// What was found of the response.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The response message itself.
    Message(Value),
    /// An event or body too large to read: it may have been the response.
    TooLarge,
}

impl AnswerFinder {
    pub fn new(content_type: &str, id: Value) -> Self {
        Self {
            id,
            sse: content_type.starts_with("text/event-stream"),
            events: SseEvents::default(),
            body: Vec::new(),
            overflowed: false,
            answer: None,
        }
    }

    pub fn is_sse(&self) -> bool {
        self.sse
    }

    /// Reads the next bytes; true once the response has gone by. A JSON body is only
    /// read whole, at `end`.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.answer.is_some() {
            return true;
        }
        if !self.sse {
            self.overflowed |= self.body.len() + chunk.len() > MAX_OBSERVED_BYTES;
            if self.overflowed {
                self.body = Vec::new();
            } else {
                self.body.extend_from_slice(chunk);
            }
            return false;
        }
        for event in self.events.push(chunk) {
            self.read(&event);
            if self.answer.is_some() {
                return true;
            }
        }
        if self.events.pending_len() > MAX_OBSERVED_BYTES {
            self.events.skip_pending();
            self.overflowed = true;
        }
        false
    }

    /// The body ended: reads a JSON body, or an SSE event left unterminated.
    pub fn end(&mut self) -> Option<&Found> {
        if self.answer.is_none() {
            let rest = if self.sse {
                self.events.take_rest()
            } else {
                std::mem::take(&mut self.body)
            };
            self.read(&rest);
        }
        self.answer.as_ref()
    }

    /// Reads one whole event, or the whole body.
    fn read(&mut self, bytes: &[u8]) {
        if std::mem::take(&mut self.overflowed) {
            self.answer.get_or_insert(Found::TooLarge);
            return;
        }
        let content_type = if self.sse {
            "text/event-stream"
        } else {
            "application/json"
        };
        if let Some(m) = mcp::response_messages(content_type, bytes)
            .into_iter()
            .find(|m| {
                m.get("id") == Some(&self.id)
                    && (m.get("result").is_some() || m.get("error").is_some())
            })
        {
            self.answer = Some(Found::Message(m));
        }
    }
}

/// Splits an SSE stream into whole events as its bytes arrive.
#[derive(Default)]
pub struct SseEvents {
    pending: Vec<u8>,
}

impl SseEvents {
    /// The events `chunk` completes, each with the blank line that ends it.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending, chunk) {
            self.pending.extend_from_slice(&chunk[..end]);
            out.push(std::mem::take(&mut self.pending));
            chunk = &chunk[end..];
        }
        self.pending.extend_from_slice(chunk);
        out
    }

    /// The bytes of an event not ended yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Forgets the event not ended yet, all but the bytes that may begin its end.
    pub fn skip_pending(&mut self) {
        let keep = self.pending.len().saturating_sub(3);
        self.pending.drain(..keep);
    }
}

/// Where, in `next`, the event that `pending` began ends (just past its blank line).
fn event_end(pending: &[u8], next: &[u8]) -> Option<usize> {
    // The three bytes before the one looked at; the boundary may straddle the two.
    let mut last = [0u8; 3];
    for &b in &pending[pending.len().saturating_sub(3)..] {
        last = [last[1], last[2], b];
    }
    for (i, &b) in next.iter().enumerate() {
        let blank_line = match b {
            b'\n' => last[2] == b'\n' || last == *b"\r\n\r",
            b'\r' => last[2] == b'\r',
            _ => false,
        };
        if blank_line {
            return Some(i + 1);
        }
        last = [last[1], last[2], b];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feed_in_pieces(content_type: &str, body: &[u8], piece: usize) -> (bool, Option<Found>) {
        let mut finder = AnswerFinder::new(content_type, json!(7));
        let mut seen_at_feed = false;
        for chunk in body.chunks(piece) {
            seen_at_feed |= finder.feed(chunk);
        }
        (seen_at_feed, finder.end().cloned())
    }

    #[test]
    fn the_response_is_found_in_an_sse_stream_split_anywhere() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"isError\":true}}\r\n\r\n: more\n\n";
        for piece in 1..body.len() {
            let (seen, found) = feed_in_pieces("text/event-stream", body, piece);
            assert!(seen, "split every {piece} bytes");
            assert_eq!(
                found,
                Some(Found::Message(
                    json!({"jsonrpc":"2.0","id":7,"result":{"isError":true}})
                ))
            );
        }
    }

    #[test]
    fn events_come_out_whole_however_the_bytes_are_split() {
        let body = b"data: a\n\ndata: b\r\n\r\n: c\n\ndata: partial";
        for piece in 1..body.len() {
            let mut events = SseEvents::default();
            let mut out = Vec::new();
            for chunk in body.chunks(piece) {
                out.extend(events.push(chunk));
            }
            assert_eq!(
                out,
                vec![
                    b"data: a\n\n".to_vec(),
                    b"data: b\r\n\r\n".to_vec(),
                    b": c\n\n".to_vec()
                ],
                "split every {piece} bytes"
            );
            assert_eq!(events.take_rest(), b"data: partial");
        }
    }

    #[test]
    fn a_stream_without_the_response_has_none() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{}}\n\n";
        let (seen, found) = feed_in_pieces("text/event-stream", body, 5);
        assert!(!seen);
        assert_eq!(found, None);
    }

    #[test]
    fn an_event_too_big_to_read_counts_as_a_possible_answer() {
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 2 * MAX_OBSERVED_BYTES));
        body.extend_from_slice(b"\n\n");
        let (seen, found) = feed_in_pieces("text/event-stream", &body, 64 * 1024);
        assert!(seen);
        assert_eq!(found, Some(Found::TooLarge));
    }

    #[test]
    fn a_json_body_is_read_whole_at_its_end() {
        let body = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"x"}}"#;
        let (seen, found) = feed_in_pieces("application/json", body, 4);
        assert!(!seen);
        assert!(matches!(found, Some(Found::Message(m)) if m["error"]["code"] == -1));
    }
}
