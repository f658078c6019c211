//! `AzureBackend`: `KeyEncryptionBackend` over Key Vault's get key, wrapKey and unwrapKey.
//!
//! REST reference: https://learn.microsoft.com/rest/api/keyvault/keys/get-key/get-key,
//! .../keys/wrap-key/wrap-key and .../keys/unwrap-key/unwrap-key.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use azure_core::http::{ClientMethodOptions, RequestContent};
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::{
    Key, KeyClientGetKeyOptions, KeyClientWrapKeyOptions, KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions, ResourceId};
use polykms_backend::{
    BackendError, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes, WrappedKey,
};

use polykms_net::CaRoots;

use crate::binding;
use crate::config::{AzureConfig, WrapAlgorithm};
use crate::credential::{self, TokenFileCredential};
use crate::error::{Operation, classify, deadline_exceeded};
use crate::lifecycle;
use crate::transport;

/// A Key Vault or Managed HSM key used to wrap and unwrap seeds.
pub struct AzureBackend {
    client: KeyClient,
    config: AzureConfig,
    timeout: Duration,
    token_file: Option<Arc<TokenFileCredential>>,
    /// Proxy and CA summary for `describe`.
    network: String,
    /// RSA modulus length in bytes, from the last key fetch (bounds what RSA-OAEP can wrap).
    modulus_len: AtomicUsize,
}

impl fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureBackend")
            .field("vault_url", &self.config.vault_base())
            .field("key_name", &self.config.key_name)
            .field("key_version", &self.config.pinned_version())
            .field("algorithm", &self.config.algorithm.as_str())
            .field("auth", &self.config.auth.method())
            .finish_non_exhaustive()
    }
}

impl AzureBackend {
    /// Validates config and builds the client. Does not contact the vault, so it succeeds
    /// while the vault is down; fails (kind `Config`) on bad settings or unreadable
    /// CA/secret/token files, naming the config field.
    pub async fn connect(config: &AzureConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let network = config.network.resolve()?;
        let client_options = transport::client_options(config, &network)?;
        let credential::Credentials {
            credential,
            token_file,
        } = credential::build(&config.auth, client_options.clone())?;
        let options = KeyClientOptions {
            client_options,
            verify_challenge_resource: Some(config.verify_challenge_resource),
            ..Default::default()
        };
        let client = KeyClient::new(config.vault_base(), credential, Some(options))
            .map_err(|e| BackendError::config(format!("vault_url: {e}")))?;
        Ok(AzureBackend {
            client,
            config: config.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            token_file,
            network: network.describe_for(config.vault_base(), CaRoots::AddToSystem),
            modulus_len: AtomicUsize::new(MIN_RSA_MODULUS_LEN),
        })
    }

    /// Runs one SDK call under the configured deadline and classifies its error.
    async fn call<T>(
        &self,
        op: Operation,
        fut: impl Future<Output = azure_core::Result<T>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(classify(op, &err)),
            Err(_) => Err(deadline_exceeded(op, self.config.timeout_ms)),
        }
    }

    /// GET the configured key (pinned version or current).
    async fn get_key(&self) -> Result<Key, BackendError> {
        self.get_key_at(self.config.pinned_version()).await
    }

    /// GET one version of the configured key, or its current version.
    async fn get_key_at(&self, version: Option<&str>) -> Result<Key, BackendError> {
        let options = KeyClientGetKeyOptions {
            key_version: version.map(str::to_owned),
            method_options: ClientMethodOptions::default(),
        };
        let fut = async {
            self.client
                .get_key(&self.config.key_name, Some(options))
                .await?
                .into_model()
        };
        self.call(Operation::Get, fut).await
    }

    fn kid_of(&self, key: &Key) -> Result<KeyVersion, BackendError> {
        key.key
            .as_ref()
            .and_then(|k| k.kid.clone())
            .map(KeyVersion::new)
            .ok_or_else(|| BackendError::internal("get key: answer has no key.kid"))
    }

    /// Checks the key is usable for wrapping right now: enabled, inside its validity window,
    /// permitted wrapKey and unwrapKey, and of a type that matches the configured algorithm.
    fn check_usable(&self, key: &Key, now: OffsetDateTime) -> Result<(), BackendError> {
        let name = &self.config.key_name;
        if let Some(attrs) = &key.attributes {
            if attrs.enabled == Some(false) {
                return Err(BackendError::key_unavailable(format!(
                    "key {name} is disabled"
                )));
            }
            if attrs.expires.is_some_and(|exp| exp <= now) {
                return Err(BackendError::key_unavailable(format!(
                    "key {name} has expired"
                )));
            }
            if attrs.not_before.is_some_and(|nbf| nbf > now) {
                return Err(BackendError::key_unavailable(format!(
                    "key {name} is not valid yet"
                )));
            }
        }
        let jwk = key
            .key
            .as_ref()
            .ok_or_else(|| BackendError::internal("get key: answer has no key"))?;
        let ops = jwk.key_ops.as_deref().unwrap_or_default();
        for needed in ["wrapKey", "unwrapKey"] {
            if !ops.iter().any(|op| op == needed) {
                return Err(BackendError::key_unavailable(format!(
                    "key {name} does not permit {needed} (key_ops: {})",
                    ops.join(",")
                )));
            }
        }
        if let Some(kty) = &jwk.kty {
            let kty = kty.to_string();
            let rsa = kty.starts_with("RSA");
            let oct = kty.starts_with("oct");
            if (self.config.algorithm.is_rsa() && !rsa) || (!self.config.algorithm.is_rsa() && !oct)
            {
                return Err(BackendError::config(format!(
                    "algorithm: {} does not work with key {name} of type {kty}",
                    self.config.algorithm.as_str()
                )));
            }
        }
        Ok(())
    }

    /// The key version named by a wrapped key's recorded `kid`, if it is our key.
    fn version_for_unwrap(&self, wrapped: &WrappedKey) -> Result<String, BackendError> {
        self.version_of(wrapped.key_version.as_str())
    }

    /// The version id in `kid`, if it names a version of the configured key.
    fn version_of(&self, kid: &str) -> Result<String, BackendError> {
        let id: ResourceId = kid.parse().map_err(|_| {
            BackendError::invalid_input(format!("key version {kid:?} is not a Key Vault key id"))
        })?;
        // Key Vault names are case-insensitive. The host is not compared: behind a private
        // endpoint or proxy the configured URL may differ from the vault's own name.
        if !id.name.eq_ignore_ascii_case(&self.config.key_name) {
            return Err(BackendError::wrong_key(format!(
                "wrapped by key {}, not the configured key {}",
                id.name, self.config.key_name
            )));
        }
        id.version.filter(|v| !v.is_empty()).ok_or_else(|| {
            BackendError::invalid_input(format!("key version {kid:?} names no version"))
        })
    }

    // The SDK model is #[non_exhaustive]: it can only be built from Default.
    #[allow(clippy::field_reassign_with_default)]
    fn operation_parameters(
        &self,
        value: &SecretBytes,
    ) -> Result<RequestContent<KeyOperationParameters>, BackendError> {
        let mut params = KeyOperationParameters::default();
        params.algorithm = Some(self.config.algorithm.sdk());
        params.value = Some(value.expose().to_vec());
        params
            .try_into()
            .map_err(|_| BackendError::internal("cannot encode the key operation request"))
    }
}

/// Key Vault's smallest RSA key is 2048 bits: assumed until the key has been fetched.
const MIN_RSA_MODULUS_LEN: usize = 256;

impl AzureBackend {
    /// Remembers the key's RSA modulus length from a fetched key.
    fn note_key_size(&self, key: &Key) {
        if let Some(n) = key.key.as_ref().and_then(|jwk| jwk.n.as_ref()) {
            // A leading zero byte is sign padding, not part of the modulus.
            let len = n.iter().skip_while(|b| **b == 0).count();
            if len > 0 {
                self.modulus_len.store(len, Ordering::Relaxed);
            }
        }
    }
}

/// Largest seed `algorithm` can wrap once the AAD digest is in front of it: RSA-OAEP takes
/// at most k − 2·hLen − 2 bytes for a k-byte modulus (RFC 8017 §7.1.1).
fn max_seed_len(algorithm: WrapAlgorithm, modulus_len: usize) -> usize {
    let oaep_overhead = match algorithm {
        WrapAlgorithm::RsaOaep256 => 2 * 32 + 2,
        WrapAlgorithm::RsaOaep => 2 * 20 + 2,
        // AES key wrap has no practical bound below the plugin's own.
        _ => return usize::MAX,
    };
    modulus_len.saturating_sub(oaep_overhead + binding::DIGEST_LEN)
}

#[async_trait]
impl KeyEncryptionBackend for AzureBackend {
    fn kind(&self) -> &'static str {
        "azure"
    }

    fn max_plaintext_len(&self) -> usize {
        max_seed_len(
            self.config.algorithm,
            self.modulus_len.load(Ordering::Relaxed),
        )
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        let key = self.get_key().await?;
        self.note_key_size(&key);
        self.kid_of(&key)
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        if plaintext.is_empty() {
            return Err(BackendError::invalid_input("cannot wrap an empty seed"));
        }
        let sealed = binding::BINDING.seal(plaintext, aad);
        if self.config.algorithm.needs_8_byte_blocks() && !sealed.len().is_multiple_of(8) {
            return Err(BackendError::invalid_input(format!(
                "{} wraps multiples of 8 bytes; the seed is {} bytes",
                self.config.algorithm.as_str(),
                plaintext.len()
            )));
        }
        let params = self.operation_parameters(&sealed)?;
        let options = KeyClientWrapKeyOptions {
            key_version: self.config.pinned_version().map(str::to_owned),
            method_options: ClientMethodOptions::default(),
        };
        let fut = async {
            self.client
                .wrap_key(&self.config.key_name, params, Some(options))
                .await?
                .into_model()
        };
        let result = self.call(Operation::Wrap, fut).await?;
        let kid = result
            .kid
            .ok_or_else(|| BackendError::internal("wrapKey: answer has no kid"))?;
        let ciphertext = result
            .result
            .ok_or_else(|| BackendError::internal("wrapKey: answer has no value"))?;
        if ciphertext.is_empty() {
            return Err(BackendError::internal("wrapKey: answer has an empty value"));
        }
        Ok(WrappedKey::new(KeyVersion::new(kid), ciphertext))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        if wrapped.ciphertext.is_empty() {
            return Err(BackendError::invalid_input("wrapped key is empty"));
        }
        let version = self.version_for_unwrap(wrapped)?;
        let params = self.operation_parameters(&SecretBytes::copy_from(&wrapped.ciphertext))?;
        let fut = async {
            self.client
                .unwrap_key(&self.config.key_name, &version, params, None)
                .await?
                .into_model()
        };
        let result = self.call(Operation::Unwrap, fut).await?;
        let value = SecretBytes::new(
            result
                .result
                .ok_or_else(|| BackendError::internal("unwrapKey: answer has no value"))?,
        );
        binding::BINDING.open(&value, aad)
    }

    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        let key = self.get_key().await?;
        self.note_key_size(&key);
        self.check_usable(&key, OffsetDateTime::now_utc())?;
        self.kid_of(&key)
    }

    /// Get Key on the version wrap uses (enabled, exp, recoveryLevel), then on each older
    /// version Decrypts used (enabled). Any failed read fails the whole answer, so core keeps
    /// the last complete one.
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let key = self.get_key().await?;
        let kid = self.kid_of(&key)?;
        let current = self.version_of(kid.as_str()).ok();
        let key_id = format!("{}/keys/{}", self.config.vault_base(), self.config.key_name);
        let mut findings = lifecycle::current(
            key.attributes.as_ref(),
            kid.as_str(),
            &key_id,
            OffsetDateTime::now_utc(),
            self.config.expiry_warning,
        );
        let mut older: Vec<(String, &str)> = in_use
            .iter()
            .filter_map(|v| Some((self.version_of(v.as_str()).ok()?, v.as_str())))
            .filter(|(version, _)| current.as_ref() != Some(version))
            .collect();
        older.sort_unstable();
        older.dedup_by(|a, b| a.0 == b.0);
        for (version, kid) in older {
            let key = self.get_key_at(Some(&version)).await?;
            findings.extend(lifecycle::older(key.attributes.as_ref(), kid));
        }
        Ok(KeyLifecycle::of(findings))
    }

    fn credential_expiry(&self) -> Option<SystemTime> {
        self.token_file.as_ref().and_then(|t| t.expiry())
    }

    fn describe(&self) -> String {
        let version = self.config.pinned_version().unwrap_or("current");
        let mut s = format!(
            "azure key vault {} key {} version {} algorithm {} auth {}",
            self.config.vault_base(),
            self.config.key_name,
            version,
            self.config.algorithm.as_str(),
            self.config.auth.method()
        );
        s.push_str("; ");
        s.push_str(&self.network);
        s
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn rsa_oaep_limits_leave_room_for_the_aad_digest() {
        // RSA-2048 with OAEP-SHA-256: 256 − 66 = 190 bytes, of which 32 are the AAD digest.
        assert_eq!(max_seed_len(WrapAlgorithm::RsaOaep256, 256), 158);
        assert_eq!(max_seed_len(WrapAlgorithm::RsaOaep, 256), 182);
        assert_eq!(max_seed_len(WrapAlgorithm::RsaOaep256, 512), 414);
        assert_eq!(max_seed_len(WrapAlgorithm::A256Kw, 0), usize::MAX);
    }
}
