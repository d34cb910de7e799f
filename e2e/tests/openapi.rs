#![allow(clippy::unwrap_used)]
//! The API's OpenAPI description, checked against a live standalone control plane by
//! schemathesis (PyPI): for every described operation it generates valid and invalid
//! requests, and fails on any 5xx, on a status the spec does not describe, on an undescribed
//! content type and on an answer that breaks the described schema. A fixed seed keeps CI
//! repeatable; `KUMA_SCHEMATHESIS_SEED` and `KUMA_SCHEMATHESIS_EXAMPLES` explore further.
//! The stateful phase is off: it follows links it infers from answers (the index names the
//! GUI) into the HTML pages, which the spec leaves out on purpose.

use std::process::Command;
use std::time::Duration;

use e2e::ControlPlane;

/// schemathesis's command line, or `None` outside CI without it (skipped, loudly).
fn schemathesis(test: &str) -> Option<Command> {
    let present = Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").is_err(),
            "schemathesis is not installed (python3 -m pip install schemathesis); CI must run {test}"
        );
        eprintln!("SKIPPED {test}: no schemathesis (python3 -m pip install schemathesis)");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli"]);
    Some(cmd)
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_spec() {
    let test = "schemathesis_finds_no_server_error_and_no_answer_outside_the_spec";
    let Some(mut st) = schemathesis(test) else {
        return;
    };
    let mut cp = ControlPlane::start("openapi", &[]);
    cp.wait_ready(Duration::from_secs(60));
    let http = e2e::blocking_http(Duration::from_secs(10));
    // The YAML and the JSON describe the same thing.
    let yaml = http
        .get(format!("{}/openapi.yaml", cp.api()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let json: serde_json::Value = http
        .get(format!("{}/openapi.json", cp.api()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        model::resource::parse_yaml_documents(&yaml).unwrap(),
        std::slice::from_ref(&json)
    );
    assert_eq!(json["openapi"], "3.0.3");

    let seed = std::env::var("KUMA_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let examples = std::env::var("KUMA_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "100".into());
    // It keeps a cache where it runs: the control plane's scratch directory, not the tree.
    let out = st
        .current_dir(&cp.work_dir)
        .arg("run")
        .arg(format!("{}/openapi.json", cp.api()))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--no-color",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Selected") || l.contains("passed"))
        .collect();
    println!("schemathesis (seed {seed}, {examples} examples per operation): {summary:?}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}\n--- kuma-cp:\n{}",
        String::from_utf8_lossy(&out.stderr),
        cp.logs()
    );
}
