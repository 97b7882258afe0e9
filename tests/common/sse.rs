//! A Server-Sent Events reader for `/watch` tests: the events of one stream, as they
//! arrive, on a channel.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::Node;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<String>,
    pub kind: String,
    pub data: Value,
}

/// Opens `GET path` on `node` and returns its events as they arrive, once the response
/// head came (the node subscribes to changes before it sends the head).
pub fn watch(node: &Node, path: &str, headers: &[(&str, &str)]) -> mpsc::Receiver<Event> {
    let mut reader = BufReader::new(open(node, path, headers));
    read_head(&mut reader);
    events_of(reader)
}

/// Sends `GET path` on a new connection to `node`; nothing is read yet.
pub fn open(node: &Node, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    let addr = node.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("connect");
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("send");
    stream
}

/// The `kvs-resumed` header of `GET path` on `node` (how its `Last-Event-ID` was taken
/// up); the stream is closed once its head is read.
pub fn resumed_as(node: &Node, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut reader = BufReader::new(open(node, path, headers));
    read_head(&mut reader)
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("kvs-resumed"))
        .map(|(_, value)| value)
}

/// Reads a response head: its header lines as (name, value).
fn read_head(reader: &mut BufReader<TcpStream>) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).expect("a response head") > 0 {
        let text = line.trim_end();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        line.clear();
    }
    headers
}

/// The events of the stream `stream` carries, read from now on by a thread.
pub fn read_events(stream: TcpStream) -> mpsc::Receiver<Event> {
    events_of(BufReader::new(stream))
}

/// The events `reader` goes on to read, read by a thread.
fn events_of(reader: BufReader<TcpStream>) -> mpsc::Receiver<Event> {
    let (events, received) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut id, mut kind, mut data) = (None, String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line == "0" {
                // The last chunk of the response: the server ended the stream.
                return;
            }
            if let Some(value) = line.strip_prefix("id:") {
                id = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("event:") {
                kind = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.trim());
            } else if line.is_empty() && !kind.is_empty() {
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                let event = Event {
                    id: id.take(),
                    kind: std::mem::take(&mut kind),
                    data,
                };
                if events.send(event).is_err() {
                    return;
                }
            } else if line.is_empty() {
                data.clear();
            }
        }
    });
    received
}

/// The next event, waiting generously.
pub fn next(events: &mpsc::Receiver<Event>) -> Event {
    events
        .recv_timeout(Duration::from_secs(20))
        .expect("an event within 20 s")
}

/// Whether the server ends the stream within a few seconds, with no event first.
pub fn ends(events: &mpsc::Receiver<Event>) -> bool {
    matches!(
        events.recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected)
    )
}

/// Whether no event arrives within a short while.
pub fn quiet(events: &mpsc::Receiver<Event>) -> bool {
    events.recv_timeout(Duration::from_millis(500)).is_err()
}
