//! polykms-bench: measures polykms over its unix socket against an echo gRPC floor on the
//! same stack, and prints a table and writes JSON (issue 10).
//!
//! `polykms-bench run --polykms target/release/polykms --json bench.json [--quick]`

mod configs;
mod echo;
mod load;
mod process;
mod report;
mod stats;
mod suite;
mod table;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "polykms-bench",
    about = "Benchmarks polykms against an echo gRPC floor"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the benchmarks and print the table.
    Run {
        /// The polykms binary to measure (a release build with all features for real numbers).
        #[arg(long)]
        polykms: PathBuf,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// A few seconds with small counts: checks the bench works, numbers mean nothing.
        #[arg(long)]
        quick: bool,
        /// Interleaved floor/plugin rounds per concurrency (default 5, 2 with --quick).
        #[arg(long)]
        rounds: Option<usize>,
        /// `log.level` of the plugins under test; polykms logs each request at info.
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Serve the echo KMS (the floor) on a unix socket; started by `run`.
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        socket: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::EchoServer { socket } => echo::serve_blocking(&socket),
        Cmd::Run {
            polykms,
            json,
            quick,
            rounds,
            log_level,
        } => {
            let bench = std::env::current_exe().context("locating the bench binary")?;
            let polykms = std::path::absolute(&polykms)
                .with_context(|| format!("resolving {}", polykms.display()))?;
            let mut settings = suite::Settings::new(polykms, bench, quick);
            settings.log_level = log_level;
            if let Some(r) = rounds {
                anyhow::ensure!(r > 0, "--rounds must be positive");
                settings.rounds = r;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let report = runtime.block_on(suite::run(&settings))?;
            print!("{}", table::table(&report));
            if let Some(path) = json {
                let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("\nJSON written to {}", path.display());
            }
            Ok(())
        }
    }
}
