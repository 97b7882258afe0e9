//! `kvs bench`: a closed-loop load generator for a running node. It preloads the key
//! space, then keeps `--connections` keep-alive connections busy with a GET/PUT mix for
//! `--duration`, and prints requests per second, latency percentiles and errors. The
//! keys it wrote stay in the store (and in its audit log) unless `--cleanup` deletes them;
//! the last line says which.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use hyper::Method;
use rand::{Rng, SeedableRng};

use crate::http_client::{ClientError, Connection};

/// Options of `kvs bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to run (`10s`, `1m`, ...).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Share of GETs, 0.0 to 1.0; the rest are PUTs.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Bytes of each JSON value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Keys in the key space (preloaded before the run).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Key prefix of the bench's keys (`bench` and `bench/` are the same).
    #[arg(long, default_value = "bench", value_parser = parse_prefix)]
    prefix: String,
    /// Delete the bench's keys after the run (their audit entries stay).
    #[arg(long)]
    cleanup: bool,
    #[command(flatten)]
    target: crate::client::Target,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    kvs_api::parse_duration(text)
}

/// A key prefix without its trailing `/` (the keys are `PREFIX/N`): segments that are
/// not empty (the node checks the rest of a key's rules at the preload).
fn parse_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim_end_matches('/');
    if prefix.split('/').any(str::is_empty) {
        return Err(format!(
            "{text:?}: a prefix is one or more segments that are not empty, such as bench or a/b"
        ));
    }
    Ok(prefix.to_owned())
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// A JSON string value of exactly `size` bytes (at least 2).
fn value_of_size(size: usize) -> Bytes {
    let inner = size.saturating_sub(2);
    Bytes::from(format!("\"{}\"", "x".repeat(inner)))
}

/// Runs the bench; exit 1 if any request failed.
pub fn run(args: BenchArgs) -> ExitCode {
    if !(0.0..=1.0).contains(&args.get_ratio) || args.connections == 0 || args.keys == 0 {
        eprintln!("kvs bench: --get-ratio must be within 0..1, --connections and --keys above 0");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvs bench: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            eprintln!("kvs bench: {error}");
            ExitCode::from(1)
        }
    }
}

async fn bench(args: BenchArgs) -> Result<u64, ClientError> {
    let value = value_of_size(args.value_size);
    eprintln!("preloading {} keys of {} bytes ...", args.keys, value.len());
    preload(&args, &value).await?;
    eprintln!(
        "running {} connections for {:?}, {:.0}% GET ...",
        args.connections,
        args.duration,
        args.get_ratio * 100.0
    );
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for seed in 0..args.connections {
        let connection = Connection::open(&args.target.addr).await?;
        let args = args.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(drive(
            connection,
            args,
            value,
            deadline,
            seed as u64,
        )));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.map_err(|e| ClientError::Http(e.to_string()))?;
        total.latencies_us.extend(tally.latencies_us);
        total.errors += tally.errors;
    }
    report(&mut total, started.elapsed());
    if args.cleanup {
        each_key(&args, Method::DELETE, None).await?;
        crate::stdout::line(format_args!(
            "deleted the {} keys under {}/ (their audit entries stay)",
            args.keys, args.prefix
        ));
    } else {
        crate::stdout::line(format_args!(
            "left {} keys under {}/ in the store (and their writes in the audit log); --cleanup deletes them",
            args.keys, args.prefix
        ));
    }
    Ok(total.errors)
}

async fn preload(args: &BenchArgs, value: &Bytes) -> Result<(), ClientError> {
    each_key(args, Method::PUT, Some(value)).await
}

/// Sends `method` (with `body`) to every key of the key space, over up to 32
/// connections; the first failure ends it.
async fn each_key(
    args: &BenchArgs,
    method: Method,
    body: Option<&Bytes>,
) -> Result<(), ClientError> {
    let workers = args.connections.min(32);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut connection = Connection::open(&args.target.addr).await?;
        let args = args.clone();
        let (method, body) = (method.clone(), body.cloned());
        tasks.push(tokio::spawn(async move {
            for key in (worker..args.keys).step_by(workers) {
                let path = format!("/kv/{}/{key}", args.prefix);
                let (status, answer) = connection
                    .send(method.clone(), &path, body.clone(), args.target.token())
                    .await?;
                let gone = method == Method::DELETE && status == hyper::StatusCode::NOT_FOUND;
                if !status.is_success() && !gone {
                    return Err(ClientError::Http(failure(&method, &path, status, &answer)));
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| ClientError::Http(e.to_string()))??;
    }
    Ok(())
}

/// Why a request of the preload or the cleanup failed, with a hint on a `401`.
fn failure(method: &Method, path: &str, status: hyper::StatusCode, body: &[u8]) -> String {
    let hint = if status == hyper::StatusCode::UNAUTHORIZED {
        " (pass a token with --token or KVS_TOKEN)"
    } else {
        ""
    };
    format!(
        "{method} {path}: {status} {}{hint}",
        String::from_utf8_lossy(body)
    )
}

async fn drive(
    mut connection: Connection,
    args: BenchArgs,
    value: Bytes,
    deadline: Instant,
    seed: u64,
) -> Tally {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let token = args.target.token();
    while Instant::now() < deadline {
        let key = rng.gen_range(0..args.keys);
        let path = format!("/kv/{}/{key}", args.prefix);
        let (method, body) = if rng.gen_bool(args.get_ratio) {
            (Method::GET, None)
        } else {
            (Method::PUT, Some(value.clone()))
        };
        let sent = Instant::now();
        match connection.send(method, &path, body, token).await {
            Ok((status, _)) if status.is_success() => {
                let micros = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok(_) => tally.errors += 1,
            Err(_) => {
                tally.errors += 1;
                match Connection::open(&args.target.addr).await {
                    Ok(fresh) => connection = fresh,
                    Err(_) => return tally,
                }
            }
        }
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1000.0
}

fn report(total: &mut Tally, elapsed: Duration) {
    total.latencies_us.sort_unstable();
    let done = total.latencies_us.len();
    let lat = &total.latencies_us;
    crate::stdout::line(format_args!(
        "requests:   {done} ok, {} errors in {:.2}s",
        total.errors,
        elapsed.as_secs_f64()
    ));
    crate::stdout::line(format_args!(
        "throughput: {:.0} requests/s",
        done as f64 / elapsed.as_secs_f64()
    ));
    crate::stdout::line(format_args!(
        "latency:    p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        percentile(lat, 0.50),
        percentile(lat, 0.99),
        percentile(lat, 0.999),
        percentile(lat, 1.0)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_size_and_are_json() {
        let value = value_of_size(256);
        assert_eq!(value.len(), 256);
        assert!(serde_json::from_slice::<serde_json::Value>(&value).is_ok());
    }

    #[test]
    fn a_prefix_is_taken_with_or_without_its_trailing_slash() {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let prefix = |args: &[&str]| {
            let args = ["kvs-bench"].iter().chain(args);
            <Command as clap::Parser>::try_parse_from(args).map(|command| command.bench.prefix)
        };
        assert_eq!(prefix(&[]).unwrap(), "bench");
        assert_eq!(prefix(&["--prefix", "wb/"]).unwrap(), "wb");
        assert_eq!(prefix(&["--prefix", "a/b//"]).unwrap(), "a/b");
        for bad in ["/", "", "/a", "a//b"] {
            let refused = prefix(&["--prefix", bad]).unwrap_err().to_string();
            assert!(
                refused.contains("segments that are not empty"),
                "{bad:?}: {refused}"
            );
        }
    }

    #[test]
    fn percentiles_pick_ranks() {
        let sorted: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile(&sorted, 0.5), 500.0);
        assert_eq!(percentile(&sorted, 0.99), 990.0);
        assert_eq!(percentile(&sorted, 0.999), 999.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
