//! polykms: a Kubernetes KMS v2 plugin for every key store.

mod audit;
mod backends;
mod check;
mod cli;
mod config;
mod hardening;
mod logging;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::run(cli)
}
