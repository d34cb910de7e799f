//! A real etcd server for tests: one member on two free loopback ports with a throwaway data
//! directory. `stop` and `start` restart it on the same ports and data, for reconnect tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{ChildGuard, free_port, spawn_tied_to_test, temp_dir, unavailable};

pub struct TestEtcd {
    program: String,
    args: Vec<String>,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    // A lock, not `&mut self`: servers shared by all tests of a binary live in statics.
    child: Mutex<ChildGuard>,
}

const DIR_PREFIX: &str = "kuma-test-etcd";

/// Removes data directories of test processes that have exited. A server shared through a
/// static is never dropped, and etcd preallocates 64 MB of WAL, so these add up across runs.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|n| n.strip_prefix('-'))
        else {
            continue;
        };
        // `temp_dir` names are `<prefix>-<pid>-<port>`.
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `KUMA_TEST_ETCD_BIN`, else `/usr/bin/etcd` (Debian's etcd-server), else `etcd` on PATH.
fn find_binary() -> Option<String> {
    if let Ok(bin) = std::env::var("KUMA_TEST_ETCD_BIN") {
        return Some(bin);
    }
    if Path::new("/usr/bin/etcd").is_file() {
        return Some("/usr/bin/etcd".into());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// etcd 3.4 refuses to start on architectures other than amd64 unless
/// `ETCD_UNSUPPORTED_ARCH` names the running (Go) architecture.
fn go_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => None,
        "aarch64" => Some("arm64"),
        "x86" => Some("386"),
        "arm" => Some("arm"),
        "powerpc64" if cfg!(target_endian = "little") => Some("ppc64le"),
        "powerpc64" => Some("ppc64"),
        "s390x" => Some("s390x"),
        "riscv64" => Some("riscv64"),
        "loongarch64" => Some("loong64"),
        other => Some(other),
    }
}

impl TestEtcd {
    /// Starts a server and waits until it answers. `None` (after a loud skip, or a panic in
    /// CI) when no etcd binary is installed.
    pub fn new() -> Option<TestEtcd> {
        Self::cluster(1).map(|mut members| members.remove(0))
    }

    /// `n` members forming one cluster, each on its own ports and data directory, started and
    /// healthy. `None` as for [`TestEtcd::new`].
    pub fn cluster(n: usize) -> Option<Vec<TestEtcd>> {
        let Some(bin) = find_binary() else {
            unavailable(
                "etcd",
                "no /usr/bin/etcd or etcd on PATH (Debian package etcd-server; or set KUMA_TEST_ETCD_BIN)",
            );
            return None;
        };
        remove_stale_dirs();
        let ports: Vec<(u16, u16)> = (0..n)
            .map(|_| {
                let client = free_port();
                let mut peer = free_port();
                while peer == client {
                    peer = free_port();
                }
                (client, peer)
            })
            .collect();
        let name = |i: usize| {
            if n == 1 {
                "test".to_string()
            } else {
                format!("m{i}")
            }
        };
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("{}=http://127.0.0.1:{peer}", name(i)))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<TestEtcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client_port, peer_port))| {
                let dir = temp_dir(DIR_PREFIX);
                let data_dir = dir.join("data");
                let log = dir.join("etcd.log");
                let client_url = format!("http://127.0.0.1:{client_port}");
                let peer_url = format!("http://127.0.0.1:{peer_port}");
                let mut args: Vec<String> = Vec::new();
                let program = match go_arch() {
                    Some(arch) => {
                        args.push(format!("ETCD_UNSUPPORTED_ARCH={arch}"));
                        args.push(bin.clone());
                        "env".to_string()
                    }
                    None => bin.clone(),
                };
                args.extend(
                    [
                        "--name",
                        &name(i),
                        "--data-dir",
                        &data_dir.display().to_string(),
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                        "--initial-cluster",
                        &initial_cluster,
                        "--initial-cluster-state",
                        "new",
                        // One member elects itself after one election timeout: keep it short.
                        "--heartbeat-interval",
                        "50",
                        "--election-timeout",
                        "300",
                        "--logger",
                        "zap",
                        "--log-level",
                        "warn",
                    ]
                    .map(String::from),
                );
                TestEtcd {
                    program,
                    args,
                    client_port: *client_port,
                    data_dir,
                    log,
                    child: Mutex::new(ChildGuard(None)),
                }
            })
            .collect();
        // Members wait for each other before answering: spawn all, then wait for each.
        for m in &members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy(Duration::from_secs(30));
        }
        Some(members)
    }

    /// The client URL, for `EtcdConfig::endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChildGuard> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (Re)starts the server on the same ports and data directory and waits until it is
    /// healthy. Does nothing if it is running.
    pub fn start(&self) {
        if self.spawn() {
            self.wait_healthy(Duration::from_secs(30));
        }
    }

    /// Starts the process unless it runs; whether it was started.
    fn spawn(&self) -> bool {
        let mut child = self.lock();
        if child.0.is_some() {
            return false;
        }
        let spawned = spawn_tied_to_test(&self.program, &self.args, None, &self.log)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        child.0 = Some(spawned);
        true
    }

    /// Stops the server and waits until its client port is closed.
    pub fn stop(&self) {
        let child = std::mem::replace(&mut *self.lock(), ChildGuard(None));
        drop(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.port_open() {
            assert!(
                Instant::now() < deadline,
                "etcd still listens after stop; log: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn port_open(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }

    /// etcd serves `/health` over HTTP/1 on its client port; healthy means it has a leader.
    fn healthy(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!(
            "GET /health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.client_port
        );
        if conn.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = conn.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.healthy() {
            let exited = self
                .lock()
                .0
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            assert!(!exited, "etcd exited; log: {}", self.log_tail());
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {limit:?}; log: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log.get(start..).unwrap_or(&log).to_string()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let child = std::mem::replace(&mut *self.lock(), ChildGuard(None));
        drop(child);
        if let Some(dir) = self.data_dir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
