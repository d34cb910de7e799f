//! Validation with field paths, reported the way Kuma's API reports them
//! (`invalid_parameters[{field, reason}]`), so every violation is shown at once.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub reason: String,
}

/// Every violation found in one resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, thiserror::Error)]
pub struct ValidationError {
    pub violations: Vec<Violation>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .violations
            .iter()
            .map(|v| {
                if v.field.is_empty() {
                    v.reason.clone()
                } else {
                    format!("{}: {}", v.field, v.reason)
                }
            })
            .collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationError {
    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            violations: vec![Violation {
                field: field.into(),
                reason: reason.into(),
            }],
        }
    }
}

/// Walks a spec collecting violations. The path is kept as a stack of segments so nested
/// validators do not need to know where they are mounted.
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<String>,
    violations: Vec<Violation>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A validator whose paths start below `root` (e.g. `spec`); empty for top-level types.
    pub fn rooted(root: &str) -> Self {
        let mut v = Self::default();
        if !root.is_empty() {
            v.path.push(root.to_string());
        }
        v
    }

    pub fn current_path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            if seg.starts_with('[') || out.is_empty() {
                out.push_str(seg);
            } else {
                out.push('.');
                out.push_str(seg);
            }
        }
        out
    }

    pub fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(name.to_string());
        let r = f(self);
        self.path.pop();
        r
    }

    pub fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(format!("[{i}]"));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Map keys are written like Kuma does: `tags["kuma.io/service"]`.
    pub fn key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(format!("[{key:?}]"));
        let r = f(self);
        self.path.pop();
        r
    }

    /// Records a violation at the current path.
    pub fn violation(&mut self, reason: impl Into<String>) {
        let field = self.current_path();
        self.violations.push(Violation {
            field,
            reason: reason.into(),
        });
    }

    /// Records a violation at a child field of the current path.
    pub fn violation_at(&mut self, name: &str, reason: impl Into<String>) {
        let reason = reason.into();
        self.field(name, |v| v.violation(reason));
    }

    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn finish(self) -> Result<(), ValidationError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                violations: self.violations,
            })
        }
    }

    // Common checks, each recording at the current path.

    pub fn require_non_empty(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.violation_at(name, "must not be empty");
        }
    }

    pub fn port(&mut self, name: &str, port: u32) {
        if port == 0 || port > 65535 {
            self.violation_at(name, "port must be in the range [1, 65535]");
        }
    }

    pub fn duration(&mut self, name: &str, value: &Option<String>) {
        if let Some(d) = value
            && let Err(e) = crate::duration::parse_duration(d)
        {
            self.violation_at(name, e.to_string());
        }
    }
}

/// A type whose semantic rules are checked after serde has accepted its structure.
pub trait Validate {
    fn validate(&self, v: &mut Validator);
}

/// Deserializes `value` strictly into `T` (unknown fields rejected, so typos do not pass silently),
/// then runs its semantic checks. Paths are reported below `root`.
pub fn validate_as<T: DeserializeOwned + Validate>(
    value: &serde_json::Value,
    root: &str,
) -> Result<T, ValidationError> {
    let typed: T = decode_at(value, root)?;
    let mut v = Validator::rooted(root);
    typed.validate(&mut v);
    v.finish()?;
    Ok(typed)
}

/// Strict structural decode with the serde error mapped to a field path.
pub fn decode_at<T: DeserializeOwned>(
    value: &serde_json::Value,
    root: &str,
) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = join_path(root, if inner == "." { "" } else { &inner });
        ValidationError::single(field, clean_serde_message(&e.inner().to_string()))
    })
}

pub(crate) fn join_path(root: &str, inner: &str) -> String {
    match (root.is_empty(), inner.is_empty()) {
        (true, _) => inner.to_string(),
        (false, true) => root.to_string(),
        (false, false) if inner.starts_with('[') => format!("{root}{inner}"),
        (false, false) => format!("{root}.{inner}"),
    }
}

/// serde_json appends " at line X column Y" which means nothing for a `Value`.
fn clean_serde_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_like_kuma() {
        let mut v = Validator::rooted("spec");
        v.field("to", |v| {
            v.index(0, |v| {
                v.field("targetRef", |v| {
                    v.violation_at("kind", "value is not supported")
                })
            })
        });
        v.field("tags", |v| v.key("kuma.io/service", |v| v.violation("bad")));
        let err = v.finish().unwrap_err();
        assert_eq!(err.violations[0].field, "spec.to[0].targetRef.kind");
        assert_eq!(err.violations[1].field, "spec.tags[\"kuma.io/service\"]");
    }

    #[test]
    fn top_level_paths_have_no_leading_dot() {
        let mut v = Validator::rooted("");
        v.field("networking", |v| v.violation_at("address", "x"));
        assert_eq!(
            v.finish().unwrap_err().violations[0].field,
            "networking.address"
        );
    }
}
