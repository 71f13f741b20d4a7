//! A JSON reader that refuses what other readers would silently resolve.
//!
//! serde_json keeps the last of two equal keys; another reader may keep the first. If
//! the gateway decided on one `name` and the upstream ran the other, policy would be
//! bypassed, so a duplicate key at any depth is an error here. Everything else (strict
//! UTF-8, no lone surrogates, no trailing data, a depth limit) is serde_json's own.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0}")]
    DuplicateKey(String),
}

/// Parses `bytes` as one JSON value, rejecting duplicate object keys at any depth.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(v) => Ok(v.0),
        Err(e) => {
            let text = e.to_string();
            if text.starts_with(DUPLICATE_PREFIX) {
                Err(StrictJsonError::DuplicateKey(text))
            } else {
                Err(StrictJsonError::Syntax(text))
            }
        }
    }
}

const DUPLICATE_PREFIX: &str = "duplicate key";

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE_PREFIX} {key:?}")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_key_at_top_level_is_rejected() {
        let err = parse(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(
            matches!(err, StrictJsonError::DuplicateKey(ref m) if m.contains("\"a\"")),
            "{err}"
        );
    }

    #[test]
    fn duplicate_key_deep_inside_is_rejected() {
        let body = br#"{"params":{"arguments":{"x":[{"k":1,"k":1}]}}}"#;
        assert!(matches!(parse(body), Err(StrictJsonError::DuplicateKey(_))));
    }

    #[test]
    fn equal_keys_in_sibling_objects_are_fine() {
        let v = parse(br#"{"a":{"k":1},"b":{"k":2}}"#).unwrap();
        assert_eq!(v["b"]["k"], 2);
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_syntax_errors() {
        assert!(matches!(
            parse(b"{\"a\":\"\xff\"}"),
            Err(StrictJsonError::Syntax(_))
        ));
        assert!(matches!(
            parse(br#"{"a":"\ud800"}"#),
            Err(StrictJsonError::Syntax(_))
        ));
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        assert!(matches!(
            parse(br#"{"a":1} x"#),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
