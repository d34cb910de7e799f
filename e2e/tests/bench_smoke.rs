//! Short runs of `kds-bench` and `xds-bench`, so the benchmarks keep working; figures are not judged here
//! (they belong to `docs/performance.md`, measured in release builds).
#![allow(clippy::unwrap_used)]

/// One test, so the two benchmarks' control planes never compete for the machine or ports.
#[test]
fn benchmarks_run_and_print_their_json_lines() {
    kds_bench();
    xds_bench();
}

fn kds_bench() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kds-bench"))
        .args([
            "--zones",
            "2",
            "--writes",
            "20",
            "--resync",
            "200",
            "--rss-dataplanes",
            "20",
            "--floor",
            "20",
            // A raft store keeps global's keys across the storm's kill -9 and restart.
            "--store",
            "raft",
            "--reconnect-storm",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["zones"], 2);
    for key in [
        "g2z_p99_ms",
        "z2g_p99_ms",
        "resync_10k_s",
        "rss_mb_100x1000",
        "floor_p99_ms",
        "global_cpu_us_per_delivery",
        "storm_converged_s",
        "storm_peak_rss_mb",
    ] {
        assert!(last[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {last}");
    }
    // A hosted manager's control planes, each with its zones.
    let hosted = std::process::Command::new(env!("CARGO_BIN_EXE_kds-bench"))
        .args([
            "--tenants",
            "2",
            "--zones",
            "2",
            "--writes",
            "10",
            "--resync",
            "100",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&hosted.stdout);
    assert!(
        hosted.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&hosted.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["tenants"], 2);
    for key in [
        "g2z_paced_p99_ms",
        "g2z_burst_p99_ms",
        "rss_mb_connected",
        "resync_alone_max_ms",
        "resync_beside_storm_max_ms",
    ] {
        assert!(last[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {last}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kds-bench"))
        .args(["--zones", "many"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--zones must be a number"));
    let storm_on_memory = std::process::Command::new(env!("CARGO_BIN_EXE_kds-bench"))
        .args(["--reconnect-storm"])
        .output()
        .unwrap();
    assert!(!storm_on_memory.status.success());
    assert!(String::from_utf8_lossy(&storm_on_memory.stderr).contains("--store raft or postgres"));
}

fn xds_bench() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xds-bench"))
        .args([
            "--proxies",
            "5",
            "--services",
            "10",
            "--changes",
            "3",
            "--floor",
            "10",
            "--gateway-routes",
            "10",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["proxies"], 5);
    for key in [
        "floor_p99_ms",
        "eds_p99_ms",
        "policy_p99_ms",
        "targeted_policy_p99_ms",
        "gateway_route_p99_ms",
        "first_config_p99_ms",
        "store_reads_per_change",
    ] {
        assert!(last[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {last}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_xds-bench"))
        .args(["--proxies", "lots"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--proxies must be a number"));
}
