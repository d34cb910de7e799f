//! `~/.kumactl/config`: control planes and contexts, in Kuma's YAML layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KumactlConfig {
    #[serde(default)]
    pub contexts: Vec<ContextEntry>,
    #[serde(default)]
    pub control_planes: Vec<ControlPlane>,
    #[serde(default)]
    pub current_context: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextEntry {
    pub name: String,
    pub control_plane: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ContextDefaults>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextDefaults {
    #[serde(default)]
    pub mesh: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlane {
    pub name: String,
    pub coordinates: Coordinates,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coordinates {
    pub api_server: ApiServer,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServer {
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_cert_file: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_verify: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth_conf: BTreeMap<String, String>,
}

pub fn default_path() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".kumactl").join("config")
}

impl KumactlConfig {
    /// The built-in default when no file exists: a `local` control plane on this host.
    pub fn local_default() -> Self {
        KumactlConfig {
            contexts: vec![ContextEntry {
                name: "local".into(),
                control_plane: "local".into(),
                defaults: None,
            }],
            control_planes: vec![ControlPlane {
                name: "local".into(),
                coordinates: Coordinates {
                    api_server: ApiServer {
                        url: "http://localhost:5681".into(),
                        ..Default::default()
                    },
                },
            }],
            current_context: "local".into(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::local_default()),
            Ok(text) => serde_saphyr::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}: not a valid kumactl config: {e}", path.display())
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::local_default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self).context("rendering the kumactl config")?;
        // Tokens live in this file: write it owner-only, through a temp file so a crash
        // cannot leave it half-written.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    }

    pub fn current(&self) -> Result<&ControlPlane> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .with_context(|| format!("current context {:?} does not exist; run 'kumactl config control-planes switch'", self.current_context))?;
        self.control_planes
            .iter()
            .find(|cp| cp.name == ctx.control_plane)
            .with_context(|| {
                format!(
                    "context {:?} points to unknown control plane {:?}",
                    ctx.name, ctx.control_plane
                )
            })
    }

    pub fn add(&mut self, cp: ControlPlane, overwrite: bool) -> Result<()> {
        if let Some(existing) = self.control_planes.iter_mut().find(|c| c.name == cp.name) {
            if !overwrite {
                bail!(
                    "control plane with name {:?} already exists; use --overwrite to replace it",
                    cp.name
                );
            }
            *existing = cp.clone();
        } else {
            self.control_planes.push(cp.clone());
        }
        if !self.contexts.iter().any(|c| c.name == cp.name) {
            self.contexts.push(ContextEntry {
                name: cp.name.clone(),
                control_plane: cp.name.clone(),
                defaults: None,
            });
        }
        self.current_context = cp.name;
        Ok(())
    }

    pub fn switch(&mut self, name: &str) -> Result<()> {
        if !self.contexts.iter().any(|c| c.name == name) {
            bail!("there is no control plane with name {name:?}");
        }
        self.current_context = name.to_string();
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<()> {
        let before = self.control_planes.len();
        self.control_planes.retain(|c| c.name != name);
        if self.control_planes.len() == before {
            bail!("there is no control plane with name {name:?}");
        }
        self.contexts.retain(|c| c.control_plane != name);
        if self.current_context == name {
            self.current_context = self
                .contexts
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default();
        }
        Ok(())
    }
}
