//! Paths of JSON fields one document has and another lacks: what a reader did not know,
//! or what the API server dropped.

use serde_json::Value;

/// Paths of the fields of `written` that are not in `read` (what a typed read kept of it):
/// the fields the reader does not know. Null values count as absent.
pub fn unknown_paths(written: &Value, read: &Value, at: &str) -> Vec<String> {
    let mut out = vec![];
    match (written, read) {
        (Value::Object(w), Value::Object(r)) => {
            for (k, v) in w {
                if v.is_null() {
                    continue;
                }
                let path = format!("{at}.{k}");
                match r.get(k) {
                    Some(rv) => out.extend(unknown_paths(v, rv, &path)),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(w), Value::Array(r)) => {
            for (i, (wv, rv)) in w.iter().zip(r).enumerate() {
                out.extend(unknown_paths(wv, rv, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    out
}

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
