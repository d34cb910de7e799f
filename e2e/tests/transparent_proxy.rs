#![allow(clippy::unwrap_used)]
//! The transparent proxy end to end, in network namespaces: `kumactl install transparent-proxy`
//! in a client's and a backend's namespace, kuma-dp with real Envoy in each, and an unmodified
//! client (`curl http://backend.svc.mesh.local:8080`, run as another user than the proxy) that
//! reaches the backend's generated MeshService by its hostname: DNS answered by the client's
//! kuma-dp, the VIP's connection redirected to Envoy's outbound passthrough listener, handed to
//! the MeshService's outbound, and redirected again into the backend's inbound. `install`
//! refuses a second time and changes nothing; `uninstall` leaves the namespace's iptables as
//! they were (`iptables-save` before and after). Needs root, `ip`, `iptables`, `curl`,
//! `setpriv` and `envoy`; outside CI the test is skipped, loudly, without them.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use e2e::netns::Lan;
use e2e::proxies::{Cp, Proc, envoy, within};
use e2e::{ControlPlane, binary, free_port};
use serde_json::json;

/// The UID curl runs as: not the proxy's (root), so iptables redirects it.
const CLIENT_UID: &str = "65534";

fn run_in(lan: &Lan, host: usize, program: &str, args: &[&str]) -> Output {
    lan.command(host, Path::new(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// The namespace's nat and filter tables as `iptables-save` prints them, without what
/// changes by itself (comments with the time, packet counters).
fn iptables_state(lan: &Lan, host: usize) -> String {
    let out = run_in(lan, host, "iptables-save", &[]);
    assert!(out.status.success(), "iptables-save: {}", e2e::stderr(&out));
    e2e::stdout(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            Some((chain, _)) if l.starts_with(':') => chain.to_string(),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kumactl_in(lan: &Lan, host: usize, args: &[&str]) -> Output {
    lan.command(host, &binary("kumactl"))
        .args(args)
        .output()
        .expect("running kumactl")
}

/// kuma-dp inside `host`'s namespace for a Dataplane at the host's address with one inbound
/// of `service` on `port`, behind a transparent proxy.
fn kuma_dp_in(
    lan: &Lan,
    host: usize,
    cp: &Cp,
    gateway: &str,
    name: &str,
    service: &str,
    port: u16,
) -> Proc {
    let yaml = format!(
        "type: Dataplane\nname: {name}\nmesh: default\nnetworking:\n  address: {}\n  inbound:\n  - port: {port}\n    tags:\n      kuma.io/service: {service}\n      kuma.io/protocol: http\n  transparentProxying:\n    redirectPortInbound: 15006\n    redirectPortOutbound: 15001\n",
        lan.ip(host)
    );
    let file = cp.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let token = cp.token(name, "default");
    let mut cmd = lan.command(host, &binary("kuma-dp"));
    cmd.arg("run")
        .args(["--cp-address", &format!("https://{gateway}:{}", cp.dp_port)])
        .arg("--ca-cert-file")
        .arg(&cp.ca)
        .arg("--dataplane-token-file")
        .arg(&token)
        .arg("--dataplane-file")
        .arg(&file)
        .args(["--admin-port", &free_port().to_string()])
        .arg("--binary-path")
        .arg(&cp.envoy)
        .arg("--config-dir")
        .arg(cp.dir.join(format!("envoy-{name}")))
        .args(["--drain-time", "1s"]);
    Proc::start(&mut cmd, cp.dir.join(format!("kuma-dp-{name}.log")))
}

#[test]
fn an_unmodified_client_reaches_a_mesh_service_by_hostname_through_the_transparent_proxy() {
    let test = "an_unmodified_client_reaches_a_mesh_service_by_hostname";
    let Some(envoy) = envoy(test) else {
        return;
    };
    for tool in ["ip", "iptables-save", "iptables-restore", "curl", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(std::env::var("CI").is_err(), "CI must have {tool}");
            eprintln!("SKIPPED {test}: {tool} is not installed");
            return;
        }
    }
    let lan = Lan::create(2);
    let (backend, client) = (0, 1);
    let gateway = lan.gateway();
    for host in [backend, client] {
        // Applications connect to VIPs, which need a route to be dialled at all.
        let out = run_in(
            &lan,
            host,
            "ip",
            &["route", "add", "default", "via", &gateway],
        );
        assert!(out.status.success(), "{}", e2e::stderr(&out));
        // Rules of the host's own, in the tables the transparent proxy uses: they must be
        // there, unchanged, after uninstall.
        let own: [&[&str]; 2] = [
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "192.0.2.1",
                "--dport",
                "9",
                "-j",
                "RETURN",
            ],
            &["-A", "INPUT", "-p", "tcp", "--dport", "9", "-j", "ACCEPT"],
        ];
        for rule in own {
            let out = run_in(&lan, host, "iptables", rule);
            assert!(out.status.success(), "{}", e2e::stderr(&out));
        }
    }

    let mut cp = ControlPlane::start(
        "transparent-proxy",
        &[("KUMA_INTER_CP_CATALOG_INSTANCE_ADDRESS", gateway.as_str())],
    );
    cp.wait_ready(Duration::from_secs(60));
    let env = Cp::of(&cp, envoy);
    env.put(
        "/meshes/default",
        json!({"type": "Mesh", "name": "default", "meshServices": {"mode": "Exclusive"}}),
    );

    // The backend: an HTTP echo on 8080 behind its own transparent proxy (inbound redirected).
    let mut echo_cmd = lan.command(backend, &binary("kuma-tcp-echo"));
    echo_cmd.args(["--http", "--port", "8080", "--instance", "backend-1"]);
    let echo = Proc::start(&mut echo_cmd, env.dir.join("echo-backend-1.log"));
    let before_backend = iptables_state(&lan, backend);
    let install = [
        "install",
        "transparent-proxy",
        "--kuma-dp-user",
        "0",
        "--redirect-all-dns-traffic",
        "--exclude-inbound-ports",
        "22",
    ];
    let out = kumactl_in(&lan, backend, &install);
    assert!(out.status.success(), "install: {}", e2e::stderr(&out));
    let backend_dp = kuma_dp_in(&lan, backend, &env, &gateway, "backend-1", "backend", 8080);

    // The client: nothing listens on its inbound; it only calls out.
    let before_client = iptables_state(&lan, client);
    let out = kumactl_in(&lan, client, &install);
    assert!(out.status.success(), "install: {}", e2e::stderr(&out));
    let installed = iptables_state(&lan, client);
    assert_ne!(installed, before_client);
    let client_dp = kuma_dp_in(&lan, client, &env, &gateway, "client-1", "client", 9090);

    let logs = || {
        format!(
            "{}\n--- kuma-dp backend-1:\n{}\n--- kuma-dp client-1:\n{}\n--- echo:\n{}",
            cp.logs(),
            backend_dp.logs(),
            client_dp.logs(),
            echo.logs()
        )
    };
    let curl = |url: &str| -> Output {
        run_in(
            &lan,
            client,
            "setpriv",
            &[
                "--reuid",
                CLIENT_UID,
                "--regid",
                CLIENT_UID,
                "--clear-groups",
                "curl",
                "-sS",
                "-m",
                "3",
                url,
            ],
        )
    };
    let last = std::cell::RefCell::new(String::new());
    let took = within(
        Duration::from_secs(60),
        "curl http://backend.svc.mesh.local:8080 answered by backend-1",
        || {
            let out = curl("http://backend.svc.mesh.local:8080/");
            let said = format!("{}{}", e2e::stdout(&out), e2e::stderr(&out));
            let answered = out.status.success() && said.contains("backend-1");
            *last.borrow_mut() = said;
            answered
        },
        || format!("last curl: {}\n{}", last.borrow(), logs()),
    );
    println!("first answer through both transparent proxies {took:?} after kuma-dp started");
    // The backend saw the call come from its own Envoy (the inbound passthrough handed it to
    // the inbound listener, which calls the application on loopback).
    let out = curl("http://backend.svc.mesh.local:8080/");
    assert!(out.status.success(), "{}", e2e::stderr(&out));

    // A second install finds the rules and changes nothing.
    let out = kumactl_in(&lan, client, &install);
    assert!(!out.status.success(), "a second install must refuse");
    assert!(
        e2e::stderr(&out).contains("already installed"),
        "{}",
        e2e::stderr(&out)
    );
    assert_eq!(iptables_state(&lan, client), installed);

    // Uninstall restores both namespaces exactly.
    drop(client_dp);
    drop(backend_dp);
    for (host, before) in [(client, &before_client), (backend, &before_backend)] {
        let out = kumactl_in(&lan, host, &["uninstall", "transparent-proxy"]);
        assert!(out.status.success(), "uninstall: {}", e2e::stderr(&out));
        assert_eq!(&iptables_state(&lan, host), before, "after uninstall");
    }
    // Nothing left to remove: says so, still succeeds.
    let out = kumactl_in(&lan, client, &["uninstall", "transparent-proxy"]);
    assert!(out.status.success());
    assert!(
        e2e::stdout(&out).contains("nothing changed"),
        "{}",
        e2e::stdout(&out)
    );
}
