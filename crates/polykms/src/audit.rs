//! `polykms audit`: flags and exit codes around `polykms_ops::audit`, and, for `--unwrap`,
//! the opener that decrypts DEK envelopes through the plugin's own Decrypt (commitment, key_id
//! and per-format AAD checked as over the socket), built from `--config`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args as ClapArgs;
use futures::future::BoxFuture;
use polykms_core::{Keyring, Metrics, Plugin};
use polykms_ops::audit::{
    self, AuditError, EnvelopeOpener, EtcdConnection, Expectations, Options, Scope, StoredDek,
    UnwrapFailure, UnwrapSettings,
};

use crate::backends;
use crate::config::{BackendEntry, Config, LogConfig, LogFormat};
use crate::exit::{self, Failure};

#[derive(Debug, ClapArgs)]
pub struct Args {
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
    /// Scan these resources instead of --prefix (comma-separated: plural names, `plural.group`
    /// outside the core group), each under --etcd-prefix; one that holds no key fails.
    #[arg(long, value_delimiter = ',', conflicts_with = "prefix")]
    resources: Vec<String>,
    /// The apiserver's --etcd-prefix: resources live under <etcd-prefix>/<resource>/ (names
    /// the resources in the census).
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
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
    /// The polykms configuration to prove (e.g. the one about to be deployed, without the
    /// key being retired): every distinct DEK envelope is unwrapped through its backends.
    /// Implies --unwrap.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Unwrap every distinct DEK envelope through --config's backends (needs --config) and
    /// fail, listing them, if any object would become unreadable.
    #[arg(long)]
    unwrap: bool,
    /// With --unwrap: unwrap calls per second to the key stores (0: no limit). KMS v1 values
    /// have one DEK envelope each.
    #[arg(long, default_value_t = 50.0)]
    qps: f64,
    /// With --unwrap: unwrap calls in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// Runs the command; `Err` carries the exit code.
pub fn run(args: Args) -> Result<(), Failure> {
    if args.unwrap && args.config.is_none() {
        return Err(Failure::Config(
            "--unwrap needs --config: the polykms configuration whose backends must decrypt \
             every stored object"
                .into(),
        ));
    }
    let options = Options {
        etcd: EtcdConnection {
            endpoints: args.etcd_endpoints,
            cacert: args.cacert,
            cert: args.cert,
            key: args.key,
        },
        prefix: args.prefix,
        expect: Expectations {
            provider: args.expect_provider,
            key_id: args.expect_key_id,
            allow_kms_v1: args.allow_kms_v1,
        },
        output: args.output,
    };
    let scope = Scope {
        etcd_root: args.etcd_prefix,
        resources: args.resources,
    };
    let settings = UnwrapSettings {
        qps: args.qps,
        concurrency: args.concurrency,
    };
    // Flags first: a bad one is reported before any key store is called.
    audit::validate(&options).map_err(failure)?;
    let config = match &args.config {
        Some(path) => {
            settings.validate().map_err(failure)?;
            Some(Config::load(path)?)
        }
        None => None,
    };
    if config.is_some() {
        // Backend warnings (a key store that does not answer) on stderr; the report on stdout.
        crate::logging::init(
            &LogConfig {
                format: LogFormat::Text,
                level: "warn".into(),
            },
            None,
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match &config {
            None => audit::run(&options, &scope, None).await.map_err(failure),
            Some(config) => {
                let opener = PluginOpener::start(config).await?;
                audit::run(&options, &scope, Some((&opener, settings)))
                    .await
                    .map_err(failure)
            }
        }
    })
}

fn failure(e: AuditError) -> Failure {
    match e {
        AuditError::Config(m) => Failure::Config(m),
        AuditError::Unavailable(m) => Failure::Unavailable(m),
        AuditError::Findings(m) => Failure::Exit {
            code: exit::FINDINGS,
            message: m,
        },
    }
}

/// Decrypts through a [`Plugin`] built from the configuration, as `serve` builds it but with
/// no unwrap cache: each seed is dropped, and zeroized, as soon as its Decrypt returns.
struct PluginOpener {
    plugin: Arc<Plugin>,
    /// Each Decrypt's deadline (retries of retryable key store errors happen inside it).
    timeout: Duration,
}

impl PluginOpener {
    async fn start(config: &Config) -> Result<Self, Failure> {
        let (entries, skipped): (Vec<BackendEntry>, Vec<BackendEntry>) = config
            .backends
            .iter()
            .cloned()
            .partition(|e| e.settings.file_serve_would_generate().is_none());
        for e in &skipped {
            eprintln!(
                "--config: backend {}: its key file does not exist (serve would generate a new \
                 one); it decrypts nothing stored, and audit writes nothing",
                e.name
            );
        }
        let built = backends::build(&entries)
            .await
            .map_err(|e| Failure::Config(format!("--config: {e}")))?;
        // Only Decrypt is used: encrypt.with matters only as far as Keyring::new requires a
        // configured backend in it.
        let mut encrypt_with: Vec<String> = config
            .encrypt
            .with
            .iter()
            .filter(|n| built.iter().any(|b| &b.name == *n))
            .cloned()
            .collect();
        if encrypt_with.is_empty() {
            encrypt_with.extend(built.first().map(|b| b.name.clone()));
        }
        let metrics = Arc::new(Metrics::new());
        let ring = Keyring::new(built, &encrypt_with, metrics.clone())
            .map_err(|e| Failure::Config(format!("--config: {e}")))?;
        let mut settings = crate::serve::plugin_settings(config);
        settings.unwrap_cache = None;
        let timeout = settings.default_timeout.max(Duration::from_secs(10));
        Ok(PluginOpener {
            plugin: Plugin::start(settings, ring, metrics).await,
            timeout,
        })
    }
}

impl EnvelopeOpener for PluginOpener {
    fn open<'a>(&'a self, dek: &'a StoredDek) -> BoxFuture<'a, Result<(), UnwrapFailure>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.plugin
                .decrypt(
                    &dek.ciphertext,
                    dek.key_id.as_deref(),
                    &dek.annotations,
                    deadline,
                )
                .await
                // The seed is dropped here; with no cache nothing else holds it.
                .map(drop)
                .map_err(|e| UnwrapFailure {
                    kind: e.outcome().to_string(),
                    message: e.to_string(),
                })
        })
    }
}
