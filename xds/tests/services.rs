//! Outbounds from MeshServices: a transparently proxied sidecar gets a listener on each port of
//! each MeshService it may reach, on the service's VIP (unbound, reached through the
//! outbound passthrough listener), whose cluster sends to the Dataplanes the service selects in
//! this zone, or to the ingress of the zone it runs in with Kuma's SNI, which that zone's
//! ingress routes. `reachableBackends` and `meshServices.mode` restrict them; policies keyed to
//! the MeshService apply. Every configuration is also validated by Envoy; golden files in
//! `tests/snapshots/services__*.snap`.

mod common;

use model::specs::mesh::MeshServicesMode;
use model::{Resource, ResourceType};
use serde_json::{Value, json};
use xds::context::{ServiceEntry, ZoneProxyListener};
use xds::generator::services::resource_sni;

const BACKEND_CLUSTER: &str = "default_backend___msvc_20081";

/// A MeshService as the zone's controller leaves it: selector, ports and VIP.
fn backend(labels: &[(&str, &str)], name: &str, vip: &str) -> ServiceEntry {
    let mut r = Resource::new(
        ResourceType::MeshService,
        "default",
        name,
        json!({"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
               "ports": [{"port": 20081, "targetPort": 20081, "appProtocol": "http"}]}),
    );
    for (k, v) in labels {
        r.meta.labels.insert(k.to_string(), v.to_string());
    }
    r.status = Some(json!({"vips": [{"ip": vip}],
        "addresses": [{"hostname": "backend.svc.mesh.local"}],
        "identities": [{"type": "ServiceTag", "value": "backend"}]}));
    ServiceEntry::from_resource(&r)
}

fn transparent(mesh: &mut xds::MeshContext, extra: Value) {
    let mut tp = json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001});
    if let (Some(tp), Some(extra)) = (tp.as_object_mut(), extra.as_object()) {
        tp.extend(extra.clone());
    }
    mesh.dataplanes[0].spec.networking.transparent_proxying = Some(tp);
}

fn find<'a>(items: &'a [Value], name: &str) -> Option<&'a Value> {
    items.iter().find(|i| i["name"] == name)
}

#[test]
fn a_transparent_sidecar_reaches_a_local_mesh_service_on_its_vip() {
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.services = vec![backend(&[], "backend", "241.0.0.1")];
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);

    let outbound = find(&r.listeners, "outbound:241.0.0.1:20081").expect("the VIP outbound");
    assert_eq!(outbound["bind_to_port"], false, "{outbound}");
    let hcm = &outbound["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(
        hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"], BACKEND_CLUSTER,
        "{outbound}"
    );
    let assignment = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == BACKEND_CLUSTER)
        .expect("the service's endpoints");
    let addresses: Vec<&str> = assignment["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["lb_endpoints"].as_array().into_iter().flatten())
        .filter_map(|e| {
            e.pointer("/endpoint/address/socket_address/address")?
                .as_str()
        })
        .collect();
    // The Dataplanes the selector picks, on the inbound the port targets; not the unready one.
    assert_eq!(addresses, ["10.0.0.2", "10.0.0.3"], "{assignment}");

    let passthrough =
        find(&r.listeners, "outbound:passthrough:ipv4").expect("outbound passthrough");
    assert_eq!(passthrough["use_original_dst"], true);
    assert_eq!(
        passthrough["address"]["socket_address"]["port_value"],
        15001
    );
    let inbound = find(&r.listeners, "inbound:passthrough:ipv4").expect("inbound passthrough");
    assert_eq!(inbound["address"]["socket_address"]["port_value"], 15006);
    let cluster =
        find(&r.clusters, "inbound:passthrough:ipv4").expect("inbound passthrough cluster");
    assert_eq!(cluster["type"], "ORIGINAL_DST");
    assert_eq!(
        cluster["upstream_bind_config"]["source_address"]["address"],
        "127.0.0.6"
    );
    let own = find(&r.listeners, "inbound:10.0.0.1:20080").expect("the proxy's inbound");
    assert_eq!(own["bind_to_port"], false, "iptables hands it its traffic");
    // The declared outbound on loopback stays bound: iptables leaves loopback alone.
    let declared = find(&r.listeners, "outbound:127.0.0.1:10001").expect("declared outbound");
    assert!(declared.get("bind_to_port").is_none(), "{declared}");
    common::envoy_validates("mesh-service-outbound", &r);
    insta::assert_yaml_snapshot!(
        "mesh_service_outbound_transparent",
        json!({"listeners": r.listeners, "clusters": r.clusters, "endpoints": r.endpoints})
    );

    // A proxy without a transparent proxy gets neither.
    let plain = xds::sidecar(&mesh, "backend-1").expect("config");
    assert!(find(&plain.listeners, "outbound:241.0.0.1:20081").is_none());
    assert!(find(&plain.listeners, "outbound:passthrough:ipv4").is_none());

    // Nor does anyone in a mesh that does not use MeshServices.
    mesh.mesh_services = None;
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    assert!(find(&r.listeners, "outbound:241.0.0.1:20081").is_none());
    assert!(find(&r.listeners, "outbound:passthrough:ipv4").is_some());

    // A mesh that forbids passthrough closes what no outbound takes.
    mesh.passthrough = Some(false);
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    assert!(find(&r.clusters, "outbound:passthrough:ipv4").is_none());
    assert!(find(&r.clusters, "outbound:no-destination").is_some());
    common::envoy_validates("no-passthrough", &r);
}

#[test]
fn reachable_backends_and_the_mesh_mode_restrict_the_outbounds() {
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.mesh_services = Some(MeshServicesMode::Everywhere);
    mesh.services = vec![
        backend(&[], "backend", "241.0.0.1"),
        backend(&[("team", "a")], "other", "241.0.0.2"),
    ];
    let outbounds = |mesh: &xds::MeshContext| -> Vec<String> {
        let r = xds::sidecar(mesh, "web-1").expect("config");
        let mut names: Vec<String> = r
            .listeners
            .iter()
            .filter_map(|l| l["name"].as_str())
            .filter(|n| n.starts_with("outbound:241."))
            .map(String::from)
            .collect();
        names.sort();
        names
    };
    transparent(&mut mesh, json!({}));
    assert_eq!(
        outbounds(&mesh),
        ["outbound:241.0.0.1:20081", "outbound:241.0.0.2:20081"]
    );
    transparent(
        &mut mesh,
        json!({"reachableBackends": {"refs": [{"kind": "MeshService", "name": "backend"}]}}),
    );
    assert_eq!(outbounds(&mesh), ["outbound:241.0.0.1:20081"]);
    transparent(
        &mut mesh,
        json!({"reachableBackends": {"refs": [{"kind": "MeshService", "labels": {"team": "a"}}]}}),
    );
    assert_eq!(outbounds(&mesh), ["outbound:241.0.0.2:20081"]);
    transparent(
        &mut mesh,
        json!({"reachableBackends": {"refs": [{"kind": "MeshService", "name": "backend", "port": 9}]}}),
    );
    assert!(outbounds(&mesh).is_empty());
    // ReachableBackends mode: nothing unless listed.
    mesh.mesh_services = Some(MeshServicesMode::ReachableBackends);
    transparent(&mut mesh, json!({}));
    assert!(outbounds(&mesh).is_empty());
}

#[test]
fn a_mesh_service_of_another_zone_goes_through_its_ingress_with_kumas_sni() {
    // Zone-1's sidecar calls backend, which runs in zone-2 (its copy synced through global).
    let mut mesh = common::mesh("http", true, vec![common::allow_all()]);
    mesh.local_zone = "zone-1".into();
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.dataplanes.retain(|d| d.name == "web-1");
    mesh.remote_ingresses = vec![common::remote_ingress("zone-2", "192.168.2.1", json!([]))];
    let synced = backend(
        &[
            ("kuma.io/origin", "global"),
            ("kuma.io/zone", "zone-2"),
            ("kuma.io/display-name", "backend"),
        ],
        "backend-5x8b7f4c9d",
        "241.0.0.7",
    );
    mesh.services = vec![synced];
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let cluster_name = "default_backend__zone-2_msvc_20081";
    let sni = resource_sni("backend", "default", ResourceType::MeshService, 20081);
    common::assert_through_ingress_with_sni(&r, cluster_name, "192.168.2.1", &sni);
    let cluster = find(&r.clusters, cluster_name).expect("cluster");
    let tls = &cluster["transport_socket"]["typed_config"];
    assert_eq!(
        tls["common_tls_context"]["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
            [0]["matcher"]["exact"],
        "spiffe://default/backend"
    );
    common::envoy_validates("mesh-service-cross-zone", &r);

    // Zone-2's ingress routes that SNI to its own instances of backend.
    let mut zone2 = common::mesh("http", true, vec![common::allow_all()]);
    zone2.local_zone = "zone-2".into();
    zone2.services = vec![backend(
        &[("kuma.io/origin", "zone"), ("kuma.io/zone", "zone-2")],
        "backend",
        "241.0.0.1",
    )];
    let listener = ZoneProxyListener {
        address: "192.168.2.1".into(),
        port: 10001,
    };
    let ingress = xds::generator::ingress::generate(&listener, &[zone2]);
    let chains = ingress.listeners[0]["filter_chains"]
        .as_array()
        .expect("chains");
    let chain = chains
        .iter()
        .find(|c| c["filter_chain_match"]["server_names"][0] == sni.as_str())
        .unwrap_or_else(|| panic!("no chain for {sni}: {chains:#?}"));
    let target = chain["filters"][0]["typed_config"]["cluster"].as_str();
    let assignment = ingress
        .endpoints
        .iter()
        .find(|e| Some(e["cluster_name"].as_str().unwrap_or_default()) == target)
        .expect("the ingress's endpoints for backend");
    assert_eq!(
        assignment["endpoints"][0]["lb_endpoints"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{assignment}"
    );
}

#[test]
fn a_policy_keyed_to_the_mesh_service_applies_to_its_outbound() {
    let timeout = common::validated::<model::specs::policy::MeshTimeoutSpec>(
        "backend-timeout",
        json!({"targetRef": {"kind": "Mesh"},
               "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                       "default": {"connectionTimeout": "7s"}}]}),
    );
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.policies.set(vec![timeout]);
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.services = vec![backend(&[], "backend", "241.0.0.1")];
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    let cluster = find(&r.clusters, BACKEND_CLUSTER).expect("cluster");
    assert_eq!(cluster["connect_timeout"], "7s", "{cluster}");
}

/// A MeshMultiZoneService as global syncs it: its selector, ports and this zone's VIP.
fn multi_zone(vip: &str) -> ServiceEntry {
    let mut r = Resource::new(
        ResourceType::MeshMultiZoneService,
        "default",
        "backend-mz",
        json!({"selector": {"meshService": {"matchLabels": {"app": "backend"}}},
               "ports": [{"port": 20081, "appProtocol": "http"}]}),
    );
    r.meta
        .labels
        .insert("kuma.io/origin".into(), "global".into());
    r.status = Some(json!({"vips": [{"ip": vip}]}));
    ServiceEntry::from_resource(&r)
}

/// Zone-1's mesh with mTLS: backend here and in zone-2 (its copy synced through global, and
/// zone-2's ingress), and a MeshMultiZoneService over both.
fn backend_in_two_zones() -> xds::MeshContext {
    let mut mesh = common::mesh("http", true, vec![common::allow_all()]);
    mesh.local_zone = "zone-1".into();
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.remote_ingresses = vec![common::remote_ingress("zone-2", "192.168.2.1", json!([]))];
    mesh.services = vec![
        backend(
            &[
                ("kuma.io/origin", "zone"),
                ("kuma.io/zone", "zone-1"),
                ("app", "backend"),
            ],
            "backend",
            "241.0.0.1",
        ),
        backend(
            &[
                ("kuma.io/origin", "global"),
                ("kuma.io/zone", "zone-2"),
                ("kuma.io/display-name", "backend"),
                ("app", "backend"),
            ],
            "backend-zone-2",
            "241.0.0.2",
        ),
        multi_zone("243.0.0.1"),
    ];
    mesh
}

#[test]
fn a_multi_zone_service_sends_to_this_zone_first_then_to_other_zones_ingresses() {
    let mut mesh = backend_in_two_zones();
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    assert!(find(&r.listeners, "outbound:243.0.0.1:20081").is_some());
    let cluster = "default_backend-mz___mzsvc_20081";
    let c = find(&r.clusters, cluster).expect("the MeshMultiZoneService's cluster");
    let sni = resource_sni(
        "backend-mz",
        "default",
        ResourceType::MeshMultiZoneService,
        20081,
    );
    assert_eq!(c["transport_socket"]["typed_config"]["sni"], sni.as_str());
    let assignment = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == cluster)
        .expect("endpoints");
    let groups = assignment["endpoints"].as_array().expect("groups");
    // This zone's two ready instances first, zone-2's ingress behind them.
    assert_eq!(
        groups[0]["lb_endpoints"].as_array().map(Vec::len),
        Some(2),
        "{assignment}"
    );
    assert_eq!(groups[0].get("priority"), None, "{assignment}");
    let remote = &groups[1];
    assert_eq!(remote["priority"], 1, "{assignment}");
    assert_eq!(
        remote["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"],
        "192.168.2.1"
    );
    common::envoy_validates("multi-zone-service", &r);

    // Zone-2's ingress routes the MeshMultiZoneService's SNI to its own backend.
    let mut zone2 = common::mesh("http", true, vec![common::allow_all()]);
    zone2.local_zone = "zone-2".into();
    zone2.services = vec![
        backend(
            &[
                ("kuma.io/origin", "zone"),
                ("kuma.io/zone", "zone-2"),
                ("app", "backend"),
            ],
            "backend",
            "241.0.0.9",
        ),
        multi_zone("243.0.0.9"),
    ];
    let listener = ZoneProxyListener {
        address: "192.168.2.1".into(),
        port: 10001,
    };
    let ingress = xds::generator::ingress::generate(&listener, &[zone2]);
    let routed = ingress.listeners[0]["filter_chains"]
        .as_array()
        .expect("chains")
        .iter()
        .any(|c| c["filter_chain_match"]["server_names"][0] == sni.as_str());
    assert!(routed, "the ingress routes {sni}");
}

/// The chain of a zone proxy's listener that matches `sni`, and where its cluster's
/// endpoints are (address, port, priority).
fn zone_proxy_route(r: &xds::ProxyResources, sni: &str) -> Vec<(String, u64, u64)> {
    let chains = r.listeners[0]["filter_chains"].as_array().expect("chains");
    let chain = chains
        .iter()
        .find(|c| c["filter_chain_match"]["server_names"][0] == sni)
        .unwrap_or_else(|| panic!("no chain for {sni}: {chains:#?}"));
    let cluster = chain["filters"][0]["typed_config"]["cluster"].clone();
    let assignment = r
        .endpoints
        .iter()
        .find(|e| e["cluster_name"] == cluster)
        .unwrap_or_else(|| panic!("no endpoints for {cluster}"));
    let mut out = Vec::new();
    for group in assignment["endpoints"].as_array().expect("groups") {
        for e in group["lb_endpoints"].as_array().expect("endpoints") {
            let a = &e["endpoint"]["address"]["socket_address"];
            out.push((
                a["address"].as_str().unwrap_or_default().to_string(),
                a["port_value"].as_u64().unwrap_or_default(),
                group["priority"].as_u64().unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn with_zone_egress_cross_zone_service_calls_leave_through_the_egress() {
    // Zone-1's mesh routes cross-zone traffic through its egress: web-1 calls zone-2's
    // backend and a MeshMultiZoneService over backend in both zones.
    let mut mesh = backend_in_two_zones();
    mesh.zone_egress = true;
    mesh.local_egresses = vec![("10.1.0.9".into(), 10002)];
    transparent(&mut mesh, json!({}));
    mesh.dataplanes.retain(|d| d.name == "web-1");
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let ms_sni = resource_sni("backend", "default", ResourceType::MeshService, 20081);
    let mz_sni = resource_sni(
        "backend-mz",
        "default",
        ResourceType::MeshMultiZoneService,
        20081,
    );
    // The sidecar dials its egress, with the SNI it would give zone-2's ingress.
    common::assert_through_ingress_with_sni(
        &r,
        "default_backend__zone-2_msvc_20081",
        "10.1.0.9",
        &ms_sni,
    );

    let listener = ZoneProxyListener {
        address: "10.1.0.9".into(),
        port: 10002,
    };
    let egress = xds::generator::egress::generate(
        &listener,
        std::slice::from_ref(&mesh),
        &Default::default(),
    );
    common::check_schema(&egress);
    // The egress passes both on to zone-2's ingress; this zone's own backend is not its
    // business (sidecars reach it directly).
    assert_eq!(
        zone_proxy_route(&egress, &ms_sni),
        vec![("192.168.2.1".to_string(), 10001, 0)]
    );
    assert_eq!(
        zone_proxy_route(&egress, &mz_sni),
        vec![("192.168.2.1".to_string(), 10001, 0)]
    );
    let chains = egress.listeners[0]["filter_chains"]
        .as_array()
        .expect("chains");
    assert_eq!(
        chains
            .iter()
            .filter(|c| c["filter_chain_match"]["server_names"][0] == ms_sni.as_str())
            .count(),
        1,
        "one chain for backend's SNI, zone-2's"
    );
    common::envoy_validates("zone-egress-services", &egress);
}

fn external(spec: Value, vip: &str) -> ServiceEntry {
    let mut r = Resource::new(
        ResourceType::MeshExternalService,
        "default",
        "httpbin",
        spec,
    );
    r.status =
        Some(json!({"vip": {"ip": vip}, "addresses": [{"hostname": "httpbin.extsvc.mesh.local"}]}));
    ServiceEntry::from_resource(&r)
}

#[test]
fn a_mesh_external_service_is_reached_directly_with_tls_originated() {
    let mut mesh = common::mesh("http", true, vec![common::allow_all()]);
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.services = vec![external(
        json!({"match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
               "endpoints": [{"address": "127.0.0.1", "port": 8443}],
               "tls": {"enabled": true, "verification": {
                   "serverName": "httpbin.example",
                   "caCert": {"secret": "httpbin-ca"}}}}),
        "242.0.0.1",
    )];
    mesh.external_secrets = [("httpbin-ca".to_string(), Some("Q0E=".to_string()))].into();
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let l = find(&r.listeners, "outbound:242.0.0.1:80").expect("the external service's outbound");
    assert!(
        l["filter_chains"][0]["filters"][0]["name"]
            .as_str()
            .is_some_and(|n| n.contains("http_connection_manager"))
    );
    let c = find(&r.clusters, "default_httpbin___extsvc_80").expect("cluster");
    assert_eq!(c["type"], "STATIC");
    let tls = &c["transport_socket"]["typed_config"];
    assert_eq!(tls["sni"], "httpbin.example");
    // The external server's CA, not the mesh's: the mesh's mTLS does not leave the mesh.
    assert_eq!(
        tls["common_tls_context"]["validation_context"]["trusted_ca"]["inline_bytes"],
        "Q0E="
    );
    assert!(
        tls["common_tls_context"]
            .get("tls_certificate_sds_secret_configs")
            .is_none()
    );
    insta::assert_yaml_snapshot!(
        "mesh_external_service_tls",
        json!({"listener": l, "cluster": c})
    );

    // Its CA Secret missing: no outbound, and the proxy says why.
    mesh.external_secrets = [("httpbin-ca".to_string(), None)].into();
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    assert!(find(&r.listeners, "outbound:242.0.0.1:80").is_none());
}

#[test]
fn with_a_zone_egress_a_mesh_external_service_leaves_through_it() {
    let spec = json!({"match": {"type": "HostnameGenerator", "port": 80, "protocol": "http"},
           "endpoints": [{"address": "httpbin.example", "port": 8443}],
           "tls": {"enabled": true, "verification": {"caCert": {"secret": "httpbin-ca"}}}});
    let mut mesh = common::mesh("http", true, vec![common::allow_all()]);
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.services = vec![external(spec, "242.0.0.1")];
    mesh.external_secrets = [("httpbin-ca".to_string(), Some("Q0E=".to_string()))].into();
    mesh.local_egresses = vec![("10.1.0.9".into(), 10002)];
    transparent(&mut mesh, json!({}));
    mesh.dataplanes.retain(|d| d.name == "web-1");
    let sni = resource_sni("httpbin", "default", ResourceType::MeshExternalService, 80);

    // The sidecar: mesh mTLS to its egress, expecting the egress's identity.
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let cluster = "default_httpbin___extsvc_80";
    common::assert_through_ingress_with_sni(&r, cluster, "10.1.0.9", &sni);
    let c = find(&r.clusters, cluster).expect("cluster");
    assert_eq!(
        c["transport_socket"]["typed_config"]["common_tls_context"]["combined_validation_context"]
            ["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
        "spiffe://default/zone-egress"
    );
    common::envoy_validates("mesh-external-service-via-egress", &r);

    // The egress: terminates the mesh's mTLS for that SNI and originates the external TLS,
    // rewriting Host to the external name.
    let listener = ZoneProxyListener {
        address: "10.1.0.9".into(),
        port: 10002,
    };
    let identities = std::collections::BTreeSet::from(["default".to_string()]);
    let egress =
        xds::generator::egress::generate(&listener, std::slice::from_ref(&mesh), &identities);
    common::check_schema(&egress);
    let chains = egress.listeners[0]["filter_chains"]
        .as_array()
        .expect("chains");
    let chain = chains
        .iter()
        .find(|c| c["filter_chain_match"]["server_names"][0] == sni.as_str())
        .expect("the egress's chain for the MeshExternalService");
    let downstream = &chain["transport_socket"]["typed_config"];
    assert_eq!(downstream["require_client_certificate"], true);
    assert_eq!(
        downstream["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["name"],
        xds::envoy::names::identity_secret_name("default")
    );
    let route = &chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
        [0]["route"];
    assert_eq!(route["cluster"], cluster);
    assert_eq!(route["auto_host_rewrite"], true);
    let c = find(&egress.clusters, cluster).expect("the egress's external cluster");
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(
        c["transport_socket"]["typed_config"]["sni"],
        "httpbin.example"
    );
    insta::assert_yaml_snapshot!(
        "zone_egress_mesh_external_service",
        json!({"chain": chain, "cluster": c})
    );
    common::envoy_validates("zone-egress-mesh-external-service", &egress);

    // Without a certificate of the mesh the egress routes none of its external services.
    let none = xds::generator::egress::generate(
        &listener,
        std::slice::from_ref(&mesh),
        &Default::default(),
    );
    assert!(none.listeners.is_empty(), "{:?}", none.listeners);

    // The mesh forbids MeshExternalService access: the egress refuses everyone.
    mesh.forbid_external_access = true;
    let forbidden =
        xds::generator::egress::generate(&listener, std::slice::from_ref(&mesh), &identities);
    let chain = &forbidden.listeners[0]["filter_chains"][0];
    assert_eq!(chain["filters"][0]["name"], "envoy.filters.network.rbac");
    assert_eq!(chain["filters"][0]["typed_config"]["rules"], json!({}));
}

#[test]
fn mesh_passthrough_lets_through_only_what_it_matches() {
    let passthrough = common::validated::<model::specs::policy::MeshPassthroughSpec>(
        "only-some",
        json!({"targetRef": {"kind": "Mesh"},
               "default": {"passthroughMode": "Matched", "appendMatch": [
                   {"type": "Domain", "value": "api.example.com", "port": 443, "protocol": "tls"},
                   {"type": "Domain", "value": "*.example.org", "protocol": "http"},
                   {"type": "CIDR", "value": "10.9.0.0/16", "protocol": "tcp"}]}}),
    );
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.policies.set(vec![passthrough]);
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let l = find(&r.listeners, "outbound:passthrough:ipv4").expect("passthrough");
    let chains = l["filter_chains"].as_array().expect("chains");
    assert_eq!(chains.len(), 3, "{l}");
    let by_sni = chains
        .iter()
        .find(|c| c["filter_chain_match"]["server_names"][0] == "api.example.com")
        .expect("the TLS domain's chain");
    assert_eq!(by_sni["filter_chain_match"]["destination_port"], 443);
    let cidr = chains
        .iter()
        .find(|c| c["filter_chain_match"]["prefix_ranges"][0]["address_prefix"] == "10.9.0.0")
        .expect("the CIDR's chain");
    assert_eq!(
        cidr["filter_chain_match"]["prefix_ranges"][0]["prefix_len"],
        16
    );
    assert!(find(&r.clusters, "meshpassthrough_tls_api.example.com_443").is_some());
    assert!(
        l["listener_filters"]
            .as_array()
            .is_some_and(|f| f.len() == 2)
    );
    common::envoy_validates("mesh-passthrough", &r);
    let passthrough_clusters: Vec<&Value> = r
        .clusters
        .iter()
        .filter(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("meshpassthrough_"))
        })
        .collect();
    insta::assert_yaml_snapshot!(
        "mesh_passthrough_matched",
        json!({"listener": l, "clusters": passthrough_clusters})
    );
}

#[test]
fn a_mesh_http_route_to_the_mesh_service_routes_its_vip_outbound() {
    let route = common::validated::<model::specs::policy::MeshHttpRouteSpec>(
        "backend-route",
        json!({"targetRef": {"kind": "Mesh"},
               "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                       "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                  "default": {"filters": [{"type": "RequestHeaderModifier",
                                      "requestHeaderModifier": {"add": [{"name": "x-routed", "value": "mesh-service"}]}}]}}]}]}),
    );
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.policies.set(vec![route]);
    mesh.mesh_services = Some(MeshServicesMode::Exclusive);
    mesh.services = vec![backend(&[], "backend", "241.0.0.1")];
    transparent(&mut mesh, json!({}));
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let l = find(&r.listeners, "outbound:241.0.0.1:20081").expect("the VIP outbound");
    let routes = &l["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"];
    let routed = routes.as_array().into_iter().flatten().find(|r| {
        r["request_headers_to_add"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["header"]["key"] == "x-routed"))
    });
    let routed = routed.unwrap_or_else(|| panic!("no route adds x-routed: {routes}"));
    // Still to the MeshService's own cluster.
    assert_eq!(routed["route"]["cluster"], BACKEND_CLUSTER, "{routed}");
    common::envoy_validates("mesh-service-route", &r);
}

/// A Dataplane change that only moves endpoints refreshes a transparent proxy's service
/// outbounds without generating its whole configuration again, and gives what a whole
/// generation would.
#[test]
fn a_new_instance_of_a_mesh_service_refreshes_only_endpoints() {
    let snapshot = |mut m: xds::MeshContext| {
        m.shared = Some(std::sync::Arc::default());
        m
    };
    let mut before = common::mesh("http", false, vec![common::allow_all()]);
    before.mesh_services = Some(MeshServicesMode::Exclusive);
    before.services = vec![backend(&[], "backend", "241.0.0.1")];
    transparent(&mut before, json!({}));
    let mut after = before.clone();
    after.dataplanes.push(common::dataplane(
        "backend-9",
        json!({"networking": {"address": "10.0.0.9", "inbound": [{"port": 20081,
            "tags": {"kuma.io/service": "backend", "kuma.io/protocol": "http"}}]}}),
    ));
    let (before, after) = (snapshot(before), snapshot(after));
    let first = xds::sidecar(&before, "web-1").expect("config");
    let refreshed = xds::refresh_endpoints(&before, &after, "web-1", &first.plan)
        .expect("only endpoints changed: refreshed, not generated again");
    let full = xds::sidecar(&after, "web-1").expect("config");
    assert_eq!(refreshed, full.endpoints);
    let backend_endpoints = refreshed
        .iter()
        .find(|e| e["cluster_name"] == BACKEND_CLUSTER)
        .expect("the service's endpoints");
    assert!(
        backend_endpoints.to_string().contains("10.0.0.9"),
        "{backend_endpoints}"
    );
}
