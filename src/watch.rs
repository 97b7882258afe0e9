//! `kvs watch PREFIX`: the node's `/watch` stream printed as it comes, one JSON line per
//! change (`{"event","key","uuid","timestamp","data"?}`), resumed with `Last-Event-ID`
//! after a disconnect (and after a `resume` event, when this client fell behind).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http_body_util::BodyExt;
use hyper::Method;
use percent_encoding::utf8_percent_encode;

use crate::client::{QUERY_ESCAPES, Target};
use crate::http_client::Connection;

/// How long to wait before connecting again after the stream ended.
const RECONNECT: Duration = Duration::from_secs(1);

/// `kvs watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only keys starting with this prefix.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    target: Target,
}

/// One event being read: its lines so far.
#[derive(Default)]
struct Pending {
    id: Option<String>,
    kind: Option<String>,
    data: String,
}

/// Why watching stopped for good.
enum Stop {
    /// The node refused (a status other than 200): the message to print.
    Refused(String),
}

/// `kvs watch PREFIX`.
pub fn watch(args: WatchArgs) -> ExitCode {
    crate::stdout::end_when_reader_goes();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvs: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(watch_forever(&args)) {
        Stop::Refused(message) => {
            eprintln!("kvs: {message}");
            ExitCode::from(1)
        }
    }
}

async fn watch_forever(args: &WatchArgs) -> Stop {
    let path = format!(
        "/watch?prefix={}",
        utf8_percent_encode(&args.prefix, QUERY_ESCAPES)
    );
    let mut delivered = Delivered::default();
    loop {
        match watch_once(args, &path, &mut delivered).await {
            Ok(()) => {}
            Err(Some(stop)) => return stop,
            Err(None) => {}
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One connection: prints events until the stream ends. `Err(None)`: a connection error
/// (try again); `Err(Some(_))`: stop.
async fn watch_once(
    args: &WatchArgs,
    path: &str,
    delivered: &mut Delivered,
) -> Result<(), Option<Stop>> {
    let mut connection = Connection::open(&args.target.addr).await.map_err(|error| {
        eprintln!("kvs: {error}; retrying");
        None
    })?;
    let resume: Vec<(&str, &str)> = delivered
        .last_id()
        .map(|id| ("Last-Event-ID", id))
        .into_iter()
        .collect();
    let response = connection
        .start(Method::GET, path, None, args.target.token(), &resume)
        .await
        .map_err(|_| None)?;
    let status = response.status();
    let mut body = response.into_body();
    if status != hyper::StatusCode::OK {
        let text = match body.collect().await {
            Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            Err(error) => error.to_string(),
        };
        return Err(Some(Stop::Refused(format!("{status}: {text}"))));
    }
    let (mut buffer, mut pending) = (String::new(), Pending::default());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(None) };
        let Some(bytes) = frame.data_ref() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(bytes));
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            take_line(line.trim_end_matches(['\r', '\n']), &mut pending, delivered);
        }
    }
    Ok(())
}

/// The ids printed in the millisecond of the last one: a resume from that id sends the
/// other changes of its millisecond again, and these are not printed twice.
#[derive(Default)]
struct Delivered {
    /// The millisecond of the last id, and every id printed in it (the last one last).
    latest: Vec<String>,
}

impl Delivered {
    fn last_id(&self) -> Option<&str> {
        self.latest.last().map(String::as_str)
    }

    /// Records `id`; false if it was printed already.
    fn fresh(&mut self, id: &str) -> bool {
        let millisecond = |id: &str| id.split('.').next().unwrap_or_default().to_owned();
        if self.latest.iter().any(|seen| seen == id) {
            return false;
        }
        if self.last_id().map(millisecond) != Some(millisecond(id)) {
            self.latest.clear();
        }
        self.latest.push(id.to_owned());
        true
    }
}

/// Adds one line of the stream to `pending`; a blank line ends an event, printed then
/// unless `delivered` has it already.
fn take_line(line: &str, pending: &mut Pending, delivered: &mut Delivered) {
    if let Some(id) = line.strip_prefix("id:") {
        pending.id = Some(id.trim().to_owned());
    } else if let Some(kind) = line.strip_prefix("event:") {
        pending.kind = Some(kind.trim().to_owned());
    } else if let Some(data) = line.strip_prefix("data:") {
        pending.data.push_str(data.trim_start());
    } else if line.is_empty() {
        let event = std::mem::take(pending);
        let Some(kind) = event.kind else {
            return;
        };
        if kind == "resume" {
            eprintln!("kvs: fell behind the node; resuming");
            return;
        }
        if event.id.as_deref().is_some_and(|id| !delivered.fresh(id)) {
            return;
        }
        let mut printed: serde_json::Value =
            serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
        if let Some(object) = printed.as_object_mut() {
            object.insert("event".into(), kind.into());
        }
        crate::stdout::line(&printed);
    }
}

#[cfg(test)]
mod tests {
    use super::Delivered;

    #[test]
    fn a_resume_prints_no_change_of_the_last_millisecond_twice() {
        let mut delivered = Delivered::default();
        assert!(delivered.fresh("5.a") && delivered.fresh("5.b"));
        assert_eq!(delivered.last_id(), Some("5.b"));
        // A resume from 5.b sends 5.a again: dropped.
        assert!(!delivered.fresh("5.a"));
        assert!(!delivered.fresh("5.b"));
        assert!(delivered.fresh("5.c"));
        assert!(delivered.fresh("6.d"));
        assert_eq!(delivered.last_id(), Some("6.d"));
        assert!(!delivered.fresh("6.d"));
        assert_eq!(
            delivered.latest,
            ["6.d"],
            "earlier milliseconds are forgotten"
        );
    }
}
