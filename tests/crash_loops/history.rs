//! The crash loops' clients and their check: every request and answer per key over all
//! lives of a node, and what the node must hold after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::node::Proc;

/// A blocking client that reports every status as data.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One request: `(status, body)`, or why no answer came.
pub(crate) fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let answer = match (method, body) {
        ("PUT", Some(body)) => agent
            .put(url)
            .header("content-type", "application/json")
            .send(body),
        ("DELETE", None) => agent.delete(url).call(),
        ("GET", None) => agent.get(url).call(),
        _ => panic!("{method} with {body:?}"),
    };
    let mut response = answer.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// What a client asked.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    /// The JSON value sent (unique in the run).
    Put(String),
    Delete,
}

/// What the node answered.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// `200`/`201` with this version's uuid.
    Put(String),
    /// `204`.
    Deleted,
    /// `404` to a DELETE: the key was absent, which it still is.
    Absent,
    /// No answer (the node died, or the request failed): it may or may not have applied.
    Uncertain(String),
}

/// One request and its answer.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub(crate) client: usize,
    pub(crate) key: String,
    pub(crate) kind: Kind,
    pub(crate) start: Instant,
    /// When the answer came; for an uncertain request, when the node was dead for sure.
    pub(crate) end: Instant,
    pub(crate) outcome: Outcome,
}

impl Op {
    pub(crate) fn completed(&self) -> bool {
        !matches!(self.outcome, Outcome::Uncertain(_))
    }

    pub(crate) fn acknowledged_mutation(&self) -> bool {
        matches!(self.outcome, Outcome::Put(_) | Outcome::Deleted)
    }
}

/// Every request per key, over all lives of the node.
pub(crate) type History = BTreeMap<String, Vec<Op>>;

/// What a client thread reports back.
pub(crate) struct Report {
    pub(crate) ops: Vec<Op>,
    /// Answers that no client should get from a healthy node (5xx, 4xx but a DELETE's
    /// 404, failures before the kill).
    pub(crate) anomalies: Vec<String>,
}

/// A client: PUTs (unique values, some above `compression_min_bytes`) and DELETEs of
/// `keys()` until `killing` is set and the node stops answering.
pub(crate) fn client(
    base: String,
    client: usize,
    mut rng: StdRng,
    keys: impl Fn(&mut StdRng) -> String,
    killing: Arc<AtomicBool>,
) -> Report {
    let agent = agent();
    let mut ops = Vec::new();
    let mut anomalies = Vec::new();
    let mut n = 0u64;
    while !killing.load(Ordering::SeqCst) {
        let key = keys(&mut rng);
        let kind = if rng.gen_bool(0.75) {
            let pad = if rng.gen_bool(0.1) {
                rng.gen_range(1500..6000)
            } else {
                rng.gen_range(0..64)
            };
            let tag: u64 = rng.r#gen();
            n += 1;
            Kind::Put(format!(
                "{{\"client\":{client},\"n\":{n},\"tag\":\"{tag:016x}\",\"pad\":\"{}\"}}",
                "p".repeat(pad)
            ))
        } else {
            Kind::Delete
        };
        let url = format!("{base}/kv/{key}");
        let start = Instant::now();
        let answer = match &kind {
            Kind::Put(value) => send(&agent, "PUT", &url, Some(value)),
            Kind::Delete => send(&agent, "DELETE", &url, None),
        };
        let end = Instant::now();
        let outcome = match (&kind, answer) {
            (Kind::Put(_), Ok((200 | 201, body))) => {
                let uuid = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["uuid"].as_str().map(str::to_owned));
                match uuid {
                    Some(uuid) => Outcome::Put(uuid),
                    None => {
                        anomalies.push(format!("PUT {key}: no uuid in {body}"));
                        Outcome::Uncertain(body)
                    }
                }
            }
            (Kind::Delete, Ok((204, _))) => Outcome::Deleted,
            (Kind::Delete, Ok((404, _))) => Outcome::Absent,
            (_, Ok((status, body))) => {
                anomalies.push(format!("{kind:?} {key}: {status} {body}"));
                Outcome::Uncertain(format!("{status} {body}"))
            }
            (_, Err(error)) => {
                if !killing.load(Ordering::SeqCst) {
                    anomalies.push(format!(
                        "{kind:?} {key}: no answer before the kill: {error}"
                    ));
                }
                Outcome::Uncertain(error)
            }
        };
        ops.push(Op {
            client,
            key,
            kind,
            start,
            end,
            outcome,
        });
    }
    Report { ops, anomalies }
}

/// Counts of one check.
#[derive(Default, Debug)]
pub(crate) struct Checked {
    pub(crate) keys: usize,
    pub(crate) data_compared: usize,
}

/// Checks `node`'s keys under `prefix` against `history`: every key holds the result of
/// an operation that no acknowledged one followed (one that started after it was
/// answered, or after the node died when it was not), and no other key exists.
pub(crate) fn check(
    node: &Proc,
    prefix: &str,
    history: &History,
    rng: &mut StdRng,
) -> Result<Checked, Vec<String>> {
    let listing = node.listing(prefix);
    let mut failures = Vec::new();
    let mut checked = Checked::default();
    let data_of = |key: &str| -> Option<Value> {
        let (status, body) = send(&agent(), "GET", &node.url(&format!("/kv/{key}")), None).ok()?;
        (status == 200)
            .then(|| serde_json::from_str::<Value>(&body).ok())??
            .get("data")
            .cloned()
    };
    for (key, ops) in history {
        checked.keys += 1;
        let last_start = ops
            .iter()
            .filter(|op| op.completed())
            .map(|op| op.start)
            .max();
        let candidates: Vec<&Op> = ops
            .iter()
            .filter(|op| last_start.is_none_or(|last| op.end >= last))
            .collect();
        let shown = |candidates: &[&Op]| {
            candidates
                .iter()
                .map(|op| {
                    let what = match &op.kind {
                        Kind::Put(value) => format!("PUT {}", &value[..value.len().min(60)]),
                        Kind::Delete => "DELETE".to_owned(),
                    };
                    let answer = match &op.outcome {
                        Outcome::Uncertain(why) => format!("no answer ({why})"),
                        answered => format!("{answered:?}"),
                    };
                    format!("client {} {what} -> {answer}", op.client)
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        match listing.get(key) {
            None => {
                let absent_ok = last_start.is_none()
                    || candidates.iter().any(|op| matches!(op.kind, Kind::Delete));
                if !absent_ok {
                    failures.push(format!(
                        "{key} is absent; it should hold one of: {}",
                        shown(&candidates)
                    ));
                }
            }
            Some(uuid) => {
                let acknowledged = candidates
                    .iter()
                    .find(|op| matches!(&op.outcome, Outcome::Put(u) if u == uuid));
                if let Some(op) = acknowledged {
                    if rng.gen_bool(0.1) {
                        checked.data_compared += 1;
                        let Kind::Put(value) = &op.kind else {
                            unreachable!()
                        };
                        let expected: Value = serde_json::from_str(value).expect("sent JSON");
                        let data = data_of(key);
                        if data.as_ref() != Some(&expected) {
                            failures.push(format!(
                                "{key} has the acknowledged uuid {uuid} but data {data:?}"
                            ));
                        }
                    }
                    continue;
                }
                // Not an acknowledged version: it must be a write that was in flight.
                let data = data_of(key);
                checked.data_compared += 1;
                let in_flight = candidates.iter().any(|op| match (&op.kind, &op.outcome) {
                    (Kind::Put(value), Outcome::Uncertain(_)) => {
                        serde_json::from_str::<Value>(value).ok() == data
                    }
                    _ => false,
                });
                if !in_flight {
                    failures.push(format!(
                        "{key} holds {uuid} ({data:?}), which is none of: {}",
                        shown(&candidates)
                    ));
                }
            }
        }
    }
    for key in listing.keys().filter(|key| !history.contains_key(*key)) {
        failures.push(format!("{key} exists but nobody wrote it"));
    }
    match failures.is_empty() {
        true => Ok(checked),
        false => Err(failures),
    }
}
