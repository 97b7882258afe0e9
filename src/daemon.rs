//! Daemon instances: `kvs start|stop|restart|status`.
//!
//! State lives under `$KVS_HOME` (default `~/.kvs`): `pids/<name>.pid` holds the
//! daemon's pid, `pids/<name>.addr` its HTTP address, and `logs/kvs_<name>.yaml.log` its
//! log, where `<name>` is the config's file name without `.yaml`. A pid file whose
//! process is gone (or is not a node of that instance) is stale: reported as such, and
//! replaced on start. An instance with a log but no pid file is reported as stopped.
//! Starts of one instance take turns (`pids/<name>.lock`).

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::backup::{http_addr_file, node_running};
use crate::config::{config_path, instance_name, load_or_create};
use crate::http_client::Connection;

/// How long `start` waits for `/health` and `stop` for the process to exit.
const WAIT: Duration = Duration::from_secs(30);

fn home() -> PathBuf {
    match std::env::var_os("KVS_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".kvs"),
    }
}

struct Instance {
    name: String,
    pid_file: PathBuf,
    addr_file: PathBuf,
    log_file: PathBuf,
}

impl Instance {
    fn named(name: &str) -> Self {
        let home = home();
        Self {
            name: name.to_owned(),
            pid_file: home.join("pids").join(format!("{name}.pid")),
            addr_file: home.join("pids").join(format!("{name}.addr")),
            log_file: home.join("logs").join(format!("kvs_{name}.yaml.log")),
        }
    }

    fn of_config(path: &Path) -> Self {
        Self::named(&instance_name(path))
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The pid, if its process is alive and is this instance's daemon: a pid file can
    /// outlive its process, and the pid be taken by another one since (after a reboot),
    /// which must be neither reported as running nor signalled.
    fn running(&self) -> Option<i32> {
        self.pid()
            .filter(|&pid| alive(pid) && runs_instance(pid, &self.name))
    }

    fn addr(&self) -> String {
        std::fs::read_to_string(&self.addr_file)
            .map(|a| a.trim().to_owned())
            .unwrap_or_else(|_| "-".into())
    }

    fn forget(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.addr_file);
    }

    /// Holds the instance's start lock (`pids/<name>.lock`) until dropped: two `kvs
    /// start` of one config at once take turns, so that the second finds the first's
    /// node running instead of removing its pid file when its own node cannot start.
    fn lock_for_start(&self) -> std::io::Result<std::fs::File> {
        if let Some(dir) = self.pid_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.pid_file.with_extension("lock"))?;
        lock.lock()?;
        Ok(lock)
    }
}

/// Whether process `pid` runs: it exists and has not exited. A daemon that exited stays
/// a zombie until init reaps it, which some init processes do only after a second or
/// more; `kvs start` right after a crash would otherwise refuse as "already running".
fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok() && !exited(pid)
}

/// Whether process `pid` is a node of instance `name`: its command line is `kvs run
/// CONFIG` (how [`spawn`] starts it, with CONFIG's full path) for a CONFIG of that name.
fn runs_instance(pid: i32, name: &str) -> bool {
    run_config(pid).is_some_and(|config| instance_name(&config) == name)
}

/// The CONFIG of process `pid` when its command line is `kvs run CONFIG`.
fn run_config(pid: i32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|&byte| byte == 0).skip(1);
    if args.next() != Some(b"run".as_slice()) {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(args.next()?)))
}

/// Refuses (exit 1) to stop daemon `pid` of `instance` when it runs another config of
/// the same name (`x/node1.yaml` while `y/node1.yaml` was given): instances are named by
/// file name, but a command must not stop a node of another config and data dir.
fn check_same_config(instance: &Instance, pid: i32, given: &Path) -> Result<(), ExitCode> {
    let Some(running) = run_config(pid) else {
        return Ok(());
    };
    let given = std::fs::canonicalize(given)
        .or_else(|_| std::path::absolute(given))
        .unwrap_or_else(|_| given.to_path_buf());
    if running == given {
        return Ok(());
    }
    eprintln!(
        "kvs: {} (pid {pid}) runs {}, not {}: give that config to stop it",
        instance.name,
        running.display(),
        given.display()
    );
    Err(ExitCode::from(1))
}

/// Whether `pid` is a zombie: exited, not yet reaped (its state in `/proc/PID/stat`,
/// the field after the parenthesised command name, is `Z`).
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// `kvs start CONFIG`.
pub fn start(arg: &str) -> ExitCode {
    // The instance's lock first: where it cannot be taken (`$KVS_HOME` is a file, say),
    // no config is written for a node that cannot start.
    let instance = Instance::of_config(&config_path(arg));
    let starting = match instance.lock_for_start() {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("kvs: {}: {error}", instance.pid_file.display());
            return ExitCode::from(1);
        }
    };
    let (path, config) = match load_or_create(arg) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("kvs: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(pid) = instance.running() {
        eprintln!("kvs: {} is already running (pid {pid})", instance.name);
        return ExitCode::from(1);
    }
    instance.forget();
    let data_dir = config.data_dir(&path);
    if node_running(&data_dir) {
        // As `kvs run` says it (a config whose data dir is taken, like one whose port is).
        eprintln!(
            "kvs: {}: data_dir: {} is in use by another running kvs node",
            path.display(),
            data_dir.display()
        );
        return ExitCode::from(2);
    }
    let spawned = spawn(&instance, &path, &data_dir);
    // Another start may go on now: it will find this node running (or gone).
    drop(starting);
    match spawned {
        Ok((pid, addr)) => {
            crate::stdout::line(format_args!(
                "started {} pid {pid} http://{addr}",
                instance.name
            ));
            let joins = config.clustering_enabled && !config.seed_nodes.is_empty();
            if joins && std::io::stderr().is_terminal() {
                let token = std::fs::read_to_string(data_dir.join("root.token")).ok();
                match crate::sync_progress::follow(&addr, token.as_deref().map(str::trim)) {
                    Ok((keys, took)) => crate::stdout::line(format_args!(
                        "in sync with the cluster: {keys} keys ({:.1} s)",
                        took.as_secs_f64()
                    )),
                    Err(error) => eprintln!("kvs: {error}"),
                }
            }
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("kvs: {message}");
            ExitCode::from(code)
        }
    }
}

fn spawn(
    instance: &Instance,
    config: &Path,
    data_dir: &Path,
) -> Result<(i32, String), (u8, String)> {
    let fail = |e: std::io::Error| (1, e.to_string());
    for dir in [&instance.pid_file, &instance.log_file]
        .iter()
        .filter_map(|f| f.parent())
    {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&instance.log_file)
        .map_err(fail)?;
    let logged_before = log.metadata().map_or(0, |m| m.len());
    // The node records its HTTP address there once it listens; an old record must not
    // be taken for the new node's.
    let addr_record = http_addr_file(data_dir);
    let _ = std::fs::remove_file(&addr_record);
    let exe = std::env::current_exe().map_err(fail)?;
    let config = std::fs::canonicalize(config).map_err(fail)?;
    let mut child = Command::new(exe)
        .arg("run")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(fail)?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(fail)?;
    let pid = i32::try_from(child.id()).map_err(|_| (1, "pid out of range".to_owned()))?;
    std::fs::write(&instance.pid_file, format!("{pid}\n")).map_err(fail)?;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            instance.forget();
            let code = if status.code() == Some(2) { 2 } else { 1 };
            // The node's own one-line error (a config error names the key) is the last
            // line it wrote to its log.
            let why = last_line_after(&instance.log_file, logged_before)
                .map(|line| line.strip_prefix("kvs: ").unwrap_or(&line).to_owned())
                .unwrap_or_else(|| format!("the node exited ({status})"));
            return Err((
                code,
                format!("{why} (log: {})", instance.log_file.display()),
            ));
        }
        let recorded = std::fs::read_to_string(&addr_record).map(|a| a.trim().to_owned());
        if let Some(addr) = recorded.ok().filter(|a| healthy(a)) {
            let _ = std::fs::write(&instance.addr_file, format!("{addr}\n"));
            return Ok((pid, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    instance.forget();
    Err((
        1,
        format!("the node did not answer /health within {WAIT:?}"),
    ))
}

/// The last non-empty line of `file` past its first `offset` bytes, if any.
fn last_line_after(file: &Path, offset: u64) -> Option<String> {
    let bytes = std::fs::read(file).ok()?;
    let written = bytes.get(usize::try_from(offset).ok()?..)?;
    let text = String::from_utf8_lossy(written);
    let line = text.lines().rev().find(|line| !line.trim().is_empty())?;
    Some(line.trim().to_owned())
}

fn healthy(addr: &str) -> bool {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    runtime.block_on(async {
        let Ok(mut connection) = Connection::open(&format!("http://{addr}")).await else {
            return false;
        };
        matches!(
            connection.send(hyper::Method::GET, "/health", None, None).await,
            Ok((status, _)) if status.is_success()
        )
    })
}

/// `kvs stop CONFIG`.
pub fn stop(arg: &str) -> ExitCode {
    let path = config_path(arg);
    let instance = Instance::of_config(&path);
    let Some(pid) = instance.running() else {
        eprintln!("kvs: {} is not running", instance.name);
        instance.forget();
        return ExitCode::from(1);
    };
    if let Err(refused) = check_same_config(&instance, pid, &path) {
        return refused;
    }
    match stop_running(&instance, pid) {
        Some(Stopped::Exited) => ExitCode::SUCCESS,
        // Gone, but without its graceful shutdown: exit 1.
        Some(Stopped::Killed) | None => ExitCode::from(1),
    }
}

/// Stops `instance`'s daemon `pid` (see [`terminate`]) and says how; once it is gone,
/// forgets its pid file. `None` when it could not be signalled.
fn stop_running(instance: &Instance, pid: i32) -> Option<Stopped> {
    let stopped = terminate(pid, WAIT);
    match &stopped {
        Ok(Stopped::Exited) => {
            crate::stdout::line(format_args!("stopped {} pid {pid}", instance.name))
        }
        Ok(Stopped::Killed) => eprintln!(
            "kvs: stopping {} (pid {pid}): it did not exit within {WAIT:?}; killed",
            instance.name
        ),
        Err(error) => eprintln!("kvs: stopping {} (pid {pid}): {error}", instance.name),
    }
    let stopped = stopped.ok()?;
    instance.forget();
    Some(stopped)
}

/// How a daemon stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stopped {
    /// It exited after SIGTERM.
    Exited,
    /// It did not exit within [`WAIT`] and was SIGKILLed.
    Killed,
}

/// SIGTERM, wait up to `wait` for the exit, SIGKILL if it does not come (then wait for
/// that too).
fn terminate(pid: i32, wait: Duration) -> Result<Stopped, String> {
    let pid_t = Pid::from_raw(pid);
    kill(pid_t, Signal::SIGTERM).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + wait;
    while alive(pid) {
        if Instant::now() >= deadline {
            kill(pid_t, Signal::SIGKILL).map_err(|e| format!("SIGKILL: {e}"))?;
            while alive(pid) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(Stopped::Killed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Stopped::Exited)
}

/// `kvs restart CONFIG`: the config is checked before the running node is stopped, so a
/// broken config leaves it running (exit 2, as `start` would answer).
pub fn restart(arg: &str) -> ExitCode {
    let path = config_path(arg);
    let instance = Instance::of_config(&path);
    if let Some(pid) = instance.running() {
        if let Err(refused) = check_same_config(&instance, pid, &path) {
            return refused;
        }
        if let Err(error) = load_or_create(arg) {
            eprintln!("kvs: {error}; {} keeps running", instance.name);
            return ExitCode::from(2);
        }
        if stop_running(&instance, pid).is_none() {
            return ExitCode::from(1);
        }
    }
    start(arg)
}

/// `kvs status [CONFIG]`: every instance with a pid file (running or stale) or a log
/// (stopped), or only CONFIG's.
pub fn status(arg: Option<&str>) -> ExitCode {
    let state = home();
    if state.exists() && !state.is_dir() {
        eprintln!(
            "kvs: {} ($KVS_HOME) is not a directory: no instance can be recorded there",
            state.display()
        );
    }
    let names: Vec<String> = match arg {
        Some(arg) => vec![instance_name(&config_path(arg))],
        None => known_instances(),
    };
    crate::stdout::line(format_args!(
        "{:<24} {:>8} {:<8} HTTP",
        "NAME", "PID", "STATE"
    ));
    for name in names {
        let instance = Instance::named(&name);
        let (pid, state) = match (instance.pid(), instance.running()) {
            (_, Some(pid)) => (pid.to_string(), "running"),
            (Some(pid), None) => (pid.to_string(), "stale"),
            (None, None) => ("-".to_owned(), "stopped"),
        };
        crate::stdout::line(format_args!(
            "{:<24} {:>8} {:<8} {}",
            name,
            pid,
            state,
            instance.addr()
        ));
    }
    ExitCode::SUCCESS
}

/// The names of the instances under `$KVS_HOME`: those with a pid file and those that
/// left a log, sorted.
fn known_instances() -> Vec<String> {
    let home = home();
    let mut names: Vec<String> = file_names(&home.join("pids"))
        .filter_map(|n| n.strip_suffix(".pid").map(str::to_owned))
        .chain(file_names(&home.join("logs")).filter_map(|n| {
            n.strip_prefix("kvs_")?
                .strip_suffix(".yaml.log")
                .map(str::to_owned)
        }))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The UTF-8 file names in `dir` (none if it cannot be read).
fn file_names(dir: &Path) -> impl Iterator<Item = String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Stopped, alive, terminate};

    #[test]
    fn a_process_that_ignores_sigterm_is_killed() {
        let mut stubborn = std::process::Command::new("sh")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 60"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        // The trap is set once it says so.
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(stubborn.stdout.take().expect("stdout")),
            &mut ready,
        )
        .expect("ready");
        let pid = stubborn.id() as i32;
        assert_eq!(
            terminate(pid, Duration::from_millis(200)),
            Ok(Stopped::Killed)
        );
        assert!(!alive(pid));
        let _ = stubborn.wait();

        let mut polite = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let pid = polite.id() as i32;
        assert_eq!(terminate(pid, Duration::from_secs(20)), Ok(Stopped::Exited));
        let _ = polite.wait();
    }

    #[test]
    fn an_exited_process_is_not_alive_before_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(alive(pid));
        child.kill().expect("kill");
        // Not reaped yet (no wait): a zombie, which signal 0 still reaches.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid), "a zombie counts as running");
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
            "the zombie is still there"
        );
        child.wait().expect("reap");
        assert!(!alive(pid));
    }
}
