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
    /// class, KMS provider and key_id. Exits 0 when every value is KMS v2 (and meets
    /// --expect-*), 1 on findings or when --prefix holds no key, 64 on bad flags, 69 when etcd
    /// cannot be read.
    Audit {
        /// etcd client URLs, comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// CA certificate (PEM) that signs etcd's server certificate.
        #[arg(long)]
        cacert: Option<PathBuf>,
        /// Client certificate (PEM) for etcd.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Client private key (PEM) for etcd.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Key prefix to scan.
        #[arg(long, default_value = "/registry/secrets/")]
        prefix: String,
        /// Fail values under another KMS provider name (EncryptionConfiguration `name`).
        #[arg(long)]
        expect_provider: Option<String>,
        /// Fail values under another key_id (the plugin's current Status key_id).
        #[arg(long)]
        expect_key_id: Option<String>,
        /// Accept KMS v1 values that meet --expect-* (their key_id read from the polykms
        /// envelope of their DEK); without it every KMS v1 value is a finding.
        #[arg(long)]
        allow_kms_v1: bool,
        /// Report format: table or json.
        #[arg(long, default_value = "table")]
        output: String,
    },
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
    /// Print the version and the git revision it was built from.
    Version,
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
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
        Command::Audit {
            etcd_endpoints,
            cacert,
            cert,
            key,
            prefix,
            expect_provider,
            expect_key_id,
            allow_kms_v1,
            output,
        } => polykms_ops::audit::run(polykms_ops::audit::Options {
            etcd: polykms_ops::audit::EtcdConnection {
                endpoints: etcd_endpoints,
                cacert,
                cert,
                key,
            },
            prefix,
            expect: polykms_ops::audit::Expectations {
                provider: expect_provider,
                key_id: expect_key_id,
                allow_kms_v1,
            },
            output,
        })
        .map_err(|e| match e {
            polykms_ops::audit::AuditError::Config(m) => Failure::Config(m),
            polykms_ops::audit::AuditError::Unavailable(m) => Failure::Unavailable(m),
            polykms_ops::audit::AuditError::Findings(m) => Failure::Exit {
                code: crate::exit::FINDINGS,
                message: m,
            },
        }),
        Command::Reencrypt(args) => crate::reencrypt::run(*args),
        #[cfg(feature = "escrow")]
        Command::Escrow { command } => crate::escrow::run(command),
        Command::Version => {
            println!(
                "polykms {} (git revision {})",
                env!("CARGO_PKG_VERSION"),
                env!("POLYKMS_GIT_REVISION")
            );
            Ok(())
        }
    };
    let code = crate::exit::finish(result);
    crate::logging::flush();
    code
}
