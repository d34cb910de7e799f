//! `kumactl export`: the resources of a control plane as YAML to apply to another, chiefly to
//! federate a standalone or zone control plane with a global (Kuma's profiles and order).

use anyhow::{Result, bail};
use clap::ValueEnum;
use model::descriptor::kds::{CONSUMED_BY_ZONE, PROVIDED_BY_GLOBAL};
use model::labels::{DISPLAY_NAME, ENV, ORIGIN, ZONE};
use model::{Resource, ResourceType};
use serde_json::{Value, json};

use crate::client::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Every type (secrets only with --include-admin).
    All,
    /// What global needs before the zone joins: meshes, secrets and other global-provided
    /// resources, without targetRef policies and gateways.
    Federation,
    /// Federation plus the policies, so global can take them over.
    FederationWithPolicies,
    /// All except dataplanes.
    NoDataplanes,
}

/// Control-plane internals that identify one control plane: copying them to another breaks it.
const NEVER_EXPORTED: &[&str] = &[
    "inter-cp-ca",
    "envoy-admin-ca",
    "kds-server-tls",
    "admin-user-token",
];

fn is_signing_material(name: &str) -> bool {
    name.contains("-signing-key-") || name.ends_with("-token-revocations")
}

/// What Kuma's `/_resources` calls `includeInFederation`: global creates it and zones use it.
fn include_in_federation(kind: ResourceType) -> bool {
    let d = kind.descriptor();
    d.has_flag(PROVIDED_BY_GLOBAL) && d.has_flag(CONSUMED_BY_ZONE) && !d.read_only
}

fn is_admin_type(kind: ResourceType) -> bool {
    matches!(kind, ResourceType::Secret | ResourceType::GlobalSecret)
}

fn wanted(kind: ResourceType, profile: Profile, include_admin: bool) -> bool {
    let d = kind.descriptor();
    // Insights and the cluster's own configuration describe this control plane, not the mesh.
    if d.read_only || kind == ResourceType::Config {
        return false;
    }
    let federation = matches!(
        profile,
        Profile::Federation | Profile::FederationWithPolicies
    );
    if is_admin_type(kind) && !(federation || include_admin) {
        return false;
    }
    match profile {
        Profile::All => true,
        Profile::NoDataplanes => kind != ResourceType::Dataplane,
        Profile::Federation => {
            include_in_federation(kind) && !d.is_policy && kind != ResourceType::MeshGateway
        }
        Profile::FederationWithPolicies => include_in_federation(kind),
    }
}

async fn list_all(client: &Client, kind: ResourceType) -> Result<Vec<Value>> {
    let plural = kind.descriptor().plural;
    let mut items = Vec::new();
    loop {
        let page = client
            .get_json(&format!("/{plural}?size=1000&offset={}", items.len()))
            .await?;
        let batch = page["items"].as_array().cloned().unwrap_or_default();
        let done = batch.is_empty() || page["next"].is_null();
        items.extend(batch);
        if done {
            return Ok(items);
        }
    }
}

pub async fn export(
    client: &Client,
    profile: Profile,
    format: &str,
    include_admin: bool,
) -> Result<()> {
    if format != "universal" {
        bail!(
            "invalid format {format:?}: this control plane runs on universal, so only \"universal\" is supported"
        );
    }
    let info = client.get_json("/").await?;
    let mut meshes = Vec::new();
    let mut secrets = Vec::new();
    let mut rest = Vec::new();
    let mut signing = Vec::new();
    let mut skipped = 0usize;
    for kind in ResourceType::all().filter(|k| wanted(*k, profile, include_admin)) {
        for item in list_all(client, kind).await? {
            let mut r = match Resource::from_value(item) {
                Ok(r) => r,
                Err(e) => bail!("the control plane returned a {kind} kumactl cannot read: {e}"),
            };
            // Copies of another control plane's resources belong to it, not to this export:
            // global's (which include other zones', as Kuma sends them) and, from before
            // that, other zones' copies renamed by the sync (they carry a display name).
            let synced_copy = r.label(ZONE).is_some() && r.label(DISPLAY_NAME).is_some();
            if r.label(ORIGIN) == Some("global") || synced_copy {
                skipped += 1;
                continue;
            }
            // Where it was written is for the control plane that takes it to compute (as
            // Kuma's export drops the origin); a zone label would mark it as a zone's on global.
            for label in [ORIGIN, ZONE, ENV] {
                r.meta.labels.remove(label);
            }
            let name = r.meta.name.as_str();
            if kind == ResourceType::GlobalSecret && NEVER_EXPORTED.contains(&name) {
                continue;
            }
            if kind == ResourceType::GlobalSecret && is_signing_material(name) {
                if include_admin {
                    signing.push(r);
                }
                continue;
            }
            match kind {
                ResourceType::Mesh => meshes.push(r),
                ResourceType::Secret => secrets.push(r),
                _ => rest.push(r),
            }
        }
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    println!(
        "# Product: {}, Version: {}, Hostname: {}, ClusterId: {}, InstanceId: {}",
        text(&info["product"]),
        text(&info["version"]),
        text(&info["hostname"]),
        text(&info["clusterId"]),
        text(&info["instanceId"])
    );
    if skipped > 0 {
        println!("# {skipped} resources synced from other control planes were left out");
    }
    for mut mesh in meshes {
        // Global must not add its default policies to a mesh that already has its own.
        if let Some(obj) = mesh.spec.as_object_mut() {
            obj.insert("skipCreatingInitialPolicies".into(), json!(["*"]));
        }
        print_doc(&mesh);
    }
    secrets.iter().chain(&rest).for_each(print_doc);
    if !signing.is_empty() {
        println!(
            "# Signing keys come last: once applied, tokens issued by the target control plane \
             (including kumactl's) stop working and new ones must be generated."
        );
        signing.iter().for_each(print_doc);
    }
    Ok(())
}

fn print_doc(r: &Resource) {
    print!("---\n{}", model::resource::to_yaml(&r.to_value()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_pick_kumas_types() {
        let fed = |k| wanted(k, Profile::Federation, false);
        let fed_pol = |k| wanted(k, Profile::FederationWithPolicies, false);
        assert!(
            fed(ResourceType::Mesh) && fed(ResourceType::Secret) && fed(ResourceType::GlobalSecret)
        );
        assert!(!fed(ResourceType::MeshTimeout) && fed_pol(ResourceType::MeshTimeout));
        assert!(!fed(ResourceType::MeshGateway) && fed_pol(ResourceType::MeshGateway));
        for k in [
            ResourceType::Dataplane,
            ResourceType::DataplaneInsight,
            ResourceType::Zone,
            ResourceType::Config,
        ] {
            assert!(!fed_pol(k), "{k}");
        }
        assert!(!wanted(ResourceType::Secret, Profile::All, false));
        assert!(wanted(ResourceType::Secret, Profile::All, true));
        assert!(wanted(ResourceType::Dataplane, Profile::All, false));
        assert!(!wanted(
            ResourceType::Dataplane,
            Profile::NoDataplanes,
            false
        ));
        assert!(!wanted(ResourceType::DataplaneInsight, Profile::All, true));
    }
}
