//! `esi-bench`: measures the federation, esi-cli and the webhook against baselines run in the
//! same process and the same minute, because the machines it runs on are shared and absolute
//! times drift. Every figure is a ratio (or a difference) against its baseline; throughput
//! runs pin the server and the load generator to different cores, use keep-alive HTTP/1.1
//! connections, warm up first and report medians over interleaved rounds.
//!
//! ```text
//! cargo run --release -p esi-bench -- [--quick] [--markdown FILE] [--only 1,2,5]
//! esi-bench --profile-loop 1|2|4|4-base|9 [--iterations N] # one figure's in-process work, for a profiler
//! esi-bench --write-config DIR                   # figure 5's configuration, to profile a load
//! ```
//!
//! The servers under test are the real binaries (`esi-federation serve`, `esi-webhook`),
//! built by the bench with its own profile and started as subprocesses on the server core.

/// The federation and the webhook ship with mimalloc; figure 1 calls the federation's verify
/// function in this process, so it runs on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bins;
mod cli;
mod federation;
mod figures;
mod load;
mod logs;
mod pin;
mod report;
mod served;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;

use report::{Row, Verdict};

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "esi-bench",
    version,
    about = "The esi benchmark (see BENCHMARKS.md)"
)]
struct Args {
    /// Short rounds for a run under a minute (noisier; the full run is what BENCHMARKS.md holds).
    #[arg(long)]
    quick: bool,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Only these figures (comma-separated numbers, e.g. `1,2,9`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// Where the binaries under test are (default: beside this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Do not run `cargo build` for the binaries under test first.
    #[arg(long)]
    no_build: bool,
    /// Core of the servers under test.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core of the load generator.
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// Keep-alive connections of the closed-loop (throughput) runs.
    #[arg(long)]
    connections: Option<usize>,
    /// Instead of the figures: run figure 1's (`1`), 2's (`2`), 4's (`4`, and `4-base`: figure
    /// 2's configuration with its keys fetched as figure 4's are) or 9's (`9`) in-process work
    /// `--iterations` times on this thread and print µs per iteration, for a profiler (see the
    /// profiling recipe in BENCHMARKS.md). Builds nothing, pins nothing.
    #[arg(long, value_parser = ["1", "2", "4", "4-base", "9"])]
    profile_loop: Option<String>,
    /// Write each closed-loop round's workload and measured window (wall-clock seconds, the
    /// clock of `perf record -k realtime`) to this file, to cut a server's profile by workload
    /// (see the profiling recipe in BENCHMARKS.md).
    #[arg(long)]
    round_log: Option<PathBuf>,
    /// Instead of the figures: write figure 5's configuration (figure 2's, for an issuer at
    /// `http://127.0.0.1:9`) into this folder as `yaml/` (the files figure 5 starts on) and
    /// `json/config.json` (figure 5j's), for profiling a configuration load with
    /// `esi-federation check` (see the profiling recipe in BENCHMARKS.md).
    #[arg(long, conflicts_with = "profile_loop")]
    write_config: Option<PathBuf>,
    /// Iterations of `--profile-loop`.
    #[arg(long, default_value_t = 3000, requires = "profile_loop")]
    iterations: usize,
}

/// Durations and counts of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Quick mode.
    pub quick: bool,
    /// Rounds per throughput figure.
    pub rounds: usize,
    /// Measured length of one round.
    pub round: Duration,
    /// Warm-up before each round.
    pub warmup: Duration,
    /// Length of an open-loop latency run.
    pub latency: Duration,
    /// Closed-loop connections.
    pub conns: usize,
    /// Connections available to open-loop runs.
    pub open_conns: usize,
    /// Cold starts per binary.
    pub cold_runs: usize,
    /// esi-cli runs per figure.
    pub cli_runs: usize,
    /// Server core.
    pub server_core: usize,
    /// Load generator core.
    pub client_core: usize,
}

impl Plan {
    fn new(args: &Args) -> Self {
        let base = if args.quick {
            Plan {
                quick: true,
                rounds: 3,
                round: Duration::from_millis(800),
                warmup: Duration::from_millis(200),
                latency: Duration::from_secs(2),
                conns: 8,
                open_conns: 32,
                cold_runs: 7,
                cli_runs: 11,
                server_core: 0,
                client_core: 1,
            }
        } else {
            Plan {
                quick: false,
                rounds: 7,
                round: Duration::from_secs(3),
                warmup: Duration::from_millis(500),
                latency: Duration::from_secs(10),
                conns: 8,
                open_conns: 32,
                cold_runs: 31,
                cli_runs: 51,
                server_core: 0,
                client_core: 1,
            }
        };
        Plan {
            server_core: args.server_core,
            client_core: args.client_core,
            conns: args.connections.unwrap_or(base.conns).max(1),
            ..base
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("esi-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the figures; `Ok(false)` when a figure could not be measured because of an error.
fn run(args: Args) -> anyhow::Result<bool> {
    if let Some(fig) = args.profile_loop.as_deref() {
        let us = match fig {
            "1" => figures::profile_loop_verify(args.iterations)?,
            "2" => figures::profile_loop(args.iterations)?,
            "4" => figures::profile_loop_clusters(true, args.iterations)?,
            "4-base" => figures::profile_loop_clusters(false, args.iterations)?,
            _ => webhook::profile_loop(args.iterations)?,
        };
        println!(
            "figure {fig} in-process: {us:.2} µs per iteration, {} iterations",
            args.iterations
        );
        return Ok(true);
    }
    if let Some(dir) = &args.write_config {
        let config = federation::small_config("http://127.0.0.1:9", figures::FIG2_RULES);
        federation::write_config_dir(&dir.join("yaml"), &config)?;
        federation::write_config_json(&dir.join("json"), &config)?;
        println!("wrote {}/yaml and {}/json", dir.display(), dir.display());
        return Ok(true);
    }
    let plan = Plan::new(&args);
    if let Some(path) = &args.round_log {
        load::log_rounds_to(path)?;
    }
    if pin::cores() < 2 || plan.server_core == plan.client_core {
        bail!("the bench needs two distinct cores for the server and the load generator");
    }
    let bins = bins::Bins::prepare(args.bin_dir.clone(), !args.no_build)?;
    let started = Instant::now();
    let machine_before = machine();
    pin::pin_current(plan.client_core)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (rows, clean) = rt.block_on(figures(&plan, &bins, &args.only));
    let elapsed = started.elapsed();
    let table = report::text(&rows);
    println!("\n{table}");
    let load_after = loadavg();
    println!(
        "{} run, profile {}, {:.0} s; {machine_before}; load average after: {load_after}",
        if plan.quick { "quick" } else { "full" },
        bins.profile,
        elapsed.as_secs_f64()
    );
    if let Some(path) = &args.markdown {
        let md = format!(
            "Command: `cargo run --release -p esi-bench --{}` ({} run, profile `{}`, {:.0} s)\n\n\
             Machine: {machine_before}; load average after: {load_after}\n\n{}",
            if plan.quick { " --quick" } else { "" },
            if plan.quick { "quick" } else { "full" },
            bins.profile,
            elapsed.as_secs_f64(),
            report::markdown(&rows)
        );
        std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(clean)
}

fn wanted(only: &[u32], fig: u32) -> bool {
    only.is_empty() || only.contains(&fig)
}

/// Runs every wanted figure; a figure that errors becomes a "not measured" row with the error.
async fn figures(plan: &Plan, bins: &bins::Bins, only: &[u32]) -> (Vec<Row>, bool) {
    let mut rows = Vec::new();
    let mut clean = true;
    let mut fail = |rows: &mut Vec<Row>, fig: &str, what: &str, e: anyhow::Error| {
        eprintln!("esi-bench: figure {fig}: {e:#}");
        clean = false;
        rows.push(Row::not_measured(fig, what, "", format!("error: {e:#}")));
    };
    let issuer = match federation::single_issuer().await {
        Ok(i) => Some(i),
        Err(e) => {
            fail(&mut rows, "1-8", "local issuer", e);
            None
        }
    };
    if let Some(issuer) = &issuer {
        if wanted(only, 1) {
            eprintln!("esi-bench: figure 1");
            if let Err(e) = figures::fig1(plan, issuer, &mut rows).await {
                fail(&mut rows, "1", "token::verify", e);
            }
        }
        let needs_fig2 = [2, 3, 4, 5, 6, 7, 8].iter().any(|f| wanted(only, *f));
        if needs_fig2 {
            eprintln!("esi-bench: figures 2 and 4");
            match figures::fig2_and_4(plan, bins, issuer, &mut rows).await {
                Ok(f2) => {
                    if wanted(only, 3) {
                        eprintln!("esi-bench: figure 3");
                        if let Err(e) = figures::fig3(plan, &f2, &mut rows).await {
                            fail(&mut rows, "3", "p99 latency", e);
                        }
                    }
                    if wanted(only, 6) {
                        eprintln!("esi-bench: figure 6");
                        if let Err(e) = figures::fig6(plan, issuer, &f2, &mut rows).await {
                            fail(&mut rows, "6", "kid flood", e);
                        }
                    }
                    if wanted(only, 5) {
                        eprintln!("esi-bench: figure 5");
                        if let Err(e) = figures::fig5(plan, bins, issuer, &f2, &mut rows).await {
                            fail(&mut rows, "5", "cold start", e);
                        }
                    }
                    if wanted(only, 7) || wanted(only, 8) {
                        eprintln!("esi-bench: figures 7 and 8");
                        if let Err(e) = cli::fig7_8(plan, bins, &f2, &mut rows).await {
                            fail(&mut rows, "7/8", "esi-cli", e);
                        }
                    }
                }
                Err(e) => fail(&mut rows, "2-8", "federation end to end", e),
            }
        }
    }
    if wanted(only, 9) {
        eprintln!("esi-bench: figure 9");
        if let Err(e) = webhook::fig9(plan, bins, &mut rows).await {
            fail(&mut rows, "9", "webhook admission", e);
        }
    }
    if wanted(only, 10) {
        sizes(bins, &mut rows);
    }
    (rows, clean)
}

/// Figure 10: stripped sizes of the release binaries.
fn sizes(bins: &bins::Bins, rows: &mut Vec<Row>) {
    let dir = bins.release_dir();
    for (fig, name, limit_mb) in [("10a", "esi-cli", 10u64), ("10b", "esi-federation", 40)] {
        let what = format!("{name} stripped release binary");
        let goal = format!("<= {limit_mb} MB");
        let path = dir.join(name);
        if !path.exists() {
            rows.push(Row::not_measured(
                fig,
                &what,
                &goal,
                format!(
                    "{} not built (cargo build --release -p {name})",
                    path.display()
                ),
            ));
            continue;
        }
        match figures::stripped_size(&path) {
            Ok(size) => rows.push(Row::new(
                fig,
                &what,
                format!("{:.1} MB", size as f64 / 1_048_576.0),
                &goal,
                Verdict::of(size <= limit_mb << 20),
                format!(
                    "{size} bytes after `strip` of {} (profile release: fat LTO, one codegen unit, symbols stripped)",
                    path.display()
                ),
            )),
            Err(e) => rows.push(Row::not_measured(fig, &what, &goal, format!("{e:#}"))),
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// CPU model, cores, kernel and load, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {} cores, Linux {kernel}; load average before: {}",
        pin::cores(),
        loadavg()
    )
}
