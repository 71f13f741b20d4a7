//! Redaction: secret argument values never reach the store, an event, an API answer
//! or a log line. Only the policy, in memory, sees them.

use serde_json::{Map, Value};

use crate::config::RedactSection;

pub const REDACTED: &str = "[REDACTED]";
/// Stored arguments are cut here, so one huge call cannot bloat the log.
pub const MAX_STORED_ARGS_BYTES: usize = 16 * 1024;

pub struct Redactor {
    /// Lowercased: `Password` and `PASSWORD` are the same secret.
    keys: Vec<String>,
    pointers: Vec<String>,
}

impl Redactor {
    pub fn new(config: &RedactSection) -> Self {
        Self {
            keys: config.keys.iter().map(|k| k.to_lowercase()).collect(),
            pointers: config.pointers.clone(),
        }
    }

    /// The arguments with every configured key (at any depth) and pointer replaced.
    pub fn redact(&self, args: &Map<String, Value>) -> Map<String, Value> {
        let mut out = args.clone();
        for value in out.values_mut() {
            self.redact_keys(value);
        }
        for (key, value) in out.iter_mut() {
            if self.is_secret_key(key) {
                *value = Value::String(REDACTED.into());
            }
        }
        let mut whole = Value::Object(out);
        for pointer in &self.pointers {
            if let Some(v) = whole.pointer_mut(pointer) {
                *v = Value::String(REDACTED.into());
            }
        }
        match whole {
            Value::Object(map) => map,
            _ => unreachable!("an object stays an object"),
        }
    }

    /// Whether the value at this pointer is always redacted: a configured pointer, or a
    /// last key that is a secret key.
    pub fn hides(&self, pointer: &str) -> bool {
        let last = pointer.rsplit('/').next().unwrap_or("");
        self.pointers.iter().any(|p| p == pointer)
            || self.is_secret_key(&last.replace("~1", "/").replace("~0", "~"))
    }

    fn is_secret_key(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        self.keys.contains(&key)
    }

    fn redact_keys(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if self.is_secret_key(key) {
                        *v = Value::String(REDACTED.into());
                    } else {
                        self.redact_keys(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_keys(v)),
            _ => {}
        }
    }
}

/// The JSON pointers of every redacted value in stored arguments.
pub fn redacted_pointers(args: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    super::pointer::leaves(args, &mut |pointer, value| {
        if value.as_str() == Some(REDACTED) {
            out.push(pointer.to_owned());
        }
        true
    });
    out
}

/// The arguments as stored: the redacted object, or when its JSON is over the limit,
/// a string holding its first 16 KiB and `true` for `args_truncated`.
pub fn stored_args(redacted: Map<String, Value>) -> (Value, bool) {
    let value = Value::Object(redacted);
    let text = value.to_string();
    if text.len() <= MAX_STORED_ARGS_BYTES {
        return (value, false);
    }
    let mut cut = MAX_STORED_ARGS_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    (Value::String(text[..cut].to_owned()), true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor(pointers: &[&str]) -> Redactor {
        Redactor::new(&RedactSection {
            keys: RedactSection::default().keys,
            pointers: pointers.iter().map(|p| p.to_string()).collect(),
        })
    }

    #[test]
    fn secret_keys_are_redacted_at_any_depth_and_any_case() {
        let args = json!({"page": "x", "Password": "p1", "nested": {"deep": [{"API_KEY": "k"}], "token": {"a": 1}}});
        let out = redactor(&[]).redact(args.as_object().unwrap());
        assert_eq!(
            Value::Object(out),
            json!({"page": "x", "Password": REDACTED, "nested": {"deep": [{"API_KEY": REDACTED}], "token": REDACTED}})
        );
    }

    #[test]
    fn pointers_are_redacted() {
        let args = json!({"body": {"text": "s3cret", "title": "t"}});
        let out = redactor(&["/body/text", "/missing"]).redact(args.as_object().unwrap());
        assert_eq!(
            Value::Object(out),
            json!({"body": {"text": REDACTED, "title": "t"}})
        );
    }

    #[test]
    fn a_pointer_is_hidden_when_configured_or_when_it_ends_in_a_secret_key() {
        let r = redactor(&["/url"]);
        assert!(r.hides("/url"));
        assert!(r.hides("/auth/Password"));
        assert!(!r.hides("/page_id"));
    }

    #[test]
    fn large_arguments_are_cut_and_flagged() {
        let args = json!({"blob": "é".repeat(20_000)});
        let (stored, truncated) = stored_args(args.as_object().unwrap().clone());
        assert!(truncated);
        let text = stored.as_str().unwrap();
        assert!(text.len() <= MAX_STORED_ARGS_BYTES && text.starts_with("{\"blob\":\"é"));
        let (small, truncated) = stored_args(json!({"a": 1}).as_object().unwrap().clone());
        assert_eq!((small, truncated), (json!({"a": 1}), false));
    }
}
