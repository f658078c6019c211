//! `type = "vault"` settings: where the Transit key lives and how polykms logs in.

use std::path::PathBuf;
use std::time::Duration;

use polykms_backend::BackendError;
use polykms_net::NetworkConfig;
use reqwest::Url;
use serde::Deserialize;

/// Default per-request timeout.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Longest per-request timeout accepted: a KMS call slower than this is an outage.
const MAX_TIMEOUT_MS: u64 = 120_000;

/// `type = "vault"` settings: a Transit key on HashiCorp Vault or OpenBao.
///
/// Secrets (tokens, secret ids, JWTs) are never inline: only paths to files or env var names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Server URL, e.g. `https://vault.dc1:8200`.
    pub address: String,
    /// Mount path of the Transit secrets engine.
    #[serde(default = "default_transit_mount")]
    pub mount: String,
    /// Name of the Transit key.
    pub key: String,
    /// Vault Enterprise / OpenBao namespace (sent as `X-Vault-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// `proxy`, `no_proxy`, `proxy_credentials_file` and `ca_file` (for Vault, `ca_file` is the
    /// only set of CAs trusted, as with `VAULT_CACERT`).
    #[serde(flatten)]
    pub network: NetworkConfig,
    /// PEM client certificate for mutual TLS (also used by `auth.method = "cert"`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Name to expect in the server certificate when `address` names the server otherwise
    /// (e.g. by IP address).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Per-request timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Accept Transit key types that cannot bind associated data (e.g. RSA); the plugin's AAD
    /// is then not bound to the ciphertext. Off by default.
    #[serde(default)]
    pub allow_key_without_aad: bool,
    /// How polykms gets a Vault token.
    pub auth: AuthConfig,
}

/// Vault auth method used to obtain (and renew) a token.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    /// A token read from a file (re-read when it changes) or an environment variable.
    Token {
        /// File holding the token.
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Name of an environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// AppRole: role_id and secret_id, each from a file re-read on every login.
    AppRole {
        /// File holding the role_id.
        role_id_file: PathBuf,
        /// File holding the secret_id.
        secret_id_file: PathBuf,
        /// Mount path of the AppRole auth method.
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
    /// Kubernetes: a service-account token (projected, re-read on every login) and a role.
    Kubernetes {
        /// Vault role bound to the service account.
        role: String,
        /// Service-account token file.
        #[serde(default = "default_sa_token_file")]
        token_file: PathBuf,
        /// Mount path of the Kubernetes auth method.
        #[serde(default = "default_kubernetes_mount")]
        mount: String,
    },
    /// JWT: a JWT from a file (re-read on every login) and a role.
    Jwt {
        /// Vault role for the JWT.
        role: String,
        /// File holding the JWT.
        token_file: PathBuf,
        /// Mount path of the JWT auth method.
        #[serde(default = "default_jwt_mount")]
        mount: String,
    },
    /// TLS certificate auth with `client_cert_file` / `client_key_file`.
    /// Vault picks the certificate role matching the client certificate.
    Cert {
        /// Mount path of the cert auth method.
        #[serde(default = "default_cert_mount")]
        mount: String,
    },
}

fn default_transit_mount() -> String {
    "transit".to_string()
}
fn default_approle_mount() -> String {
    "approle".to_string()
}
fn default_kubernetes_mount() -> String {
    "kubernetes".to_string()
}
fn default_jwt_mount() -> String {
    "jwt".to_string()
}
fn default_cert_mount() -> String {
    "cert".to_string()
}
fn default_sa_token_file() -> PathBuf {
    PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl AuthConfig {
    /// Short name of the method, for `describe()` and logs.
    pub fn method_name(&self) -> &'static str {
        match self {
            AuthConfig::Token { .. } => "token",
            AuthConfig::AppRole { .. } => "approle",
            AuthConfig::Kubernetes { .. } => "kubernetes",
            AuthConfig::Jwt { .. } => "jwt",
            AuthConfig::Cert { .. } => "cert",
        }
    }
}

impl polykms_backend::ConfigFiles for VaultConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut files = self.network.file_paths_mut();
        files.extend(self.client_cert_file.iter_mut());
        files.extend(self.client_key_file.iter_mut());
        match &mut self.auth {
            AuthConfig::Token { token_file, .. } => files.extend(token_file.iter_mut()),
            AuthConfig::AppRole {
                role_id_file,
                secret_id_file,
                ..
            } => files.extend([role_id_file, secret_id_file]),
            AuthConfig::Kubernetes { token_file, .. } | AuthConfig::Jwt { token_file, .. } => {
                files.push(token_file)
            }
            AuthConfig::Cert { .. } => {}
        }
        files
    }
}

impl VaultConfig {
    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks everything that can be checked without the network; errors name the field.
    pub(crate) fn validate(&self) -> Result<Url, BackendError> {
        let url = Url::parse(self.address.trim())
            .map_err(|e| BackendError::config(format!("address: not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(BackendError::config(
                "address: scheme must be http or https",
            ));
        }
        if url.host_str().is_none() {
            return Err(BackendError::config("address: has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(BackendError::config(
                "address: must not carry credentials; use the auth table",
            ));
        }
        if !url.path().trim_matches('/').is_empty() || url.query().is_some() {
            return Err(BackendError::config(
                "address: give only scheme, host and port (no path: the API path is added)",
            ));
        }
        let https = url.scheme() == "https";
        for (field, set) in [
            ("ca_file", self.network.ca_file.is_some()),
            ("client_cert_file", self.client_cert_file.is_some()),
            ("tls_server_name", self.tls_server_name.is_some()),
        ] {
            if set && !https {
                return Err(BackendError::config(format!(
                    "{field}: needs an https address"
                )));
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(BackendError::config(
                "client_cert_file, client_key_file: set both or neither",
            ));
        }
        check_path_segment("mount", self.mount.trim_matches('/'), true)?;
        check_path_segment("key", &self.key, false)?;
        if let Some(ns) = &self.namespace {
            check_path_segment("namespace", ns.trim_matches('/'), true)?;
        }
        if let Some(name) = &self.tls_server_name
            && (name.is_empty() || name.contains(['/', ':', ' ']))
        {
            return Err(BackendError::config("tls_server_name: not a DNS name"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(BackendError::config(format!(
                "timeout_ms: must be between 1 and {MAX_TIMEOUT_MS}"
            )));
        }
        match &self.auth {
            AuthConfig::Token {
                token_file,
                token_env,
            } => {
                if token_file.is_some() == token_env.is_some() {
                    return Err(BackendError::config(
                        "auth.token_file, auth.token_env: set exactly one",
                    ));
                }
            }
            AuthConfig::AppRole { mount, .. } => check_path_segment("auth.mount", mount, true)?,
            AuthConfig::Kubernetes { role, mount, .. } | AuthConfig::Jwt { role, mount, .. } => {
                check_path_segment("auth.mount", mount, true)?;
                if role.trim().is_empty() {
                    return Err(BackendError::config("auth.role: must not be empty"));
                }
            }
            AuthConfig::Cert { mount, .. } => {
                check_path_segment("auth.mount", mount, true)?;
                if self.client_cert_file.is_none() {
                    return Err(BackendError::config(
                        "auth.method = \"cert\" needs client_cert_file and client_key_file",
                    ));
                }
            }
        }
        Ok(url)
    }
}

/// A mount, key or namespace: non-empty, no URL-special characters; `/` only where nested
/// paths are allowed (mounts, namespaces).
fn check_path_segment(field: &str, value: &str, nested: bool) -> Result<(), BackendError> {
    let bad = |c: char| {
        c.is_whitespace() || c.is_control() || matches!(c, '?' | '#' | '%') || (!nested && c == '/')
    };
    if value.is_empty()
        || value.contains(bad)
        || value.split('/').any(|s| s.is_empty() || s == "..")
    {
        return Err(BackendError::config(format!(
            "{field}: {value:?} is not a valid path name"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<VaultConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
        address = "https://vault.example:8200"
        key = "kube"
    "#;

    #[test]
    fn approle_config_parses_with_defaults() {
        let c = parse(&format!(
            "{BASE}\nauth = {{ method = \"approle\", role_id_file = \"/r\", secret_id_file = \"/s\" }}"
        ))
        .unwrap();
        assert_eq!(c.mount, "transit");
        assert_eq!(c.timeout_ms, 5000);
        assert!(!c.allow_key_without_aad);
        match &c.auth {
            AuthConfig::AppRole { mount, .. } => assert_eq!(mount, "approle"),
            other => panic!("{other:?}"),
        }
        c.validate().unwrap();
    }

    #[test]
    fn kubernetes_config_defaults_to_projected_token() {
        let c = parse(&format!(
            "{BASE}\nauth = {{ method = \"kubernetes\", role = \"kms\" }}"
        ))
        .unwrap();
        match &c.auth {
            AuthConfig::Kubernetes {
                token_file, mount, ..
            } => {
                assert!(token_file.ends_with("serviceaccount/token"));
                assert_eq!(mount, "kubernetes");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_rejected_at_top_level_and_in_auth() {
        let top = parse(&format!(
            "{BASE}\ntoken = \"s.x\"\nauth = {{ method = \"token\", token_env = \"T\" }}"
        ));
        assert!(top.unwrap_err().contains("unknown field"));
        let inner = parse(&format!(
            "{BASE}\nauth = {{ method = \"token\", token = \"s.x\" }}"
        ));
        assert!(inner.unwrap_err().contains("unknown field"));
        let method = parse(&format!("{BASE}\nauth = {{ method = \"ldap\" }}"));
        assert!(method.is_err());
    }

    #[test]
    fn token_method_needs_exactly_one_source() {
        let both = parse(&format!(
            "{BASE}\nauth = {{ method = \"token\", token_env = \"T\", token_file = \"/t\" }}"
        ))
        .unwrap();
        assert!(
            both.validate()
                .unwrap_err()
                .message()
                .contains("exactly one")
        );
        let none = parse(&format!("{BASE}\nauth = {{ method = \"token\" }}")).unwrap();
        assert!(none.validate().is_err());
    }

    fn with(f: impl FnOnce(&mut VaultConfig)) -> BackendError {
        let mut c = parse(&format!(
            "{BASE}\nauth = {{ method = \"token\", token_env = \"T\" }}"
        ))
        .unwrap();
        f(&mut c);
        c.validate().unwrap_err()
    }

    #[test]
    fn invalid_settings_name_their_field() {
        assert!(
            with(|c| c.address = "vault:8200".into())
                .message()
                .starts_with("address")
        );
        assert!(
            with(|c| c.address = "ftp://v".into())
                .message()
                .starts_with("address")
        );
        assert!(
            with(|c| c.address = "https://v/v1".into())
                .message()
                .starts_with("address")
        );
        assert!(
            with(|c| c.address = "https://u:p@v".into())
                .message()
                .starts_with("address")
        );
        assert!(with(|c| c.key = "a/b".into()).message().starts_with("key"));
        assert!(with(|c| c.key = String::new()).message().starts_with("key"));
        assert!(
            with(|c| c.mount = "a/../b".into())
                .message()
                .starts_with("mount")
        );
        assert!(
            with(|c| c.timeout_ms = 0)
                .message()
                .starts_with("timeout_ms")
        );
        assert!(
            with(|c| c.client_cert_file = Some("/c".into()))
                .message()
                .contains("both")
        );
        let plain = with(|c| {
            c.address = "http://127.0.0.1:8200".into();
            c.network.ca_file = Some("/ca".into());
        });
        assert!(plain.message().starts_with("ca_file"));
        let cert = with(|c| {
            c.auth = AuthConfig::Cert {
                mount: "cert".into(),
            }
        });
        assert!(cert.message().contains("client_cert_file"));
    }

    #[test]
    fn nested_mount_and_namespace_are_accepted() {
        let mut c = parse(&format!(
            "{BASE}\nauth = {{ method = \"token\", token_env = \"T\" }}"
        ))
        .unwrap();
        c.mount = "kms/transit".into();
        c.namespace = Some("team-a/".into());
        c.validate().unwrap();
    }

    #[test]
    fn debug_shows_paths_not_secrets() {
        let c = parse(&format!(
            "{BASE}\nauth = {{ method = \"approle\", role_id_file = \"/r\", secret_id_file = \"/s\" }}"
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("secret_id_file: \"/s\""), "{shown}");
    }
}
