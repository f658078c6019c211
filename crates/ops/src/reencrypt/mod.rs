//! `polykms reencrypt`: rewrite every object of the chosen resources through the Kubernetes API
//! so that the apiserver stores it under the KMS plugin's current key, resumably, with progress;
//! or have the apiserver do it (StorageVersionMigration). See docs/rotation.md.

mod api;
mod cluster;
mod progress;
mod resources;
mod rewrite;
mod run;
mod state;
mod storage_path;
mod summary;
mod svm;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use progress::ProgressMode;
pub use rewrite::NONCE_ANNOTATION;
pub use state::Counts;
pub use storage_path::{etcd_prefix, resource_path};
pub use summary::{FailedObject, ResourceSummary, Summary};

/// How the summary is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON document.
    Json,
}

/// Everything `polykms reencrypt` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--kubeconfig` (else KUBECONFIG, ~/.kube/config, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// `--resources`: plural names, `name.group` outside the core group.
    pub resources: Vec<String>,
    /// `--namespace` (None = all namespaces).
    pub namespace: Option<String>,
    /// `--concurrency`: objects in flight.
    pub concurrency: usize,
    /// `--qps`: requests per second over all workers (0 = unlimited).
    pub qps: f64,
    /// `--page-size`: objects per list page; bounds memory.
    pub page_size: u32,
    /// `--state-file`.
    pub state_file: Option<PathBuf>,
    /// `--dry-run`: list and count only.
    pub dry_run: bool,
    /// `--force-rewrite`: write objects even when the apiserver sees nothing stale (KMS v1).
    pub force_rewrite: bool,
    /// `--use-storage-version-migration`.
    pub use_storage_version_migration: bool,
    /// `--timeout`: how long one StorageVersionMigration may take to finish.
    pub timeout: Duration,
    /// `--expect-key-id`, recorded in the state file: a file of another rotation is refused.
    pub expect_key_id: Option<String>,
    /// `--discard-state`: start over even if the state file belongs to another run.
    pub discard_state: bool,
    /// `--output`.
    pub output: OutputFormat,
    /// Bars or JSON lines.
    pub progress: ProgressMode,
}

/// What ends a run early, sorted by the exit code the binary gives it.
#[derive(Debug, thiserror::Error)]
pub enum ReencryptError {
    /// Bad flags, state file or kubeconfig (exit 64).
    #[error("{0}")]
    Config(String),
    /// The API server cannot be reached or keeps failing (exit 69).
    #[error("{0}")]
    Unavailable(String),
    /// RBAC or credentials refuse a verb (exit 77).
    #[error("{message}")]
    Denied {
        /// The resource, e.g. `secrets`.
        resource: String,
        /// The verb RBAC must allow.
        verb: String,
        /// The whole message.
        message: String,
    },
    /// The server has no storagemigration.k8s.io API (exit 64).
    #[error(
        "the API server offers no storagemigration.k8s.io API (StorageVersionMigration); run \
         without --use-storage-version-migration to rewrite from the client"
    )]
    NoStorageVersionMigration,
    /// The state file cannot be written (exit 1).
    #[error("{0}")]
    Io(String),
}

/// A stop request (SIGINT/SIGTERM): workers finish the objects in flight and take no more.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Asks the run to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sets the flag on SIGINT or SIGTERM (from a task on the current runtime); a second one
    /// exits at once with 130. Nothing is lost either way: the state file only ever records
    /// objects that are done, so a later run redoes at most what was in flight.
    pub fn on_signals(&self, mode: ProgressMode) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let flag = self.clone();
        tokio::spawn(async move {
            for round in 0..2 {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                if round == 0 {
                    flag.stop();
                    let note = "stopping after the objects in flight (again to quit at once)";
                    match mode {
                        ProgressMode::Bars => eprintln!("reencrypt: {note}"),
                        ProgressMode::JsonLines => eprintln!(
                            "{}",
                            serde_json::json!({ "event": "note", "message": note })
                        ),
                    }
                }
            }
            std::process::exit(130);
        });
        Ok(())
    }
}

pub use run::run;
