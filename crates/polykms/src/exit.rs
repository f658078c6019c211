//! Exit codes operators script against, and the one error type that carries them out of a
//! command. Every subcommand returns [`Failure`]; `main` turns it into the process's exit code
//! and prints it once. The table in the README ("Commands") is this file.

use std::process::ExitCode;

use crate::config::ConfigError;

/// A bad configuration file, environment override or command line (sysexits EX_USAGE).
pub const CONFIG: u8 = 64;
/// A key store, API server or etcd that cannot be reached or used (sysexits EX_UNAVAILABLE).
pub const UNAVAILABLE: u8 = 69;
/// The cryptographic module failed its start-up check: a FIPS build whose module is not in
/// FIPS mode or whose self tests fail (sysexits EX_SOFTWARE).
pub const CRYPTO_MODULE: u8 = 70;
/// The socket or HTTP listener cannot be bound, or another local OS resource fails
/// (sysexits EX_OSERR).
pub const OS: u8 = 71;
/// An output file cannot be created: it exists (never overwritten) or its directory refuses
/// (sysexits EX_CANTCREAT).
pub const CANT_CREATE: u8 = 73;
/// RBAC or credentials refuse what a command needs (sysexits EX_NOPERM).
pub const DENIED: u8 = 77;
/// A run stopped by SIGINT/SIGTERM that can be continued (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;
/// Findings: the command ran and what it checked is not as required.
pub const FINDINGS: u8 = 1;

/// Errors that end the process, sorted by exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("configuration error: {0}")]
    Config(String),
    #[error("{0}")]
    Unavailable(String),
    /// A local OS resource failed (socket or port bind, runtime start).
    #[error("{0:#}")]
    Os(anyhow::Error),
    /// A failure with its own exit code.
    #[error("{message}")]
    Exit { code: u8, message: String },
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Failure {
    /// Wraps a local OS error with what was being done (exit code [`OS`]).
    pub fn os<E: std::fmt::Display>(doing: &'static str) -> impl FnOnce(E) -> Failure {
        move |e| Failure::Os(anyhow::anyhow!("{doing}: {e}"))
    }

    /// The process exit code for this failure.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Config(_) => CONFIG,
            Failure::Unavailable(_) => UNAVAILABLE,
            Failure::Os(_) => OS,
            Failure::Exit { code, .. } => *code,
            Failure::Other(_) => FINDINGS,
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e.0)
    }
}

/// Prints `result`'s error once (on stderr, or as the JSON log's last line when logging is
/// JSON) and returns the exit code.
pub fn finish(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::logging::report_fatal(&e.to_string());
            ExitCode::from(e.code())
        }
    }
}
