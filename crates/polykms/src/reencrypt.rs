//! `polykms reencrypt`: flags and exit codes around `polykms_ops::reencrypt`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args as ClapArgs, ValueEnum};
use polykms_ops::audit::EtcdConnection;
use polykms_ops::reencrypt::verify::{VerifyOptions, VerifyPlan};
use polykms_ops::reencrypt::{self, OutputFormat, ProgressMode, ReencryptError, StopFlag};

use crate::exit::{self, Failure};

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
    /// How long each StorageVersionMigration may take to finish (e.g. 30m); exits 69 after it
    /// (a served API with no migration controller never finishes).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h",
          requires = "use_storage_version_migration")]
    timeout: std::time::Duration,
    /// Start over when --state-file belongs to another run (another cluster, key_id, namespace
    /// or resources) instead of refusing it.
    #[arg(long, requires = "state_file")]
    discard_state: bool,
    #[command(flatten)]
    verify: VerifyArgs,
}

/// The check after the run: `polykms audit`'s classification over the resources' etcd keys.
#[derive(Debug, ClapArgs)]
struct VerifyArgs {
    /// At the end, read the resources' keys in etcd (read-only, as `polykms audit`) and fail if
    /// any value is not KMS v2 under --expect-key-id. etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    verify_etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) that signs etcd's server certificate.
    #[arg(long, requires = "verify_etcd_endpoints")]
    etcd_cacert: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, requires = "verify_etcd_endpoints")]
    etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for etcd.
    #[arg(long, requires = "verify_etcd_endpoints")]
    etcd_key: Option<PathBuf>,
    /// The apiserver's --etcd-prefix: resources live under <prefix>/<resource>/.
    #[arg(long, default_value = "/registry", requires = "verify_etcd_endpoints")]
    etcd_prefix: String,
    /// The key_id every value must be under (the plugin's current Status key_id). Recorded in
    /// --state-file: a file of another rotation is refused.
    #[arg(long, requires = "verify_etcd_endpoints")]
    expect_key_id: Option<String>,
    /// Accept KMS v1 values whose polykms envelope is under --expect-key-id (clusters whose
    /// EncryptionConfiguration still uses a KMS v1 provider).
    #[arg(long, requires = "verify_etcd_endpoints")]
    allow_kms_v1: bool,
}

/// Runs the command; `Err` carries the exit code.
pub fn run(args: Args) -> Result<(), Failure> {
    let verify = verify_plan(&args)?;
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
        timeout: args.timeout,
        expect_key_id: args.verify.expect_key_id.clone(),
        discard_state: args.discard_state,
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
    let (summary, verified) = runtime.block_on(async {
        let stop = StopFlag::default();
        stop.on_signals(options.progress)
            .context("installing the signal handlers")?;
        let summary = reencrypt::run(&options, &stop).await.map_err(failure)?;
        let verified = match &verify {
            Some(plan) if !summary.interrupted => Some(plan.run(&summary).await.map_err(failure)?),
            _ => None,
        };
        Ok::<_, Failure>((summary, verified))
    })?;
    match options.output {
        OutputFormat::Text => {
            print!("{}", summary.to_text());
            if let Some(v) = &verified {
                print!("{}", v.to_text());
            }
        }
        OutputFormat::Json => {
            let mut out = summary.to_json();
            if let Some(v) = &verified {
                out["verify"] = v.to_json();
            }
            println!("{out}");
        }
    }
    if summary.interrupted {
        return Err(Failure::Exit {
            code: exit::INTERRUPTED,
            message: "reencrypt: stopped by a signal after the objects in flight".into(),
        });
    }
    if !summary.passed() {
        return Err(Failure::Other(anyhow::anyhow!(
            "reencrypt: {} object(s) not rewritten{}",
            summary.failures.len().max(summary.total.failed as usize),
            match &summary.state_file {
                Some(p) => format!(" (kept in {p}: run again to retry them first)"),
                None => String::new(),
            }
        )));
    }
    if let Some(why) = verified.as_ref().and_then(|v| v.failure()) {
        return Err(Failure::Other(anyhow::anyhow!("reencrypt: {why}")));
    }
    Ok(())
}

fn verify_plan(args: &Args) -> Result<Option<VerifyPlan>, Failure> {
    let v = &args.verify;
    if v.verify_etcd_endpoints.is_empty() {
        return Ok(None);
    }
    let options = VerifyOptions {
        etcd: EtcdConnection {
            endpoints: v.verify_etcd_endpoints.clone(),
            cacert: v.etcd_cacert.clone(),
            cert: v.etcd_cert.clone(),
            key: v.etcd_key.clone(),
        },
        etcd_prefix: v.etcd_prefix.clone(),
        expect_key_id: v.expect_key_id.clone().unwrap_or_default(),
        allow_kms_v1: v.allow_kms_v1,
    };
    VerifyPlan::new(&options, &args.resources, args.namespace.as_deref())
        .map(Some)
        .map_err(failure)
}

fn failure(e: ReencryptError) -> Failure {
    match e {
        ReencryptError::Config(m) => Failure::Config(m),
        ReencryptError::NoStorageVersionMigration => Failure::Exit {
            code: exit::CONFIG,
            message: e.to_string(),
        },
        ReencryptError::Unavailable(m) => Failure::Unavailable(m),
        ReencryptError::Denied { message, .. } => Failure::Exit {
            code: exit::DENIED,
            message,
        },
        ReencryptError::Io(m) => Failure::Other(anyhow::anyhow!(m)),
    }
}
