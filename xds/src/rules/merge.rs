//! Kuma's merge of policy confs: a JSON merge patch (RFC 7396) applied from the least to the
//! most specific conf, so objects merge field by field, lists and scalars are replaced and a
//! `null` removes a field; lists under `append*` keys (`appendModifications`, `appendMatch`,
//! `appendProfiles`) are concatenated instead, in the same order.

use serde_json::Value;

fn is_append_key(key: &str) -> bool {
    key.strip_prefix("append")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

/// Merges `from` into `into`.
pub fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                    continue;
                }
                match (a.get_mut(&k), v) {
                    (Some(Value::Array(existing)), Value::Array(more)) if is_append_key(&k) => {
                        existing.extend(more);
                    }
                    (Some(existing), v) => merge(existing, v),
                    (None, v) => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Every conf merged in order; `None` for none.
pub fn merge_all(confs: impl IntoIterator<Item = Value>) -> Option<Value> {
    let mut out: Option<Value> = None;
    for c in confs {
        match &mut out {
            None => {
                // Nulls inside the first conf mean nothing either.
                let mut first = Value::Object(Default::default());
                merge(&mut first, c);
                out = Some(first);
            }
            Some(acc) => merge(acc, c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_with_append_lists() {
        let mut a = json!({"x": {"a": 1, "b": [1, 2]}, "y": 1, "z": 3,
                           "appendModifications": [{"m": 1}]});
        merge(
            &mut a,
            json!({"x": {"b": [3], "c": 2}, "z": null, "appendModifications": [{"m": 2}]}),
        );
        assert_eq!(
            a,
            json!({"x": {"a": 1, "b": [3], "c": 2}, "y": 1,
                   "appendModifications": [{"m": 1}, {"m": 2}]})
        );
        // Nested append lists too (MeshMetric's `sidecar.profiles.appendProfiles`).
        let mut m = json!({"sidecar": {"profiles": {"appendProfiles": [{"name": "Basic"}]}}});
        merge(
            &mut m,
            json!({"sidecar": {"profiles": {"appendProfiles": [{"name": "All"}]}}}),
        );
        assert_eq!(
            m["sidecar"]["profiles"]["appendProfiles"],
            json!([{"name": "Basic"}, {"name": "All"}])
        );
        assert!(!is_append_key("appended"));
        assert_eq!(merge_all(Vec::new()), None);
    }
}
