//! kvs-sim: plays scenario files on the deterministic simulator and prints one
//! `scenario <name> seed <N> trace <hex> PASS|FAIL` line per run (see
//! `shared/scenarios.md` and `scenarios/README.md`). Exit: 0 all passed, 1 a run failed,
//! 2 bad usage or a bad scenario file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use kvs_scenarios::{
    RunOptions, RunReport, Scenario, SimError, Summary, check_scenario, failure_report,
    measurement_line, result_line, run_scenario, vacuity,
};

/// mimalloc, as the node has: a run allocates and frees a few buffers per simulated
/// message (frames, versions, keys), and glibc's malloc made about a tenth of the time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kvs-sim",
    about = "Deterministic network-fault scenarios for kvs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play scenario files.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario files (YAML).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Play each file once with this seed (default: the file's `seed`, else 1).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Play each file with seeds 1..=K (`--seeds 1000`), or FIRST..=LAST (`--seeds
    /// 1001..=2000`, a sweep past the seeds already played).
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<std::ops::RangeInclusive<u64>>,
    /// Play every run twice and fail when the two trace digests differ.
    #[arg(long)]
    check_determinism: bool,
    /// Write the whole trace as JSONL to this file (all runs, one header line per run).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print virtual time, wall time and speed-up of each run to stderr.
    #[arg(long)]
    timing: bool,
    /// Print the figures the properties measured to stderr: one `report:` line per run,
    /// then one `summary:` line per scenario and figure (n, sum, mean, p50, p99, max).
    #[arg(long)]
    report: bool,
}

/// Stamps log lines with the simulation's virtual time.
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(
            w,
            "{:>12.6}s",
            kvs_scenarios::simnet::virtual_now().as_secs_f64()
        )
    }
}

fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
    // `KVS_SIM_LOG=debug` (any tracing filter) shows what the whole nodes of
    // `engine: full` log, as the node would, stamped with virtual time and (at `info` for
    // `kvs_scenarios`) the node; nothing by default.
    if let Ok(filter) = std::env::var("KVS_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            // Colours only on a terminal: a log piped to a file or grep stays plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_timer(VirtualTime)
            .init();
    }
    match run_all(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tell(format_args!("kvs-sim: {e}\n"));
            ExitCode::from(2)
        }
    }
}

/// The seeds of `--seeds`: `K` (at least 1) for 1..=K, or `FIRST..=LAST`.
fn parse_seeds(text: &str) -> Result<std::ops::RangeInclusive<u64>, String> {
    let number = |n: &str| {
        n.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{n}` is not a seed (a whole number)"))
    };
    let (first, last) = match text.split_once("..") {
        None => (1, number(text)?),
        Some((first, last)) => match last.strip_prefix('=') {
            Some(last) => (number(first)?, number(last)?),
            None => {
                return Err(format!(
                    "write `{first}..={last}`: the last seed is played too"
                ));
            }
        },
    };
    if first > last || last == 0 {
        return Err(format!("`{text}` holds no seed"));
    }
    Ok(first..=last)
}

/// An error about a scenario, with its file named.
fn in_file(path: &Path, error: SimError) -> SimError {
    match error {
        SimError::Invalid(message) => SimError::Format {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    }
}

/// Plays every file with every seed; `Ok(false)` when any run failed. Every file is
/// read and checked before the first run starts, so a bad file runs nothing.
fn run_all(args: &RunArgs) -> Result<bool, SimError> {
    let scenarios = args
        .files
        .iter()
        .map(|path| {
            let scenario = Scenario::load(path)?;
            check_scenario(&scenario).map_err(|e| in_file(path, e))?;
            Ok((path.as_path(), scenario))
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    let mut trace_out: Option<BufWriter<File>> = match &args.trace {
        Some(p) => Some(BufWriter::new(File::create(p)?)),
        None => None,
    };
    let mut all_passed = true;
    let mut summary = Summary::default();
    'files: for (path, scenario) in &scenarios {
        let seeds: Vec<u64> = match (args.seed, &args.seeds) {
            (Some(s), _) => vec![s],
            (None, Some(range)) => range.clone().collect(),
            (None, None) => vec![scenario.seed.unwrap_or(1)],
        };
        for seed in seeds {
            let report = play(args, path, scenario, seed, trace_out.as_mut())
                .map_err(|e| in_file(path, e))?;
            all_passed &= report.violation.is_none();
            summary.add(&report);
            // Nobody reads the results any more (`| head -1`): the runs stop, the trace
            // written so far is flushed, and the exit status tells the runs made.
            if READER_GONE.load(std::sync::atomic::Ordering::Relaxed) {
                break 'files;
            }
        }
    }
    if args.report {
        summary
            .lines()
            .iter()
            .for_each(|l| tell(format_args!("{l}\n")));
    }
    if let Some(w) = trace_out.as_mut() {
        w.flush()?;
    }
    Ok(all_passed)
}

/// One run (twice with `--check-determinism`); prints its line and any failure report.
fn play(
    args: &RunArgs,
    path: &Path,
    scenario: &Scenario,
    seed: u64,
    trace_out: Option<&mut BufWriter<File>>,
) -> Result<RunReport, SimError> {
    let trace: Option<&mut dyn Write> = match trace_out {
        Some(w) => {
            let header = serde_json::json!({"run": scenario.name, "seed": seed});
            writeln!(w, "{header}")?;
            Some(w)
        }
        None => None,
    };
    let started = Instant::now();
    let mut report = run_scenario(scenario, RunOptions { seed, trace })?;
    let wall = started.elapsed();
    if args.check_determinism {
        let again = run_scenario(scenario, RunOptions { seed, trace: None })?;
        mark_nondeterminism(&mut report, &again);
    }
    if args.timing {
        let speed = report.virtual_time.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        tell(format_args!(
            "timing: scenario {} seed {seed}: {:.1}s virtual in {:.3}s wall ({speed:.0}x real time), {} events\n",
            report.name,
            report.virtual_time.as_secs_f64(),
            wall.as_secs_f64(),
            report.events
        ));
    }
    if report.violation.is_some() {
        tell(failure_report(path, scenario, &report));
    }
    if args.report {
        tell(format_args!("{}\n", measurement_line(&report)));
    }
    if report.violation.is_none() {
        for reason in vacuity(scenario, &report) {
            tell(format_args!(
                "note: scenario {} seed {seed}: vacuous: {reason}\n",
                report.name
            ));
        }
    }
    say(result_line(&report));
    Ok(report)
}

fn mark_nondeterminism(report: &mut RunReport, again: &RunReport) {
    if report.digest != again.digest && report.violation.is_none() {
        report.violation = Some(kvs_scenarios::Violation {
            property: "determinism".into(),
            evidence: format!("second run gave trace {}", again.digest),
        });
    }
}

/// Whether stdout's reader has gone.
static READER_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes a line to stdout. A reader that has gone (`kvs-sim run FILE --seeds 50 | head
/// -1`) is noted in [`READER_GONE`], and the runs stop quietly, as a command in a pipeline
/// does (`println!` panicked).
fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            READER_GONE.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => {
            tell(format_args!("kvs-sim: writing to stdout: {error}\n"));
            std::process::exit(2);
        }
    }
}

/// Writes to stderr; what nobody reads any more is dropped (`eprintln!` panicked).
fn tell(text: impl std::fmt::Display) {
    let _ = write!(std::io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seeds_are_a_count_or_an_inclusive_range() {
        assert_eq!(parse_seeds("3"), Ok(1..=3));
        assert_eq!(parse_seeds("1001..=1003"), Ok(1001..=1003));
        assert_eq!(parse_seeds("7..=7"), Ok(7..=7));
        for bad in ["0", "5..=4", "1001..2000", "x", "1..=y", "-3", ""] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
        assert!(
            parse_seeds("1001..2000")
                .unwrap_err()
                .contains("1001..=2000")
        );
    }
}
