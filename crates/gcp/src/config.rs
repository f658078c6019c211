//! `type = "gcp"` settings and their validation.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use polykms_backend::BackendError;
use polykms_net::NetworkConfig;
use serde::Deserialize;

/// Default per-call timeout: long enough for a cross-region call, short enough that a dead
/// endpoint is reported well inside the apiserver's KMS deadline.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

/// `type = "gcp"` settings: a Cloud KMS symmetric CryptoKey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Full CryptoKey resource name: `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    pub key: String,
    /// API endpoint override (private service connect, regional endpoints, emulators),
    /// e.g. `https://cloudkms.googleapis.com`. Default: the client library's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How to authenticate. Default: Application Default Credentials.
    #[serde(default)]
    pub auth: GcpAuth,
    /// Per-call timeout in milliseconds (covers token refresh and the HTTP request).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// `proxy`, `no_proxy`, `proxy_credentials_file` and `ca_file` (extra trusted roots).
    #[serde(flatten)]
    pub network: NetworkConfig,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// How the backend gets its Google credentials.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAuth")]
pub enum GcpAuth {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's ADC file,
    /// or the metadata server (GKE Workload Identity, GCE).
    #[default]
    Adc,
    /// A service account JSON key file.
    ServiceAccount {
        /// Path of the JSON key file (it holds a private key: keep it mode 0600).
        credentials_file: PathBuf,
    },
    /// No credentials at all: only for emulators and tests (logged as a warning).
    Anonymous,
}

/// The `auth` table as written. serde's internally tagged enums ignore unknown fields on
/// unit variants, so the table is read flat and checked here instead.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: RawMethod,
    credentials_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawMethod {
    Adc,
    ServiceAccount,
    Anonymous,
}

impl TryFrom<RawAuth> for GcpAuth {
    type Error = String;

    fn try_from(raw: RawAuth) -> Result<Self, Self::Error> {
        match (raw.method, raw.credentials_file) {
            (RawMethod::ServiceAccount, Some(credentials_file)) => {
                Ok(GcpAuth::ServiceAccount { credentials_file })
            }
            (RawMethod::ServiceAccount, None) => {
                Err("auth: method \"service_account\" needs credentials_file".into())
            }
            (RawMethod::Adc, None) => Ok(GcpAuth::Adc),
            (RawMethod::Anonymous, None) => Ok(GcpAuth::Anonymous),
            (_, Some(_)) => {
                Err("auth: credentials_file is only valid with method = \"service_account\"".into())
            }
        }
    }
}

impl GcpAuth {
    /// The `method` name as written in the config.
    pub fn method(&self) -> &'static str {
        match self {
            GcpAuth::Adc => "adc",
            GcpAuth::ServiceAccount { .. } => "service_account",
            GcpAuth::Anonymous => "anonymous",
        }
    }
}

impl fmt::Debug for GcpAuth {
    // The key file path is not secret, its content is; it is never held here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcpAuth::ServiceAccount { credentials_file } => f
                .debug_struct("ServiceAccount")
                .field("credentials_file", credentials_file)
                .finish(),
            other => f.write_str(other.method()),
        }
    }
}

impl polykms_backend::ConfigFiles for GcpConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut files = self.network.file_paths_mut();
        if let GcpAuth::ServiceAccount { credentials_file } = &mut self.auth {
            files.push(credentials_file);
        }
        files
    }
}

impl GcpConfig {
    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks every field that can be checked without the network.
    pub fn validate(&self) -> Result<(), BackendError> {
        validate_crypto_key_name(&self.key)?;
        if let Some(endpoint) = &self.endpoint {
            validate_endpoint(endpoint)?;
        }
        if self.timeout_ms == 0 {
            return Err(BackendError::config("timeout_ms: must be greater than 0"));
        }
        crate::fips::check(&self.auth, polykms_backend::crypto::FIPS_BUILD, |name| {
            std::env::var(name).ok()
        })
    }
}

/// A CryptoKey name has exactly these literal segments, each followed by a non-empty id.
/// <https://cloud.google.com/kms/docs/resource-hierarchy#retrieve_resource_id>
const CRYPTO_KEY_SEGMENTS: [&str; 4] = ["projects", "locations", "keyRings", "cryptoKeys"];

fn validate_crypto_key_name(key: &str) -> Result<(), BackendError> {
    let parts: Vec<&str> = key.split('/').collect();
    let well_formed = parts.len() == 2 * CRYPTO_KEY_SEGMENTS.len()
        && parts
            .chunks(2)
            .zip(CRYPTO_KEY_SEGMENTS)
            .all(|(pair, literal)| {
                pair[0] == literal && !pair[1].is_empty() && !pair[1].contains(char::is_whitespace)
            });
    if well_formed {
        return Ok(());
    }
    let hint = if key.contains("/cryptoKeyVersions/") {
        " (name the CryptoKey, not a version: polykms follows the primary version)"
    } else {
        ""
    };
    Err(BackendError::config(format!(
        "key: {key:?} is not a CryptoKey resource name \
         projects/P/locations/L/keyRings/R/cryptoKeys/K{hint}"
    )))
}

fn validate_endpoint(endpoint: &str) -> Result<(), BackendError> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| {
            BackendError::config(format!(
                "endpoint: {endpoint:?} must start with https:// or http://"
            ))
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(BackendError::config(format!(
            "endpoint: {endpoint:?} has no host"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use polykms_backend::ErrorKind;

    use super::*;

    const KEY: &str = "projects/p1/locations/europe-west1/keyRings/kube/cryptoKeys/secrets";

    fn parse(toml_text: &str) -> Result<GcpConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn minimal_config_defaults_to_adc_and_five_seconds() {
        let c = parse(&format!("key = {KEY:?}")).unwrap();
        assert_eq!(c.auth, GcpAuth::Adc);
        assert_eq!(c.endpoint, None);
        assert_eq!(c.timeout(), Duration::from_secs(5));
        c.validate().unwrap();
    }

    #[test]
    fn every_auth_method_parses() {
        let c = parse(&format!(
            "key = {KEY:?}\nauth = {{ method = \"service_account\", credentials_file = \"/etc/sa.json\" }}"
        ))
        .unwrap();
        assert_eq!(
            c.auth,
            GcpAuth::ServiceAccount {
                credentials_file: "/etc/sa.json".into()
            }
        );
        let c = parse(&format!(
            "key = {KEY:?}\nauth = {{ method = \"anonymous\" }}"
        ))
        .unwrap();
        assert_eq!(c.auth, GcpAuth::Anonymous);
        let c = parse(&format!("key = {KEY:?}\nauth = {{ method = \"adc\" }}")).unwrap();
        assert_eq!(c.auth, GcpAuth::Adc);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse(&format!("key = {KEY:?}\nregion = \"eu\"")).unwrap_err();
        assert!(err.to_string().contains("region"), "{err}");
        let err = parse(&format!(
            "key = {KEY:?}\nauth = {{ method = \"adc\", credentials_file = \"x\" }}"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("credentials_file"), "{err}");
        assert!(parse(&format!("key = {KEY:?}\nauth = {{ method = \"token\" }}")).is_err());
    }

    #[test]
    fn service_account_needs_a_credentials_file() {
        let err = parse(&format!(
            "key = {KEY:?}\nauth = {{ method = \"service_account\" }}"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("credentials_file"), "{err}");
    }

    #[test]
    fn key_must_be_a_crypto_key_name() {
        for bad in [
            "",
            "secrets",
            "projects/p/locations/l/keyRings/r",
            "projects/p/locations/l/keyRings/r/cryptoKeys/",
            "projects//locations/l/keyRings/r/cryptoKeys/k",
            "projects/p/locations/l/keyrings/r/cryptoKeys/k",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/",
        ] {
            let c = GcpConfig {
                key: bad.into(),
                endpoint: None,
                auth: GcpAuth::Adc,
                timeout_ms: 1,
                network: Default::default(),
            };
            let err = c.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
            assert!(err.message().starts_with("key:"), "{err}");
        }
    }

    #[test]
    fn a_version_name_is_rejected_with_a_hint() {
        let c = GcpConfig {
            key: format!("{KEY}/cryptoKeyVersions/3"),
            endpoint: None,
            auth: GcpAuth::Adc,
            timeout_ms: 1,
            network: Default::default(),
        };
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .contains("not a version")
        );
    }

    #[test]
    fn endpoint_and_timeout_are_checked() {
        let mut c = GcpConfig {
            key: KEY.into(),
            endpoint: Some("cloudkms.googleapis.com".into()),
            auth: GcpAuth::Adc,
            timeout_ms: 100,
            network: Default::default(),
        };
        assert!(c.validate().unwrap_err().message().starts_with("endpoint:"));
        c.endpoint = Some("https://".into());
        assert!(c.validate().unwrap_err().message().starts_with("endpoint:"));
        c.endpoint = Some("http://127.0.0.1:8281".into());
        c.validate().unwrap();
        c.timeout_ms = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .starts_with("timeout_ms:")
        );
    }

    #[test]
    fn debug_shows_paths_not_secrets() {
        let c = parse(&format!(
            "key = {KEY:?}\nauth = {{ method = \"service_account\", credentials_file = \"/etc/sa.json\" }}"
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("/etc/sa.json") && shown.contains(KEY),
            "{shown}"
        );
    }
}
