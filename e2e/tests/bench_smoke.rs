//! A short run of `kds-bench`, so the benchmark keeps working; figures are not judged here
//! (they belong to `docs/performance.md`, measured in release builds).
#![allow(clippy::unwrap_used)]

#[test]
fn kds_bench_runs_and_prints_its_json_line() {
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
    ] {
        assert!(last[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {last}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_kds-bench"))
        .args(["--zones", "many"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--zones must be a number"));
}
