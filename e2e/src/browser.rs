//! A real browser for the GUI suites: Debian's headless `chromium`, driven through its
//! `chromedriver` with the W3C WebDriver protocol (plain JSON over HTTP, so a handful of
//! calls on the blocking client the suites already use).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::free_port;
use crate::proxies::{Proc, installed};

/// A browser session; the driver (and its browser) stop when it is dropped.
pub struct Browser {
    driver: String,
    session: String,
    http: reqwest::blocking::Client,
    _process: Proc,
}

impl Browser {
    /// Starts chromedriver and a headless chromium at 1280x800, or `None` (with the reason
    /// printed) outside CI when either is missing; in CI a missing one fails the test.
    pub fn start(test: &str, log_dir: &Path) -> Option<Browser> {
        let driver_binary = installed("chromedriver", "apt-get install chromium-driver", test)?;
        let chromium = installed("chromium", "apt-get install chromium", test)?;
        let port = free_port();
        let mut cmd = Command::new(driver_binary);
        cmd.arg(format!("--port={port}"));
        let process = Proc::start(&mut cmd, log_dir.join("chromedriver.log"));
        let driver = format!("http://127.0.0.1:{port}");
        let http = crate::blocking_http(Duration::from_secs(60));
        crate::proxies::within(
            Duration::from_secs(20),
            "chromedriver answers",
            || http.get(format!("{driver}/status")).send().is_ok(),
            || process.logs(),
        );
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"]
            }
        }}});
        let created: Value = http
            .post(format!("{driver}/session"))
            .json(&capabilities)
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("chromedriver session: {e}\n{}", process.logs()));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}\n{}", process.logs()))
            .to_string();
        Some(Browser {
            driver,
            session,
            http,
            _process: process,
        })
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver, self.session);
        let mut request = self.http.request(method, &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    /// Loads `url` (waits for the document, not for what its script fetches).
    pub fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    /// The value of `script` (a function body: `return ...`) run in the page.
    pub fn run(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The text the page's `<main>` shows.
    pub fn main_text(&self) -> String {
        self.run("return document.querySelector('main')?.innerText ?? ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// What the header says of the GUI's event stream ("Live", "Live again", "...lost...").
    pub fn live_status(&self) -> String {
        self.run("return document.getElementById('live').innerText")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until `<main>` shows `text`; fails with what it shows instead.
    pub fn wait_for_text(&self, text: &str, limit: Duration) -> Duration {
        let last = std::cell::RefCell::new(String::new());
        crate::proxies::within(
            limit,
            &format!("the page shows {text:?}"),
            || {
                *last.borrow_mut() = self.main_text();
                last.borrow().contains(text)
            },
            || {
                let error = self.run("return document.getElementById('error')?.textContent ?? ''");
                format!(
                    "the page shows:\n{}\nits error line: {error}",
                    last.borrow()
                )
            },
        )
    }

    /// Clicks the first link whose text is `text` (as a user would: the page's own handler
    /// runs).
    pub fn click_link(&self, text: &str) {
        let script = format!(
            "const a = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === {});\
             if (!a) return false; a.click(); return true;",
            json!(text)
        );
        assert_eq!(
            self.run(&script),
            json!(true),
            "no link {text:?} on the page"
        );
    }

    /// Presses `keys` one after another on whatever has focus, as a keyboard does (WebDriver's
    /// codes: `\u{E004}` Tab, `\u{E007}` Enter).
    pub fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k.to_string()}),
                    json!({"type": "keyUp", "value": k.to_string()}),
                ]
            })
            .collect();
        self.command(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})),
        );
    }

    /// The text of the first `<pre>` after the `<h2>` titled `heading` (a YAML block).
    pub fn block_after(&self, heading: &str) -> String {
        let script = format!(
            "const h = [...document.querySelectorAll('main h2')].find(h => h.textContent === {});\
             let e = h && h.nextElementSibling; while (e && !e.querySelector('pre') && e.tagName !== 'PRE') e = e.nextElementSibling;\
             return e ? (e.tagName === 'PRE' ? e : e.querySelector('pre')).textContent : null;",
            json!(heading)
        );
        self.run(&script)
            .as_str()
            .unwrap_or_else(|| panic!("no block under {heading:?}:\n{}", self.main_text()))
            .to_string()
    }

    /// Resizes the window (the viewport the page lays out in).
    pub fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// A PNG of the viewport, written to `file`.
    pub fn screenshot(&self, file: &Path) -> PathBuf {
        let png = self.command(reqwest::Method::GET, "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(file, bytes).expect("screenshot written");
        file.to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.driver, self.session))
            .send();
    }
}
