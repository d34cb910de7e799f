//! Assertions the spec modules' tests share.

use serde_json::Value;

use crate::validate::ValidationError;

pub type ValidateFn = fn(&Value) -> Result<(), ValidationError>;

/// `spec` passes `f`.
#[track_caller]
pub fn ok(f: ValidateFn, spec: Value) {
    if let Err(e) = f(&spec) {
        panic!("expected valid, got {e}\nspec: {spec}");
    }
}

/// `f` refuses `spec` with a violation at `field` whose reason contains `reason`.
#[track_caller]
pub fn err(f: ValidateFn, spec: Value, field: &str, reason: &str) {
    let e = f(&spec).expect_err("expected a validation error");
    assert!(
        e.violations
            .iter()
            .any(|x| x.field == field && x.reason.contains(reason)),
        "expected {field}: {reason}, got {e:?}"
    );
}
