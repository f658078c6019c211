//! The configuration file: TOML or YAML by extension, `POLYKMS_…` environment overrides
//! (`POLYKMS_SERVER__SOCKET=/x.sock` sets `server.socket`), unknown fields rejected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml, Yaml};
use serde::Deserialize;

use crate::backends::BackendSettings;
use crate::sandbox::SandboxMode;
pub use access::AllowedPeers;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub decrypt: DecryptConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    pub backends: Vec<BackendEntry>,
    pub encrypt: EncryptConfig,
    /// The files the backends' settings name, resolved (not a config key).
    #[serde(skip)]
    pub referenced_files: Vec<PathBuf>,
}

/// `[server]`: the KMS socket and API surface. Changing it needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Socket path, `unix:///path`, or `@name` for an abstract socket.
    pub socket: String,
    /// KMS APIs served: "v2" and/or "v1beta1".
    pub apis: Vec<ApiName>,
    /// Status `version`: "v2" (Kubernetes 1.29+) or "v2beta1" (1.27/1.28).
    pub status_version: StatusVersionName,
    /// Bound into every wrap as AAD; must match across nodes of one cluster.
    pub provider_name: String,
    /// Deadline of a call without `grpc-timeout`.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Reload when the config file, or a file it names, changes on disk (a ConfigMap's
    /// `..data` swap, an editor's save), exactly as on SIGHUP.
    pub watch_config: bool,
    /// Check callers' uid/gid (SO_PEERCRED) against the lists below, or `any`.
    pub allowed_peers: AllowedPeers,
    /// Callers' uids served (default: 0 and the plugin's own uid).
    pub allowed_peer_uids: Option<Vec<u32>>,
    /// Callers' primary gids served as well.
    pub allowed_peer_gids: Vec<u32>,
    /// The socket file's mode, octal: "0600", or "0660" with `socket_group`.
    pub socket_mode: String,
    /// Group (name or gid) of the socket file, for sockets shared by several apiservers.
    pub socket_group: Option<String>,
    /// Confine the process with Landlock to the files the config names: "enforce" or "off".
    pub sandbox: SandboxMode,
    /// Absolute paths the sandbox lets the process read and execute besides those the config
    /// names: files a vendor's PKCS#11 library reads by itself.
    pub sandbox_read_paths: Vec<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: "/var/run/kmsplugin/socket.sock".into(),
            apis: vec![ApiName::V2],
            status_version: StatusVersionName::V2,
            provider_name: "polykms".into(),
            default_timeout: Duration::from_secs(3),
            watch_config: true,
            allowed_peers: AllowedPeers::default(),
            allowed_peer_uids: None,
            allowed_peer_gids: Vec::new(),
            socket_mode: "0600".into(),
            socket_group: None,
            sandbox: SandboxMode::default(),
            sandbox_read_paths: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ApiName {
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v1beta1")]
    V1Beta1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum StatusVersionName {
    #[serde(rename = "v2")]
    V2,
    #[serde(rename = "v2beta1")]
    V2Beta1,
}

/// `[http]`: metrics and health endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port`; an empty string turns the listener off.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8095".into(),
        }
    }
}

impl HttpConfig {
    pub fn address(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|e| format!("http.listen: {:?}: {e}", self.listen))
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "auto" (text on a terminal, JSON otherwise), "text" or "json".
    pub format: LogFormat,
    /// Default filter when RUST_LOG is not set, e.g. "info" or "polykms_core=debug,info".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

/// `[health]`: the background probers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub unhealthy_probe_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval: Duration::from_secs(30),
            unhealthy_probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// `[decrypt]`: the unwrap cache. On by default with a short TTL, so the Decrypt storm of a
/// starting apiserver costs one backend call per seed; `cache_size = 0` turns it off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecryptConfig {
    /// Entries kept; 0 turns the cache off.
    pub cache_size: usize,
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Whether version-1 envelopes with several wraps (written before polykms bound wraps to
    /// each other) still decrypt. Turn off once `polykms audit` reports none left.
    pub accept_legacy_multi_wrap: bool,
}

impl Default for DecryptConfig {
    fn default() -> Self {
        DecryptConfig {
            cache_size: 1024,
            cache_ttl: Duration::from_secs(30),
            accept_legacy_multi_wrap: true,
        }
    }
}

/// `[security]`: process hardening.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Lock memory (mlockall) so keys never reach swap; needs CAP_IPC_LOCK or a high enough
    /// RLIMIT_MEMLOCK. A failure is logged, not fatal.
    pub lock_memory: bool,
    /// Disable core dumps (they would contain keys). On by default.
    pub disable_core_dumps: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            lock_memory: false,
            disable_core_dumps: true,
        }
    }
}

/// `[[backends]]`: a named key store.
#[derive(Debug, Clone, Deserialize)]
pub struct BackendEntry {
    /// Stable identifier, stored in every envelope: lowercase letters, digits, '-'.
    pub name: String,
    #[serde(flatten)]
    pub settings: BackendSettings,
}

/// `[encrypt]`: which backends wrap new seeds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptConfig {
    pub with: Vec<String>,
}

/// A configuration that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads `path` (TOML or YAML by extension) with `POLYKMS_` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(m) if m.is_dir() => {
                return Err(ConfigError(format!(
                    "{}: is a directory; --config names the config file itself",
                    path.display()
                )));
            }
            Ok(_) => {
                return Err(ConfigError(format!(
                    "{}: not a regular file",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError(format!(
                    "{}: no such config file",
                    path.display()
                )));
            }
            Err(e) => return Err(ConfigError(format!("{}: {e}", path.display()))),
        }
        let figment = match ext {
            "toml" => Figment::from(Toml::file_exact(path)),
            "yaml" | "yml" => Figment::from(Yaml::file_exact(path)),
            _ => {
                return Err(ConfigError(format!(
                    "{}: unknown config format {ext:?}; use .toml, .yaml or .yml",
                    path.display()
                )));
            }
        };
        let config: Config = figment
            .merge(overrides())
            .extract()
            .map_err(|e| ConfigError(describe_figment_error(path, e)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.resolved(&base).validate()
    }

    /// Makes relative file paths in backend settings relative to the config file's directory,
    /// and records them.
    fn resolved(mut self, base: &Path) -> Config {
        let mut files = Vec::new();
        for b in &mut self.backends {
            files.extend(b.settings.resolve_paths(base));
        }
        self.referenced_files = files;
        self
    }

    fn validate(self) -> Result<Config, ConfigError> {
        if self.server.provider_name.is_empty() {
            return Err(ConfigError(
                "server.provider_name: must not be empty".into(),
            ));
        }
        if self.server.apis.is_empty() {
            return Err(ConfigError(
                "server.apis: name at least one of \"v2\", \"v1beta1\"".into(),
            ));
        }
        polykms_core::SocketSpec::parse(&self.server.socket)
            .map_err(|e| ConfigError(format!("server.socket: {e}")))?;
        self.server.socket_access()?;
        if let Some(p) = self
            .server
            .sandbox_read_paths
            .iter()
            .find(|p| p.is_relative())
        {
            return Err(ConfigError(format!(
                "server.sandbox_read_paths: {} is relative; give absolute paths",
                p.display()
            )));
        }
        self.http.address().map_err(ConfigError)?;
        if self.health.probe_interval.is_zero() || self.health.unhealthy_probe_interval.is_zero() {
            return Err(ConfigError(
                "health: probe intervals must be positive".into(),
            ));
        }
        if self.health.probe_timeout.is_zero() {
            return Err(ConfigError("health.probe_timeout: must be positive".into()));
        }
        if self.server.default_timeout.is_zero() {
            return Err(ConfigError(
                "server.default_timeout: must be positive".into(),
            ));
        }
        if self.backends.is_empty() {
            return Err(ConfigError(
                "backends: configure at least one [[backends]]".into(),
            ));
        }
        for (i, b) in self.backends.iter().enumerate() {
            polykms_core::keyring::validate_backend_name(&b.name)
                .map_err(|e| ConfigError(format!("backends[{i}].name: {e}")))?;
            if self.backends[..i].iter().any(|o| o.name == b.name) {
                return Err(ConfigError(format!(
                    "backends[{i}].name: {:?} is used twice",
                    b.name
                )));
            }
        }
        if self.encrypt.with.is_empty() {
            return Err(ConfigError(
                "encrypt.with: name at least one backend".into(),
            ));
        }
        for (i, name) in self.encrypt.with.iter().enumerate() {
            if !self.backends.iter().any(|b| &b.name == name) {
                return Err(ConfigError(format!(
                    "encrypt.with[{i}]: no backend is named {name:?}"
                )));
            }
            if self.encrypt.with[..i].contains(name) {
                return Err(ConfigError(format!(
                    "encrypt.with[{i}]: {name:?} is listed twice"
                )));
            }
            // An escrow wrap alone exceeds the ciphertext bound: it travels in an annotation.
            let annotated = self
                .backends
                .iter()
                .find(|b| &b.name == name && b.settings.wraps_need_annotations());
            if let Some(b) = annotated
                && self.server.apis.contains(&ApiName::V1Beta1)
            {
                return Err(ConfigError(format!(
                    "encrypt.with[{i}]: {name:?} (type {:?}) wraps larger than the 1024-byte \
                     ciphertext and needs annotations, which KMS v1beta1 does not have; remove \
                     \"v1beta1\" from server.apis or {name:?} from encrypt.with",
                    b.settings.kind()
                )));
            }
        }
        Ok(self)
    }

    /// The settings a reload cannot change that differ between `self` and `next`, by name.
    pub fn restart_only_changes(&self, next: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.server, &next.server);
        [
            ("server.socket", a.socket != b.socket),
            ("server.apis", a.apis != b.apis),
            (
                "server.status_version",
                a.status_version != b.status_version,
            ),
            ("server.provider_name", a.provider_name != b.provider_name),
            (
                "server.default_timeout",
                a.default_timeout != b.default_timeout,
            ),
            ("server.watch_config", a.watch_config != b.watch_config),
            ("server.allowed_peers", a.allowed_peers != b.allowed_peers),
            (
                "server.allowed_peer_uids",
                a.allowed_peer_uids != b.allowed_peer_uids,
            ),
            (
                "server.allowed_peer_gids",
                a.allowed_peer_gids != b.allowed_peer_gids,
            ),
            ("server.socket_mode", a.socket_mode != b.socket_mode),
            ("server.socket_group", a.socket_group != b.socket_group),
            ("server.sandbox", a.sandbox != b.sandbox),
            (
                "server.sandbox_read_paths",
                a.sandbox_read_paths != b.sandbox_read_paths,
            ),
            ("http.listen", self.http != next.http),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// Sections that `POLYKMS_<SECTION>__<KEY>` may override. Other `POLYKMS_*` variables (the
/// CLI's `POLYKMS_CONFIG`, test harness settings) are not configuration.
const ENV_SECTIONS: [&str; 7] = [
    "server", "http", "log", "health", "decrypt", "security", "encrypt",
];

fn overrides() -> Env {
    Env::prefixed("POLYKMS_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ENV_SECTIONS.iter().any(|s| {
                key.strip_prefix(s)
                    .is_some_and(|rest| rest.starts_with("__"))
            })
        })
        .split("__")
}

/// figment errors name the key path (`backends.0.key_files`); say where the value came from:
/// the config file, or the `POLYKMS_…` environment variable that set it.
fn describe_figment_error(path: &Path, error: figment::Error) -> String {
    let mut parts = Vec::new();
    for e in error {
        let key = e.path.join(".");
        let msg = e.kind.to_string();
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        parts.push(match (from_env, key.is_empty()) {
            (true, _) => format!(
                "environment variable {} (setting {key}): {msg}",
                env_variable(&e.path)
            ),
            (false, true) => format!("{}: {msg}", path.display()),
            (false, false) => format!("{}: {key}: {msg}", path.display()),
        });
    }
    parts.join("; ")
}

/// The `POLYKMS_<SECTION>__<KEY>` variable that sets the setting at `path`.
fn env_variable(path: &[String]) -> String {
    format!("POLYKMS_{}", path.join("__").to_ascii_uppercase())
}

/// Resolves `p` against `base` when relative.
pub fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

mod access;
#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests;
