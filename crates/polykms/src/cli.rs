//! Command line: parsing and dispatch, and the exit codes operators script against.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;
use crate::exit::Failure;

#[derive(Debug, Parser)]
#[command(
    name = "polykms",
    version,
    about = "Kubernetes KMS v2 plugin for every key store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the KMS API on the unix socket. Exits 0 on a clean stop, 64 on a bad config, 71
    /// when the socket or the HTTP port cannot be bound. A key store that fails at start does
    /// not stop it: it serves unready (Status unhealthy, /readyz 503) until the store answers.
    Serve {
        /// Configuration file (.toml, .yaml or .yml).
        #[arg(long, short, env = "POLYKMS_CONFIG")]
        config: PathBuf,
        /// Override `server.socket`.
        #[arg(long)]
        socket: Option<String>,
        /// Override `log.format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Load the configuration, round-trip a random seed through every backend, print key
    /// versions and the key_id. Exits 0 when all work, 64 on a bad config, 69 otherwise.
    Check {
        #[arg(long, short, env = "POLYKMS_CONFIG")]
        config: PathBuf,
        /// Also exit 1 when a key store reports a key going away (scheduled for deletion,
        /// expiring, deletable without recovery…), not only when a backend fails.
        #[arg(long)]
        strict: bool,
    },
    /// Write a fresh 32-byte key for the local backend (mode 0600; never overwrites). Exits 0
    /// when written, 73 when the file exists or cannot be created.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Prove encryption at rest: scan etcd (read-only, paged) and count values by storage
    /// class, KMS provider and key_id, and DEK envelopes by backend and key version. With
    /// --config F --unwrap, prove that F decrypts every stored object (before retiring a key or
    /// a backend). Exits 0 when every value is KMS v2 (and meets --expect-*) and, with
    /// --unwrap, every object would stay readable; 1 on findings, unreadable objects, or a
    /// --prefix or resource that holds no key; 64 on bad flags or config (--unwrap without
    /// --config); 69 when etcd cannot be read.
    Audit(Box<crate::audit::Args>),
    /// Rewrite every object of the chosen resources through the Kubernetes API so that the
    /// apiserver stores it under the KMS plugin's current key: paged, resumable, with progress.
    /// Exits 0 when nothing failed, 1 on failed objects (or --verify-etcd-endpoints findings),
    /// 64 on bad flags (or no StorageVersionMigration API), 69 when the API server cannot be
    /// reached, 77 when RBAC refuses a verb, 130 when stopped by a signal (run again to go on).
    Reencrypt(Box<crate::reencrypt::Args>),
    /// Keys for `type = "escrow"` backends: a wrap under an offline post-quantum public key.
    #[cfg(feature = "escrow")]
    Escrow {
        #[command(subcommand)]
        command: crate::escrow::EscrowCommand,
    },
    /// Print the version, the git revision it was built from and the cryptographic module
    /// (AWS-LC, or the AWS-LC FIPS module of a `--features fips` build, and its mode).
    Version,
}

pub fn run(cli: Cli) -> ExitCode {
    let result = crate::fips::start_up_check().and_then(|()| command(cli));
    let code = crate::exit::finish(result);
    crate::logging::flush();
    code
}

fn command(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve {
            config,
            socket,
            log_format,
        } => crate::serve::run(&config, socket, log_format),
        Command::Check { config, strict } => crate::check::run(&config, strict),
        Command::Keygen { out } => polykms_local::generate_key_file(&out)
            .map(|()| println!("wrote a new 32-byte key to {} (mode 0600)", out.display()))
            .map_err(|e| Failure::Exit {
                code: crate::exit::CANT_CREATE,
                message: e.message().to_string(),
            }),
        Command::Audit(args) => crate::audit::run(*args),
        Command::Reencrypt(args) => crate::reencrypt::run(*args),
        #[cfg(feature = "escrow")]
        Command::Escrow { command } => crate::escrow::run(command),
        Command::Version => {
            println!(
                "polykms {} (git revision {})",
                env!("CARGO_PKG_VERSION"),
                env!("POLYKMS_GIT_REVISION")
            );
            println!("{}", crate::fips::module_line());
            Ok(())
        }
    }
}
