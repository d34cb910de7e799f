//! A throwaway Postgres cluster: `initdb` into a temp dir, `postgres` on a free loopback port,
//! trust authentication for user `kuma`. Tests create one database each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    ChildGuard, free_port, running_as_root, spawn_tied_to_test_with_signal, temp_dir, unavailable,
};

const SERVER_USER: &str = "postgres";
pub const TEST_USER: &str = "kuma";

pub struct TestPostgres {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    as_user: Option<&'static str>,
    /// fsync on commit, as in production; tests run without it.
    durable: bool,
    server: ChildGuard,
}

/// `$KUMA_TEST_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/<v>/bin`.
fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("KUMA_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, p): &(u32, PathBuf)| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

impl TestPostgres {
    /// Starts a cluster, or reports it unavailable (skip outside CI, panic in CI). It does
    /// not fsync: tests need no durability across a machine crash.
    pub fn start() -> Option<TestPostgres> {
        Self::start_with(false)
    }

    /// As [`TestPostgres::start`], committing with fsync as a production server does (for
    /// benchmarks beside stores that fsync).
    pub fn start_durable() -> Option<TestPostgres> {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Option<TestPostgres> {
        let Some(bin) = find_bin_dir() else {
            unavailable(
                "PostgreSQL server",
                "no /usr/lib/postgresql/*/bin/postgres; apt-get install postgresql",
            );
            return None;
        };
        let root = temp_dir("kuma-test-pg");
        let data = root.join("data");
        let log = root.join("postgres.log");
        let as_user = running_as_root().then_some(SERVER_USER);
        if let Some(user) = as_user {
            // initdb refuses to run as root; the server user must own everything it touches.
            let status = Command::new("chown")
                .args(["-R", &format!("{user}:{user}")])
                .arg(&root)
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "chown of {} failed",
                root.display()
            );
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            TEST_USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        if let Some(user) = as_user {
            use std::os::unix::process::CommandExt;
            let (uid, gid) = super::user_ids(user).expect("postgres user");
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = TestPostgres {
            bin,
            data,
            log,
            port: free_port(),
            as_user,
            durable,
            server: ChildGuard(None),
        };
        pg.start_server();
        Some(pg)
    }

    fn start_server(&mut self) {
        let sync = if self.durable { "on" } else { "off" };
        let fsync = format!("fsync={sync}");
        let synchronous_commit = format!("synchronous_commit={sync}");
        let args: Vec<String> = [
            "-D",
            &self.data.display().to_string(),
            "-p",
            &self.port.to_string(),
            "-k",
            &self.data.display().to_string(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &fsync,
            "-c",
            &synchronous_commit,
            "-c",
            "max_connections=300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = spawn_tied_to_test_with_signal(
            &self.bin.join("postgres").display().to_string(),
            &args,
            self.as_user,
            &self.log,
            "INT",
        )
        .expect("spawning postgres");
        self.server = ChildGuard(Some(child));
        self.wait_until_accepting(Duration::from_secs(30));
    }

    fn wait_until_accepting(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    TEST_USER,
                    "-d",
                    "postgres",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "postgres did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Fast shutdown; the data directory stays for [`TestPostgres::restart`].
    pub fn stop(&mut self) {
        self.server = ChildGuard(None);
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A new, empty database; its name is returned.
    pub fn create_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", free_port());
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                TEST_USER,
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://{TEST_USER}@127.0.0.1:{}/{db}", self.port)
    }
}
