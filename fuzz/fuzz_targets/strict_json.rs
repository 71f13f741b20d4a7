//! The strict JSON reader against the reference reader (RFC 8259): it accepts exactly
//! the valid texts without a duplicate key, and reads them as written. Its exceptions
//! are serde_json's: nesting deeper than 128 and numbers beyond f64's range are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate::gateway::strict_json::{self, StrictJsonError};
use toolgate_fuzz::{Numbers, difference, has_number_out_of_range, reference};

/// serde_json refuses texts nested this deep, or deeper, as syntax errors.
const SERDE_DEPTH_LIMIT: usize = 128;

fuzz_target!(|data: &[u8]| {
    let ours = strict_json::parse(data);
    let theirs = reference::parse(data);
    match (&ours, &theirs.value) {
        (Ok(value), Ok(text)) => {
            assert!(
                !theirs.duplicate_key,
                "accepted a text with a duplicate key"
            );
            if let Some(d) = difference(value, text, Numbers::Close) {
                panic!("strict_json read the text differently {d}");
            }
            // A tool's input schema is such a value; reading its declarations never panics.
            let _ = toolgate::gateway::mcp::declared_param_headers(value);
        }
        (Ok(_), Err(e)) => panic!("strict_json accepted what RFC 8259 refuses: {e:?}"),
        (Err(StrictJsonError::DuplicateKey(m)), _) => assert!(
            theirs.duplicate_key,
            "strict_json saw a duplicate key where the text has none: {m}"
        ),
        (Err(StrictJsonError::Syntax(m)), Ok(text)) => assert!(
            theirs.depth >= SERDE_DEPTH_LIMIT || has_number_out_of_range(text),
            "strict_json refused valid JSON: {m}"
        ),
        (Err(StrictJsonError::Syntax(_)), Err(_)) => {}
    }
});
