//! The SSE readers: `mcp::sse_data` and `response_messages`, and `completion::judge`,
//! which reads a call's answer from them, never panic; and `sse_data` finds exactly the
//! events the WHATWG standard's rules find (lone CRs end lines, a leading byte order
//! mark is skipped, data not ended by a blank line is dropped), so the gateway acts on
//! the very events a client sees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate::gateway::mcp;
use toolgate::gateway::relay::completion;
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

    assert_eq!(
        events,
        sse::events(data, AtEnd::Discard),
        "sse_data and the standard's rules find different events"
    );
});
