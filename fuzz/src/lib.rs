//! What the fuzz targets share: an independent JSON reader and event-stream reader to
//! compare toolgate's with, the comparisons, and how a fuzz input becomes a request.

pub mod reference;
pub mod sse;

use http::{HeaderMap, HeaderName, HeaderValue};
use reference::{Decimal, Json};
use serde_json::Value;
use toolgate::gateway::mcp::ParamHeader;

/// How numbers are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbers {
    /// By exact decimal value: what the decision sees must be the number written.
    Exact,
    /// Within a few units in the last place of an f64. serde_json's default float
    /// reader is not correctly rounded (toolgate does not enable `float_roundtrip`), so
    /// the raw reader is only held to this; exactness is asked of what a decision sees.
    Close,
}

/// The first place where `gateway` (as toolgate read it) and `reference` differ, as a
/// JSON pointer and a description, or `None` when they are the same value.
pub fn difference(gateway: &Value, reference: &Json, numbers: Numbers) -> Option<String> {
    let mut path = String::new();
    diff_at(gateway, reference, numbers, &mut path).map(|what| {
        let at = if path.is_empty() { "/" } else { &path };
        format!("at {at}: {what}")
    })
}

fn diff_at(
    gateway: &Value,
    reference: &Json,
    numbers: Numbers,
    path: &mut String,
) -> Option<String> {
    match (gateway, reference) {
        (Value::Null, Json::Null) => None,
        (Value::Bool(a), Json::Bool(b)) if a == b => None,
        (Value::String(a), Json::String(b)) if a == b => None,
        (Value::Number(n), Json::Number(d)) => {
            let seen = n.to_string();
            let same = match numbers {
                Numbers::Exact => Decimal::parse(&seen).as_ref() == Some(d),
                Numbers::Close => n.as_f64().is_some_and(|f| close(f, d.to_f64())),
            };
            (!same).then(|| format!("toolgate read {seen} where the text has {}", d.text))
        }
        (Value::Array(a), Json::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{} items where the text has {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                if let Some(d) = diff_at(x, y, numbers, path) {
                    return Some(d);
                }
                path.truncate(len);
            }
            None
        }
        (Value::Object(a), Json::Object(b)) => {
            if a.len() != b.len() {
                return Some(format!(
                    "{} members where the text has {}",
                    a.len(),
                    b.len()
                ));
            }
            for (key, y) in b {
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                let Some(x) = a.get(key) else {
                    return Some("a member toolgate did not read".into());
                };
                if let Some(d) = diff_at(x, y, numbers, path) {
                    return Some(d);
                }
                path.truncate(len);
            }
            None
        }
        (a, b) => Some(format!("toolgate read {a} where the text has {b:?}")),
    }
}

/// Equal, or within 4 units in the last place.
fn close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_sign_negative() != b.is_sign_negative() || !a.is_finite() || !b.is_finite() {
        return false;
    }
    a.abs().to_bits().abs_diff(b.abs().to_bits()) <= 4
}

/// Whether serde_json refuses this number as out of range: beyond f64's, or so close
/// to its end that a reader that is not correctly rounded overflows.
pub fn out_of_f64_range(d: &Decimal) -> bool {
    !d.to_f64().is_finite() || d.to_f64().abs() > 1.79e308
}

/// Whether the text holds a number serde_json refuses as out of range.
pub fn has_number_out_of_range(value: &Json) -> bool {
    match value {
        Json::Number(d) => out_of_f64_range(d),
        Json::Array(items) => items.iter().any(has_number_out_of_range),
        Json::Object(members) => members.iter().any(|(_, v)| has_number_out_of_range(v)),
        _ => false,
    }
}

/// A fuzz input as an HTTP request: header lines (`name: value`), an empty line, then
/// the body. An input that starts with an empty line, or has none, is all body.
///
/// A header `x-fuzz-declare: a.b=Token;c=Other` is not sent: it declares the tool's
/// `Mcp-Param-*` headers (argument path = header suffix), as its input schema would.
pub struct Request<'a> {
    pub headers: HeaderMap,
    pub declared: Option<Vec<ParamHeader>>,
    pub body: &'a [u8],
}

pub const DECLARE: &str = "x-fuzz-declare";

pub fn request(data: &[u8]) -> Request<'_> {
    let (head, body) = if let Some(rest) = data.strip_prefix(b"\n") {
        (&data[..0], rest)
    } else {
        match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (&data[..0], data),
        }
    };
    let mut headers = HeaderMap::new();
    let mut declared: Option<Vec<ParamHeader>> = None;
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
            continue;
        };
        if name == DECLARE {
            let list = declared.get_or_insert_with(Vec::new);
            for item in String::from_utf8_lossy(value).split(';') {
                if let Some((path, token)) = item.split_once('=') {
                    list.push(ParamHeader {
                        path: path.split('.').map(str::to_owned).collect(),
                        token: token.to_owned(),
                    });
                }
            }
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    Request {
        headers,
        declared,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_numbers_tell_apart_what_close_ones_do_not() {
        let text = br#"{"a": 99999999999999999999}"#;
        let gateway: Value = serde_json::from_slice(text).unwrap();
        let reference = reference::parse(text).value.unwrap();
        assert!(difference(&gateway, &reference, Numbers::Close).is_none());
        let d = difference(&gateway, &reference, Numbers::Exact).unwrap();
        assert_eq!(
            d,
            "at /a: toolgate read 1e+20 where the text has 99999999999999999999"
        );
        let text = br#"{"a": [1e2, 9007199254740993, 0.1, -0]}"#;
        let gateway: Value = serde_json::from_slice(text).unwrap();
        let reference = reference::parse(text).value.unwrap();
        assert_eq!(difference(&gateway, &reference, Numbers::Exact), None);
    }

    #[test]
    fn an_input_splits_into_headers_and_body() {
        let r = request(b"mcp-method: tools/call\nx-fuzz-declare: a.b=Region\nbad line\n\n{}");
        assert_eq!(r.headers["mcp-method"], "tools/call");
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.declared.unwrap()[0].path, ["a", "b"]);
        assert_eq!(r.body, b"{}");
        assert_eq!(request(b"{\"a\":1}").body, b"{\"a\":1}");
        assert_eq!(request(b"\nx: y\n\n{}").body, b"x: y\n\n{}");
    }
}
