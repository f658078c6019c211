//! `type = "azure"` settings and their validation.

use std::path::PathBuf;
use std::time::Duration;

use azure_security_keyvault_keys::models::EncryptionAlgorithm;
use polykms_backend::BackendError;
use polykms_net::NetworkConfig;
use serde::Deserialize;

const DEFAULT_TIMEOUT_MS: u64 = 5000;
const DEFAULT_MAX_RETRIES: u32 = 1;
/// Warn this long before the key's `exp`: enough for a rotation through change control.
const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// `type = "azure"` settings: an Azure Key Vault or Managed HSM key used with wrapKey/unwrapKey.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// `https://<vault>.vault.azure.net` or `https://<hsm>.managedhsm.azure.net`.
    pub vault_url: String,
    /// Name of the key in the vault.
    pub key_name: String,
    /// Pin one key version; empty or absent follows rotation (versionless key).
    #[serde(default)]
    pub key_version: Option<String>,
    /// Wrapping algorithm (JWA name); `RSA-OAEP-256` by default.
    #[serde(default)]
    pub algorithm: WrapAlgorithm,
    /// `proxy`, `no_proxy`, `proxy_credentials_file` and `ca_file` (extra trusted CA
    /// certificates, PEM, added to the system roots).
    #[serde(flatten)]
    pub network: NetworkConfig,
    /// Require the token challenge's resource to match the vault's domain (the SDK check).
    #[serde(default = "default_true")]
    pub verify_challenge_resource: bool,
    /// How to get Entra ID tokens.
    pub auth: AzureAuth,
    /// Entra ID authority for sovereign clouds, e.g. `https://login.microsoftonline.us`.
    #[serde(default)]
    pub authority_host: Option<String>,
    /// Per-call deadline in milliseconds, SDK retries included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries the SDK makes for 408/429/5xx and network errors, honouring `Retry-After`.
    /// 0 leaves all retrying to polykms' core.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// How long before the current key version's `exp` polykms warns (`30d` by default).
    #[serde(default = "default_expiry_warning", with = "humantime_serde")]
    pub expiry_warning: Duration,
}

/// How the backend authenticates to Entra ID. Secrets are always read from files.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureAuth {
    /// AKS workload identity: federated token file, client and tenant from the
    /// `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`, `AZURE_TENANT_ID` environment unless set.
    WorkloadIdentity {
        /// Overrides `AZURE_TENANT_ID`.
        #[serde(default)]
        tenant_id: Option<String>,
        /// Overrides `AZURE_CLIENT_ID`.
        #[serde(default)]
        client_id: Option<String>,
        /// Overrides `AZURE_FEDERATED_TOKEN_FILE`.
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    /// The VM's or node pool's managed identity (IMDS); `client_id` picks a user-assigned one.
    ManagedIdentity {
        /// Client id of a user-assigned identity; absent = system-assigned.
        #[serde(default)]
        client_id: Option<String>,
    },
    /// A service principal with a client secret read from a file.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// File holding the client secret.
        client_secret_file: PathBuf,
    },
    /// A bearer token issued elsewhere, re-read from the file when it changes.
    TokenFile {
        /// File holding the access token.
        token_file: PathBuf,
    },
}

impl AzureAuth {
    /// Stable method name, as written in the config.
    pub fn method(&self) -> &'static str {
        match self {
            AzureAuth::WorkloadIdentity { .. } => "workload_identity",
            AzureAuth::ManagedIdentity { .. } => "managed_identity",
            AzureAuth::ClientSecret { .. } => "client_secret",
            AzureAuth::TokenFile { .. } => "token_file",
        }
    }
}

/// Key Vault wrapKey algorithms polykms accepts (JWA names as the REST API spells them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum WrapAlgorithm {
    /// RSA-OAEP with SHA-256 (RSA and RSA-HSM keys). The default.
    #[default]
    #[serde(rename = "RSA-OAEP-256")]
    RsaOaep256,
    /// RSA-OAEP with SHA-1 (RSA keys), for vaults that require it.
    #[serde(rename = "RSA-OAEP")]
    RsaOaep,
    /// AES key wrap, RFC 3394, 128-bit key (Managed HSM oct-HSM keys).
    #[serde(rename = "A128KW")]
    A128Kw,
    /// AES key wrap, RFC 3394, 192-bit key (Managed HSM oct-HSM keys).
    #[serde(rename = "A192KW")]
    A192Kw,
    /// AES key wrap, RFC 3394, 256-bit key (Managed HSM oct-HSM keys).
    #[serde(rename = "A256KW")]
    A256Kw,
    /// AES key wrap with padding, RFC 5649 (Managed HSM oct-HSM keys).
    #[serde(rename = "CKM_AES_KEY_WRAP_PAD")]
    CkmAesKeyWrapPad,
}

impl WrapAlgorithm {
    /// Whether a FIPS build accepts this algorithm: FIPS-approved key transport or key
    /// wrapping. The match is exhaustive so that a new variant (e.g. `RSA1_5`, PKCS#1 v1.5,
    /// which SP 800-131A disallows for key transport) must be decided here.
    pub fn fips_approved(self) -> bool {
        match self {
            // KTS-OAEP, SP 800-56B Rev. 2 (SHA-1 stays acceptable outside signatures,
            // SP 800-131A Rev. 2).
            WrapAlgorithm::RsaOaep256 | WrapAlgorithm::RsaOaep => true,
            // KW and KWP, SP 800-38F.
            WrapAlgorithm::A128Kw
            | WrapAlgorithm::A192Kw
            | WrapAlgorithm::A256Kw
            | WrapAlgorithm::CkmAesKeyWrapPad => true,
        }
    }

    /// The SDK's value for this algorithm.
    pub(crate) fn sdk(self) -> EncryptionAlgorithm {
        match self {
            WrapAlgorithm::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            WrapAlgorithm::RsaOaep => EncryptionAlgorithm::RsaOaep,
            WrapAlgorithm::A128Kw => EncryptionAlgorithm::A128Kw,
            WrapAlgorithm::A192Kw => EncryptionAlgorithm::A192Kw,
            WrapAlgorithm::A256Kw => EncryptionAlgorithm::A256Kw,
            WrapAlgorithm::CkmAesKeyWrapPad => EncryptionAlgorithm::CkmAesKeyWrapPad,
        }
    }

    /// The JWA name, as in the config and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            WrapAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            WrapAlgorithm::RsaOaep => "RSA-OAEP",
            WrapAlgorithm::A128Kw => "A128KW",
            WrapAlgorithm::A192Kw => "A192KW",
            WrapAlgorithm::A256Kw => "A256KW",
            WrapAlgorithm::CkmAesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
        }
    }

    /// Whether the algorithm needs an RSA key (else a symmetric `oct` key).
    pub(crate) fn is_rsa(self) -> bool {
        matches!(self, WrapAlgorithm::RsaOaep256 | WrapAlgorithm::RsaOaep)
    }

    /// RFC 3394 key wrap only takes multiples of 8 bytes.
    pub(crate) fn needs_8_byte_blocks(self) -> bool {
        matches!(
            self,
            WrapAlgorithm::A128Kw | WrapAlgorithm::A192Kw | WrapAlgorithm::A256Kw
        )
    }
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

fn default_expiry_warning() -> Duration {
    DEFAULT_EXPIRY_WARNING
}

impl polykms_backend::ConfigFiles for AzureConfig {
    fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        let mut files = self.network.file_paths_mut();
        match &mut self.auth {
            AzureAuth::WorkloadIdentity { token_file, .. } => files.extend(token_file.iter_mut()),
            AzureAuth::ManagedIdentity { .. } => {}
            AzureAuth::ClientSecret {
                client_secret_file, ..
            } => files.push(client_secret_file),
            AzureAuth::TokenFile { token_file } => files.push(token_file),
        }
        files
    }
}

impl AzureConfig {
    /// The pinned key version, if any (an empty string means versionless).
    pub fn pinned_version(&self) -> Option<&str> {
        self.key_version.as_deref().filter(|v| !v.is_empty())
    }

    /// The vault URL without a trailing slash.
    pub(crate) fn vault_base(&self) -> &str {
        self.vault_url.trim_end_matches('/')
    }

    /// Checks what can be checked without the network; errors name the field.
    pub(crate) fn validate(&self) -> Result<(), BackendError> {
        self.check_fips(polykms_backend::crypto::FIPS_BUILD)?;
        self.validate_fields()
    }

    /// What a FIPS build (`fips`) refuses: a wrapping algorithm that is not FIPS-approved.
    pub(crate) fn check_fips(&self, fips: bool) -> Result<(), BackendError> {
        if fips && !self.algorithm.fips_approved() {
            return Err(BackendError::config(format!(
                "algorithm: {:?} is not a FIPS-approved key transport or key wrap; \
                 a FIPS build accepts RSA-OAEP-256, RSA-OAEP, A128KW, A192KW, A256KW, \
                 CKM_AES_KEY_WRAP_PAD",
                self.algorithm
            )));
        }
        Ok(())
    }

    fn validate_fields(&self) -> Result<(), BackendError> {
        let url = self.vault_base();
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(BackendError::config(format!(
                "vault_url: {url:?} must start with https:// (Key Vault refuses tokens over plain HTTP)"
            )));
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(BackendError::config(format!(
                "vault_url: {url:?} must be https://host[:port] with no path"
            )));
        }
        // Key Vault object names: 1-127 characters, letters, digits and dashes.
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 127
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name_ok(&self.key_name) {
            return Err(BackendError::config(format!(
                "key_name: {:?} is not a Key Vault key name (1-127 letters, digits, dashes)",
                self.key_name
            )));
        }
        if let Some(v) = self.pinned_version()
            && !v.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(BackendError::config(format!(
                "key_version: {v:?} is not a key version id"
            )));
        }
        if self.timeout_ms == 0 {
            return Err(BackendError::config("timeout_ms: must be greater than 0"));
        }
        if let Some(host) = &self.authority_host
            && !host.starts_with("https://")
        {
            return Err(BackendError::config(format!(
                "authority_host: {host:?} must start with https://"
            )));
        }
        match &self.auth {
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => {
                if tenant_id.is_empty() {
                    return Err(BackendError::config("auth.tenant_id: must not be empty"));
                }
                if client_id.is_empty() {
                    return Err(BackendError::config("auth.client_id: must not be empty"));
                }
            }
            AzureAuth::ManagedIdentity {
                client_id: Some(id),
            } if id.is_empty() => {
                return Err(BackendError::config(
                    "auth.client_id: must not be empty when set",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polykms_backend::ErrorKind;

    fn parse(json: &str) -> Result<AzureConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn minimal() -> AzureConfig {
        parse(
            r#"{"vault_url":"https://kv1.vault.azure.net/","key_name":"kek",
                "auth":{"method":"token_file","token_file":"/run/token"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = minimal();
        assert_eq!(c.algorithm, WrapAlgorithm::RsaOaep256);
        assert!(c.verify_challenge_resource);
        assert_eq!(c.timeout_ms, 5000);
        assert_eq!(c.max_retries, 1);
        assert_eq!(c.expiry_warning, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(c.pinned_version(), None);
        assert_eq!(c.vault_base(), "https://kv1.vault.azure.net");
        c.validate().unwrap();
    }

    #[test]
    fn every_auth_method_parses() {
        for auth in [
            r#"{"method":"workload_identity"}"#,
            r#"{"method":"workload_identity","tenant_id":"t","client_id":"c","token_file":"/f"}"#,
            r#"{"method":"managed_identity"}"#,
            r#"{"method":"managed_identity","client_id":"c"}"#,
            r#"{"method":"client_secret","tenant_id":"t","client_id":"c","client_secret_file":"/s"}"#,
            r#"{"method":"token_file","token_file":"/t"}"#,
        ] {
            let json = format!(
                r#"{{"vault_url":"https://a.vault.azure.net","key_name":"k","auth":{auth}}}"#
            );
            let c = parse(&json).unwrap_or_else(|e| panic!("{auth}: {e}"));
            c.validate().unwrap();
        }
    }

    #[test]
    fn expiry_warning_is_a_humantime_duration() {
        let json = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k","expiry_warning":"2w 3d",
                      "auth":{"method":"managed_identity"}}"#;
        let c = parse(json).unwrap();
        assert_eq!(c.expiry_warning, Duration::from_secs(17 * 24 * 3600));
        let bad = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k","expiry_warning":"soon",
                      "auth":{"method":"managed_identity"}}"#;
        assert!(parse(bad).is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let top = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k","colour":"red",
                      "auth":{"method":"token_file","token_file":"/t"}}"#;
        assert!(parse(top).unwrap_err().to_string().contains("colour"));
        let nested = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k",
                      "auth":{"method":"token_file","token_file":"/t","token":"inline"}}"#;
        assert!(parse(nested).unwrap_err().to_string().contains("token"));
    }

    #[test]
    fn inline_client_secret_is_not_accepted() {
        let json = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k",
            "auth":{"method":"client_secret","tenant_id":"t","client_id":"c","client_secret":"s3cr3t"}}"#;
        assert!(parse(json).is_err());
    }

    #[test]
    fn every_accepted_algorithm_is_fips_approved_in_either_build() {
        for name in [
            "RSA-OAEP-256",
            "RSA-OAEP",
            "A128KW",
            "A192KW",
            "A256KW",
            "CKM_AES_KEY_WRAP_PAD",
        ] {
            let mut c = minimal();
            c.algorithm = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert!(c.algorithm.fips_approved(), "{name}");
            c.check_fips(true).unwrap();
            c.check_fips(false).unwrap();
        }
        // PKCS#1 v1.5 key transport is not even parsed: refused in every build.
        let err = parse(
            r#"{"vault_url":"https://kv.vault.azure.net","key_name":"k","algorithm":"RSA1_5",
                "auth":{"method":"managed_identity"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("RSA1_5"), "{err}");
    }

    #[test]
    fn algorithms_use_jwa_names() {
        for (name, alg) in [
            ("RSA-OAEP-256", WrapAlgorithm::RsaOaep256),
            ("RSA-OAEP", WrapAlgorithm::RsaOaep),
            ("A256KW", WrapAlgorithm::A256Kw),
            ("CKM_AES_KEY_WRAP_PAD", WrapAlgorithm::CkmAesKeyWrapPad),
        ] {
            let json = format!(
                r#"{{"vault_url":"https://a.managedhsm.azure.net","key_name":"k","algorithm":"{name}",
                    "auth":{{"method":"managed_identity"}}}}"#
            );
            let c = parse(&json).unwrap();
            assert_eq!(c.algorithm, alg);
            assert_eq!(alg.as_str(), name);
            assert_eq!(alg.sdk().to_string(), name);
        }
        let bad = r#"{"vault_url":"https://a.vault.azure.net","key_name":"k","algorithm":"RSA1_5",
                      "auth":{"method":"managed_identity"}}"#;
        assert!(parse(bad).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        type Case = (&'static str, fn(&mut AzureConfig));
        let cases: [Case; 6] = [
            ("vault_url", |c| {
                c.vault_url = "http://kv.vault.azure.net".into()
            }),
            ("vault_url", |c| {
                c.vault_url = "https://kv.vault.azure.net/keys/x".into()
            }),
            ("key_name", |c| c.key_name = "bad name".into()),
            ("key_version", |c| c.key_version = Some("../x".into())),
            ("timeout_ms", |c| c.timeout_ms = 0),
            ("authority_host", |c| {
                c.authority_host = Some("http://login".into())
            }),
        ];
        for (field, mutate) in cases {
            let mut c = minimal();
            mutate(&mut c);
            let err = c.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().starts_with(field), "{field}: {err}");
        }
    }

    #[test]
    fn empty_key_version_means_versionless() {
        let mut c = minimal();
        c.key_version = Some(String::new());
        assert_eq!(c.pinned_version(), None);
        c.key_version = Some("0123abcd".into());
        assert_eq!(c.pinned_version(), Some("0123abcd"));
    }
}
