//! kvs: a peer-to-peer key-value store node, and its command-line client.
//!
//! `main` only parses the command line, sets up logging and hands over to the module
//! that does the work; exit codes are 0 success, 1 runtime failure, 2 usage or config.

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use kvs::config::{Config, config_arg, load_or_create};
use kvs::{backup, bench, client, compact, daemon, init, node, watch};

/// mimalloc: the node's threads hand buffers to each other (HTTP workers, the commit
/// thread, the applier), and glibc's malloc pays for every cross-thread free.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A peer-to-peer key-value store node.
#[derive(Parser)]
#[command(
    name = "kvs",
    version,
    about,
    override_usage = "kvs <COMMAND>\n       kvs CONFIG    (the same as kvs run CONFIG)",
    after_long_help = kvs::config::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node in the foreground (`kvs CONFIG` does the same); writes a default
    /// config at CONFIG first when it does not exist.
    Run {
        /// The config file (`node1` means `node1.yaml`).
        #[arg(value_parser = config_arg)]
        config: String,
    },
    /// Start a node as a background daemon; prints its pid and HTTP address once it
    /// answers `/health`.
    Start {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
    },
    /// Stop a daemon started with `kvs start` (SIGTERM, then wait); exit 1 if it was not
    /// running.
    Stop {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
    },
    /// Stop the daemon (if running), then start it.
    Restart {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
    },
    /// List daemon instances: name, pid, running or stale, HTTP address.
    Status {
        /// Only this config's instance.
        #[arg(value_parser = config_arg)]
        config: Option<String>,
    },
    /// Take a consistent backup of a node's data (through the node while it runs).
    Backup {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
        /// Also write the backup to this file.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// An admin token for a running node (default: the data dir's `root.token`).
        #[arg(long, env = "KVS_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Write NAME.yaml for another node of CONFIG's cluster: the same secrets, CONFIG's
    /// node as its seed, free ports and a data dir of its own.
    Init {
        /// The new config (`node2` means `node2.yaml`).
        name: String,
        /// The config of a node of the cluster to join.
        #[arg(long, value_parser = config_arg)]
        join: String,
    },
    /// Restore a backup into the data dir of a stopped node.
    Restore {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
        /// The backup file.
        file: std::path::PathBuf,
    },
    /// Rewrite a stopped node's data file packed, giving back the disk that random
    /// inserts and deletions left unused (like `etcdctl defrag`).
    Compact {
        /// The config file.
        #[arg(value_parser = config_arg)]
        config: String,
    },
    /// Get a key's value.
    Get(client::KeyArgs),
    /// Put a JSON value at a key.
    Put(client::PutArgs),
    /// Delete a key.
    Del(client::KeyArgs),
    /// List keys under a prefix.
    Ls(client::ListArgs),
    /// Show the cluster's members.
    Members(client::MembersArgs),
    /// Print changes under a prefix as they happen, one JSON line each (resumes after a
    /// disconnect).
    Watch(watch::WatchArgs),
    /// Load-test a running node.
    Bench(bench::BenchArgs),
    /// Print a shell completion script: `kvs completions bash > /etc/bash_completion.d/kvs`,
    /// `kvs completions zsh > "${fpath[1]}/_kvs"`,
    /// `kvs completions fish > ~/.config/fish/completions/kvs.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The subcommands that talk to a node (`--addr`, `--token`).
const CLIENT_COMMANDS: [&str; 7] = ["get", "put", "del", "ls", "members", "watch", "bench"];

/// `kvs --addr URL get KEY`, the order etcdctl also takes: the client options given
/// before a client subcommand move to right after its name, where clap reads them.
fn client_options_after_subcommand(args: &mut Vec<String>) {
    let mut at = 1;
    while let Some(arg) = args.get(at) {
        match arg.as_str() {
            "--addr" | "--token" => at += 2,
            option if option.starts_with("--addr=") || option.starts_with("--token=") => at += 1,
            _ => break,
        }
    }
    let named = args.get(at).map(String::as_str);
    if at == 1 || !named.is_some_and(|name| CLIENT_COMMANDS.contains(&name)) {
        return;
    }
    let options: Vec<String> = args.drain(1..at).collect();
    args.splice(2..2, options);
}

fn main() -> ExitCode {
    // Every argument kvs takes is text (keys, values, names, paths of configs): one that
    // is not UTF-8 is a usage error (`std::env::args` would panic on it).
    let args: Result<Vec<String>, _> = std::env::args_os().map(|arg| arg.into_string()).collect();
    let mut args = match args {
        Ok(args) => args,
        Err(arg) => {
            eprintln!(
                "kvs: the argument {} is not UTF-8 (keys, values, names and paths must be)",
                arg.to_string_lossy()
            );
            return ExitCode::from(2);
        }
    };
    client_options_after_subcommand(&mut args);
    // `kvs CONFIG` means `kvs run CONFIG`.
    if let Some(first) = args.get(1)
        && !first.starts_with('-')
        && first != "help"
        && !Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == first)
    {
        args.insert(1, "run".into());
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Run { config } => run_node(&config),
        Command::Start { config } => daemon::start(&config),
        Command::Stop { config } => daemon::stop(&config),
        Command::Restart { config } => daemon::restart(&config),
        Command::Status { config } => daemon::status(config.as_deref()),
        Command::Backup { config, out, token } => {
            backup::run_backup(&config, out.as_deref(), token.as_deref())
        }
        Command::Restore { config, file } => backup::run_restore(&config, &file),
        Command::Compact { config } => compact::run(&config),
        Command::Init { name, join } => match init::write_joining(&name, &join) {
            Ok(said) => {
                kvs::stdout::line(&said);
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("kvs: {error}");
                ExitCode::from(2)
            }
        },
        Command::Get(args) => client::get(args),
        Command::Put(args) => client::put(args),
        Command::Del(args) => client::del(args),
        Command::Ls(args) => client::ls(args),
        Command::Members(args) => client::members(args),
        Command::Watch(args) => watch::watch(args),
        Command::Bench(args) => bench::run(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kvs", &mut script);
            kvs::stdout::bytes(&script);
            ExitCode::SUCCESS
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},warp=warn,hyper=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // A write to a closed stderr (`kvs run n1 2>&1 | head`) is dropped: reported, it
        // would go to the same closed stderr through `eprintln!`, which panics.
        .log_internal_errors(false)
        .init();
}

fn run_node(arg: &str) -> ExitCode {
    let (path, config) = match load_or_create(arg) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("kvs: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kvs: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run_until_signal(config, &path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(node::NodeError::Config(error)) => {
            eprintln!("kvs: {}: {error}", path.display());
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("kvs: {error}");
            ExitCode::from(1)
        }
    }
}

async fn run_until_signal(config: Config, path: &Path) -> Result<(), node::NodeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut terminate =
        signal(SignalKind::terminate()).map_err(node::NodeError::io("catching SIGTERM"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(node::NodeError::io("catching SIGINT"))?;
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
        // A second signal ends a shutdown that waits too long (on a client, say): every
        // acknowledged write is in the write-ahead log, replayed at the next start.
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!(
            "a second signal: exiting now, without waiting for the shutdown to finish \
             (acknowledged writes are in the write-ahead log and are replayed at the next start)"
        );
        std::process::exit(1);
    });
    let stopped = node::run(config, path, shutdown).await;
    // A node that failed to start leaves the signal task waiting: stopped, not left.
    signals.abort();
    let _ = signals.await;
    stopped
}

#[cfg(test)]
mod tests {
    use super::{CLIENT_COMMANDS, Cli, client_options_after_subcommand};
    use clap::CommandFactory;

    /// The list names exactly the subcommands that take `--addr`.
    #[test]
    fn the_client_commands_are_those_with_an_address() {
        let with_addr: Vec<String> = Cli::command()
            .get_subcommands()
            .filter(|command| command.get_arguments().any(|arg| arg.get_id() == "addr"))
            .map(|command| command.get_name().to_owned())
            .collect();
        assert_eq!(with_addr, CLIENT_COMMANDS);
    }

    #[test]
    fn client_options_before_the_subcommand_move_after_its_name() {
        let moved = |line: &str| {
            let mut args: Vec<String> = line.split(' ').map(str::to_owned).collect();
            client_options_after_subcommand(&mut args);
            args.join(" ")
        };
        assert_eq!(
            moved("kvs --addr http://h:1 --token=t put k -- -1"),
            "kvs put --addr http://h:1 --token=t k -- -1"
        );
        assert_eq!(moved("kvs get k --addr u"), "kvs get k --addr u");
        // Not a client command, or an option without its value: left for clap to refuse.
        assert_eq!(moved("kvs --addr u run n1"), "kvs --addr u run n1");
        assert_eq!(moved("kvs --addr"), "kvs --addr");
    }
}
