//! The rule engine against cases ported from Kuma 2.14's own test data
//! (`pkg/plugins/policies/core/rules/**/testdata`): which policies select a proxy, their
//! order, and the merged confs.

use model::specs::dataplane::DataplaneSpec;
use serde_json::{Value, json};
use xds::rules::build::{catch_all, inbound_rules, single_item, to_rule};
use xds::rules::matching::matched_policies;
use xds::{DataplaneEntry, RawPolicy};

fn policy(name: &str, labels: &[(&str, &str)], spec: Value) -> RawPolicy {
    RawPolicy {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec,
    }
}

fn proxy(name: &str, labels: &[(&str, &str)], spec: Value) -> DataplaneEntry {
    DataplaneEntry {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        spec: serde_json::from_value::<DataplaneSpec>(spec).expect("dataplane"),
    }
}

/// Kuma's `dp-1`: one inbound on 8080, service foo.
fn dp_foo() -> DataplaneEntry {
    proxy(
        "dp-1",
        &[],
        json!({"networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "foo"}}]}}),
    )
}

fn names(origins: &[xds::rules::Origin]) -> Vec<&str> {
    origins.iter().map(|o| o.name.as_str()).collect()
}

/// rules/testdata/rules/to/meshtimeout: a Mesh-wide default and a more specific override.
#[test]
fn legacy_to_rules_merge_the_more_specific_policy_last() {
    let policies = vec![
        policy(
            "default",
            &[],
            json!({"targetRef": {"kind": "Mesh"}, "to": [{"targetRef": {"kind": "Mesh"},
                "default": {"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "10s"}}}]}),
        ),
        policy(
            "override",
            &[],
            json!({"targetRef": {"kind": "MeshService", "name": "foo"}, "to": [
                {"targetRef": {"kind": "MeshService", "name": "foo"}, "default": {"http": {"requestTimeout": "15s"}}},
                {"targetRef": {"kind": "MeshService", "name": "bar"}, "default": {"http": {"requestTimeout": "20s"}}}]}),
        ),
    ];
    let dp = dp_foo();
    let m = matched_policies(&policies, &dp);
    assert_eq!(m.matched.len(), 2);
    let foo = to_rule(&m.matched, "foo").expect("foo");
    assert_eq!(
        foo.conf,
        json!({"idleTimeout": "20s", "connectionTimeout": "2s", "http": {"requestTimeout": "15s"}})
    );
    assert_eq!(names(&foo.origins), ["default", "override"]);
    let bar = to_rule(&m.matched, "bar").expect("bar");
    assert_eq!(bar.conf["http"]["requestTimeout"], "20s");
    assert_eq!(names(&bar.origins), ["default", "override"]);
    let other = to_rule(&m.matched, "baz").expect("Mesh covers every destination");
    assert_eq!(other.conf["http"]["requestTimeout"], "10s");
    assert_eq!(names(&other.origins), ["default"]);
}

/// inbound/testdata/inboundrules/mt-order-by-origin: global, then unknown, then zone.
#[test]
fn inbound_rules_order_by_origin_and_the_zone_wins() {
    let policies = vec![
        policy(
            "ccc",
            &[("kuma.io/origin", "zone")],
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"connectionTimeout": "111s", "idleTimeout": "109s"}}]}),
        ),
        policy(
            "bbb",
            &[],
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"connectionTimeout": "211s", "http": {"requestTimeout": "209s"}}}]}),
        ),
        policy(
            "aaa",
            &[("kuma.io/origin", "global")],
            json!({"targetRef": {"kind": "Mesh"}, "rules": [{"default": {"connectionTimeout": "11s", "http": {"requestTimeout": "12s"}}}]}),
        ),
    ];
    let dp = dp_foo();
    let m = matched_policies(&policies, &dp);
    let rules = inbound_rules(&m.matched, 0, true);
    let order: Vec<&str> = rules.iter().map(|r| r.origin.name.as_str()).collect();
    assert_eq!(order, ["aaa", "bbb", "ccc"]);
    assert!(rules.iter().all(|r| r.matches.is_none()));
    let merged = catch_all(&rules).expect("catch-all");
    assert_eq!(
        merged.conf,
        json!({"connectionTimeout": "111s", "http": {"requestTimeout": "209s"}, "idleTimeout": "109s"})
    );
}

/// inbound/testdata/inboundrules/mt-order-by-role: system, producer, consumer (the consumer
/// applies in its own namespace only).
#[test]
fn inbound_rules_order_by_role() {
    let ns = ("k8s.kuma.io/namespace", "kuma-demo");
    let policies = vec![
        policy(
            "ccc",
            &[("kuma.io/policy-role", "consumer"), ns],
            json!({"rules": [{"default": {"idleTimeout": "3s"}}]}),
        ),
        policy(
            "aaa",
            &[("kuma.io/policy-role", "system")],
            json!({"rules": [{"default": {"idleTimeout": "1s"}}]}),
        ),
        policy(
            "bbb",
            &[("kuma.io/policy-role", "producer")],
            json!({"rules": [{"default": {"idleTimeout": "2s"}}]}),
        ),
    ];
    let dp = proxy(
        "dp-1",
        &[ns],
        json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "foo"}}]}}),
    );
    let m = matched_policies(&policies, &dp);
    let rules = inbound_rules(&m.matched, 0, true);
    let order: Vec<&str> = rules.iter().map(|r| r.origin.name.as_str()).collect();
    assert_eq!(order, ["aaa", "bbb", "ccc"]);
    assert_eq!(catch_all(&rules).expect("merged").conf["idleTimeout"], "3s");

    let elsewhere = proxy(
        "dp-2",
        &[("k8s.kuma.io/namespace", "other")],
        json!({"networking": {"address": "10.0.0.2", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "foo"}}]}}),
    );
    let m = matched_policies(&policies, &elsewhere);
    assert_eq!(
        m.matched
            .iter()
            .map(|m| m.policy.name.as_str())
            .collect::<Vec<_>>(),
        ["aaa", "bbb"],
        "a consumer policy of another namespace selected the proxy"
    );
}

/// inbound/testdata/inboundrules/mt-rules: equal attributes, so display names decide, and
/// they sort descending: `aaaaaa` is last and wins.
#[test]
fn display_names_sort_descending() {
    let policies = vec![
        policy(
            "mt-aaaaaa",
            &[],
            json!({"rules": [{"default": {"idleTimeout": "1s"}}]}),
        ),
        policy(
            "mt-bbbbbb",
            &[],
            json!({"rules": [{"default": {"idleTimeout": "2s"}}]}),
        ),
    ];
    let m = matched_policies(&policies, &dp_foo());
    let rules = inbound_rules(&m.matched, 0, true);
    assert_eq!(rules[1].origin.name, "mt-aaaaaa");
    assert_eq!(catch_all(&rules).expect("merged").conf["idleTimeout"], "1s");
}

/// outbound/testdata/resourcerules/mt_with_multiple_policies, synced variant: copies stored
/// under hashed names keep the order of their display names; a top-level `Dataplane`
/// outranks `Mesh`.
#[test]
fn synced_copies_order_by_display_name_and_dataplane_outranks_mesh() {
    let to = |conf: Value| json!({"to": [{"targetRef": {"kind": "Mesh"}, "default": conf}]});
    let mut second = to(json!({"connectionTimeout": "2s", "idleTimeout": "30s"}));
    second["targetRef"] = json!({"kind": "Dataplane", "labels": {"app": "my-app"}});
    let policies = vec![
        policy(
            "matched-for-rules-first-bvwz2592dc5czf64",
            &[
                ("kuma.io/display-name", "first"),
                ("kuma.io/origin", "global"),
            ],
            to(json!({"connectionTimeout": "1s", "http": {"requestTimeout": "20s"}})),
        ),
        policy(
            "matched-for-rules-second-2v4z7f2c9c8d4b4d",
            &[
                ("kuma.io/display-name", "second"),
                ("kuma.io/origin", "global"),
            ],
            second,
        ),
        policy(
            "matched-for-rules-third-bccxv6wzv4v2865x",
            &[
                ("kuma.io/display-name", "third"),
                ("kuma.io/origin", "global"),
            ],
            to(json!({"connectionTimeout": "3s", "http": {"maxStreamDuration": "60s"}})),
        ),
    ];
    let dp = proxy(
        "dp-1",
        &[("app", "my-app")],
        json!({"networking": {"address": "10.0.0.1", "inbound": [{"port": 8080, "tags": {"kuma.io/service": "web"}}]}}),
    );
    let m = matched_policies(&policies, &dp);
    let rule = to_rule(&m.matched, "backend").expect("rule");
    let order: Vec<&str> = rule
        .origins
        .iter()
        .map(|o| o.labels["kuma.io/display-name"].as_str())
        .collect();
    assert_eq!(order, ["third", "first", "second"]);
    assert_eq!(
        rule.conf,
        json!({"connectionTimeout": "2s", "http": {"maxStreamDuration": "60s", "requestTimeout": "20s"}, "idleTimeout": "30s"})
    );
}

/// Kuma reads MeshTimeout's `from[]` as catch-all inbound rules (the client selector is not
/// used), after any policy's `rules[]`-specific matches.
#[test]
fn from_entries_are_catch_all_rules_and_matches_come_first() {
    let policies = vec![
        policy(
            "legacy",
            &[],
            json!({"from": [{"targetRef": {"kind": "MeshSubset", "tags": {"team": "a"}}, "default": {"idleTimeout": "5s"}}]}),
        ),
        policy(
            "modern",
            &[],
            json!({"rules": [
                {"matches": [{"spiffeID": {"type": "Prefix", "value": "spiffe://default/"}},
                             {"spiffeID": {"type": "Exact", "value": "spiffe://default/web"}}],
                 "default": {"idleTimeout": "9s"}}]}),
        ),
    ];
    let m = matched_policies(&policies, &dp_foo());
    let rules = inbound_rules(&m.matched, 0, true);
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0].matches.as_ref().expect("match")["spiffeID"]["type"],
        "Exact"
    );
    assert_eq!(
        rules[1].matches.as_ref().expect("match")["spiffeID"]["type"],
        "Prefix"
    );
    assert!(rules[2].matches.is_none());
    assert_eq!(catch_all(&rules).expect("merged").conf["idleTimeout"], "5s");
    // A type Kuma does not read `from` as rules for gets nothing from it.
    assert!(inbound_rules(&m.matched, 0, false).len() == 2);
}

#[test]
fn dataplane_refs_by_name_zone_and_section() {
    let zoned = proxy(
        "dp-1",
        &[("kuma.io/zone", "zone-1"), ("kuma.io/origin", "zone")],
        json!({"networking": {"address": "10.0.0.1", "inbound": [
            {"port": 8080, "tags": {"kuma.io/service": "foo"}},
            {"port": 9090, "name": "admin", "tags": {"kuma.io/service": "foo-admin"}}]}}),
    );
    let by_name = |labels: &[(&str, &str)], section: Option<&str>| {
        let mut target = json!({"kind": "Dataplane", "name": "dp-1"});
        if let Some(s) = section {
            target["sectionName"] = json!(s);
        }
        policy("p", labels, json!({"targetRef": target, "default": {}}))
    };
    let zone_policy = [("kuma.io/zone", "zone-1"), ("kuma.io/origin", "zone")];
    let selected = |p: RawPolicy| -> Option<Vec<usize>> {
        matched_policies(std::slice::from_ref(&p), &zoned)
            .matched
            .first()
            .map(|m| m.inbounds.clone())
    };
    assert_eq!(selected(by_name(&zone_policy, None)), Some(vec![0, 1]));
    // A global policy names Dataplanes of no zone, so it never selects a zoned one by name.
    assert_eq!(
        selected(by_name(&[("kuma.io/origin", "global")], None)),
        None
    );
    assert_eq!(selected(by_name(&zone_policy, Some("8080"))), Some(vec![0]));
    assert_eq!(
        selected(by_name(&zone_policy, Some("admin"))),
        Some(vec![1])
    );
    // proxyTypes narrows Mesh: a gateway-only policy skips sidecars.
    let gateways_only = policy(
        "gw",
        &[],
        json!({"targetRef": {"kind": "Mesh", "proxyTypes": ["Gateway"]}, "default": {}}),
    );
    assert!(
        matched_policies(std::slice::from_ref(&gateways_only), &zoned)
            .matched
            .is_empty()
    );
    let single = single_item(&matched_policies(&[by_name(&zone_policy, None)], &zoned).matched);
    assert_eq!(single.expect("single").conf, json!({}));
}
