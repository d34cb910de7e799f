//! Prometheus's text exposition format, as far as the proxies' metrics need it: label names
//! made from Kuma's tags, and sample lines read without copying.

/// A sample: its name, its labels (values as written, escapes kept) and the rest of its line
/// (value, optional timestamp).
pub type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// A sample line as its parts, or `None` when the label block does not close.
pub fn split_sample(line: &str) -> Option<Sample<'_>> {
    let end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..end];
    let rest = &line[end..];
    let Some(block) = rest.strip_prefix('{') else {
        return Some((name, Vec::new(), rest));
    };
    let mut labels = Vec::new();
    let mut i = 0;
    let bytes = block.as_bytes();
    loop {
        while i < bytes.len() && matches!(bytes[i], b' ' | b',') {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'}' {
            return Some((name, labels, &block[i + 1..]));
        }
        let eq = block[i..].find('=')? + i;
        let key = block[i..eq].trim();
        if bytes.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let start = eq + 2;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        if j >= bytes.len() {
            return None;
        }
        labels.push((key, &block[start..j]));
        i = j + 1;
    }
}

/// The value of a sample line's rest (`" 12.5 1700000000000"` is 12.5), with Prometheus's
/// spellings of infinity and NaN.
pub fn sample_value(rest: &str) -> Option<f64> {
    match rest.split_whitespace().next()? {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

/// Appends `value` escaped for a label value.
pub fn push_escaped(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A label value as written in an exposition, its escapes undone.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A Prometheus label name from a tag or an attribute key: anything but `[a-zA-Z0-9_]` becomes
/// `_` (`kuma.io/service` is `kuma_io_service`), and a leading digit gets a `_` before it.
pub fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_split_with_escaped_quotes_and_timestamps() {
        let (name, labels, rest) =
            split_sample(r#"http_requests_total{code="200",path="/a\"b"} 7 1700000000000"#)
                .expect("a sample");
        assert_eq!(name, "http_requests_total");
        assert_eq!(labels, vec![("code", "200"), ("path", r#"/a\"b"#)]);
        assert_eq!(sample_value(rest), Some(7.0));
        assert_eq!(unescape(labels[1].1), "/a\"b");
        assert!(split_sample(r#"broken{code="200" 1"#).is_none());
        assert_eq!(sample_value(" +Inf"), Some(f64::INFINITY));
        assert_eq!(sample_value(" words"), None);
    }

    #[test]
    fn label_names_are_valid_prometheus_names() {
        assert_eq!(label_name("kuma.io/service"), "kuma_io_service");
        assert_eq!(label_name("1abc"), "_1abc");
        let mut escaped = String::new();
        push_escaped("a\"b\\c\nd", &mut escaped);
        assert_eq!(unescape(&escaped), "a\"b\\c\nd");
    }
}
