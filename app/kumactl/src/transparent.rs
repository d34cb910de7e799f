//! `kumactl install transparent-proxy` and `uninstall transparent-proxy`: iptables rules (nat
//! table) that send a host's (or network namespace's) TCP through Envoy and its DNS queries to
//! kuma-dp, as Kuma's kumactl installs them: outgoing TCP to the outbound passthrough port
//! (15001), incoming TCP to the inbound passthrough port (15006), UDP 53 to kuma-dp's DNS proxy
//! (15053), all except the traffic of the user kuma-dp and Envoy run as.
//!
//! Every rule this adds to a built-in chain carries one comment and every chain it creates
//! starts with `KUMA_MESH_`, so `uninstall` removes exactly what `install` added and nothing
//! else: the rest of the table is left as it was.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// What marks the rules this installs in built-in chains.
pub const COMMENT: &str = "kuma/mesh/transparent/proxy";
const CHAIN_PREFIX: &str = "KUMA_MESH_";
const INBOUND: &str = "KUMA_MESH_INBOUND";
const INBOUND_REDIRECT: &str = "KUMA_MESH_INBOUND_REDIRECT";
const OUTBOUND: &str = "KUMA_MESH_OUTBOUND";
const OUTBOUND_REDIRECT: &str = "KUMA_MESH_OUTBOUND_REDIRECT";
/// The source of the inbound passthrough's connections to the application (Envoy binds it),
/// which must not be redirected again.
const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";
/// Kuma's default owner of kuma-dp and Envoy: this UID, or the user of this name.
pub const DEFAULT_UID: u32 = 5678;
pub const DEFAULT_USER: &str = "kuma-dp";

#[derive(Debug, thiserror::Error)]
pub enum TransparentProxyError {
    #[error("{program} is not installed or cannot run (install Debian's iptables package)")]
    Missing {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed: {stderr}")]
    Failed {
        program: &'static str,
        stderr: String,
    },
    #[error(
        "the transparent proxy is already installed (chains {chains} exist in the nat table); \
         nothing was changed. Run `kumactl uninstall transparent-proxy` first"
    )]
    AlreadyInstalled { chains: String },
    #[error("--kuma-dp-user {0:?}: no such user (and not a UID)")]
    UnknownUser(String),
    #[error(
        "neither user {DEFAULT_USER:?} nor UID {DEFAULT_UID} exists; pass --kuma-dp-user with \
         the user or UID kuma-dp runs as"
    )]
    NoDefaultUser,
    #[error("{flag} {value:?}: {reason}")]
    Flag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

/// What to install.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kuma_dp_uid: u32,
    pub redirect_inbound: bool,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_inbound_ips: Vec<String>,
    pub exclude_outbound_ips: Vec<String>,
    pub dns: DnsRedirect,
    pub dns_port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DnsRedirect {
    Off,
    /// Only queries to these servers (the host's resolv.conf).
    To(Vec<String>),
    All,
}

/// A comma-separated port list (`--exclude-outbound-ports 22,5432`).
pub fn parse_ports(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<u16>, TransparentProxyError> {
    let mut ports = Vec::new();
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let port = v.parse::<u16>().ok().filter(|p| *p != 0);
        match port {
            Some(p) => ports.push(p),
            None => {
                return Err(TransparentProxyError::Flag {
                    flag,
                    value: v.to_string(),
                    reason: "not a port (1-65535)".into(),
                });
            }
        }
    }
    Ok(ports)
}

/// IPv4 addresses or CIDRs (`--exclude-outbound-ips 10.0.0.1,192.168.0.0/24`).
pub fn parse_ips(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<String>, TransparentProxyError> {
    let mut ips = Vec::new();
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        let (address, prefix) = v.split_once('/').unwrap_or((v, "32"));
        let valid = address.parse::<std::net::Ipv4Addr>().is_ok()
            && prefix.parse::<u8>().is_ok_and(|p| p <= 32);
        if !valid {
            return Err(TransparentProxyError::Flag {
                flag,
                value: v.to_string(),
                reason: "not an IPv4 address or CIDR (IPv6 is not redirected)".into(),
            });
        }
        ips.push(v.to_string());
    }
    Ok(ips)
}

/// The UID of `user` (a name in `passwd`, or a number); Kuma's default owner when `None`.
pub fn resolve_uid(user: Option<&str>, passwd: &str) -> Result<u32, TransparentProxyError> {
    let by_name = |name: &str| {
        passwd.lines().find_map(|l| {
            let mut fields = l.split(':');
            (fields.next() == Some(name)).then(|| fields.nth(1)?.parse::<u32>().ok())?
        })
    };
    let uid_exists = |uid: u32| {
        passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(uid.to_string().as_str()))
    };
    match user {
        Some(u) => u
            .parse::<u32>()
            .ok()
            .or_else(|| by_name(u))
            .ok_or_else(|| TransparentProxyError::UnknownUser(u.to_string())),
        None if uid_exists(DEFAULT_UID) => Ok(DEFAULT_UID),
        None => by_name(DEFAULT_USER).ok_or(TransparentProxyError::NoDefaultUser),
    }
}

/// The nameservers of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter(|ns| ns.parse::<std::net::Ipv4Addr>().is_ok())
        .map(String::from)
        .collect()
}

/// The rules, as `iptables-restore --noflush` reads them (nat table).
pub fn rules(c: &Config) -> String {
    let uid = c.kuma_dp_uid;
    let tag = format!("-m comment --comment \"{COMMENT}\"");
    let mut r = vec!["*nat".to_string()];
    for chain in [INBOUND, INBOUND_REDIRECT, OUTBOUND, OUTBOUND_REDIRECT] {
        r.push(format!(":{chain} - [0:0]"));
    }
    if c.redirect_inbound {
        r.push(format!("-A PREROUTING -p tcp {tag} -j {INBOUND}"));
    }
    r.push(format!("-A OUTPUT -p tcp {tag} -j {OUTBOUND}"));
    // DNS: the application's queries go to kuma-dp; kuma-dp's own go on to the servers.
    let dns = |dest: Option<&str>| {
        let dest = dest.map(|d| format!(" -d {d}/32")).unwrap_or_default();
        format!(
            "-A OUTPUT -p udp{dest} --dport 53 -m owner ! --uid-owner {uid} {tag} -j REDIRECT --to-ports {}",
            c.dns_port
        )
    };
    match &c.dns {
        DnsRedirect::Off => {}
        DnsRedirect::All => r.push(dns(None)),
        DnsRedirect::To(servers) => r.extend(servers.iter().map(|s| dns(Some(s)))),
    }
    // Incoming.
    for p in &c.exclude_inbound_ports {
        r.push(format!("-A {INBOUND} -p tcp --dport {p} -j RETURN"));
    }
    for ip in &c.exclude_inbound_ips {
        r.push(format!("-A {INBOUND} -p tcp -s {ip} -j RETURN"));
    }
    r.push(format!("-A {INBOUND} -p tcp -j {INBOUND_REDIRECT}"));
    r.push(format!(
        "-A {INBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        c.inbound_port
    ));
    // Outgoing: the inbound passthrough's connections to the application stay as they are;
    // Envoy calling this host's own address on loopback is incoming traffic for the app;
    // the application talking to itself on loopback, and anything Envoy or kuma-dp send,
    // stay as they are.
    r.push(format!(
        "-A {OUTBOUND} -s {INBOUND_PASSTHROUGH_SOURCE} -o lo -j RETURN"
    ));
    if c.redirect_inbound {
        r.push(format!(
            "-A {OUTBOUND} ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j {INBOUND_REDIRECT}"
        ));
    }
    r.push(format!(
        "-A {OUTBOUND} -o lo -m owner ! --uid-owner {uid} -j RETURN"
    ));
    r.push(format!(
        "-A {OUTBOUND} -m owner --uid-owner {uid} -j RETURN"
    ));
    r.push(format!("-A {OUTBOUND} -d 127.0.0.1/32 -j RETURN"));
    for p in &c.exclude_outbound_ports {
        r.push(format!("-A {OUTBOUND} -p tcp --dport {p} -j RETURN"));
    }
    for ip in &c.exclude_outbound_ips {
        r.push(format!("-A {OUTBOUND} -d {ip} -j RETURN"));
    }
    r.push(format!("-A {OUTBOUND} -p tcp -j {OUTBOUND_REDIRECT}"));
    r.push(format!(
        "-A {OUTBOUND_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        c.outbound_port
    ));
    r.push("COMMIT".into());
    r.join("\n") + "\n"
}

/// What `uninstall` feeds `iptables-restore --noflush` to undo `install`, from the nat table
/// as `iptables-save` prints it: our rules in built-in chains deleted, our chains flushed and
/// removed. `None` when nothing of ours is there.
pub fn removal(saved_nat: &str) -> Option<String> {
    let mut chains = BTreeSet::new();
    let mut deletes = Vec::new();
    for line in saved_nat.lines() {
        if let Some(chain) = line.strip_prefix(':') {
            let name = chain.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                chains.insert(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            if !chain.starts_with(CHAIN_PREFIX) && rule.contains(COMMENT) {
                deletes.push(format!("-D {rule}"));
            }
        }
    }
    if chains.is_empty() && deletes.is_empty() {
        return None;
    }
    let mut r = vec!["*nat".to_string()];
    r.extend(deletes);
    r.extend(chains.iter().map(|c| format!("-F {c}")));
    r.extend(chains.iter().map(|c| format!("-X {c}")));
    r.push("COMMIT".into());
    Some(r.join("\n") + "\n")
}

fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, TransparentProxyError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TransparentProxyError::Missing { program, source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| TransparentProxyError::Missing { program, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| TransparentProxyError::Missing { program, source })?;
    if !out.status.success() {
        return Err(TransparentProxyError::Failed {
            program,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn saved_nat() -> Result<String, TransparentProxyError> {
    run("iptables-save", &["-t", "nat"], None)
}

/// Installs the rules; refuses (changing nothing) when ours are already there or iptables is
/// missing. Returns the rules applied.
pub fn install(c: &Config) -> Result<String, TransparentProxyError> {
    let current = saved_nat()?;
    // Checked first, so a missing iptables-restore fails before anything changes.
    run("iptables-restore", &["--version"], None)?;
    let ours: Vec<&str> = current
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(CHAIN_PREFIX))
        .collect();
    if !ours.is_empty() || current.contains(COMMENT) {
        return Err(TransparentProxyError::AlreadyInstalled {
            chains: ours.join(", "),
        });
    }
    let rules = rules(c);
    // One transaction: either every rule is in or none is.
    run("iptables-restore", &["--noflush"], Some(&rules))?;
    Ok(rules)
}

/// Removes what `install` added; `false` when there was nothing to remove.
pub fn uninstall() -> Result<bool, TransparentProxyError> {
    let Some(removal) = removal(&saved_nat()?) else {
        return Ok(false);
    };
    run("iptables-restore", &["--noflush"], Some(&removal))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            kuma_dp_uid: 5678,
            redirect_inbound: true,
            inbound_port: 15006,
            outbound_port: 15001,
            exclude_inbound_ports: vec![22],
            exclude_outbound_ports: vec![5432],
            exclude_inbound_ips: vec![],
            exclude_outbound_ips: vec!["10.1.0.0/16".into()],
            dns: DnsRedirect::To(vec!["10.0.0.2".into()]),
            dns_port: 15053,
        }
    }

    #[test]
    fn rules_redirect_tcp_and_dns_except_kuma_dp() {
        let r = rules(&config());
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"), "{r}");
        for want in [
            "-A PREROUTING -p tcp -m comment --comment \"kuma/mesh/transparent/proxy\" -j KUMA_MESH_INBOUND",
            "-A KUMA_MESH_INBOUND -p tcp --dport 22 -j RETURN",
            "-A KUMA_MESH_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A KUMA_MESH_OUTBOUND -m owner --uid-owner 5678 -j RETURN",
            "-A KUMA_MESH_OUTBOUND -p tcp --dport 5432 -j RETURN",
            "-A KUMA_MESH_OUTBOUND -d 10.1.0.0/16 -j RETURN",
            "-A KUMA_MESH_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A OUTPUT -p udp -d 10.0.0.2/32 --dport 53 -m owner ! --uid-owner 5678",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
        // The exclusions come before the redirect that would otherwise take the traffic.
        let exclude = r.find("--dport 5432 -j RETURN").unwrap();
        let redirect = r.find("-A KUMA_MESH_OUTBOUND -p tcp -j KUMA_MESH_OUTBOUND_REDIRECT");
        assert!(redirect.is_some_and(|at| at > exclude), "{r}");

        let mut no_inbound = config();
        no_inbound.redirect_inbound = false;
        no_inbound.dns = DnsRedirect::Off;
        let r = rules(&no_inbound);
        assert!(
            !r.contains("PREROUTING") && !r.contains("--dport 53"),
            "{r}"
        );
    }

    #[test]
    fn removal_takes_out_only_what_install_added() {
        let saved = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [3:180]\n\
            :KUMA_MESH_INBOUND - [0:0]\n:KUMA_MESH_OUTBOUND - [0:0]\n:DOCKER - [0:0]\n\
            -A PREROUTING -p tcp -m comment --comment \"kuma/mesh/transparent/proxy\" -j KUMA_MESH_INBOUND\n\
            -A OUTPUT -d 172.17.0.0/16 -j DOCKER\n\
            -A KUMA_MESH_INBOUND -p tcp -j RETURN\nCOMMIT\n";
        let r = removal(saved).unwrap();
        assert_eq!(
            r,
            "*nat\n-D PREROUTING -p tcp -m comment --comment \"kuma/mesh/transparent/proxy\" -j KUMA_MESH_INBOUND\n\
             -F KUMA_MESH_INBOUND\n-F KUMA_MESH_OUTBOUND\n-X KUMA_MESH_INBOUND\n-X KUMA_MESH_OUTBOUND\nCOMMIT\n"
        );
        assert_eq!(
            removal("*nat\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -j DOCKER\nCOMMIT\n"),
            None
        );
    }

    #[test]
    fn users_ports_and_nameservers_parse_or_are_refused_by_name() {
        let passwd = "root:x:0:0::/root:/bin/sh\nkuma-dp:x:5679:5679::/:/bin/false\n";
        assert_eq!(resolve_uid(Some("kuma-dp"), passwd).unwrap(), 5679);
        assert_eq!(resolve_uid(Some("1234"), passwd).unwrap(), 1234);
        assert_eq!(resolve_uid(None, passwd).unwrap(), 5679);
        let e = resolve_uid(Some("nobody-here"), passwd).unwrap_err();
        assert!(e.to_string().contains("nobody-here"), "{e}");
        assert!(resolve_uid(None, "root:x:0:0::/:/bin/sh\n").is_err());
        assert_eq!(
            parse_ports("--p", &["22, 80".into()]).unwrap(),
            vec![22, 80]
        );
        let e = parse_ports("--exclude-outbound-ports", &["70000".into()]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--exclude-outbound-ports \"70000\""),
            "{e}"
        );
        assert!(parse_ips("--x", &["10.0.0.0/33".into()]).is_err());
        assert_eq!(
            nameservers("# c\nnameserver 10.0.0.2\nnameserver ::1\nsearch x\n"),
            vec!["10.0.0.2".to_string()]
        );
    }
}
