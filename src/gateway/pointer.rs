//! Walking a JSON value's scalars by RFC 6901 pointer, as policies and redaction see them.

use serde_json::{Map, Value};

/// Calls `visit` with the pointer and value of every scalar (null included) under
/// `args`, depth first. `visit` returns false to stop the walk; so does `leaves`.
pub fn leaves(args: &Map<String, Value>, visit: &mut dyn FnMut(&str, &Value) -> bool) -> bool {
    fn walk(
        value: &Value,
        pointer: &mut String,
        visit: &mut dyn FnMut(&str, &Value) -> bool,
    ) -> bool {
        match value {
            Value::Object(map) => walk_map(map, pointer, visit),
            Value::Array(items) => items.iter().enumerate().all(|(i, item)| {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                let go_on = walk(item, pointer, visit);
                pointer.truncate(len);
                go_on
            }),
            scalar => visit(pointer, scalar),
        }
    }
    fn walk_map(
        map: &Map<String, Value>,
        pointer: &mut String,
        visit: &mut dyn FnMut(&str, &Value) -> bool,
    ) -> bool {
        map.iter().all(|(key, item)| {
            let len = pointer.len();
            pointer.push('/');
            pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            let go_on = walk(item, pointer, visit);
            pointer.truncate(len);
            go_on
        })
    }
    walk_map(args, &mut String::new(), visit)
}

/// The value at an RFC 6901 pointer into the arguments, without copying them.
pub fn get<'a>(args: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let mut tokens = pointer
        .strip_prefix('/')?
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"));
    let mut node = args.get(&tokens.next()?)?;
    for token in tokens {
        node = match node {
            Value::Object(map) => map.get(&token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_follows_pointers_with_escapes_and_indexes() {
        let args = serde_json::json!({"fields": {"a/b": [{"c~d": "x"}]}, "k": 1});
        let args = args.as_object().unwrap();
        assert_eq!(get(args, "/fields/a~1b/0/c~0d"), Some(&Value::from("x")));
        assert_eq!(get(args, "/k"), Some(&Value::from(1)));
        assert_eq!(get(args, "/fields/a~1b/1"), None);
        assert_eq!(get(args, "k"), None);
    }
}
