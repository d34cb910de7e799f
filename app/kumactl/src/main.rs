//! `kumactl`: manage a control plane over its HTTP API.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use model::specs::insight::InsightSpec;
use model::{Resource, ResourceType, Timestamp};
use serde_json::{Value, json};

mod client;
mod cpconfig;
mod export;
mod table;
mod transparent;

use client::Client;
use cpconfig::{ApiServer, ControlPlane, Coordinates, KumactlConfig};

const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser)]
#[command(name = "kumactl", version = VERSION, about = "Management tool for Kuma-compatible control planes")]
struct Cli {
    /// Path to the kumactl config file (default ~/.kumactl/config).
    #[arg(long, global = true, env = "KUMACTL_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    /// Timeout for API requests, as a duration (e.g. 30s).
    #[arg(long, global = true, default_value = "1m")]
    api_timeout: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Yaml,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Manage kumactl's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create or update resources from YAML or JSON.
    Apply {
        /// File to read, or '-' for standard input.
        #[arg(short = 'f', long)]
        file: String,
        /// Variables substituted for `{{ name }}` in the file.
        #[arg(short = 'v', long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Validate and print the resources without sending them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show resources: `get <plural>` lists, `get <singular> NAME` shows one.
    Get {
        /// Resource type, e.g. meshes, meshtimeouts, dataplane.
        kind: String,
        name: Option<String>,
        #[arg(short = 'm', long, default_value = "default")]
        mesh: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Page offset.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Only resources with this label (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(short = 'm', long, default_value = "default")]
        mesh: String,
    },
    /// Inspect meshes and dataplanes with their live status.
    Inspect {
        #[command(subcommand)]
        command: InspectCommand,
    },
    /// Generate tokens.
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Export resources as YAML, e.g. to apply them to a global before federating.
    Export {
        #[arg(short = 'p', long, value_enum, default_value = "federation")]
        profile: export::Profile,
        /// Only "universal": resources as `kumactl apply` reads them.
        #[arg(short = 'f', long, default_value = "universal")]
        format: String,
        /// Also secrets (profiles all, no-dataplanes) and token signing keys.
        #[arg(short = 'a', long)]
        include_admin: bool,
    },
    /// Install what runs beside the control plane and its proxies.
    Install {
        #[command(subcommand)]
        command: InstallCommand,
    },
    /// Remove what `install` installed.
    Uninstall {
        #[command(subcommand)]
        command: UninstallCommand,
    },
    /// Print client and server versions.
    Version,
    /// Print a shell completion script, e.g. `source <(kumactl completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(Subcommand)]
enum InstallCommand {
    /// iptables rules (nat table) sending this host's TCP through Envoy and its DNS to
    /// kuma-dp, except the traffic of the user kuma-dp runs as (run as root, e.g. in the
    /// application's network namespace).
    #[command(name = "transparent-proxy")]
    TransparentProxy(Box<TransparentProxyArgs>),
}

#[derive(Subcommand)]
enum UninstallCommand {
    /// Remove the transparent proxy's iptables rules, leaving every other rule as it was.
    #[command(name = "transparent-proxy")]
    TransparentProxy {
        /// Print what would be removed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Kuma's flags for `install transparent-proxy`. Those for what is not implemented (eBPF,
/// firewalld, IPv6 redirection, iptables logging) are accepted with a warning.
#[derive(clap::Args)]
struct TransparentProxyArgs {
    /// The user (name or UID) kuma-dp and Envoy run as; Kuma's default: UID 5678 or the
    /// user `kuma-dp`.
    #[arg(long, alias = "kuma-dp-uid")]
    kuma_dp_user: Option<String>,
    /// Redirect incoming TCP to Envoy (turn off for a gateway).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    redirect_inbound: bool,
    /// Envoy's inbound passthrough port (the Dataplane's `redirectPortInbound`).
    #[arg(long, default_value_t = 15006)]
    redirect_inbound_port: u16,
    /// Envoy's outbound passthrough port (the Dataplane's `redirectPortOutbound`).
    #[arg(long, default_value_t = 15001)]
    redirect_outbound_port: u16,
    /// Inbound ports left alone (comma-separated).
    #[arg(long)]
    exclude_inbound_ports: Vec<String>,
    /// Outbound ports left alone (comma-separated).
    #[arg(long)]
    exclude_outbound_ports: Vec<String>,
    /// Sources (IPv4 addresses or CIDRs) whose incoming traffic is left alone.
    #[arg(long)]
    exclude_inbound_ips: Vec<String>,
    /// Destinations (IPv4 addresses or CIDRs) whose traffic is left alone.
    #[arg(long)]
    exclude_outbound_ips: Vec<String>,
    /// Send DNS queries to the servers of /etc/resolv.conf to kuma-dp's DNS proxy.
    #[arg(long)]
    redirect_dns: bool,
    /// Send every DNS query (UDP 53) to kuma-dp's DNS proxy.
    #[arg(long)]
    redirect_all_dns_traffic: bool,
    /// kuma-dp's DNS proxy port.
    #[arg(long, default_value_t = 15053)]
    redirect_dns_port: u16,
    /// `ipv4` or `dualstack` (IPv6 traffic is not redirected yet).
    #[arg(long, default_value = "dualstack", value_parser = ["ipv4", "dualstack"])]
    ip_family_mode: String,
    /// Print the rules, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the rules applied.
    #[arg(long)]
    verbose: bool,
    #[arg(long, hide = true)]
    ebpf_enabled: bool,
    #[arg(long, hide = true)]
    store_firewalld: bool,
    #[arg(long, hide = true)]
    drop_invalid_packets: bool,
    #[arg(long, hide = true)]
    iptables_logs: bool,
    #[arg(long, hide = true)]
    disable_comments: bool,
    #[arg(long, hide = true)]
    vnet: Vec<String>,
    #[arg(long, hide = true)]
    exclude_outbound_ports_for_uids: Vec<String>,
    #[arg(long, hide = true)]
    wait: Option<u32>,
    #[arg(long, hide = true)]
    wait_interval: Option<u32>,
    #[arg(long, hide = true)]
    max_retries: Option<u32>,
    #[arg(long, hide = true)]
    sleep_between_retries: Option<String>,
}

impl TransparentProxyArgs {
    /// Kuma's flags this does not implement, as given.
    fn unimplemented(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        for (set, flag) in [
            (self.ebpf_enabled, "--ebpf-enabled"),
            (self.store_firewalld, "--store-firewalld"),
            (self.drop_invalid_packets, "--drop-invalid-packets"),
            (self.iptables_logs, "--iptables-logs"),
            (self.disable_comments, "--disable-comments"),
            (!self.vnet.is_empty(), "--vnet"),
            (
                !self.exclude_outbound_ports_for_uids.is_empty(),
                "--exclude-outbound-ports-for-uids",
            ),
            (self.wait.is_some(), "--wait"),
            (self.wait_interval.is_some(), "--wait-interval"),
            (self.max_retries.is_some(), "--max-retries"),
            (
                self.sleep_between_retries.is_some(),
                "--sleep-between-retries",
            ),
        ] {
            if set {
                given.push(flag);
            }
        }
        given
    }

    fn config(&self) -> Result<transparent::Config> {
        use transparent::{DnsRedirect, parse_ips, parse_ports};
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let dns = if self.redirect_all_dns_traffic {
            DnsRedirect::All
        } else if self.redirect_dns {
            let resolv = std::fs::read_to_string("/etc/resolv.conf")
                .context("--redirect-dns: reading /etc/resolv.conf")?;
            let servers = transparent::nameservers(&resolv);
            if servers.is_empty() {
                bail!(
                    "--redirect-dns: /etc/resolv.conf lists no IPv4 nameserver; use --redirect-all-dns-traffic"
                );
            }
            DnsRedirect::To(servers)
        } else {
            DnsRedirect::Off
        };
        Ok(transparent::Config {
            kuma_dp_uid: transparent::resolve_uid(self.kuma_dp_user.as_deref(), &passwd)?,
            redirect_inbound: self.redirect_inbound,
            inbound_port: self.redirect_inbound_port,
            outbound_port: self.redirect_outbound_port,
            exclude_inbound_ports: parse_ports(
                "--exclude-inbound-ports",
                &self.exclude_inbound_ports,
            )?,
            exclude_outbound_ports: parse_ports(
                "--exclude-outbound-ports",
                &self.exclude_outbound_ports,
            )?,
            exclude_inbound_ips: parse_ips("--exclude-inbound-ips", &self.exclude_inbound_ips)?,
            exclude_outbound_ips: parse_ips("--exclude-outbound-ips", &self.exclude_outbound_ips)?,
            dns,
            dns_port: self.redirect_dns_port,
        })
    }
}

fn install_transparent_proxy(args: &TransparentProxyArgs) -> Result<()> {
    for flag in args.unimplemented() {
        eprintln!("warning: {flag} is Kuma's and not implemented here; it is ignored");
    }
    if args.ip_family_mode == "dualstack" {
        eprintln!("warning: --ip-family-mode dualstack: only IPv4 traffic is redirected");
    }
    let config = args.config()?;
    if args.dry_run {
        print!("{}", transparent::rules(&config));
        return Ok(());
    }
    let rules = transparent::install(&config)?;
    if args.verbose {
        print!("{rules}");
    }
    println!(
        "transparent proxy installed (kuma-dp UID {})",
        config.kuma_dp_uid
    );
    Ok(())
}

fn uninstall_transparent_proxy(dry_run: bool) -> Result<()> {
    if dry_run {
        let saved = std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .context("running iptables-save")?;
        match transparent::removal(&String::from_utf8_lossy(&saved.stdout)) {
            Some(r) => print!("{r}"),
            None => println!("no transparent proxy rules installed"),
        }
        return Ok(());
    }
    match transparent::uninstall()? {
        true => println!("transparent proxy uninstalled"),
        false => println!("no transparent proxy rules installed; nothing changed"),
    }
    Ok(())
}

/// The shells Kuma's kumactl completes for.
#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Manage known control planes.
    #[command(name = "control-planes")]
    ControlPlanes {
        #[command(subcommand)]
        command: ControlPlanesCommand,
    },
    /// Print the kumactl configuration.
    View,
}

#[derive(Subcommand)]
enum ControlPlanesCommand {
    /// Add a control plane and make it current.
    Add {
        #[arg(long)]
        name: String,
        /// API URL, e.g. http://localhost:5681 or https://cp:5682.
        #[arg(long)]
        address: String,
        #[arg(long)]
        auth_type: Option<String>,
        /// Authentication settings, e.g. token=<user token>.
        #[arg(long, value_name = "KEY=VALUE")]
        auth_conf: Vec<String>,
        #[arg(long)]
        ca_cert_file: Option<String>,
        #[arg(long)]
        skip_verify: bool,
        #[arg(long)]
        overwrite: bool,
        /// Do not check that the control plane answers.
        #[arg(long)]
        skip_check: bool,
    },
    /// List control planes.
    List,
    /// Make a control plane current.
    Switch {
        #[arg(long)]
        name: String,
    },
    /// Forget a control plane.
    Remove {
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum InspectCommand {
    /// Replicas of the control plane, the leader and their last heartbeat.
    #[command(name = "control-planes")]
    ControlPlanes {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Dataplanes and mesh resources per mesh.
    Meshes {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Zones connected to global: status, versions and sync counters.
    Zones {
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One proxy's Envoy, live: its config dump, stats or clusters.
    Dataplane {
        name: String,
        #[arg(short = 'm', long, default_value = "default")]
        mesh: String,
        #[arg(long = "type", value_enum, default_value = "config-dump")]
        kind: EnvoyView,
        /// With config-dump: include the endpoints (EDS).
        #[arg(long)]
        include_eds: bool,
    },
    /// A zone ingress's Envoy, live (on global: through its zone).
    #[command(name = "zoneingress")]
    ZoneIngress {
        name: String,
        #[arg(long = "type", value_enum, default_value = "config-dump")]
        kind: EnvoyView,
        /// With config-dump: include the endpoints (EDS).
        #[arg(long)]
        include_eds: bool,
    },
    /// A zone egress's Envoy, live (on global: through its zone).
    #[command(name = "zoneegress")]
    ZoneEgress {
        name: String,
        #[arg(long = "type", value_enum, default_value = "config-dump")]
        kind: EnvoyView,
        /// With config-dump: include the endpoints (EDS).
        #[arg(long)]
        include_eds: bool,
    },
    /// Services of a mesh: how many of their proxies are online.
    Services {
        #[arg(short = 'm', long, default_value = "default")]
        mesh: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Dataplanes with online status and connection details.
    Dataplanes {
        /// Mesh to inspect; all meshes when not set.
        #[arg(short = 'm', long)]
        mesh: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
    },
    /// `kumactl inspect <policy-type> NAME [-m MESH]`: the dataplanes a policy selects.
    #[command(external_subcommand)]
    Policy(Vec<String>),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EnvoyView {
    ConfigDump,
    Stats,
    Clusters,
    /// The merged rules of every policy type (`_rules`), computed by the control plane.
    Rules,
    /// The policies that select the proxy (`_policies`).
    Policies,
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// A self-signed TLS certificate and its key, e.g. for a gateway listener's Secret
    /// (made here; the control plane is not asked).
    #[command(name = "tls-certificate")]
    TlsCertificate {
        /// What the certificate is for.
        #[arg(long = "type", value_parser = ["server", "client"])]
        cert_type: String,
        /// Host names the certificate is for (repeatable or comma-separated; the first is
        /// its common name). A server certificate needs at least one.
        #[arg(long = "hostname", value_delimiter = ',')]
        hostnames: Vec<String>,
        /// Where the private key is written (`-` for standard output).
        #[arg(long, default_value = "key.pem")]
        key_file: String,
        /// Where the certificate is written (`-` for standard output).
        #[arg(long, default_value = "cert.pem")]
        cert_file: String,
        /// The key's algorithm.
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ecdsa"])]
        key_type: String,
        /// How long the certificate is valid, as a duration.
        #[arg(long, default_value = "87600h")]
        valid_for: String,
    },
    /// A private key for signing tokens (RSA 2048, PKCS#1), e.g. to rotate a token signing
    /// key by hand (made here; the control plane is not asked).
    #[command(name = "signing-key")]
    SigningKey {
        /// `pem-base64` (what a GlobalSecret's `data` holds) or `pem`.
        #[arg(long, default_value = "pem-base64", value_parser = ["pem-base64", "pem"])]
        format: String,
    },
    /// The public key of a signing key, for validating its tokens elsewhere.
    #[command(name = "public-key")]
    PublicKey {
        /// File with the PEM-encoded private signing key.
        #[arg(long)]
        signing_key_path: PathBuf,
    },
    /// A token for the API server (admin only).
    #[command(name = "user-token")]
    User {
        #[arg(long)]
        name: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long)]
        valid_for: String,
    },
    /// A token a zone control plane (scope cp) or zone proxy presents to global (admin only).
    #[command(name = "zone-token")]
    Zone {
        #[arg(long)]
        zone: String,
        /// cp, ingress, egress; repeatable or comma-separated. All when not given.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
        #[arg(long)]
        valid_for: String,
    },
    /// A token a data plane proxy presents to the control plane (admin only). Only the given
    /// name, tags and proxy type are checked, so a token without them serves any dataplane of
    /// the mesh.
    #[command(name = "dataplane-token")]
    Dataplane {
        /// Name of the dataplane the token is for.
        #[arg(long)]
        name: Option<String>,
        /// Mesh the dataplane belongs to.
        #[arg(short = 'm', long, default_value = "default")]
        mesh: String,
        /// Tag values the dataplane must have, e.g. kuma.io/service=web,web-api (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE[,VALUE...]")]
        tags: Vec<String>,
        /// Proxy type the token is for; any when not given.
        #[arg(long, alias = "type", value_parser = ["dataplane", "ingress", "egress"])]
        proxy_type: Option<String>,
        /// How long the token is valid, as a duration (default ten years, as Kuma).
        #[arg(long, default_value = "87600h")]
        valid_for: String,
    },
}

/// `kumactl generate tls-certificate`: a self-signed certificate and key written to the
/// given files (`-`: standard output, key first).
fn generate_tls_certificate(
    cert_type: &str,
    hostnames: &[String],
    key_type: &str,
    valid_for: &str,
    key_file: &str,
    cert_file: &str,
) -> Result<()> {
    use security::tls::{CertUsage, KeyType};
    let usage = match cert_type {
        "server" => CertUsage::Server,
        _ => CertUsage::Client,
    };
    let hostnames: Vec<String> = hostnames
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if usage == CertUsage::Server && hostnames.is_empty() {
        bail!("--hostname: a server certificate needs at least one host name");
    }
    for h in &hostnames {
        if h.parse::<std::net::IpAddr>().is_err()
            && model::specs::gateway::check_gateway_hostname(h).is_err()
        {
            bail!("--hostname {h:?}: not a valid host name");
        }
    }
    let lifetime = model::duration::parse_duration(valid_for)
        .map_err(|e| anyhow::anyhow!("--valid-for {valid_for:?}: {e}"))?;
    let key_type = match key_type {
        "ecdsa" => KeyType::Ecdsa,
        _ => KeyType::Rsa,
    };
    let pair = security::tls::self_signed_certificate(usage, key_type, &hostnames, lifetime)?;
    for (file, pem) in [(key_file, &pair.key_pem), (cert_file, &pair.cert_pem)] {
        if file == "-" {
            print!("{pem}");
        } else {
            std::fs::write(file, pem).with_context(|| format!("writing {file}"))?;
        }
    }
    Ok(())
}

/// `--tag` values as Kuma's kumactl reads them: `k=v1,v2`, several flags for several tags,
/// and `k1=v1,k2=v2` in one flag too (an item with `=` starts the next tag).
fn parse_tags(items: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        let mut current: Option<String> = None;
        for part in item.split(',') {
            let value = match part.split_once('=') {
                Some((key, value)) => {
                    let key = key.trim();
                    if key.is_empty() {
                        bail!(
                            "--tag {item:?}: the tag name is empty; expected KEY=VALUE[,VALUE...]"
                        );
                    }
                    current = Some(key.to_string());
                    value
                }
                None => part,
            };
            let Some(key) = &current else {
                bail!("--tag {item:?}: expected KEY=VALUE[,VALUE...]");
            };
            let value = value.trim();
            if value.is_empty() {
                bail!("--tag {item:?}: tag {key:?} has an empty value");
            }
            let values = tags.entry(key.clone()).or_default();
            if !values.iter().any(|v| v == value) {
                values.push(value.to_string());
            }
        }
    }
    Ok(tags)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // reqwest is built without a bundled crypto provider; ring serves the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_pairs(items: &[String], flag: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .with_context(|| format!("{flag} {kv:?}: expected KEY=VALUE"))
        })
        .collect()
}

fn resolve_kind(word: &str) -> Result<ResourceType> {
    ResourceType::from_cli_name(word).with_context(|| {
        format!(
            "unknown resource type {word:?}; known types: {}",
            ResourceType::all()
                .map(|t| t.descriptor().plural)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn collection_path(kind: ResourceType, mesh: &str) -> String {
    let plural = kind.descriptor().plural;
    if kind.is_mesh_scoped() {
        format!("/meshes/{mesh}/{plural}")
    } else {
        format!("/{plural}")
    }
}

async fn run(cli: Cli) -> Result<()> {
    let config_path = cli
        .config_file
        .clone()
        .unwrap_or_else(cpconfig::default_path);
    let timeout = model::duration::parse_duration(&cli.api_timeout)
        .map_err(|e| anyhow::anyhow!("--api-timeout: {e}"))?;
    if let Command::Completion { shell } = cli.command {
        let shell = match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        };
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kumactl", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("writing the completion script"),
        };
    }
    let mut config = KumactlConfig::load(&config_path)?;
    let connect = |config: &KumactlConfig| -> Result<Client> {
        Client::new(&config.current()?.coordinates.api_server, timeout)
    };
    match cli.command {
        Command::Config { command } => match command {
            ConfigCommand::View => {
                print!(
                    "{}",
                    serde_saphyr::to_string(&config).context("rendering config")?
                );
            }
            ConfigCommand::ControlPlanes { command } => match command {
                ControlPlanesCommand::Add {
                    name,
                    address,
                    auth_type,
                    auth_conf,
                    ca_cert_file,
                    skip_verify,
                    overwrite,
                    skip_check,
                } => {
                    if !(address.starts_with("http://") || address.starts_with("https://")) {
                        bail!("--address {address:?}: must start with http:// or https://");
                    }
                    let api_server = ApiServer {
                        url: address.clone(),
                        ca_cert_file: ca_cert_file.unwrap_or_default(),
                        skip_verify,
                        auth_type: auth_type.unwrap_or_default(),
                        auth_conf: parse_pairs(&auth_conf, "--auth-conf")?,
                    };
                    if !skip_check {
                        let client = Client::new(&api_server, timeout)?;
                        let info = client.get_json("/").await.with_context(|| {
                            format!("checking {address} (use --skip-check to add it anyway)")
                        })?;
                        if info.get("version").is_none() {
                            bail!("{address} does not look like a Kuma control plane API");
                        }
                    }
                    config.add(
                        ControlPlane {
                            name: name.clone(),
                            coordinates: Coordinates { api_server },
                        },
                        overwrite,
                    )?;
                    config.save(&config_path)?;
                    println!("added Control Plane {name:?}");
                    println!("switched active Control Plane to {name:?}");
                }
                ControlPlanesCommand::List => {
                    let rows: Vec<Vec<String>> = config
                        .control_planes
                        .iter()
                        .map(|cp| {
                            let active = if cp.name == config.current_context {
                                "*"
                            } else {
                                ""
                            };
                            vec![
                                active.to_string(),
                                cp.name.clone(),
                                cp.coordinates.api_server.url.clone(),
                            ]
                        })
                        .collect();
                    print!("{}", table::render(&["ACTIVE", "NAME", "ADDRESS"], &rows));
                }
                ControlPlanesCommand::Switch { name } => {
                    config.switch(&name)?;
                    config.save(&config_path)?;
                    println!("switched active Control Plane to {name:?}");
                }
                ControlPlanesCommand::Remove { name } => {
                    config.remove(&name)?;
                    config.save(&config_path)?;
                    println!("removed Control Plane {name:?}");
                }
            },
        },
        Command::Apply {
            file,
            vars,
            dry_run,
        } => apply(&connect(&config), &file, &vars, dry_run).await?,
        Command::Get {
            kind,
            name,
            mesh,
            output,
            size,
            offset,
            labels,
        } => {
            let client = connect(&config)?;
            let kind = resolve_kind(&kind)?;
            match name {
                Some(name) => {
                    let item = client
                        .get_json(&format!("{}/{name}", collection_path(kind, &mesh)))
                        .await?;
                    print_items(kind, std::slice::from_ref(&item), output, Some(&item), None)?;
                }
                None => {
                    let labels = parse_pairs(&labels, "--label")?;
                    let mut query = format!("?size={size}&offset={offset}");
                    for (k, v) in labels {
                        query.push_str(&format!("&filter[labels.{k}]={v}"));
                    }
                    // Zones are shown with their status, which lives in their insights.
                    if kind == ResourceType::Zone && output == Output::Table {
                        let list = client.get_json(&format!("/zones+insights{query}")).await?;
                        print_table(
                            &[
                                "NAME",
                                "STATUS",
                                "ZONE-CP VERSION",
                                "LAST CONNECTED AGO",
                                "AGE",
                            ],
                            &list,
                            zone_get_row,
                        );
                        return Ok(());
                    }
                    let list = client
                        .get_json(&format!("{}{query}", collection_path(kind, &mesh)))
                        .await?;
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let next_offset = list["next"].as_str().map(|_| offset + items.len());
                    print_items(kind, &items, output, Some(&list), next_offset)?;
                }
            }
        }
        Command::Delete { kind, name, mesh } => {
            let client = connect(&config)?;
            let kind = resolve_kind(&kind)?;
            client
                .delete(&format!("{}/{name}", collection_path(kind, &mesh)))
                .await?;
            println!("deleted {} {name:?}", kind.name());
        }
        Command::Inspect { command } => inspect(&connect(&config)?, command).await?,
        Command::Generate { command } => {
            let (path, body) = match command {
                GenerateCommand::TlsCertificate {
                    cert_type,
                    hostnames,
                    key_file,
                    cert_file,
                    key_type,
                    valid_for,
                } => {
                    return generate_tls_certificate(
                        &cert_type, &hostnames, &key_type, &valid_for, &key_file, &cert_file,
                    );
                }
                GenerateCommand::SigningKey { format } => {
                    let pem = security::tokens::new_signing_key_pem()
                        .context("could not generate signing key")?;
                    match format.as_str() {
                        "pem" => print!("{pem}"),
                        _ => print!("{}", base64::engine::general_purpose::STANDARD.encode(pem)),
                    }
                    return Ok(());
                }
                GenerateCommand::PublicKey { signing_key_path } => {
                    let key = std::fs::read(&signing_key_path).with_context(|| {
                        format!(
                            "could not read a signing key file {}",
                            signing_key_path.display()
                        )
                    })?;
                    let public = security::tokens::public_pem(&key).with_context(|| {
                        format!(
                            "{} is not a PEM-encoded signing key",
                            signing_key_path.display()
                        )
                    })?;
                    print!("{public}");
                    return Ok(());
                }
                GenerateCommand::User {
                    name,
                    groups,
                    valid_for,
                } => (
                    "/tokens/user",
                    json!({"name": name, "groups": groups, "validFor": valid_for}),
                ),
                GenerateCommand::Zone {
                    zone,
                    scope,
                    valid_for,
                } => (
                    "/tokens/zone",
                    json!({"zone": zone, "scope": scope, "validFor": valid_for}),
                ),
                GenerateCommand::Dataplane {
                    name,
                    mesh,
                    tags,
                    proxy_type,
                    valid_for,
                } => {
                    let tags = parse_tags(&tags)?;
                    if let Err(e) = model::duration::parse_duration(&valid_for) {
                        bail!("--valid-for {valid_for:?}: {e}");
                    }
                    (
                        "/tokens/dataplane",
                        json!({
                            "name": name.unwrap_or_default(),
                            "mesh": mesh,
                            "tags": tags,
                            "type": proxy_type.unwrap_or_default(),
                            "validFor": valid_for,
                        }),
                    )
                }
            };
            let token = connect(&config)?.post_text(path, &body).await?;
            println!("{}", token.trim());
        }
        Command::Export {
            profile,
            format,
            include_admin,
        } => export::export(&connect(&config)?, profile, &format, include_admin).await?,
        // Answered before the configuration is read: completion needs no control plane.
        Command::Completion { .. } => {}
        Command::Install {
            command: InstallCommand::TransparentProxy(args),
        } => install_transparent_proxy(&args)?,
        Command::Uninstall {
            command: UninstallCommand::TransparentProxy { dry_run },
        } => uninstall_transparent_proxy(dry_run)?,
        Command::Version => {
            println!("Client: kumactl {VERSION}");
            match connect(&config)?.get_json("/").await {
                Ok(info) => println!(
                    "Server: {} {} ({} mode)",
                    info["product"].as_str().unwrap_or("?"),
                    info["version"].as_str().unwrap_or("?"),
                    info["mode"].as_str().unwrap_or("?")
                ),
                Err(e) => println!("Server: unavailable ({e:#})"),
            }
        }
    }
    Ok(())
}

async fn apply(client: &Result<Client>, file: &str, vars: &[String], dry_run: bool) -> Result<()> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let text = model::template::substitute(&text, &parse_pairs(vars, "-v")?)?;
    let docs = if text.trim_start().starts_with('{') {
        vec![
            serde_json::from_str::<Value>(&text)
                .map_err(|e| anyhow::anyhow!("{file}: invalid JSON: {e}"))?,
        ]
    } else {
        model::resource::parse_yaml_documents(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?
    };
    if docs.is_empty() {
        bail!("{file}: no resources found");
    }
    // Validate everything first, so a bad document later in the file applies nothing.
    let mut resources = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let resource = Resource::from_value(doc)
            .and_then(|r| r.validate().map(|_| r))
            .map_err(|e| {
                let fields: Vec<String> = e
                    .violations
                    .iter()
                    .map(|v| format!("\n  * {}: {}", v.field, v.reason))
                    .collect();
                anyhow::anyhow!("document {} is not valid:{}", i + 1, fields.concat())
            })?;
        resources.push(resource);
    }
    if dry_run {
        for r in &resources {
            print!("---\n{}", model::resource::to_yaml(&r.to_value()));
        }
        return Ok(());
    }
    let client = client.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    for r in resources {
        let path = format!("{}/{}", collection_path(r.kind, &r.meta.mesh), r.meta.name);
        let mut body = r.to_value();
        if let Value::Object(obj) = &mut body {
            obj.remove("creationTime");
            obj.remove("modificationTime");
        }
        let created = client
            .put(&path, &body)
            .await
            .with_context(|| format!("applying {} {:?}", r.kind, r.meta.name))?;
        println!(
            "{}/{} {}",
            r.kind.descriptor().singular,
            r.meta.name,
            if created { "created" } else { "configured" }
        );
    }
    Ok(())
}

fn print_items(
    kind: ResourceType,
    items: &[Value],
    output: Output,
    raw: Option<&Value>,
    next_offset: Option<usize>,
) -> Result<()> {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(raw.unwrap_or(&json!(items)))?
        ),
        Output::Yaml => print!("{}", model::resource::to_yaml(raw.unwrap_or(&json!(items)))),
        Output::Table => {
            let (header, rows) = resource_rows(kind, items);
            print!("{}", table::render(&header, &rows));
            if let Some(next) = next_offset {
                println!(
                    "\nRerun command with --offset={next} argument to retrieve more resources"
                );
            }
        }
    }
    Ok(())
}

fn resource_rows(kind: ResourceType, items: &[Value]) -> (Vec<&'static str>, Vec<Vec<String>>) {
    match kind {
        ResourceType::Mesh => {
            let header = vec!["NAME", "mTLS", "LOCALITY", "ZONEEGRESS", "AGE"];
            let rows = items
                .iter()
                .map(|m| {
                    // `type/name` of the section's chosen backend, or `off`.
                    let backend = |section: &str, field: &str| {
                        m[section][field]
                            .as_str()
                            .filter(|b| !b.is_empty())
                            .map(|b| {
                                let t = m[section]["backends"]
                                    .as_array()
                                    .and_then(|bs| bs.iter().find(|x| x["name"] == b))
                                    .and_then(|x| x["type"].as_str())
                                    .unwrap_or("?");
                                format!("{t}/{b}")
                            })
                            .unwrap_or_else(|| "off".into())
                    };
                    vec![
                        m["name"].as_str().unwrap_or("").to_string(),
                        backend("mtls", "enabledBackend"),
                        table::on_off(
                            m["routing"]["localityAwareLoadBalancing"]
                                .as_bool()
                                .unwrap_or(false),
                        ),
                        table::on_off(m["routing"]["zoneEgress"].as_bool().unwrap_or(false)),
                        table::age(m, "modificationTime"),
                    ]
                })
                .collect();
            (header, rows)
        }
        ResourceType::Dataplane => {
            let rows = items
                .iter()
                .map(|d| {
                    let net = &d["networking"];
                    let tags = net["inbound"]
                        .as_array()
                        .map(|ins| {
                            ins.iter()
                                .map(|i| table::tags(i.get("tags")))
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| table::tags(net["gateway"].get("tags")));
                    let address = net["advertisedAddress"]
                        .as_str()
                        .filter(|a| !a.is_empty())
                        .or(net["address"].as_str())
                        .unwrap_or("");
                    vec![
                        d["mesh"].as_str().unwrap_or("").to_string(),
                        d["name"].as_str().unwrap_or("").to_string(),
                        tags,
                        address.to_string(),
                        table::age(d, "modificationTime"),
                    ]
                })
                .collect();
            (vec!["MESH", "NAME", "TAGS", "ADDRESS", "AGE"], rows)
        }
        k if k.is_mesh_scoped() => {
            let rows = items
                .iter()
                .map(|r| {
                    vec![
                        r["mesh"].as_str().unwrap_or("").to_string(),
                        r["name"].as_str().unwrap_or("").to_string(),
                        table::age(r, "modificationTime"),
                    ]
                })
                .collect();
            (vec!["MESH", "NAME", "AGE"], rows)
        }
        _ => {
            let rows = items
                .iter()
                .map(|r| {
                    vec![
                        r["name"].as_str().unwrap_or("").to_string(),
                        table::age(r, "modificationTime"),
                    ]
                })
                .collect();
            (vec!["NAME", "AGE"], rows)
        }
    }
}

/// A proxy's Envoy config dump, stats or clusters, under the proxy's API path `base`.
/// The raft store's members under the replicas, when the control plane runs on one.
fn print_raft_members(raft: &serde_json::Value) {
    let Some(members) = raft["members"].as_array() else {
        return;
    };
    let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
    println!(
        "\nraft cluster {} term {} leader {} commit index {}",
        raft["clusterId"].as_str().unwrap_or(""),
        num(&raft["term"]),
        num(&raft["leader"]),
        num(&raft["commitIndex"]),
    );
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                num(&m["nodeId"]),
                m["address"].as_str().unwrap_or("").to_string(),
                m["role"].as_str().unwrap_or("").to_string(),
                num(&raft["term"]),
                num(&m["matchedIndex"]),
                num(&m["lag"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "RAFT NODE",
                "RAFT ADDRESS",
                "ROLE",
                "TERM",
                "MATCHED INDEX",
                "LAG"
            ],
            &rows
        )
    );
}

async fn print_envoy_view(
    client: &Client,
    base: &str,
    kind: EnvoyView,
    include_eds: bool,
) -> Result<()> {
    let view = match kind {
        EnvoyView::ConfigDump if include_eds => "xds?include_eds=true",
        EnvoyView::ConfigDump => "xds",
        EnvoyView::Stats => "stats",
        EnvoyView::Clusters => "clusters",
        EnvoyView::Rules | EnvoyView::Policies if !base.starts_with("/meshes/") => {
            bail!("--type=rules and --type=policies are for dataplanes");
        }
        EnvoyView::Rules | EnvoyView::Policies => {
            let path = if kind == EnvoyView::Rules {
                "_rules"
            } else {
                "_policies"
            };
            let answer = client.get_json(&format!("{base}/{path}")).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        }
    };
    let text = client.get_text(&format!("{base}/{view}")).await?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

/// `kumactl inspect <policy-type> NAME [-m|--mesh MESH]`: one row per selected dataplane
/// (for a MeshGateway, the builtin gateways it serves).
async fn inspect_policy(client: &Client, args: &[String]) -> Result<()> {
    let usage = "usage: kumactl inspect <policy-type|meshgateway> NAME [-m MESH]";
    let (word, rest) = args.split_first().context(usage)?;
    let kind = resolve_kind(word)?;
    if !kind.descriptor().is_policy && kind != model::ResourceType::MeshGateway {
        bail!("{word} is not a policy type; {usage}");
    }
    let mut mesh = "default".to_string();
    let mut name = None;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-m" | "--mesh" => mesh = it.next().context("--mesh needs a value")?.clone(),
            a if a.starts_with("--mesh=") => mesh = a["--mesh=".len()..].to_string(),
            a if a.starts_with('-') => bail!("unknown flag {a}; {usage}"),
            a if name.is_none() => name = Some(a.to_string()),
            a => bail!("unexpected argument {a:?}; {usage}"),
        }
    }
    let name = name.context(usage)?;
    let plural = kind.descriptor().plural;
    let list = client
        .get_json(&format!(
            "/meshes/{mesh}/{plural}/{name}/_resources/dataplanes?size=1000"
        ))
        .await?;
    print_table(&["MESH", "DATAPLANE"], &list, |i| {
        vec![
            i["mesh"].as_str().unwrap_or("").to_string(),
            i["name"].as_str().unwrap_or("").to_string(),
        ]
    });
    Ok(())
}

async fn inspect(client: &Client, command: InspectCommand) -> Result<()> {
    match command {
        InspectCommand::Policy(args) => inspect_policy(client, &args).await?,
        InspectCommand::Dataplane {
            name,
            mesh,
            kind,
            include_eds,
        } => {
            let base = format!("/meshes/{mesh}/dataplanes/{name}");
            print_envoy_view(client, &base, kind, include_eds).await?;
        }
        InspectCommand::ZoneIngress {
            name,
            kind,
            include_eds,
        } => print_envoy_view(client, &format!("/zoneingresses/{name}"), kind, include_eds).await?,
        InspectCommand::ZoneEgress {
            name,
            kind,
            include_eds,
        } => print_envoy_view(client, &format!("/zoneegresses/{name}"), kind, include_eds).await?,
        InspectCommand::ControlPlanes { output } => {
            let list = client.get_json("/control-planes").await?;
            if output != Output::Table {
                return print_items(ResourceType::Config, &[], output, Some(&list), None);
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| {
                            vec![
                                i["id"].as_str().unwrap_or("").to_string(),
                                format!(
                                    "{}:{}",
                                    i["address"].as_str().unwrap_or(""),
                                    i["interCpPort"]
                                ),
                                if i["leader"].as_bool().unwrap_or(false) {
                                    "yes".into()
                                } else {
                                    "no".into()
                                },
                                i["version"].as_str().unwrap_or("").to_string(),
                                table::ago(i["lastHeartbeat"].as_str().and_then(Timestamp::parse)),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table::render(
                    &[
                        "INSTANCE",
                        "INTER-CP ADDRESS",
                        "LEADER",
                        "VERSION",
                        "LAST HEARTBEAT"
                    ],
                    &rows
                )
            );
            print_raft_members(&list["raft"]);
        }
        InspectCommand::Meshes { output } => {
            let insights = client.get_json("/mesh-insights").await?;
            if output != Output::Table {
                return print_items(ResourceType::Mesh, &[], output, Some(&insights), None);
            }
            let rows: Vec<Vec<String>> = insights["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|m| {
                            let policies = m["policies"]
                                .as_object()
                                .map(|p| {
                                    p.iter()
                                        .map(|(k, v)| format!("{k}={}", v["total"]))
                                        .collect::<Vec<_>>()
                                        .join(" ")
                                })
                                .unwrap_or_default();
                            vec![
                                m["name"].as_str().unwrap_or("").to_string(),
                                format!(
                                    "{}/{}",
                                    m["dataplanes"]["online"], m["dataplanes"]["total"]
                                ),
                                if policies.is_empty() {
                                    "-".into()
                                } else {
                                    policies
                                },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!(
                "{}",
                table::render(&["MESH", "DATAPLANES (ONLINE/TOTAL)", "RESOURCES"], &rows)
            );
        }
        InspectCommand::Zones { output } => {
            let list = client.get_json("/zones+insights?size=1000").await?;
            if output != Output::Table {
                return print_items(ResourceType::Zone, &[], output, Some(&list), None);
            }
            print_table(
                &[
                    "NAME",
                    "STATUS",
                    "LAST CONNECTED AGO",
                    "LAST UPDATED AGO",
                    "TOTAL UPDATES",
                    "TOTAL ERRORS",
                    "ZONE-CP VERSION",
                    "BACKEND",
                ],
                &list,
                zone_inspect_row,
            );
        }
        InspectCommand::Services { mesh, output } => {
            let list = client
                .get_json(&format!("/meshes/{mesh}/service-insights?size=1000"))
                .await?;
            if output != Output::Table {
                return print_items(ResourceType::Dataplane, &[], output, Some(&list), None);
            }
            print_table(&["SERVICE", "STATUS", "DATAPLANES"], &list, |s| {
                let count = |field: &str| s["dataplanes"][field].as_u64().unwrap_or(0);
                vec![
                    s["name"].as_str().unwrap_or("").to_string(),
                    s["status"].as_str().unwrap_or("").to_string(),
                    format!("{}/{}", count("online"), count("total")),
                ]
            });
        }
        InspectCommand::Dataplanes { mesh, output } => {
            let path = match &mesh {
                Some(m) => format!("/meshes/{m}/dataplanes+insights?size=1000"),
                None => "/dataplanes+insights?size=1000".to_string(),
            };
            let list = client.get_json(&path).await?;
            if output != Output::Table {
                return print_items(ResourceType::Dataplane, &[], output, Some(&list), None);
            }
            print_table(
                &[
                    "MESH",
                    "NAME",
                    "TAGS",
                    "STATUS",
                    "LAST CONNECTED AGO",
                    "LAST UPDATED AGO",
                    "TOTAL UPDATES",
                    "TOTAL ERRORS",
                    "CERT EXPIRATION",
                    "KUMA-DP VERSION",
                    "ENVOY VERSION",
                ],
                &list,
                dataplane_inspect_row,
            );
        }
    }
    Ok(())
}

/// One row per item of a list response.
fn print_table(header: &[&str], list: &Value, row: fn(&Value) -> Vec<String>) {
    let rows: Vec<Vec<String>> = list["items"]
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default();
    print!("{}", table::render(header, &rows));
}

/// An overview's insight and whether the CP counts it online.
fn overview_status(o: &Value, insight_field: &str) -> (InsightSpec, &'static str) {
    let insight: InsightSpec = serde_json::from_value(o[insight_field].clone()).unwrap_or_default();
    let online = o["online"]
        .as_bool()
        .unwrap_or_else(|| insight.is_online(Timestamp::now(), Duration::from_secs(30)));
    (insight, if online { "Online" } else { "Offline" })
}

/// Sum of a `status.total` counter over all subscriptions. Kuma writes uint64s as JSON strings.
fn total_stat(insight: &InsightSpec, field: &str) -> u64 {
    insight
        .subscriptions
        .iter()
        .filter_map(|s| s.status.as_ref())
        .filter_map(|s| {
            let v = &s["total"][field];
            v.as_u64().or_else(|| v.as_str()?.parse().ok())
        })
        .sum()
}

fn component_version(insight: &InsightSpec, component: &str) -> String {
    insight
        .subscriptions
        .last()
        .and_then(|s| s.version.as_ref())
        .and_then(|v| v[component]["version"].as_str())
        .filter(|v| !v.is_empty())
        .unwrap_or("-")
        .to_string()
}

fn zone_get_row(o: &Value) -> Vec<String> {
    let (insight, status) = overview_status(o, "zoneInsight");
    vec![
        o["name"].as_str().unwrap_or("").to_string(),
        status.into(),
        component_version(&insight, "kumaCp"),
        table::ago(insight.last_connected()),
        table::age(o, "creationTime"),
    ]
}

fn zone_inspect_row(o: &Value) -> Vec<String> {
    let (insight, status) = overview_status(o, "zoneInsight");
    let last = insight.subscriptions.last();
    // Kuma zones put their configuration (as a JSON string) in the subscription.
    let backend = last
        .and_then(|s| s.config.as_deref())
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .and_then(|c| c["store"]["type"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into());
    vec![
        o["name"].as_str().unwrap_or("").to_string(),
        status.into(),
        table::ago(last.and_then(|s| s.connect_time)),
        table::ago(last.and_then(|s| s.last_seen())),
        total_stat(&insight, "responsesSent").to_string(),
        total_stat(&insight, "responsesRejected").to_string(),
        component_version(&insight, "kumaCp"),
        backend,
    ]
}

fn dataplane_inspect_row(o: &Value) -> Vec<String> {
    let (insight, status) = overview_status(o, "dataplaneInsight");
    let last = insight.subscriptions.last();
    let stat = |field: &str| total_stat(&insight, field);
    let version = |component: &str| component_version(&insight, component);
    let cert = insight
        .mtls
        .as_ref()
        .and_then(|m| m["certificateExpirationTime"].as_str())
        .and_then(Timestamp::parse)
        .map(|t| {
            let s = t.to_string();
            format!("{} {}", &s[..10], &s[11..19])
        })
        .unwrap_or_else(|| "-".into());
    let tags = o["dataplane"]["networking"]["inbound"]
        .as_array()
        .map(|ins| {
            ins.iter()
                .map(|i| table::tags(i.get("tags")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    vec![
        o["mesh"].as_str().unwrap_or("").to_string(),
        o["name"].as_str().unwrap_or("").to_string(),
        tags,
        status.into(),
        table::ago(last.and_then(|s| s.connect_time)),
        table::ago(last.and_then(|s| s.last_seen())),
        stat("responsesSent").to_string(),
        stat("responsesRejected").to_string(),
        cert,
        version("kumaDp"),
        version("envoy"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tags_like_kumactl() {
        let items = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let tags = parse_tags(&items(&[
            "kuma.io/service=web,web-api",
            "version=v1",
            "kuma.io/service=web",
            "team=a,zone=z1,z2",
        ]))
        .unwrap();
        assert_eq!(tags["kuma.io/service"], ["web", "web-api"]);
        assert_eq!(tags["version"], ["v1"]);
        assert_eq!(tags["team"], ["a"]);
        assert_eq!(tags["zone"], ["z1", "z2"]);
        for bad in ["web", "=web", "k=", "k=a,,b", ",k=a"] {
            let err = parse_tags(&items(&[bad])).unwrap_err().to_string();
            assert!(err.starts_with("--tag "), "{bad}: {err}");
        }
    }

    #[test]
    fn dataplane_token_flags() {
        let cli = Cli::try_parse_from([
            "kumactl",
            "generate",
            "dataplane-token",
            "--name",
            "web-1",
            "--tag",
            "kuma.io/service=web",
            "--proxy-type",
            "ingress",
        ])
        .unwrap();
        let Command::Generate {
            command:
                GenerateCommand::Dataplane {
                    name,
                    mesh,
                    proxy_type,
                    valid_for,
                    ..
                },
        } = cli.command
        else {
            panic!("not a dataplane-token command");
        };
        assert_eq!(name.as_deref(), Some("web-1"));
        assert_eq!(mesh, "default");
        assert_eq!(proxy_type.as_deref(), Some("ingress"));
        assert_eq!(valid_for, "87600h");
        let err = Cli::try_parse_from([
            "kumactl",
            "generate",
            "dataplane-token",
            "--proxy-type",
            "gateway",
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("gateway") && err.contains("dataplane"),
            "{err}"
        );
    }
}
