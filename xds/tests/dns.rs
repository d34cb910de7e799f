//! kuma-dp's DNS records: a proxy behind a transparent proxy is served every hostname of the
//! mesh's services with the VIP this zone gave it, at `/dns` on the dynamic configuration
//! listener it shares with MeshMetric; a proxy without one gets nothing.

mod common;

use model::ResourceType;
use model::dpapi::DnsProxyConfig;
use serde_json::{Value, json};
use xds::context::ServiceEntry;

fn service(kind: ResourceType, name: &str, vip: Option<&str>, hostnames: &[&str]) -> ServiceEntry {
    let mut r = model::Resource::new(kind, "default", name, json!({"ports": [{"port": 8080}]}));
    let addresses: Vec<Value> = hostnames.iter().map(|h| json!({"hostname": h})).collect();
    r.status = Some(match (kind, vip) {
        (ResourceType::MeshExternalService, Some(ip)) => {
            json!({"vip": {"ip": ip}, "addresses": addresses})
        }
        (_, Some(ip)) => json!({"vips": [{"ip": ip}], "addresses": addresses}),
        (_, None) => json!({"addresses": addresses}),
    });
    ServiceEntry::from_resource(&r)
}

fn served(listener: &Value, path: &str) -> Option<String> {
    let routes = listener
        .pointer("/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")?;
    routes
        .as_array()?
        .iter()
        .filter(|r| r.pointer("/match/path") == Some(&json!(path)))
        .find_map(|r| r.pointer("/direct_response/body/inline_string")?.as_str())
        .map(String::from)
}

#[test]
fn transparent_proxies_get_every_named_vip_and_others_nothing() {
    let mut mesh = common::mesh("http", false, vec![common::allow_all()]);
    mesh.dataplanes[0].spec.networking.transparent_proxying =
        Some(json!({"redirectPortInbound": 15006, "redirectPortOutbound": 15001}));
    mesh.services = vec![
        service(
            ResourceType::MeshService,
            "backend",
            Some("241.0.0.1"),
            &["backend.svc.mesh.local"],
        ),
        service(
            ResourceType::MeshService,
            "backend-zone-2",
            Some("241.0.0.2"),
            &["backend.svc.zone-2.mesh.local"],
        ),
        service(
            ResourceType::MeshExternalService,
            "httpbin",
            Some("242.0.0.1"),
            &["httpbin.extsvc.mesh.local"],
        ),
        // Not allocated yet: nothing to answer with.
        service(
            ResourceType::MeshService,
            "new",
            None,
            &["new.svc.mesh.local"],
        ),
    ];
    let r = xds::sidecar(&mesh, "web-1").expect("config");
    common::check_schema(&r);
    let listener = r
        .listeners
        .iter()
        .find(|l| l["name"] == "_kuma:dynamicconfig")
        .expect("the dynamic configuration listener");
    let body = served(listener, "/dns").expect("the /dns route");
    let config: DnsProxyConfig = serde_json::from_str(&body).expect("Kuma's DNSProxyConfig");
    let records: Vec<(&str, &str)> = config
        .records
        .iter()
        .map(|r| (r.name.as_str(), r.ips[0].as_str()))
        .collect();
    assert_eq!(
        records,
        [
            ("backend.svc.mesh.local", "241.0.0.1"),
            ("backend.svc.zone-2.mesh.local", "241.0.0.2"),
            ("httpbin.extsvc.mesh.local", "242.0.0.1"),
        ]
    );
    assert_eq!(config.ttl, 30);
    assert_eq!(config.extra_labels["mesh"], "default");
    common::envoy_validates("dns-records", &r);

    let other = xds::sidecar(&mesh, "backend-1").expect("config");
    assert!(
        !other
            .listeners
            .iter()
            .any(|l| l["name"] == "_kuma:dynamicconfig"),
        "no transparent proxy, no DNS records"
    );
}
