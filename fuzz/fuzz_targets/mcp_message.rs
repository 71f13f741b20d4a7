//! The MCP client message reader, with routing headers, in both protocol eras.
//!
//! Whatever it accepts, the method, tool name and arguments a decision sees (and the
//! whole body) are exactly what the reference reader finds in the same bytes, numbers
//! by exact decimal value: the upstream gets those bytes and reads them itself.
//! Routing headers that were accepted agree with the body: `Mcp-Method`, `Mcp-Name`,
//! and each declared `Mcp-Param-*` header, which carries the very value of the argument
//! it mirrors (a number by exact value). A refusal is one of the reader's JSON-RPC errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate::gateway::mcp::{self, ClientMessage, ParamHeader};
use toolgate_fuzz::reference::{self, Decimal, Json};
use toolgate_fuzz::{Numbers, difference, request};

fuzz_target!(|data: &[u8]| {
    let req = request(data);
    let declared = req.declared.clone();
    let message = match mcp::read_client_message(req.body, &req.headers, |_tool| declared) {
        Ok(message) => message,
        Err(refused) => {
            assert!(
                [
                    mcp::PARSE_ERROR,
                    mcp::INVALID_REQUEST,
                    mcp::INVALID_PARAMS,
                    mcp::HEADER_MISMATCH
                ]
                .contains(&refused.code),
                "an unexpected error code: {refused:?}"
            );
            let _ = refused.body();
            return;
        }
    };
    let parsed = reference::parse(req.body);
    let text = match parsed.value {
        Ok(text) => text,
        Err(e) => panic!("accepted a body that is not JSON: {e:?}"),
    };
    assert!(
        !parsed.duplicate_key,
        "accepted a body with a duplicate key"
    );
    check_decision_inputs(&message, &text);
    if let Some(d) = difference(&message.body, &text, Numbers::Exact) {
        panic!("the body toolgate read differs from the bytes {d}");
    }
    check_routing_headers(&message, &req.headers);
    check_param_headers(&text, &req.headers, req.declared.as_deref());
});

/// What a decision is made on: the method, and a call's tool name and arguments.
fn check_decision_inputs(message: &ClientMessage, text: &Json) {
    assert_eq!(
        message.method(),
        text.get("method").and_then(Json::as_str),
        "the method"
    );
    let Some((name, args)) = message.tool_call() else {
        assert!(
            message.method() != Some("tools/call"),
            "a tools/call without a tool"
        );
        return;
    };
    let params = text.get("params").expect("a tools/call has params");
    assert_eq!(
        Some(name),
        params.get("name").and_then(Json::as_str),
        "the tool name"
    );
    match params.get("arguments") {
        Some(written) => {
            if let Some(d) = difference(&Value::Object(args.clone()), written, Numbers::Exact) {
                panic!(
                    "the arguments a decision sees differ from the bytes, in params.arguments {d}"
                );
            }
        }
        None => assert!(args.is_empty(), "arguments where the body has none"),
    }
}

/// Accepted routing headers name what the body names.
fn check_routing_headers(message: &ClientMessage, headers: &http::HeaderMap) {
    if let Some(h) = headers.get(mcp::HEADER_METHOD) {
        assert_eq!(h.to_str().ok(), message.method(), "Mcp-Method and the body");
    }
    if let Some((name, _)) = message.tool_call()
        && let Some(h) = headers.get(mcp::HEADER_NAME)
    {
        let decoded = h.to_str().ok().and_then(mcp::decode_header_value);
        assert_eq!(decoded.as_deref(), Some(name), "Mcp-Name and params.name");
    }
}

/// An accepted call's declared `Mcp-Param-*` headers carry exactly the value of the
/// argument they mirror, as the body spells it: a proxy that routes or authorizes on
/// the header sees what the server runs. Numbers compare by exact value, so `100`,
/// `+100` and `100.0` all mirror 100, and `9007199254740993` does not mirror
/// 9007199254740992.
fn check_param_headers(text: &Json, headers: &http::HeaderMap, declared: Option<&[ParamHeader]>) {
    let (Some(declared), Some("tools/call")) =
        (declared, text.get("method").and_then(Json::as_str))
    else {
        return;
    };
    let args = text.get("params").and_then(|p| p.get("arguments"));
    for p in declared {
        let name = format!(
            "{}{}",
            mcp::HEADER_PARAM_PREFIX,
            p.token.to_ascii_lowercase()
        );
        let Some(raw) = headers.get(name.as_str()) else {
            continue;
        };
        let decoded = raw
            .to_str()
            .ok()
            .and_then(mcp::decode_header_value)
            .unwrap_or_else(|| panic!("accepted {name} that does not decode: {raw:?}"));
        let argument = p
            .path
            .iter()
            .try_fold(args, |node, key| Some(node?.get(key)))
            .flatten();
        let shown = p.path.join(".");
        match argument {
            Some(Json::Number(d)) => assert!(
                Decimal::parse_plain(&decoded).as_ref() == Some(d),
                "accepted {name}: {decoded:?} for argument {shown} = {}",
                d.text
            ),
            Some(Json::String(s)) => assert_eq!(&decoded, s, "{name} and argument {shown}"),
            Some(Json::Bool(b)) => {
                assert_eq!(decoded, b.to_string(), "{name} and argument {shown}")
            }
            other => panic!("accepted {name}: {decoded:?} for argument {shown} = {other:?}"),
        }
    }
}
