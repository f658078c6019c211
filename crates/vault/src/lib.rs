//! The Vault backend: a Transit key on HashiCorp Vault or OpenBao wraps the seeds.
//!
//! Wrap is Transit `encrypt` with the plugin's AAD as `associated_data` (AES-GCM / ChaCha20
//! keys bind it); unwrap is `decrypt` under any version `min_decryption_version` still allows.
//! The key version is the key's `latest_version`, so `transit/keys/K/rotate` changes key_id at
//! the next probe. A background task keeps the Vault token valid (renewal, re-login). The same
//! key read tells core what is set to make the key or a used version go away.

mod auth;
mod client;
mod config;
mod error;
mod lifecycle;
mod session;
mod transit;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use polykms_backend::{
    BackendError, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes, WrappedKey,
};
use zeroize::Zeroizing;

pub use config::{AuthConfig, VaultConfig};

use crate::auth::Authenticator;
use crate::client::HttpSetup;
use crate::lifecycle::KeyPath;
use crate::session::Session;
use crate::transit::{Decrypt, Encrypt, KeyInfo, ReadKey, SecretBase64, ciphertext_version};

/// Wraps seeds with a Vault / OpenBao Transit key.
pub struct VaultBackend {
    session: Arc<Session>,
    maintenance: tokio::task::JoinHandle<()>,
    address: String,
    namespace: Option<String>,
    mount: String,
    key: String,
    allow_key_without_aad: bool,
    /// Proxy and CA summary for `describe`.
    network: String,
    /// What the last key read said; wrap uses it to decide how to send the AAD.
    key_info: ArcSwapOption<KeyInfo>,
}

impl fmt::Debug for VaultBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultBackend")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("mount", &self.mount)
            .field("key", &self.key)
            .field("auth", &self.session.method())
            .finish_non_exhaustive()
    }
}

impl Drop for VaultBackend {
    fn drop(&mut self) {
        self.maintenance.abort();
    }
}

impl VaultBackend {
    /// Validates config and builds the client. Must NOT fail because the key store is down right
    /// now (that is reported by probe()/health later); fails only on bad config/credentials files
    /// (kind Config) with a message naming the config field.
    ///
    /// Spawns the token-maintenance task, so it must run inside a tokio runtime.
    pub async fn connect(config: &VaultConfig) -> Result<Self, BackendError> {
        let url = config.validate()?;
        let setup = HttpSetup::build(config, &url)?;
        let network = setup.describe_network();
        let auth = Authenticator::new(config.auth.clone());
        auth.preflight()?;
        if url.scheme() == "http" && !url.host_str().is_some_and(is_loopback) {
            tracing::warn!(address = %url, "vault: plain http to a non-loopback address");
        }
        let session = Arc::new(Session::new(setup, auth));
        let maintenance = session::spawn_maintenance(&session);
        Ok(VaultBackend {
            session,
            maintenance,
            address: url.as_str().trim_end_matches('/').to_string(),
            namespace: config
                .namespace
                .as_ref()
                .map(|ns| ns.trim_matches('/').to_string()),
            mount: config.mount.trim_matches('/').to_string(),
            key: config.key.clone(),
            allow_key_without_aad: config.allow_key_without_aad,
            network,
            key_info: ArcSwapOption::empty(),
        })
    }

    /// Reads the key, checks it can wrap for us, and remembers what it said.
    async fn read_key(&self) -> Result<Arc<KeyInfo>, BackendError> {
        let info = self
            .session
            .call("transit read key", |a| async move {
                vaultrs::api::exec_with_result(
                    &a.client,
                    ReadKey {
                        mount: &self.mount,
                        name: &self.key,
                    },
                )
                .await
            })
            .await?;
        self.check_usable(&info)?;
        tracing::debug!(
            key = %self.key,
            latest_version = info.latest_version,
            min_decryption_version = info.min_decryption_version,
            "vault: transit key read"
        );
        let info = Arc::new(info);
        self.key_info.store(Some(info.clone()));
        Ok(info)
    }

    fn check_usable(&self, info: &KeyInfo) -> Result<(), BackendError> {
        if info.soft_deleted {
            return Err(BackendError::key_unavailable(format!(
                "transit key {}/{} is soft-deleted",
                self.mount, self.key
            )));
        }
        if !info.supports_encryption || !info.supports_decryption {
            return Err(BackendError::key_unavailable(format!(
                "transit key {}/{} (type {}) cannot encrypt and decrypt",
                self.mount, self.key, info.key_type
            )));
        }
        if !info.binds_associated_data() && !self.allow_key_without_aad {
            return Err(BackendError::config(format!(
                "key: transit key {}/{} has type {}, which cannot bind associated data; use \
                 aes256-gcm96 (or chacha20-poly1305), or set allow_key_without_aad = true",
                self.mount, self.key, info.key_type
            )));
        }
        if info.latest_version == 0 {
            return Err(BackendError::internal(
                "transit key read: latest_version is 0",
            ));
        }
        Ok(())
    }

    /// Key info from the last read, or a fresh read.
    async fn known_key(&self) -> Result<Arc<KeyInfo>, BackendError> {
        match self.key_info.load_full() {
            Some(info) => Ok(info),
            None => self.read_key().await,
        }
    }

    /// Public identity of one key version: namespace, mount, key name and version.
    fn version_id(&self, version: u64) -> KeyVersion {
        let ns = self
            .namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default();
        KeyVersion::new(format!("vault:{ns}{}/{}:v{version}", self.mount, self.key))
    }

    /// The Transit version number of `version` if it is one of this key's versions.
    fn transit_version(&self, version: &KeyVersion) -> Option<u64> {
        let prefix = self.version_id(0);
        let prefix = prefix.as_str().strip_suffix('0')?;
        let n = version.as_str().strip_prefix(prefix)?;
        if n.starts_with('0') {
            return None;
        }
        n.parse().ok()
    }

    /// How the AAD travels for this key: associated_data for AEAD keys, and also as the
    /// derivation context for derived keys (which require one).
    fn aad_fields(&self, info: &KeyInfo, aad: &[u8]) -> (Option<String>, Option<String>) {
        if aad.is_empty() {
            return (None, None);
        }
        let encoded = B64.encode(aad);
        let associated = info.binds_associated_data().then(|| encoded.clone());
        let context = info.derived.then_some(encoded);
        (associated, context)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[async_trait]
impl KeyEncryptionBackend for VaultBackend {
    fn kind(&self) -> &'static str {
        "vault"
    }

    fn max_plaintext_len(&self) -> usize {
        self.key_info
            .load()
            .as_ref()
            .map_or(usize::MAX, |info| info.max_plaintext_len())
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        let info = self.read_key().await?;
        Ok(self.version_id(info.latest_version))
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        let info = self.known_key().await?;
        let (associated_data, context) = self.aad_fields(&info, aad);
        let encoded = Zeroizing::new(B64.encode(plaintext.expose()));
        let answer = self
            .session
            .call("transit encrypt", |a| {
                let endpoint = Encrypt {
                    mount: &self.mount,
                    name: &self.key,
                    plaintext: SecretBase64::new(encoded.to_string()),
                    associated_data: associated_data.clone(),
                    context: context.clone(),
                };
                async move { vaultrs::api::exec_with_result(&a.client, endpoint).await }
            })
            .await?;
        let version = ciphertext_version(&answer.ciphertext).ok_or_else(|| {
            BackendError::internal("transit encrypt: answer is not a vault:vN: ciphertext")
        })?;
        Ok(WrappedKey::new(
            self.version_id(version),
            answer.ciphertext.into_bytes(),
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let ciphertext = std::str::from_utf8(&wrapped.ciphertext)
            .ok()
            .filter(|c| ciphertext_version(c).is_some())
            .ok_or_else(|| {
                BackendError::invalid_input("wrapped key is not a Transit vault:vN: ciphertext")
            })?;
        let info = self.known_key().await?;
        let (associated_data, context) = self.aad_fields(&info, aad);
        let answer = self
            .session
            .call("transit decrypt", |a| {
                let endpoint = Decrypt {
                    mount: &self.mount,
                    name: &self.key,
                    ciphertext,
                    associated_data: associated_data.clone(),
                    context: context.clone(),
                };
                async move { vaultrs::api::exec_with_result(&a.client, endpoint).await }
            })
            .await?;
        B64.decode(answer.plaintext.expose())
            .map(SecretBytes::new)
            .map_err(|_| BackendError::internal("transit decrypt: plaintext is not base64"))
    }

    /// Reads the key (exists, can encrypt and decrypt, binds AAD) with a valid token.
    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        self.key_version().await
    }

    /// From the probe's key read (a read of its own only before the first one): whether the
    /// key may be deleted, and whether the versions Decrypts used still decrypt.
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let info = self.known_key().await?;
        let versions: Vec<u64> = in_use
            .iter()
            .filter_map(|v| self.transit_version(v))
            .collect();
        let path = KeyPath {
            namespace: self.namespace.as_deref(),
            mount: &self.mount,
            key: &self.key,
        };
        Ok(lifecycle::of_key(&info, &path, &versions, |v| {
            self.version_id(v)
        }))
    }

    fn credential_expiry(&self) -> Option<SystemTime> {
        self.session.expiry()
    }

    fn describe(&self) -> String {
        let ns = self
            .namespace
            .as_deref()
            .map(|ns| format!(" namespace {ns}"))
            .unwrap_or_default();
        format!(
            "vault {}{ns} transit key {}/{} (auth {}; {})",
            self.address,
            self.mount,
            self.key,
            self.session.method(),
            self.network
        )
    }
}

#[cfg(test)]
mod tests;
