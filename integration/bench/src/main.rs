//! polykms-bench: measures polykms over its unix socket against an echo gRPC floor on the
//! same stack, and prints a table and writes JSON (issue 10).
//!
//! `polykms-bench run --polykms target/release/polykms --json bench.json [--quick]`

mod backend;
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
    /// Round-trips/s of polykms over your own config (a key store's throughput through
    /// polykms, e.g. PKCS#11 on SoftHSM2: integration/bench/pkcs11.sh).
    Backend {
        /// The polykms binary to measure.
        #[arg(long)]
        polykms: PathBuf,
        /// polykms config; `server.socket` is overridden. Set `[decrypt] cache_size = 0`.
        #[arg(long)]
        config: PathBuf,
        /// Concurrencies to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16")]
        concurrency: Vec<usize>,
        /// Encrypt+Decrypt round-trips per timed run.
        #[arg(long, default_value_t = 2000)]
        round_trips: usize,
        /// Timed runs per concurrency (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
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
        Cmd::Backend {
            polykms,
            config,
            concurrency,
            round_trips,
            rounds,
            json,
        } => {
            anyhow::ensure!(
                rounds > 0 && round_trips > 0 && concurrency.iter().all(|c| *c > 0),
                "--rounds, --round-trips and --concurrency must be positive"
            );
            let bench = backend::BackendBench {
                polykms,
                config,
                concurrency,
                round_trips,
                rounds,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let results = runtime.block_on(backend::run(&bench))?;
            print!("{}", backend::table(&bench.config, &results));
            if let Some(path) = json {
                let text =
                    serde_json::to_string_pretty(&results).context("encoding the results")?;
                std::fs::write(&path, text + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
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
