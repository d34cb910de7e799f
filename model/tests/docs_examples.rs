//! The resources the user docs show are accepted as written: every YAML block of
//! `docs/gateway.md` (and the policies page) that is a whole resource (it has `type` and
//! `name`) parses and validates as the API would validate it on a write. So are Kuma's own
//! documented examples of the MeshService era (`tests/data/kuma-docs-services.yaml`).

use model::Resource;
use model::resource::parse_yaml_documents;

fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn check(doc: &str) -> usize {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    check_blocks(doc, yaml_blocks(&text))
}

fn check_blocks(doc: &str, blocks: Vec<String>) -> usize {
    let mut checked = 0;
    for block in blocks {
        let docs = parse_yaml_documents(&block)
            .unwrap_or_else(|e| panic!("{doc}: a YAML block does not parse: {e:?}\n{block}"));
        for value in docs {
            if value.get("type").is_none() || value.get("name").is_none() {
                continue; // a fragment of the example before it
            }
            let resource = Resource::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{doc}: {e}\n{value}"));
            if let Err(e) = resource.validate() {
                panic!("{doc}: {e}\n{value}");
            }
            checked += 1;
        }
    }
    checked
}

#[test]
fn gateway_examples_validate() {
    assert!(check("gateway.md") >= 7, "the gateway page's resources");
}

#[test]
fn observability_examples_validate() {
    assert!(
        check("observability.md") >= 3,
        "the observability page's resources"
    );
}

#[test]
fn kumas_documented_service_examples_validate() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kuma-docs-services.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_eq!(
        check_blocks("kuma-docs-services.yaml", vec![text]),
        16,
        "every documented example"
    );
}

#[test]
fn services_page_examples_validate() {
    assert!(check("services.md") >= 1, "the services page's resources");
}
