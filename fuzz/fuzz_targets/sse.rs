//! The SSE readers: `mcp::sse_data` and `response_messages`, and `completion::judge`,
//! which reads a call's answer from them, never panic; and `sse_data` finds the events
//! the WHATWG standard's rules find, apart from three known differences, which are
//! left out here (see fuzz/README.md):
//! - a lone CR does not end a line for `sse_data`;
//! - a byte order mark at the start is not skipped;
//! - data still pending at the end of the body is an event for `sse_data`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate::gateway::{completion, mcp};
use toolgate_fuzz::sse::{self, AtEnd};

fuzz_target!(|data: &[u8]| {
    let events = mcp::sse_data(data);
    let messages = mcp::response_messages("text/event-stream", data);
    assert!(messages.len() <= events.len());
    let json = mcp::response_messages("application/json", data);
    assert!(json.len() <= 1);
    let id = messages
        .iter()
        .chain(&json)
        .find_map(|m| m.get("id"))
        .cloned()
        .unwrap_or(Value::from(1));
    let _ = completion::judge("text/event-stream", data, &id);
    let _ = completion::judge("application/json", data, &id);

    let lone_cr = data.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n');
    let bom = data.starts_with(b"\xef\xbb\xbf");
    if !lone_cr && !bom {
        assert_eq!(
            events,
            sse::events(data, AtEnd::Dispatch),
            "sse_data and the standard's rules find different events"
        );
    }
});
