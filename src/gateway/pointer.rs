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
