//! `kumactl install|uninstall transparent-proxy` on a host without iptables: both say which
//! program is missing and exit non-zero (with nothing to run, nothing can change). The
//! installing and removing themselves are tested in network namespaces
//! (`e2e/tests/transparent_proxy.rs`).

use std::process::Command;

fn kumactl_without_iptables(args: &[&str]) -> (bool, String) {
    let empty = std::env::temp_dir().join(format!("kumactl-no-iptables-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("an empty directory for PATH");
    let out = Command::new(env!("CARGO_BIN_EXE_kumactl"))
        .args(args)
        .env("PATH", &empty)
        .env("HOME", &empty)
        .output()
        .expect("kumactl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn install_without_iptables_says_so_and_fails() {
    let (ok, stderr) =
        kumactl_without_iptables(&["install", "transparent-proxy", "--kuma-dp-user", "5678"]);
    assert!(!ok, "install succeeded without iptables: {stderr}");
    assert!(
        stderr.contains("iptables-save is not installed"),
        "stderr: {stderr}"
    );
}

#[test]
fn uninstall_without_iptables_says_so_and_fails() {
    let (ok, stderr) = kumactl_without_iptables(&["uninstall", "transparent-proxy"]);
    assert!(!ok, "uninstall succeeded without iptables: {stderr}");
    assert!(
        stderr.contains("iptables-save is not installed"),
        "stderr: {stderr}"
    );
}
