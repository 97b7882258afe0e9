//! The crash loops' node process: a `kvs` on its own config and temp dir, its log kept
//! across lives, killed on drop.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common;
use crate::common::cluster::within;
use crate::history::{agent, send};

/// Lines of a node's log that mean it did not open (or run) cleanly, besides any line
/// at level ERROR.
const UNCLEAN: [&str; 5] = [
    "panicked",
    "damaged",
    "flawed",
    "chain ends at",
    "before its recorded head",
];

/// A `kvs` process on a config in its own temp dir, logging to `node.log` there across
/// restarts; killed on drop (before the dir goes), even when an assertion failed.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) config: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) child: Option<Child>,
    pub(crate) base: String,
    /// Where this life's lines start in `log`.
    pub(crate) offset: u64,
    /// Kept when a test fails, so that its data and log can be examined.
    pub(crate) dir: Option<tempfile::TempDir>,
}

impl Proc {
    /// Writes `node_id: name`, a free HTTP port and `extra` as the config and starts it.
    pub(crate) fn start(name: &str, extra: &str) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.yaml");
        std::fs::write(&config, format!("node_id: {name}\nhttp_port: 0\n{extra}"))
            .expect("write config");
        let mut proc = Proc {
            name: name.to_owned(),
            log: dir.path().join("node.log"),
            config,
            child: None,
            base: String::new(),
            offset: 0,
            dir: Some(dir),
        };
        proc.launch();
        proc
    }

    /// Starts the process on its config and data dir; returns once it serves HTTP.
    pub(crate) fn launch(&mut self) {
        self.spawn();
        self.wait_serving();
    }

    /// Starts the process on its config and data dir.
    pub(crate) fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.offset = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the log");
        let child = Command::new(common::kvs_bin())
            .arg("run")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kvs");
        self.child = Some(child);
    }

    /// Waits until the process serves HTTP.
    pub(crate) fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.this_life();
            let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
            if let Some(addr) = whole
                .split_whitespace()
                .find_map(|w| w.strip_prefix("http_addr="))
            {
                self.base = format!("http://{addr}");
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not serve within 60 s:\n{}",
                self.name,
                tail(&text)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log lines of the current (or last) life of the process.
    pub(crate) fn this_life(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// SIGKILL, then waits for the process to be gone.
    pub(crate) fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop), then waits for the exit.
    pub(crate) fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let status = child.wait().expect("wait");
            assert!(status.success(), "{} stopped with {status}", self.name);
        }
    }

    /// The lines of this life that say the node did not open or run cleanly.
    pub(crate) fn unclean_lines(&self) -> Vec<String> {
        self.this_life()
            .lines()
            .filter(|line| line.contains(" ERROR ") || UNCLEAN.iter().any(|u| line.contains(u)))
            .map(str::to_owned)
            .collect()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET that must be answered, as JSON.
    pub(crate) fn get_json(&self, path: &str) -> Value {
        let (status, body) = send(&agent(), "GET", &self.url(path), None)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.name));
        assert_eq!(status, 200, "GET {path} on {}: {body}", self.name);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Waits until `/health` answers `status: ok`.
    pub(crate) fn wait_healthy(&self) {
        let healthy = within(Duration::from_secs(60), || {
            send(&agent(), "GET", &self.url("/health"), None)
                .is_ok_and(|(status, body)| status == 200 && body.contains("\"status\":\"ok\""))
        });
        assert!(
            healthy,
            "{} is not healthy after its restart:\n{}",
            self.name,
            tail(&self.this_life())
        );
    }

    /// The current key of every live key under `prefix` with its uuid.
    pub(crate) fn listing(&self, prefix: &str) -> HashMap<String, String> {
        let mut keys = HashMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/kv?prefix={prefix}&limit=1000");
            if let Some(cursor) = &cursor {
                path.push_str(&format!(
                    "&cursor={}",
                    percent_encoding::utf8_percent_encode(
                        cursor,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ));
            }
            let page = self.get_json(&path);
            for item in page["items"].as_array().expect("items") {
                let key = item["key"].as_str().expect("key").to_owned();
                keys.insert(key, item["uuid"].as_str().expect("uuid").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return keys,
            }
        }
    }

    /// `GET /sync`'s `(merkle_root, keys)`, `None` when the node does not answer.
    pub(crate) fn sync(&self) -> Option<(String, u64)> {
        let (status, body) = send(&agent(), "GET", &self.url("/sync"), None).ok()?;
        let sync: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        Some((
            sync["merkle_root"].as_str()?.to_owned(),
            sync["keys"].as_u64()?,
        ))
    }

    /// Asserts that `/audit/verify` answers ok with at least `acknowledged` entries.
    pub(crate) fn audit_verifies(&self, acknowledged: usize, context: &str) {
        let verdict = self.get_json("/audit/verify");
        assert_eq!(verdict["ok"], true, "{context}: the audit chain: {verdict}");
        let entries = verdict["entries"].as_u64().unwrap_or(0) as usize;
        assert!(
            entries >= acknowledged,
            "{context}: {entries} audit entries for {acknowledged} acknowledged mutations"
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "{}'s data dir and log are kept in {}",
                self.name,
                dir.keep().display()
            );
        }
    }
}

/// The last 40 lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
