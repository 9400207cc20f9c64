//! Paths of JSON fields one document has and another lacks: what a reader did not know,
//! or what the API server dropped.

use serde_json::Value;

/// Paths of the fields that were sent to the API server and are missing from what it
/// returned: fields this Kubernetes version drops (a feature it does not have). Values that
/// Kubernetes omits when empty (`""`, `0`, `false`, `[]`, `{}`) are not counted.
pub fn dropped_paths(sent: &Value, returned: &Value, at: &str) -> Vec<String> {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    };
    let mut out = vec![];
    match (sent, returned) {
        (Value::Object(s), Value::Object(r)) => {
            for (k, v) in s {
                if empty(v) {
                    continue;
                }
                let path = format!("{at}.{k}");
                match r.get(k) {
                    Some(rv) => out.extend(dropped_paths(v, rv, &path)),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(s), Value::Array(r)) => {
            for (i, (sv, rv)) in s.iter().zip(r).enumerate() {
                out.extend(dropped_paths(sv, rv, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    out
}

/// The fields of `written` that `read` (what a typed read kept of it) lacks, where they are:
/// an object keeps only those fields and the fields on the way to them, a list keeps its
/// items' places (`null` for an item without any). `None` when the reader knew every field.
/// Null values count as absent. [`restore`] puts them back.
pub fn unknown_fields(written: &Value, read: &Value) -> Option<Value> {
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in w.iter().filter(|(_, v)| !v.is_null()) {
                let unknown = match r.get(k) {
                    Some(rv) => unknown_fields(v, rv),
                    None => Some(v.clone()),
                };
                out.extend(unknown.map(|u| (k.clone(), u)));
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        (Value::Array(w), Value::Array(r)) => {
            let items: Vec<Value> = w.iter().zip(r).map(|(wv, rv)| unknown_fields(wv, rv).unwrap_or(Value::Null)).collect();
            items.iter().any(|i| !i.is_null()).then_some(Value::Array(items))
        }
        _ => None,
    }
}

/// Puts the fields [`unknown_fields`] found back into `target`, each where `target` has no
/// field of its name; list items by their places.
pub fn restore(target: &mut Value, unknown: &Value) {
    match (target, unknown) {
        (Value::Object(t), Value::Object(u)) => {
            for (k, v) in u {
                match t.get_mut(k) {
                    Some(tv) => restore(tv, v),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(u)) => {
            for (tv, uv) in t.iter_mut().zip(u) {
                restore(tv, uv);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_kept_in_place_and_restored() {
        let written = json!({"a": 1, "new": {"x": [1]}, "gone": null,
            "list": [{"name": "a"}, {"name": "b", "later": true}], "obj": {"k": "v", "more": "m"}});
        let read = json!({"a": 1, "list": [{"name": "a"}, {"name": "b"}], "obj": {"k": "v"}});
        let unknown = unknown_fields(&written, &read).unwrap();
        assert_eq!(unknown, json!({"new": {"x": [1]}, "list": [null, {"later": true}], "obj": {"more": "m"}}));
        assert!(unknown_fields(&read, &read).is_none());
        // Into what was built from the read, with more added: each field back in its place.
        let mut built = json!({"a": 2, "list": [{"name": "a"}, {"name": "b"}, {"name": "added"}], "obj": {"k": "v"}, "own": 1});
        restore(&mut built, &unknown);
        assert_eq!(
            built,
            json!({"a": 2, "new": {"x": [1]}, "list": [{"name": "a"}, {"name": "b", "later": true}, {"name": "added"}],
                "obj": {"k": "v", "more": "m"}, "own": 1})
        );
    }
}
