//! The web console in a real browser: headless Chromium, driven over WebDriver by
//! `chromedriver` (Debian's `chromium` and `chromium-driver`), loads `/ui` of the first
//! node of a 3-node cluster with auth on, as a person would use it: it shows the node's
//! own `401` until a token is pasted, then three members alive, the sync status of both
//! peers, a key written through the API found by prefix with its value and metadata, a
//! write made on another node appearing live, and the request chart. It saves a
//! screenshot (`$CARGO_TARGET_TMPDIR/console.png`, or `KVS_CONSOLE_SCREENSHOT`; the
//! README's `docs/console.png` is one). A second test loads the console of a node with
//! auth off, where no token is needed.
//!
//! Without `chromedriver` it prints a skip line, or fails when `CI` is set (`.ci/run`
//! installs both packages).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{call, cluster, root_token};
use common::{Node, PLAIN};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long the page may take to show what the test waits for.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `chromedriver` process on a free port, killed on drop.
struct Chromedriver {
    child: Child,
    port: u16,
    /// The browser's profile, removed on drop.
    profile: tempfile::TempDir,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `chromedriver` on a port of its choosing (`--port=0`; it prints the port), or
/// prints the skip line (and panics under CI) without it.
fn chromedriver() -> Option<Chromedriver> {
    let spawned = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/browser.rs needs chromium and chromedriver (apt-get install chromium \
             chromium-driver), and CI must not skip it"
        );
        println!("skipped: needs chromedriver (apt-get install chromium chromium-driver)");
        return None;
    };
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // Reads the port from "... started successfully on port N.", then drains the rest so
    // that chromedriver never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let port = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
            if let Some(port) = port {
                let _ = port_tx.send(port);
            }
        }
    });
    let port = port_rx.recv_timeout(Duration::from_secs(20));
    let driver = Chromedriver {
        child,
        port: port.unwrap_or(0),
        profile: tempfile::tempdir().expect("temp dir"),
    };
    assert!(
        port.is_ok(),
        "chromedriver did not say its port within 20 s"
    );
    Some(driver)
}

/// A headless Chromium session through `driver`.
async fn browser(driver: &Chromedriver) -> Client {
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-gpu".to_owned(),
        "--window-size=1280,960".to_owned(),
        format!("--user-data-dir={}", driver.profile.path().display()),
    ];
    let capabilities = json!({ "goog:chromeOptions": { "args": args } });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!("an object")
    };
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a browser session")
}

/// The text of the first element matching `css`.
async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the text of `css` satisfies `check`; panics with the last text if not.
async fn wait_for(client: &Client, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let shown = text(client, css).await;
        if check(&shown) {
            return shown;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the console did not show {what} in {css} within {PATIENCE:?}; it shows: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the link named `name`, found afresh while the page redraws it under the finger
/// (a live change relists the keys: the link found a moment before is gone, and the
/// click fails as a stale element).
async fn click_link(client: &Client, name: &str) {
    let started = Instant::now();
    loop {
        let clicked = match client.find(Locator::LinkText(name)).await {
            Ok(link) => link.click().await.map(|_| ()),
            Err(error) => Err(error),
        };
        match clicked {
            Ok(()) => return,
            Err(error) => assert!(
                started.elapsed() < PATIENCE,
                "could not click {name:?} within {PATIENCE:?}: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the screenshot goes.
fn screenshot_path() -> PathBuf {
    std::env::var_os("KVS_CONSOLE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_a_cluster_its_keys_and_live_changes() {
    let Some(driver) = chromedriver() else { return };
    let nodes = tokio::task::spawn_blocking(|| {
        cluster(
            3,
            "auth_enabled: true\njwt_secret: browser-test-jwt-secret\nsync_interval: 500ms\n",
        )
    })
    .await
    .expect("the cluster");
    let token = root_token(&nodes[0]).expect("root.token");
    let written = call(
        &nodes[0],
        "PUT",
        "/kv/console/greeting",
        Some("{\"hello\":\"from the API\"}"),
        Some(&token),
    );
    assert_eq!(written.status, 201, "{}", written.body);

    let client = browser(&driver).await;
    client
        .goto(&format!("{}/ui", nodes[0].base))
        .await
        .expect("load /ui");
    // Without a token the node's own refusal is shown, as it said it.
    wait_for(&client, "#members-error", "the node's 401", |t| {
        t.contains("401") && t.contains("unauthorized")
    })
    .await;

    let field = client
        .find(Locator::Css("#token"))
        .await
        .expect("the token field");
    field.send_keys(&token).await.expect("type the token");
    field.send_keys("\u{E007}").await.expect("press Enter");

    let members = wait_for(&client, "#members tbody", "three members alive", |t| {
        t.matches("alive").count() == 3
    })
    .await;
    for id in ["n0", "n1", "n2"] {
        assert!(members.contains(id), "{members}");
    }
    assert_eq!(text(&client, "#members-error").await, "");
    wait_for(&client, "#peers tbody", "both peers compared", |t| {
        t.contains("n1") && t.contains("n2") && t.matches("agreed").count() == 2
    })
    .await;
    wait_for(&client, "#node", "the node's health", |t| {
        t.starts_with("n0 · ok")
    })
    .await;

    // Browse to the key by prefix and open it.
    let prefix = client
        .find(Locator::Css("#prefix"))
        .await
        .expect("the prefix field");
    prefix.send_keys("console/").await.expect("type a prefix");
    client
        .find(Locator::Css("#list"))
        .await
        .expect("the list button")
        .click()
        .await
        .expect("click List");
    wait_for(&client, "#keys tbody", "the key", |t| {
        t.contains("console/greeting")
    })
    .await;
    click_link(&client, "console/greeting").await;
    let detail = wait_for(&client, "#key-detail", "the key's value", |t| {
        t.contains("from the API")
    })
    .await;
    assert!(detail.contains("permissions"), "metadata shown: {detail}");

    // The editor writes only over the version it showed: a change made elsewhere since
    // then makes its Put fail (412) rather than vanish under it.
    let elsewhere = call(
        &nodes[0],
        "PUT",
        "/kv/console/greeting",
        Some("\"changed by the API\""),
        Some(&token),
    );
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    let type_into = |css: &'static str, text: &'static str| {
        let client = client.clone();
        async move {
            let field = client.find(Locator::Css(css)).await.expect(css);
            field.clear().await.expect("clear");
            field.send_keys(text).await.expect("type");
        }
    };
    let press = |css: &'static str| {
        let client = client.clone();
        async move {
            let button = client.find(Locator::Css(css)).await.expect(css);
            button.click().await.expect("click");
        }
    };
    type_into("#edit-value", "\"from the console\"").await;
    press("#put").await;
    wait_for(&client, "#edit-result", "the refused put", |t| {
        t.starts_with("412")
    })
    .await;
    let kept = call(&nodes[0], "GET", "/kv/console/greeting", None, Some(&token));
    assert_eq!(kept.json()["data"], json!("changed by the API"));
    // A TTL from the editor.
    type_into("#edit-key", "console/expiring").await;
    type_into("#edit-value", "1").await;
    type_into("#edit-ttl", "1h").await;
    press("#put").await;
    wait_for(&client, "#edit-result", "the put with a TTL", |t| {
        t == "201 created"
    })
    .await;
    let meta = call(
        &nodes[0],
        "GET",
        "/meta/console/expiring",
        None,
        Some(&token),
    );
    assert!(meta.json()["expires_at"].is_u64(), "{}", meta.body);

    // At a phone's width the page is one column, no wider than the screen.
    client
        .set_window_size(390, 844)
        .await
        .expect("a phone's width");
    let widths = client
        .execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
            vec![],
        )
        .await
        .expect("the page's widths");
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "the page is wider than the screen: {widths}"
    );
    client
        .set_window_size(1280, 960)
        .await
        .expect("back to a desktop's width");

    // The editor: a put and a delete from the console, as the node then holds them.
    type_into("#edit-key", "console/edited").await;
    type_into("#edit-value", r#"{"from": "the console"}"#).await;
    press("#put").await;
    wait_for(&client, "#edit-result", "the put's answer", |t| {
        t == "201 created"
    })
    .await;
    wait_for(&client, "#keys tbody", "the new key listed", |t| {
        t.contains("console/edited")
    })
    .await;
    let stored = call(&nodes[0], "GET", "/kv/console/edited", None, Some(&token));
    assert_eq!(stored.json()["data"], json!({"from": "the console"}));
    press("#delete").await;
    wait_for(&client, "#edit-result", "the delete's answer", |t| {
        t == "204 deleted"
    })
    .await;
    let gone = call(&nodes[0], "GET", "/kv/console/edited", None, Some(&token));
    assert_eq!(gone.status, 404);
    // A ".." segment is refused in the page: the browser would resolve it and write
    // `elsewhere`. A key ending in a space is written as typed, not trimmed.
    for (key, answer) in [
        ("console/../elsewhere", "no segment may be . or .."),
        ("console/spaced ", "201 created"),
    ] {
        type_into("#edit-key", key).await;
        press("#put").await;
        wait_for(&client, "#edit-result", "the put's answer", |t| {
            t.contains(answer)
        })
        .await;
    }
    let elsewhere = call(&nodes[0], "GET", "/kv/elsewhere", None, Some(&token));
    assert_eq!(elsewhere.status, 404, "{}", elsewhere.body);
    let spaced = call(
        &nodes[0],
        "GET",
        "/kv/console/spaced%20",
        None,
        Some(&token),
    );
    assert_eq!(spaced.status, 200, "{}", spaced.body);

    // A write on another node reaches node 0 and its console, live.
    let token_n1 = root_token(&nodes[1]).expect("root.token");
    let live = call(
        &nodes[1],
        "PUT",
        "/kv/console/live",
        Some("\"written on n1\""),
        Some(&token_n1),
    );
    assert_eq!(live.status, 201, "{}", live.body);
    wait_for(&client, "#changes tbody", "the live write", |t| {
        t.contains("console/live") && t.contains("put")
    })
    .await;
    // More writes, spread over both other nodes: each appears, newest first.
    for n in 0..12 {
        let node = &nodes[1 + n % 2];
        let token = root_token(node).expect("root.token");
        let key = format!("/kv/console/burst/{n:02}");
        assert_eq!(call(node, "PUT", &key, Some("1"), Some(&token)).status, 201);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let changes = wait_for(
        &client,
        "#changes tbody",
        "every write, newest first",
        |t| t.contains("console/burst/11"),
    )
    .await;
    let newest = changes.find("console/burst/11").expect("shown");
    let oldest = changes.find("console/burst/00").expect("shown");
    assert!(newest < oldest, "newest first: {changes}");
    // The listing of the prefix follows the changes by itself.
    wait_for(&client, "#keys tbody", "the new keys listed", |t| {
        t.contains("console/burst/11")
    })
    .await;
    wait_for(&client, "#rate-now", "a request rate", |t| {
        t.ends_with("requests/s") && !t.starts_with("0.0")
    })
    .await;
    // A sample every 2 s: three within PATIENCE.
    let canvas = client
        .find(Locator::Css("#chart"))
        .await
        .expect("the chart");
    let started = std::time::Instant::now();
    loop {
        let samples = canvas.attr("data-samples").await.expect("an attribute");
        let samples: usize = samples.and_then(|s| s.parse().ok()).unwrap_or(0);
        if samples >= 3 {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the chart has {samples} samples"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let png = client.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshot_path();
    std::fs::write(&path, &png).expect("save the screenshot");
    println!("screenshot: {}", path.display());
    client.close().await.expect("close the browser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_off_the_console_needs_no_token() {
    let Some(driver) = chromedriver() else { return };
    let mut node = tokio::task::spawn_blocking(|| Node::start_named("solo", PLAIN))
        .await
        .expect("a node");
    // A restart below keeps the port the page talks to.
    node.keep_port();
    let client = browser(&driver).await;
    client
        .goto(&format!("{}/ui", node.base))
        .await
        .expect("load /ui");
    wait_for(&client, "#members tbody", "the node alive", |t| {
        t.contains("solo") && t.contains("alive")
    })
    .await;
    assert!(node.put("/kv/plain/key", "1").status == 201);
    wait_for(&client, "#changes tbody", "the live write", |t| {
        t.contains("plain/key")
    })
    .await;
    assert_eq!(text(&client, "#changes-error").await, "");
    // The node restarts: the page connects again, replays from a little before the
    // newest change it showed, and shows no change twice.
    let mut node = tokio::task::spawn_blocking(move || {
        node.kill();
        node
    })
    .await
    .expect("the node down");
    // While it is down, the tables say they are as last fetched.
    wait_for(
        &client,
        "#members-error",
        "the members as last fetched",
        |t| t.contains("as last fetched"),
    )
    .await;
    let node = tokio::task::spawn_blocking(move || {
        node.launch();
        node
    })
    .await
    .expect("the node again");
    assert!(node.put("/kv/plain/after", "2").status == 201);
    let shown = wait_for(
        &client,
        "#changes tbody",
        "the write after the restart",
        |t| t.contains("plain/after"),
    )
    .await;
    assert_eq!(shown.matches("plain/key").count(), 1, "shown once: {shown}");
    client.close().await.expect("close the browser");
}
