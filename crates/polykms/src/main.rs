//! polykms: a Kubernetes KMS v2 plugin for every key store.

mod audit;
mod backends;
mod check;
mod cli;
mod config;
#[cfg(feature = "escrow")]
mod escrow;
mod exit;
mod fips;
mod hardening;
mod logging;
mod reencrypt;
mod reload;
mod sandbox;
mod serve;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match cli::Cli::try_parse() {
        Ok(cli) => cli::run(cli),
        // --help and --version are not errors; every other parse error is a usage error (64).
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = e.print();
            ExitCode::from(exit::CONFIG)
        }
    }
}
