//! Several hosts on one machine: each in its own network namespace with its own address on a
//! private bridge, so a test can cut one off (iptables inside its namespace) while the test
//! itself, on the bridge's address, still reaches every host. Needs root, `ip` and `iptables`.

use std::process::Command;

pub struct Lan {
    bridge: String,
    subnet: u8,
    hosts: Vec<String>,
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(
        run(args),
        "{} failed (the raft fault suite needs root, ip and iptables)",
        args.join(" ")
    );
}

impl Lan {
    /// `n` hosts, 10.77.<subnet>.1 to .n, the test on .254.
    pub fn create(n: usize) -> Lan {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n_lan = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seed = std::process::id().wrapping_mul(7).wrapping_add(n_lan);
        let tag = seed % 10_000;
        let subnet = u8::try_from(1 + seed % 250).unwrap_or(1);
        let bridge = format!("kb{tag}");
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        let mut lan = Lan {
            bridge: bridge.clone(),
            subnet,
            hosts: Vec::new(),
        };
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lan.gateway()),
            "dev",
            &bridge,
        ]);
        must(&["ip", "link", "set", &bridge, "up"]);
        // With br_netfilter loaded, bridged frames traverse the host's FORWARD chain, whose
        // policy Docker sets to DROP.
        must(&[
            "iptables", "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ]);
        for _ in 0..n {
            lan.add_host();
        }
        lan
    }

    /// Another host on the LAN; its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = format!("{}h{i}", self.bridge);
        let veth = format!("{}v{i}", self.bridge);
        must(&["ip", "netns", "add", &ns]);
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "link", "set", &veth, "master", &self.bridge, "up"]);
        let ip = format!("10.77.{}.{}", self.subnet, i + 1);
        must(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        must(&[
            "ip", "netns", "exec", &ns, "ip", "link", "set", "eth0", "up",
        ]);
        must(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        self.hosts.push(ns);
        i
    }

    pub fn ip(&self, host: usize) -> String {
        format!("10.77.{}.{}", self.subnet, host + 1)
    }

    pub fn gateway(&self) -> String {
        format!("10.77.{}.254", self.subnet)
    }

    /// The name of `host`'s network namespace (for `ip netns exec`).
    pub fn namespace(&self, host: usize) -> &str {
        &self.hosts[host]
    }

    /// A command run inside `host`'s namespace.
    pub fn command(&self, host: usize, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.namespace(host)])
            .arg(program);
        cmd
    }

    /// Runs iptables inside `host`'s namespace.
    fn iptables(&self, host: usize, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", &self.hosts[host], "iptables"];
        all.extend_from_slice(args);
        must(&all);
    }

    /// Cuts `host` off from the other hosts (both ways); the test still reaches it.
    pub fn partition(&self, host: usize) {
        for other in (0..self.hosts.len()).filter(|o| *o != host) {
            let ip = self.ip(other);
            self.iptables(host, &["-A", "INPUT", "-s", &ip, "-j", "DROP"]);
            self.iptables(host, &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"]);
        }
    }

    /// Cuts the TCP link between `host` and `ip:port` (both ways, packets dropped as by a
    /// failed switch, not refused) while leaving everything else up.
    pub fn cut(&self, host: usize, ip: &str, port: u16) {
        let port = port.to_string();
        self.iptables(
            host,
            &[
                "-A", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", &port, "-j", "DROP",
            ],
        );
        self.iptables(
            host,
            &[
                "-A", "INPUT", "-p", "tcp", "-s", ip, "--sport", &port, "-j", "DROP",
            ],
        );
    }

    /// Leaves `host` one way out: TCP to `ip:port` (a forward proxy). It still answers
    /// connections made to it (the test's), and reaches its own loopback.
    pub fn only_egress_to(&self, host: usize, ip: &str, port: u16) {
        let port = port.to_string();
        self.iptables(host, &["-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT"]);
        self.iptables(
            host,
            &[
                "-A",
                "OUTPUT",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        self.iptables(
            host,
            &[
                "-A", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", &port, "-j", "ACCEPT",
            ],
        );
        // Refused at once rather than dropped: a direct dial fails fast and visibly.
        self.iptables(host, &["-A", "OUTPUT", "-j", "REJECT"]);
    }

    pub fn heal(&self, host: usize) {
        self.iptables(host, &["-F", "INPUT"]);
        self.iptables(host, &["-F", "OUTPUT"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.hosts {
            run(&["ip", "netns", "del", ns]);
        }
        run(&[
            "iptables",
            "-D",
            "FORWARD",
            "-i",
            &self.bridge,
            "-o",
            &self.bridge,
            "-j",
            "ACCEPT",
        ]);
        run(&["ip", "link", "del", &self.bridge]);
    }
}
