//! RFC 6902 JSON Patch over `serde_json` values (MeshProxyPatch's `jsonPatches`), with RFC
//! 6901 pointers.

use model::specs::policy::{JsonPatch, JsonPatchOp};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("path {0:?} does not exist")]
    Missing(String),
    #[error("path {0:?} is not a JSON pointer")]
    BadPointer(String),
    #[error("test at {0:?} failed")]
    TestFailed(String),
    #[error("{0:?} needs a `{1}`")]
    Needs(String, &'static str),
}

fn tokens(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PatchError::BadPointer(path.into()))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// The container holding the last token of `path`, and that token.
fn parent<'v>(doc: &'v mut Value, path: &str) -> Result<(&'v mut Value, String), PatchError> {
    let mut t = tokens(path)?;
    let last = t.pop().ok_or_else(|| PatchError::BadPointer(path.into()))?;
    let mut node = doc;
    for token in &t {
        node = match node {
            Value::Object(m) => m.get_mut(token),
            Value::Array(a) => token.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::Missing(path.into()))?;
    }
    Ok((node, last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (node, last) = parent(doc, path)?;
    match node {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i <= a.len() => a.insert(i, value),
            _ => return Err(PatchError::Missing(path.into())),
        },
        _ => return Err(PatchError::Missing(path.into())),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (node, last) = parent(doc, path)?;
    match node {
        Value::Object(m) => m.remove(&last),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => Some(a.remove(i)),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| PatchError::Missing(path.into()))
}

fn get<'v>(doc: &'v Value, path: &str) -> Result<&'v Value, PatchError> {
    doc.pointer(path)
        .ok_or_else(|| PatchError::Missing(path.into()))
}

/// Applies `patches` in order; on an error `doc` is left as it was.
pub fn apply(doc: &mut Value, patches: &[JsonPatch]) -> Result<(), PatchError> {
    let mut work = doc.clone();
    for p in patches {
        let value = || {
            p.value
                .clone()
                .ok_or_else(|| PatchError::Needs(p.path.clone(), "value"))
        };
        let from = || {
            p.from
                .clone()
                .ok_or_else(|| PatchError::Needs(p.path.clone(), "from"))
        };
        match p.op {
            JsonPatchOp::Add => add(&mut work, &p.path, value()?)?,
            JsonPatchOp::Remove => {
                remove(&mut work, &p.path)?;
            }
            JsonPatchOp::Replace => {
                get(&work, &p.path)?;
                remove(&mut work, &p.path)?;
                add(&mut work, &p.path, value()?)?;
            }
            JsonPatchOp::Move => {
                let moved = remove(&mut work, &from()?)?;
                add(&mut work, &p.path, moved)?;
            }
            JsonPatchOp::Copy => {
                let copied = get(&work, &from()?)?.clone();
                add(&mut work, &p.path, copied)?;
            }
            JsonPatchOp::Test => {
                if *get(&work, &p.path)? != value()? {
                    return Err(PatchError::TestFailed(p.path.clone()));
                }
            }
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(ops: Value) -> Vec<JsonPatch> {
        serde_json::from_value(ops).expect("patches")
    }

    #[test]
    fn rfc_6902_operations() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c": "x", "d~/e": 1});
        apply(
            &mut doc,
            &patch(json!([
                {"op": "add", "path": "/a/b/1", "value": 9},
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/c", "value": "y"},
                {"op": "copy", "from": "/c", "path": "/f"},
                {"op": "move", "from": "/d~0~1e", "path": "/g"},
                {"op": "remove", "path": "/a/b/0"},
                {"op": "test", "path": "/f", "value": "y"}
            ])),
        )
        .expect("patch");
        assert_eq!(
            doc,
            json!({"a": {"b": [9, 2, 3]}, "c": "y", "f": "y", "g": 1})
        );
    }

    #[test]
    fn a_failing_patch_changes_nothing() {
        let mut doc = json!({"a": 1});
        let err = apply(
            &mut doc,
            &patch(json!([
                {"op": "add", "path": "/b", "value": 2},
                {"op": "replace", "path": "/missing/x", "value": 3}
            ])),
        )
        .expect_err("missing path");
        assert!(matches!(err, PatchError::Missing(_)), "{err}");
        assert_eq!(doc, json!({"a": 1}));
        let err = apply(
            &mut doc,
            &patch(json!([{"op": "test", "path": "/a", "value": 2}])),
        )
        .expect_err("test fails");
        assert!(matches!(err, PatchError::TestFailed(_)));
    }
}
