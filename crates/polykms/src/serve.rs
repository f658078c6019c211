//! `polykms serve`: wire config, backends, core and signals together.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use polykms_core::cache::CacheSettings;
use polykms_core::http::{HttpState, serve_http};
use polykms_core::{
    Api, Keyring, Metrics, Plugin, PluginSettings, ProbeSettings, RetrySettings, SocketSpec,
    StatusVersion,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::backends;
use crate::config::{ApiName, Config, LogFormat, StatusVersionName};
use crate::exit::Failure;
use crate::{hardening, logging, reload, sandbox};

pub fn run(
    path: &Path,
    socket: Option<String>,
    log_format: Option<LogFormat>,
) -> Result<(), Failure> {
    // Digested before reading: a change while starting is reloaded once the watch is on.
    let config_digest = crate::watch::digest(path);
    let mut config = Config::load(path)?;
    if let Some(socket) = &socket {
        SocketSpec::parse(socket).map_err(|e| Failure::Config(format!("--socket: {e}")))?;
    }
    let overrides = Overrides { socket };
    overrides.apply(&mut config);
    // Read while the cgroup's CPU limit is still readable: the runtime starts confined.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // While this is the only thread, so that every thread is confined (sandbox.rs).
    let sandbox = sandbox::confine(&config, path)?;
    logging::init(&config.log, log_format);
    hardening::apply(&config.security);
    sandbox.log();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(Failure::os("starting the async runtime"))?;
    runtime.block_on(serve(path.to_path_buf(), overrides, config_digest, config))
}

/// Settings given on the command line, which win over the file at start and on every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--socket`.
    pub socket: Option<String>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(socket) = &self.socket {
            config.server.socket = socket.clone();
        }
    }
}

pub fn plugin_settings(config: &Config) -> PluginSettings {
    PluginSettings {
        provider_name: config.server.provider_name.clone(),
        status_version: match config.server.status_version {
            StatusVersionName::V2 => StatusVersion::V2,
            StatusVersionName::V2Beta1 => StatusVersion::V2Beta1,
        },
        probe: ProbeSettings {
            healthy_interval: config.health.probe_interval,
            unhealthy_interval: config.health.unhealthy_probe_interval,
            timeout: config.health.probe_timeout,
        },
        retry: RetrySettings::default(),
        default_timeout: config.server.default_timeout,
        unwrap_cache: (config.decrypt.cache_size > 0).then_some(CacheSettings {
            capacity: config.decrypt.cache_size,
            ttl: config.decrypt.cache_ttl,
        }),
        accept_legacy_multi_wrap: config.decrypt.accept_legacy_multi_wrap,
    }
}

/// Builds a keyring from the config's backends; every failure here is a config error.
pub async fn keyring(config: &Config, metrics: Arc<Metrics>) -> Result<Keyring, Failure> {
    let backends = backends::build(&config.backends)
        .await
        .map_err(|e| Failure::Config(e.to_string()))?;
    Keyring::new(backends, &config.encrypt.with, metrics)
        .map_err(|e| Failure::Config(e.to_string()))
}

async fn serve(
    path: PathBuf,
    overrides: Overrides,
    config_digest: crate::watch::FileDigest,
    config: Config,
) -> Result<(), Failure> {
    let metrics = Arc::new(Metrics::new());
    let ring = keyring(&config, metrics.clone()).await?;
    let spec = SocketSpec::parse(&config.server.socket)
        .map_err(|e| Failure::Config(format!("server.socket: {e}")))?;
    // Everything that can fail is set up before the socket file exists, so a failed start
    // leaves no socket behind (the HTTP port, the signal handlers).
    let http_listener = match config.http.address().map_err(Failure::Config)? {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Failure::Os(anyhow::anyhow!(
                "binding http.listen {addr}: {e} (set [http] listen to a free address, or \"\" to turn the listener off)"
            ))
        })?),
        None => None,
    };
    let mut term =
        signal(SignalKind::terminate()).map_err(Failure::os("installing the SIGTERM handler"))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(Failure::os("installing the SIGINT handler"))?;
    let access = config.server.socket_access()?;
    let bound = polykms_core::bind_with(&spec, access).map_err(|e| {
        Failure::Os(anyhow::anyhow!(
            "binding the KMS socket (server.socket): {e}"
        ))
    })?;
    let plugin = Plugin::start(plugin_settings(&config), ring, metrics).await;
    let status = plugin.status();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), key_id = %status.key_id, healthz = %status.healthz,
        backends = config.backends.len(), encrypt_with = ?config.encrypt.with, "polykms started");

    let serving = Arc::new(AtomicBool::new(false));
    let http_task = http_listener.map(|listener| {
        tracing::info!(listen = %config.http.listen, "serving /metrics /livez /readyz /healthz");
        tokio::spawn(serve_http(
            listener,
            HttpState {
                plugin: plugin.clone(),
                serving: serving.clone(),
            },
        ))
    });
    let reload_task = tokio::spawn(reload::run(
        path,
        overrides,
        config_digest,
        config.clone(),
        plugin.clone(),
    ));

    let apis: Vec<Api> = config
        .server
        .apis
        .iter()
        .map(|a| match a {
            ApiName::V2 => Api::V2,
            ApiName::V1Beta1 => Api::V1Beta1,
        })
        .collect();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    let peers = config.server.peer_policy();
    let result = polykms_core::serve(plugin, bound, &apis, peers, serving, shutdown).await;
    reload_task.abort();
    if let Some(t) = http_task {
        t.abort();
    }
    // Counts of repeated failures not yet written are written now, not lost.
    polykms_core::repeated::flush();
    result.map_err(Failure::os("serving the KMS API"))?;
    tracing::info!("stopped");
    Ok(())
}
