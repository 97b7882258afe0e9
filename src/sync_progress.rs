//! `kvs start` on a terminal, for a node that joins through seeds: a progress bar of its
//! bootstrap (the keys it holds against the keys its fullest live peer holds) until its
//! first complete sync with a peer, then one line saying so. Off a terminal, `start`
//! returns as soon as the node answers `/health`, and nothing here runs.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http_client::Connection;

/// How often the node and its peers are asked.
const POLL: Duration = Duration::from_millis(200);
/// How often the peers' key counts (the bar's length) are asked again.
const PEERS_EVERY: Duration = Duration::from_secs(2);

/// `GET path` on `connection` as JSON; `None` on any failure.
async fn get(connection: &mut Connection, path: &str, token: Option<&str>) -> Option<Value> {
    let (status, body) = connection
        .send(hyper::Method::GET, path, None, token)
        .await
        .ok()?;
    status
        .is_success()
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}

/// `GET path` on a new connection to `addr` (`host:port`) as JSON; `None` on any failure.
async fn get_json(addr: &str, path: &str, token: Option<&str>) -> Option<Value> {
    let mut connection = Connection::open(&format!("http://{addr}")).await.ok()?;
    get(&mut connection, path, token).await
}

/// The most keys a live peer of the node at `addr` holds, if any peer answers.
async fn peer_keys(addr: &str, token: Option<&str>) -> Option<u64> {
    let own = get_json(addr, "/health", token).await?;
    let members = get_json(addr, "/members", token).await?;
    let mut most = None;
    for member in members["members"].as_array()? {
        if member["node_id"] == own["node_id"] || member["state"] != "alive" {
            continue;
        }
        let Some(peer) = member["http_addr"].as_str() else {
            continue;
        };
        if let Some(keys) = get_json(peer, "/sync", token)
            .await
            .and_then(|s| s["keys"].as_u64())
        {
            most = Some(most.map_or(keys, |m: u64| m.max(keys)));
        }
    }
    most
}

fn bar_style(known_total: bool) -> indicatif::ProgressStyle {
    let template = if known_total {
        "bootstrapping {bar:30} {human_pos}/{human_len} keys ({eta} left)"
    } else {
        "{spinner} bootstrapping: {human_pos} keys"
    };
    indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// Follows the node at `addr` until its `/sync` says it is no longer syncing; returns
/// its key count then and how long it took. Fails if the node stops answering.
pub fn follow(addr: &str, token: Option<&str>) -> Result<(u64, Duration), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let started = Instant::now();
        let bar = indicatif::ProgressBar::new_spinner().with_style(bar_style(false));
        let mut peers_asked: Option<Instant> = None;
        let mut silent_since: Option<Instant> = None;
        // One keep-alive connection to the node for its `/sync`, polled every `POLL`.
        let mut node: Option<Connection> = None;
        loop {
            if peers_asked.is_none_or(|at| at.elapsed() >= PEERS_EVERY) {
                peers_asked = Some(Instant::now());
                if let Some(total) = peer_keys(addr, token).await {
                    bar.set_style(bar_style(true));
                    bar.set_length(total.max(bar.position()));
                }
            }
            if node.is_none() {
                node = Connection::open(&format!("http://{addr}")).await.ok();
            }
            let sync = match node.as_mut() {
                Some(connection) => get(connection, "/sync", token).await,
                None => None,
            };
            if sync.is_none() {
                // A broken keep-alive connection is opened again at the next poll.
                node = None;
            }
            match sync {
                Some(sync) => {
                    silent_since = None;
                    let keys = sync["keys"].as_u64().unwrap_or(0);
                    bar.set_position(keys);
                    if sync["syncing"] == false {
                        bar.finish_and_clear();
                        return Ok((keys, started.elapsed()));
                    }
                }
                None => {
                    let since = *silent_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10) {
                        bar.abandon();
                        return Err(format!("the node at {addr} stopped answering /sync"));
                    }
                }
            }
            bar.tick();
            tokio::time::sleep(POLL).await;
        }
    })
}
