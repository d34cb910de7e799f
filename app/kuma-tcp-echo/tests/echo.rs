#![allow(clippy::unwrap_used)]
//! The real binary on a free port: TCP echo, HTTP JSON answers, timeouts and SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

/// A running echo; killed when dropped so a failing test leaves nothing behind.
struct Echo {
    child: Child,
    port: u16,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Echo {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kuma-tcp-echo"));
    cmd.args(["--port", "0"])
        .args(args)
        .env_remove("KUMA_ECHO_INSTANCE")
        .env_remove("KUMA_ECHO_ZONE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("Kuma TCP Echo - Listening to "), "{line}");
    let port = line
        .split("on port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    // Keep draining the log so the app never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Echo { child, port }
}

impl Echo {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Reads until the peer closes; how long that took.
fn wait_closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("connection still open after {:?}: {e}", start.elapsed()),
        }
    }
}

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One response with a Content-Length body, read off a kept-alive connection.
fn read_response(s: &mut BufReader<TcpStream>) -> HttpResponse {
    let mut status_line = String::new();
    s.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    HttpResponse {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap(),
    }
}

#[test]
fn tcp_mode_echoes_until_eof() {
    let echo = start(&[], &[]);
    let mut s = echo.connect();
    s.write_all(b"hello").unwrap();
    assert_eq!(read_exact_n(&mut s, 5), b"hello");
    // Longer than one read chunk: still all of it, in order.
    let big: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&big).unwrap();
    assert_eq!(read_exact_n(&mut s, big.len()), big);
    s.write_all(b"bye").unwrap();
    assert_eq!(read_exact_n(&mut s, 3), b"bye");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut s);

    // Several clients at once.
    let mut a = echo.connect();
    let mut b = echo.connect();
    a.write_all(b"from-a").unwrap();
    b.write_all(b"from-b").unwrap();
    assert_eq!(read_exact_n(&mut b, 6), b"from-b");
    assert_eq!(read_exact_n(&mut a, 6), b"from-a");
}

#[test]
fn tcp_mode_echoes_an_http_request_and_closes_like_kuma() {
    let echo = start(&[], &[]);
    let mut s = echo.connect();
    let req = b"GET /hello HTTP/1.1\r\nHost: echo\r\n\r\n";
    s.write_all(req).unwrap();
    assert_eq!(read_exact_n(&mut s, req.len()), req);
    wait_closed(&mut s);
}

#[test]
fn http_mode_answers_json() {
    let echo = start(&["--http", "--instance", "echo-1", "--zone", "zone-a"], &[]);
    let s = echo.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(
        b"GET /api/items?x=1 HTTP/1.1\r\nHost: backend.mesh\r\nX-Custom-Header: Yes\r\nAccept: a\r\nAccept: b\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-echo-instance"), Some("echo-1"));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.body["instance"], "echo-1");
    assert_eq!(resp.body["zone"], "zone-a");
    assert_eq!(resp.body["method"], "GET");
    assert_eq!(resp.body["path"], "/api/items");
    assert_eq!(resp.body["headers"]["x-custom-header"], "Yes");
    assert_eq!(resp.body["headers"]["host"], "backend.mesh");
    assert_eq!(resp.body["headers"]["accept"], "a, b");

    // Same connection, a POST with a body: read and dropped, still 200.
    w.write_all(b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .unwrap();
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body["method"], "POST");
    assert_eq!(resp.body["path"], "/submit");

    // A body over the cap is refused rather than read.
    w.write_all(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    w.write_all(&vec![b'a'; 100_000]).unwrap();
    let resp = read_response(&mut r);
    assert_eq!(resp.status, 413);
}

#[test]
fn http_mode_takes_instance_and_zone_from_env() {
    let echo = start(
        &["--http"],
        &[
            ("KUMA_ECHO_INSTANCE", "from-env"),
            ("KUMA_ECHO_ZONE", "z-env"),
        ],
    );
    let s = echo.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let resp = read_response(&mut r);
    assert_eq!(resp.body["instance"], "from-env");
    assert_eq!(resp.body["zone"], "z-env");
    assert_eq!(resp.header("x-echo-instance"), Some("from-env"));

    // Without either, the host name and an empty zone.
    let echo = start(&["--http"], &[]);
    let s = echo.connect();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let resp = read_response(&mut r);
    assert!(!resp.body["instance"].as_str().unwrap().is_empty());
    assert_eq!(resp.body["zone"], "");
}

#[test]
fn http_mode_cuts_off_slow_and_idle_clients() {
    let echo = start(
        &[
            "--http",
            "--header-read-timeout",
            "500ms",
            "--idle-timeout",
            "60s",
        ],
        &[],
    );
    // Headers never finished.
    let mut s = echo.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(wait_closed(&mut s) < Duration::from_secs(5));

    // A body that stalls: the idle timeout closes it long before the body deadline.
    let echo = start(
        &[
            "--http",
            "--header-read-timeout",
            "30s",
            "--idle-timeout",
            "500ms",
        ],
        &[],
    );
    let mut s = echo.connect();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    assert!(wait_closed(&mut s) < Duration::from_secs(5));
}

#[test]
fn sigterm_stops_it_cleanly() {
    for args in [&[][..], &["--http"][..]] {
        let mut echo = start(args, &[]);
        // An open, idle connection must not keep it alive past the drain timeout.
        let _open = echo.connect();
        let status = Command::new("kill")
            .args(["-TERM", &echo.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        let exit = loop {
            if let Some(exit) = echo.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{args:?}: still running after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(exit.success(), "{args:?}: {exit}");
    }
}
