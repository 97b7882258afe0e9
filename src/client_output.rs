//! How the command-line client prints a node's answers: as the node sent them (JSON)
//! when stdout is not a terminal or with `--json`, so that scripts and `jq` get what the
//! API gives; as tables and pretty-printed values on a terminal or with `--table`.

use std::io::IsTerminal;
use std::time::{Duration, UNIX_EPOCH};

use clap::Args;
use serde_json::Value;

/// The output flags of the client commands.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct OutputArgs {
    /// Print the node's JSON answer as it is (the default when stdout is not a terminal).
    #[arg(long, conflicts_with = "table")]
    json: bool,
    /// Print tables and pretty-printed values (the default on a terminal).
    #[arg(long)]
    table: bool,
}

impl OutputArgs {
    /// Whether answers are shown as tables.
    pub fn tables(self) -> bool {
        self.table || (!self.json && std::io::stdout().is_terminal())
    }
}

/// A Unix-milliseconds field as UTC time (`2026-12-03T18:20:00.123Z`); anything else as
/// it is.
fn time(value: &Value) -> String {
    match value.as_u64() {
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => plain(value),
    }
}

/// A scalar without JSON quotes; `-` for null or absent.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns under a header, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `GET /kv/KEY`: the metadata, one field a line, then the value pretty-printed.
pub fn value(key: &str, answer: &Value) -> String {
    let mut rows = vec![vec!["key".to_owned(), key.to_owned()]];
    if let Some(fields) = answer.as_object() {
        for (name, field) in fields {
            let shown = match name.as_str() {
                "data" => continue,
                "timestamp" | "expires_at" => time(field),
                _ => plain(field),
            };
            rows.push(vec![name.clone(), shown]);
        }
    }
    let data = serde_json::to_string_pretty(&answer["data"]).unwrap_or_default();
    let mut out = table(&["FIELD", "VALUE"], &rows);
    out.push_str("\n\n");
    out.push_str(&data);
    out
}

/// `PUT /kv/KEY`: what was stored.
pub fn written(key: &str, created: bool, answer: &Value) -> String {
    let verb = if created { "created" } else { "updated" };
    format!(
        "{verb} {key}: uuid {}, at {}",
        plain(&answer["uuid"]),
        time(&answer["timestamp"])
    )
}

/// `GET /kv?prefix=` with every page followed: a table of keys and their count.
pub fn listing(answer: &Value) -> String {
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            vec![
                plain(&item["key"]),
                time(&item["timestamp"]),
                plain(&item["uuid"]),
            ]
        })
        .collect();
    let mut out = table(&["KEY", "WRITTEN", "UUID"], &rows);
    out.push_str(&format!("\n({} keys)", rows.len()));
    out
}

/// `GET /members`: one line per member, then the live members that sign tokens with
/// another `jwt_secret` than the node asked, if any.
pub fn members(answer: &Value) -> String {
    let members = answer["members"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            vec![
                plain(&member["node_id"]),
                plain(&member["state"]),
                plain(&member["incarnation"]),
                plain(&member["gossip_addr"]),
                plain(&member["http_addr"]),
                time(&member["joined_at"]),
            ]
        })
        .collect();
    let mut out = table(
        &["NODE", "STATE", "INCARNATION", "GOSSIP", "HTTP", "JOINED"],
        &rows,
    );
    let other_secret: Vec<String> = members
        .iter()
        .filter(|member| member["jwt_secret_matches"] == false)
        .filter(|member| member["state"] == "alive" || member["state"] == "suspect")
        .map(|member| plain(&member["node_id"]))
        .collect();
    if !other_secret.is_empty() {
        out.push_str(&format!(
            "\n(these members have another jwt_secret than this node: a token issued by one is refused by the other: {})",
            other_secret.join(", ")
        ));
    }
    out
}

/// An error answer (`{"error": {"code", "message"}}`) as one line; other bodies as they
/// are.
pub fn error(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().map(|v| &v["error"]) {
        Some(error) if error["code"].is_string() => {
            format!("{}: {}", plain(&error["code"]), plain(&error["message"]))
        }
        _ => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_value_shows_its_fields_and_the_data_pretty_printed() {
        let answer =
            json!({"uuid": "u-1", "timestamp": 1_796_320_800_123_u64, "data": {"a": [1, 2]}});
        let shown = value("users/ann", &answer);
        assert_eq!(
            shown,
            "FIELD      VALUE\n\
             key        users/ann\n\
             timestamp  2026-12-03T18:00:00.123Z\n\
             uuid       u-1\n\
             \n\
             {\n  \"a\": [\n    1,\n    2\n  ]\n}"
        );
    }

    #[test]
    fn a_listing_is_a_table_with_a_count() {
        let answer = json!({
            "items": [
                {"key": "a", "uuid": "u-1", "timestamp": 0},
                {"key": "ключ", "uuid": "u-22", "timestamp": 1000}
            ],
            "next_cursor": null
        });
        assert_eq!(
            listing(&answer),
            "KEY   WRITTEN                   UUID\n\
             a     1970-01-01T00:00:00.000Z  u-1\n\
             ключ  1970-01-01T00:00:01.000Z  u-22\n\
             (2 keys)"
        );
        assert!(listing(&json!({"items": [], "next_cursor": null})).ends_with("(0 keys)"));
    }

    #[test]
    fn members_are_one_line_each() {
        let answer = json!({"members": [{
            "node_id": "n1", "state": "alive", "incarnation": 3,
            "gossip_addr": "127.0.0.1:7946", "http_addr": "127.0.0.1:8080", "joined_at": 0
        }]});
        assert_eq!(
            members(&answer),
            "NODE  STATE  INCARNATION  GOSSIP          HTTP            JOINED\n\
             n1    alive  3            127.0.0.1:7946  127.0.0.1:8080  1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn members_with_another_jwt_secret_are_named_below() {
        let member = |id: &str, matches: Value| {
            json!({"node_id": id, "state": "alive", "incarnation": 1, "gossip_addr": "g",
                   "http_addr": "h", "joined_at": 0, "jwt_secret_matches": matches})
        };
        let answer = json!({"members": [
            member("n1", Value::Null), member("n2", json!(true)),
            member("n3", json!(false)), member("n4", json!(false)),
        ]});
        let shown = members(&answer);
        assert_eq!(shown.lines().count(), 6, "{shown}");
        assert!(
            shown.ends_with("a token issued by one is refused by the other: n3, n4)"),
            "{shown}"
        );
        let agreeing = json!({"members": [member("n1", Value::Null), member("n2", json!(true))]});
        assert_eq!(members(&agreeing).lines().count(), 3);
        let mut gone = member("n3", json!(false));
        gone["state"] = json!("left");
        let with_gone = json!({"members": [member("n1", Value::Null), gone]});
        assert_eq!(
            members(&with_gone).lines().count(),
            3,
            "only live members are named"
        );
    }

    #[test]
    fn errors_are_one_line_and_other_bodies_pass_through() {
        let body = r#"{"error":{"code":"not_found","message":"no such key"}}"#;
        assert_eq!(error(body), "not_found: no such key");
        assert_eq!(error("bad gateway"), "bad gateway");
    }

    #[test]
    fn a_write_says_whether_it_created_the_key() {
        let answer = json!({"uuid": "u-1", "timestamp": 0});
        assert_eq!(
            written("k", true, &answer),
            "created k: uuid u-1, at 1970-01-01T00:00:00.000Z"
        );
        assert!(written("k", false, &answer).starts_with("updated k"));
    }
}
