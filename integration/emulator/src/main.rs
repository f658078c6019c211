//! apiserver-emulator: does what kube-apiserver does with a KMS v2 plugin, against a real
//! etcd, so that `polykms audit` and the rotation drills have realistic data. A test tool:
//! not shipped. Each command prints one JSON summary line on stdout.

mod envelope;
mod kms;
mod kubeapi;
mod objects;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "apiserver-emulator",
    about = "kube-apiserver's KMS v2 envelope, for tests"
)]
struct Cli {
    /// The KMS plugin's unix socket.
    #[arg(long, global = true, default_value = "/var/run/kmsplugin/socket.sock")]
    socket: PathBuf,
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoints: Vec<String>,
    /// The KMS provider `name` of the EncryptionConfiguration (goes into the value prefix).
    #[arg(long, global = true, default_value = "polykms")]
    provider: String,
    /// Resource prefix in etcd.
    #[arg(long, global = true, default_value = "/registry/secrets/")]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create N Secrets encrypted through the plugin (one Encrypt for all of them).
    Write {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "secret-")]
        name_prefix: String,
        /// Store them as a KMS v1 provider does: one Encrypt (a new DEK) per object,
        /// `k8s:enc:kms:v1:` values.
        #[arg(long)]
        kms_v1: bool,
    },
    /// Create N Secrets stored unencrypted (the identity provider).
    WritePlaintext {
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value = "plain-")]
        name_prefix: String,
    },
    /// Read every object and write it back under the current key_id (`kubectl replace`).
    Rewrite {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Read every object through Decrypt and check it is the object stored under that key.
    ReadAll {
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Print the plugin's Status key_id.
    Status,
    /// Serve a fake Kubernetes API (secrets, configmaps, StorageVersionMigration) whose objects
    /// live in etcd under `--etcd-root` as kube-apiserver stores them with the plugin.
    ServeApi {
        /// Address to listen on (port 0: any free port; the URL is printed as JSON).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// The apiserver's --etcd-prefix: objects live at <root>/<resource>/<ns>/<name>.
        #[arg(long, default_value = "/registry")]
        etcd_root: String,
        /// Bearer token clients must send.
        #[arg(long, default_value = "reencrypt-test-token")]
        token: String,
        /// Write a kubeconfig for this server here.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Offer storagemigration.k8s.io/v1alpha1.
        #[arg(long)]
        storage_version_migration: bool,
        /// Answer every Nth request 429 with Retry-After: 1.
        #[arg(long, default_value_t = 0)]
        throttle_every: u64,
        /// Every Nth update finds the object written by someone else since the GET (409).
        #[arg(long, default_value_t = 0)]
        conflict_every: u64,
        /// Every Nth get finds the object deleted since the list (404).
        #[arg(long, default_value_t = 0)]
        delete_every: u64,
        /// Refuse this verb (list, get, update) with 403 ...
        #[arg(long)]
        forbid: Option<String>,
        /// ... after this many requests with it succeeded.
        #[arg(long, default_value_t = 0)]
        forbid_after: u64,
        /// Every Nth continued list finds etcd compacted past its token (410 Expired).
        #[arg(long, default_value_t = 0)]
        expire_continue_every: u64,
        /// GETs of these objects (namespace/name, comma-separated) answer 503 every time.
        #[arg(long, value_delimiter = ',')]
        fail_objects: Vec<String>,
        /// The first N StorageVersionMigration creates answer 429.
        #[arg(long, default_value_t = 0)]
        throttle_migration_creates: u64,
        /// StorageVersionMigrations stay Running (no migration controller).
        #[arg(long)]
        svm_never_completes: bool,
        /// Store objects as a KMS v1 provider does: a DEK per write, `k8s:enc:kms:v1:` values,
        /// and no staleness signal (an unchanged update stores nothing).
        #[arg(long)]
        kms_v1: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apiserver-emulator: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(summary) => {
            println!("{summary}");
            if summary["failed"].as_u64().unwrap_or(0) > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("apiserver-emulator: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let scope = |ns: &Option<String>| match ns {
        Some(ns) => format!("{}{ns}/", cli.prefix),
        None => cli.prefix.clone(),
    };
    let mut ctx = objects::Context {
        kms: None,
        store: None,
        provider: cli.provider.clone(),
    };
    let socket = cli.socket.clone();
    let endpoints = cli.etcd_endpoints.clone();
    match cli.command {
        Command::ServeApi {
            listen,
            etcd_root,
            token,
            kubeconfig,
            storage_version_migration,
            throttle_every,
            conflict_every,
            delete_every,
            forbid,
            forbid_after,
            expire_continue_every,
            fail_objects,
            throttle_migration_creates,
            svm_never_completes,
            kms_v1,
        } => {
            ctx.connect(socket, &endpoints).await?;
            let (Some(kms), Some(store)) = (ctx.kms.take(), ctx.store.take()) else {
                anyhow::bail!("not connected");
            };
            let storage =
                kubeapi::Storage::new(kms, store, cli.provider.clone(), etcd_root, kms_v1);
            let faults = kubeapi::Faults {
                throttle_every,
                conflict_every,
                delete_every,
                forbid,
                forbid_after,
                expire_every: expire_continue_every,
                fail_objects,
                throttle_migration_creates,
                ..Default::default()
            };
            kubeapi::serve(
                storage,
                kubeapi::Settings {
                    listen,
                    token,
                    storage_version_migration,
                    kubeconfig,
                    faults,
                    svm_never_completes,
                },
            )
            .await?;
            Ok(serde_json::json!({}))
        }
        Command::Status => {
            let mut kms = kms::Kms::connect(socket).await?;
            Ok(serde_json::json!({ "key_id": kms.status_key_id().await? }))
        }
        Command::Write {
            namespace,
            count,
            name_prefix,
            kms_v1,
        } => {
            ctx.connect(socket, &endpoints).await?;
            if kms_v1 {
                objects::write_kms_v1(&mut ctx, &cli.prefix, &namespace, &name_prefix, count).await
            } else {
                objects::write(&mut ctx, &cli.prefix, &namespace, &name_prefix, count, true).await
            }
        }
        Command::WritePlaintext {
            namespace,
            count,
            name_prefix,
        } => {
            ctx.connect_store(&endpoints).await?;
            objects::write(
                &mut ctx,
                &cli.prefix,
                &namespace,
                &name_prefix,
                count,
                false,
            )
            .await
        }
        Command::Rewrite { namespace } => {
            ctx.connect(socket, &endpoints).await?;
            objects::rewrite(&mut ctx, &scope(&namespace)).await
        }
        Command::ReadAll { namespace } => {
            ctx.connect(socket, &endpoints).await?;
            objects::read_all(&mut ctx, &scope(&namespace)).await
        }
    }
}
