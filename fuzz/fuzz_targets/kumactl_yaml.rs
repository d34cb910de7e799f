//! `kumactl apply -f - -v key=value`: the `-v` pairs, `{{ key }}` substitution, then JSON or
//! multi-document YAML, each document read as a resource and validated, and (with
//! `--dry-run`) printed back as YAML. The steps are kumactl's `apply` (app/kumactl/src/main.rs)
//! up to the HTTP call, each a call into `model`.
//!
//! Input: the `-v` arguments one per line, a NUL byte, then the file. No NUL: no `-v`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::Resource;

fuzz_target!(|data: &[u8]| {
    // kumactl reads the file with `read_to_string`: anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (vars, file) = text.split_once('\0').unwrap_or(("", text));
    let pairs: Vec<String> = vars.lines().map(str::to_string).collect();
    let Ok(vars) = model::template::parse_vars(&pairs) else {
        return;
    };
    let Ok(text) = model::template::substitute(file, &vars) else {
        return;
    };
    let docs = if text.trim_start().starts_with('{') {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => vec![v],
            Err(_) => return,
        }
    } else {
        match model::resource::parse_yaml_documents(&text) {
            Ok(docs) => docs,
            Err(_) => return,
        }
    };
    for doc in docs {
        let Ok(resource) = Resource::from_value(doc) else {
            continue;
        };
        if resource.validate().is_ok() {
            let _ = model::resource::to_yaml(&resource.to_value());
        }
    }
});
