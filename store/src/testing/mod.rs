//! Test-only helpers: database servers started as child processes on loopback ports, so the
//! backends are tested against the real thing. When a server binary is missing, a test is
//! skipped loudly outside CI and fails in CI (`CI=true`), never passing silently.

use std::path::PathBuf;
use std::process::Child;

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod linearizable;
#[cfg(feature = "postgres")]
pub mod postgres;

/// A port that was free a moment ago.
/// A port no server of this machine listens on, handed out once per test process. Taken below
/// Linux's ephemeral range (32768 and up): a port the kernel picked would be just as free, but
/// any process's next outgoing connection (to Postgres, say) may take it before the server the
/// test starts binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20000;
    const SPAN: u16 = 12000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test processes that overlap (several `cargo test` runs) start in different places.
    let start = u16::try_from(std::process::id() % u32::from(SPAN)).unwrap_or(0);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = FIRST + (start + n) % SPAN;
        let free = std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Reports an unavailable dependency: a panic in CI, a loud skip elsewhere.
pub fn unavailable(what: &str, why: &str) {
    let msg = format!("{what} is not available ({why}); install it or run scripts/test.sh");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // TERM first: a supervisor from `spawn_tied_to_test` then stops its server too.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..50 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether we run as root, in which case database servers must be started as another user.
pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Starts `program args` through a small shell supervisor that stops it when this test process
/// exits, so servers shared by all tests of a binary (held in statics, never dropped) do not
/// outlive the run. `as_user` runs it as another user (database servers refuse root).
pub fn spawn_tied_to_test(
    program: &str,
    args: &[String],
    as_user: Option<&str>,
    log: &std::path::Path,
) -> std::io::Result<Child> {
    spawn_tied_to_test_with_signal(program, args, as_user, log, "TERM")
}

/// As [`spawn_tied_to_test`], stopping the server with `signal` (Postgres wants INT for a
/// fast shutdown; TERM would wait for every client to leave).
pub fn spawn_tied_to_test_with_signal(
    program: &str,
    args: &[String],
    as_user: Option<&str>,
    log: &std::path::Path,
    signal: &str,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
    let mut cmdline = quote(program);
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(&quote(a));
    }
    // `/proc/<pid>` rather than `kill -0`: the latter fails across users.
    let script = format!(
        "{cmdline} >>{log} 2>&1 & child=$!\n\
         trap 'kill -{signal} $child 2>/dev/null; wait $child; exit 0' TERM INT\n\
         while [ -d /proc/{parent} ] && kill -0 $child 2>/dev/null; do sleep 0.3; done\n\
         kill -{signal} $child 2>/dev/null; wait $child\n",
        log = quote(&log.display().to_string()),
        parent = std::process::id(),
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    if let Some(user) = as_user {
        let (uid, gid) = user_ids(user)?;
        cmd.uid(uid).gid(gid);
    }
    cmd.spawn()
}

/// Numeric uid and gid of a local user.
pub fn user_ids(user: &str) -> std::io::Result<(u32, u32)> {
    let id = |flag: &str| -> std::io::Result<u32> {
        let out = std::process::Command::new("id")
            .arg(flag)
            .arg(user)
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("no such user {user}")))
    };
    Ok((id("-u")?, id("-g")?))
}
