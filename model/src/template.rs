//! `{{ key }}` placeholders in resource files, filled from `-v key=value` (kumactl apply and
//! kuma-dp's `--dataplane-file`).

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{{{' in the file")]
    Unclosed,
    #[error("variable {0:?} is used in the file but not given with -v {0}=...")]
    Missing(String),
    #[error("-v {0:?}: expected KEY=VALUE")]
    BadVariable(String),
}

/// Replaces `{{ key }}` (spaces optional) with the values given; an unknown key is an error
/// rather than a silent empty string. What cannot be a variable's name (`{{ .DisplayName }}`,
/// `{{ label "team" }}`: a HostnameGenerator's Go template) is left as it is.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let key = after[..end].trim();
        if !is_variable(key) {
            out.push_str(&rest[start..start + 2 + end + 2]);
            rest = &after[end + 2..];
            continue;
        }
        let value = vars
            .get(key)
            .ok_or_else(|| TemplateError::Missing(key.to_string()))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A `-v` name as kumactl's (mustache) templates take it: `name`, `a.b`, `my-var`.
fn is_variable(key: &str) -> bool {
    key.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `key=value` pairs as given on the command line.
pub fn parse_vars(pairs: &[String]) -> Result<BTreeMap<String, String>, TemplateError> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| TemplateError::BadVariable(p.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_reports_missing_or_unclosed() {
        let vars = parse_vars(&["name=web".to_string()]).unwrap();
        assert_eq!(
            substitute("name: {{ name }}\nx: {{name}}", &vars).unwrap(),
            "name: web\nx: web"
        );
        assert_eq!(
            substitute("{{ missing }}", &vars),
            Err(TemplateError::Missing("missing".into()))
        );
        assert_eq!(substitute("{{ name", &vars), Err(TemplateError::Unclosed));
        // A HostnameGenerator's Go template is the control plane's to evaluate.
        let generator = r#"template: "{{ .DisplayName }}.{{ label "team" }}.{{ name }}""#;
        assert_eq!(
            substitute(generator, &vars).unwrap(),
            r#"template: "{{ .DisplayName }}.{{ label "team" }}.web""#
        );
        assert!(parse_vars(&["novalue".to_string()]).is_err());
    }
}
