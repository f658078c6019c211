//! `polykms reencrypt`: flags and exit codes around `polykms_ops::reencrypt`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args as ClapArgs, ValueEnum};
use polykms_ops::reencrypt::{self, OutputFormat, ProgressMode, ReencryptError, StopFlag};

use crate::cli::{EXIT_CONFIG, EXIT_DENIED, EXIT_INTERRUPTED, Failure};

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current-context).
    #[arg(long)]
    context: Option<String>,
    /// Resources to rewrite, comma-separated: plural names, `plural.group` outside the core group.
    #[arg(long, value_delimiter = ',', default_value = "secrets")]
    resources: Vec<String>,
    /// Only this namespace (default: all namespaces).
    #[arg(long)]
    namespace: Option<String>,
    /// Objects rewritten at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Client-side limit on requests per second (0: none).
    #[arg(long, default_value_t = 20.0)]
    qps: f64,
    /// Objects per list page; memory stays bounded by it.
    #[arg(long, default_value_t = 500)]
    page_size: u32,
    /// Records progress (atomically, often); a later run with the same flags continues from it.
    /// Removed when a run finishes.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// List and count; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Summary format: text or json.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Write every object even when the apiserver finds nothing stale (KMS v1, or a migration
    /// between providers the apiserver does not flag): adds the annotation
    /// reencrypt.polykms.io/nonce and removes it again.
    #[arg(long)]
    force_rewrite: bool,
    /// Have the apiserver rewrite the objects (StorageVersionMigration, storagemigration.k8s.io);
    /// exits 64 when the API server does not offer it.
    #[arg(long)]
    use_storage_version_migration: bool,
}

/// Runs the command; `Err` carries the exit code.
pub fn run(args: Args) -> Result<(), Failure> {
    let options = reencrypt::Options {
        kubeconfig: args.kubeconfig,
        context: args.context,
        resources: args.resources,
        namespace: args.namespace,
        concurrency: args.concurrency,
        qps: args.qps,
        page_size: args.page_size,
        state_file: args.state_file,
        dry_run: args.dry_run,
        force_rewrite: args.force_rewrite,
        use_storage_version_migration: args.use_storage_version_migration,
        output: match args.output {
            Output::Text => OutputFormat::Text,
            Output::Json => OutputFormat::Json,
        },
        progress: ProgressMode::detect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let stop = StopFlag::default();
        stop.on_signals()
            .context("installing the signal handlers")?;
        reencrypt::run(&options, &stop).await.map_err(failure)
    })?;
    print!("{}", summary.render(options.output));
    if summary.interrupted {
        return Err(Failure::Exit {
            code: EXIT_INTERRUPTED,
            message: "reencrypt: stopped by a signal after the objects in flight".into(),
        });
    }
    if !summary.passed() {
        return Err(Failure::Other(anyhow::anyhow!(
            "reencrypt: {} object(s) failed",
            summary.total.failed
        )));
    }
    Ok(())
}

fn failure(e: ReencryptError) -> Failure {
    match e {
        ReencryptError::Config(m) => Failure::Config(m),
        ReencryptError::NoStorageVersionMigration => Failure::Exit {
            code: EXIT_CONFIG,
            message: e.to_string(),
        },
        ReencryptError::Unavailable(m) => Failure::Unavailable(m),
        ReencryptError::Denied { message, .. } => Failure::Exit {
            code: EXIT_DENIED,
            message,
        },
        ReencryptError::Io(m) | ReencryptError::Verify(m) => Failure::Other(anyhow::anyhow!(m)),
    }
}
