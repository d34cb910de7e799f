//! Plain-text tables in kumactl's layout: columns padded by three spaces, header first.

use model::Timestamp;
use serde_json::Value;

pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i < last {
                let pad = widths[i] - c.chars().count() + 3;
                l.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Age since a timestamp field, like kumactl's AGE column (`never` when missing).
pub fn age(v: &Value, field: &str) -> String {
    match v
        .get(field)
        .and_then(Value::as_str)
        .and_then(Timestamp::parse)
    {
        Some(t) => model::time::format_age(t.elapsed_until(Timestamp::now())),
        None => "never".into(),
    }
}

pub fn ago(t: Option<Timestamp>) -> String {
    match t {
        Some(t) => model::time::format_age(t.elapsed_until(Timestamp::now())),
        None => "never".into(),
    }
}

pub fn on_off(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}

/// `k=v k2=v2`, sorted, as kumactl prints tag sets.
pub fn tags(map: Option<&Value>) -> String {
    let Some(Value::Object(m)) = map else {
        return String::new();
    };
    let mut parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns() {
        let out = render(&["NAME", "AGE"], &[vec!["default".into(), "2m".into()]]);
        assert_eq!(out, "NAME      AGE\ndefault   2m\n");
    }
}
