//! The command-line client: `kvs get|put|del|ls|members` against a node's HTTP API
//! (`kvs watch` is in `watch.rs`); what it prints is in `client_output.rs`.

use std::process::ExitCode;

use bytes::Bytes;
use clap::Args;
use hyper::Method;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::client_output::{self, OutputArgs};
use crate::http_client::{ClientError, Connection};

/// Characters escaped in a key path segment (`/` stays: it separates segments).
const KEY_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');
/// Characters escaped in a query value.
pub(crate) const QUERY_ESCAPES: &AsciiSet = &KEY_ESCAPES.add(b'&').add(b'=').add(b'+').add(b'/');

/// Where the node is and who is asking.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node's HTTP address.
    #[arg(long, env = "KVS_ADDR", default_value = crate::http_client::DEFAULT_ADDR,
          value_parser = crate::http_client::checked_addr)]
    pub addr: String,
    /// A bearer token.
    #[arg(long, env = "KVS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Target {
    /// The token to send; an empty `--token`/`KVS_TOKEN` means none.
    pub fn token(&self) -> Option<&str> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// A command on one key.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// The key.
    #[arg(value_parser = key_arg)]
    key: String,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: OutputArgs,
}

/// `kvs members`.
#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: OutputArgs,
}

/// `kvs put`.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// The key.
    #[arg(value_parser = key_arg)]
    key: String,
    /// The value, as JSON (a negative number too: `kvs put n -1`).
    #[arg(value_name = "JSON", allow_negative_numbers = true)]
    value: String,
    /// Expire the key this long after the write (`30s`, `10m`, ...).
    #[arg(long)]
    ttl: Option<String>,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: OutputArgs,
}

/// `kvs ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only keys starting with this prefix.
    prefix: Option<String>,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: OutputArgs,
}

/// Checks a KEY argument: an empty key names no key (`GET /kv/` is the listing, which
/// `kvs get ''` printed with exit 0). For clap's `value_parser`.
fn key_arg(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("a key cannot be empty (kvs ls lists keys)".into());
    }
    Ok(key.to_owned())
}

fn key_path(route: &str, key: &str) -> String {
    format!("/{route}/{}", utf8_percent_encode(key, KEY_ESCAPES))
}

/// How a successful answer is shown as a table: from its status and JSON body.
type Render<'a> = &'a dyn Fn(hyper::StatusCode, &serde_json::Value) -> String;

/// What a command asks of the node.
enum Fetch<'a> {
    /// One request: method, path, body.
    One(Method, &'a str, Option<Bytes>),
    /// Every page of a listing (`GET` of this path, then with each `next_cursor` until
    /// none), answered as one listing.
    AllPages(&'a str),
}

/// Sends the request(s) and prints the answer (see `client_output.rs`); exit 0 on 2xx, 1
/// otherwise.
fn call(target: &Target, output: OutputArgs, fetch: Fetch<'_>, render: Render<'_>) -> ExitCode {
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
    let result = runtime.block_on(async {
        let mut connection = Connection::open(&target.addr).await?;
        match fetch {
            Fetch::One(method, path, body) => {
                connection.send(method, path, body, target.token()).await
            }
            Fetch::AllPages(path) => all_pages(&mut connection, path, target.token()).await,
        }
    });
    match result {
        Ok((status, body)) => {
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() {
                eprintln!("kvs: {status}: {}", client_output::error(&text));
                return ExitCode::from(1);
            }
            let json = serde_json::from_str::<serde_json::Value>(&text).ok();
            match json {
                Some(json) if output.tables() => crate::stdout::line(render(status, &json)),
                _ if !text.is_empty() => crate::stdout::line(&text),
                _ => {}
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("kvs: {error}");
            ExitCode::from(1)
        }
    }
}

/// Follows a listing's `next_cursor` to its end; the items of every page as one answer
/// with no `next_cursor`, or the first answer that is not a 2xx listing, as it came. A
/// cursor answered with itself is an error, not an endless loop.
async fn all_pages(
    connection: &mut Connection,
    path: &str,
    token: Option<&str>,
) -> Result<(hyper::StatusCode, Bytes), ClientError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_path = match &cursor {
            Some(cursor) => format!(
                "{path}&cursor={}",
                utf8_percent_encode(cursor, QUERY_ESCAPES)
            ),
            None => path.to_owned(),
        };
        let (status, body) = connection
            .send(Method::GET, &page_path, None, token)
            .await?;
        let page = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let Some(mut page) = page.filter(|_| status.is_success()) else {
            return Ok((status, body));
        };
        if let Some(page_items) = page["items"].as_array_mut() {
            items.append(page_items);
        }
        match page["next_cursor"].as_str() {
            Some(next) if cursor.as_deref() == Some(next) => {
                return Err(ClientError::Http(format!(
                    "the node answered cursor {next:?} with itself as the next one"
                )));
            }
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                page["items"] = serde_json::Value::Array(items);
                return Ok((status, Bytes::from(page.to_string())));
            }
        }
    }
}

/// `kvs get KEY`.
pub fn get(args: KeyArgs) -> ExitCode {
    let path = key_path("kv", &args.key);
    let render = |_, json: &serde_json::Value| client_output::value(&args.key, json);
    call(
        &args.target,
        args.output,
        Fetch::One(Method::GET, &path, None),
        &render,
    )
}

/// `kvs put KEY JSON`.
pub fn put(args: PutArgs) -> ExitCode {
    if let Err(error) = serde_json::from_str::<serde_json::Value>(&args.value) {
        eprintln!("kvs: the value is not JSON: {error}");
        return ExitCode::from(2);
    }
    let mut path = key_path("kv", &args.key);
    if let Some(ttl) = &args.ttl {
        path.push_str(&format!("?ttl={}", utf8_percent_encode(ttl, QUERY_ESCAPES)));
    }
    let render = |status: hyper::StatusCode, json: &serde_json::Value| {
        client_output::written(&args.key, status == hyper::StatusCode::CREATED, json)
    };
    let body = Some(Bytes::from(args.value.clone()));
    call(
        &args.target,
        args.output,
        Fetch::One(Method::PUT, &path, body),
        &render,
    )
}

/// `kvs del KEY`.
pub fn del(args: KeyArgs) -> ExitCode {
    let path = key_path("kv", &args.key);
    let render = |_, json: &serde_json::Value| json.to_string();
    call(
        &args.target,
        args.output,
        Fetch::One(Method::DELETE, &path, None),
        &render,
    )
}

/// `kvs ls [PREFIX]`.
pub fn ls(args: ListArgs) -> ExitCode {
    let prefix = args.prefix.unwrap_or_default();
    let path = format!(
        "/kv?prefix={}&limit=1000",
        utf8_percent_encode(&prefix, QUERY_ESCAPES)
    );
    let render = |_, json: &serde_json::Value| client_output::listing(json);
    call(&args.target, args.output, Fetch::AllPages(&path), &render)
}

/// `kvs members`.
pub fn members(args: MembersArgs) -> ExitCode {
    let render = |_, json: &serde_json::Value| client_output::members(json);
    call(
        &args.target,
        args.output,
        Fetch::One(Method::GET, "/members", None),
        &render,
    )
}
