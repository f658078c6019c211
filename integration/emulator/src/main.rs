//! apiserver-emulator: does what kube-apiserver does with a KMS v2 plugin, against a real
//! etcd, so that `polykms audit` and the rotation drills have realistic data. A test tool:
//! not shipped. Each command prints one JSON summary line on stdout.

mod envelope;
mod kms;
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
        Command::Status => {
            let mut kms = kms::Kms::connect(socket).await?;
            Ok(serde_json::json!({ "key_id": kms.status_key_id().await? }))
        }
        Command::Write {
            namespace,
            count,
            name_prefix,
        } => {
            ctx.connect(socket, &endpoints).await?;
            objects::write(&mut ctx, &cli.prefix, &namespace, &name_prefix, count, true).await
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
