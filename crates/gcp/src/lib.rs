//! The GCP backend: seeds are wrapped by a Cloud KMS symmetric CryptoKey.
//!
//! Wrap is `cryptoKeys.encrypt` on the CryptoKey (KMS uses its primary version) with the
//! plugin AAD as `additional_authenticated_data`; unwrap is `cryptoKeys.decrypt` with the same
//! AAD, which works for every version still ENABLED. The key version is the primary
//! CryptoKeyVersion's resource name, so rotating the primary changes core's key_id. Every call
//! carries and checks CRC32C checksums as Google's data-integrity guidelines ask.
//!
//! The client is the official `google-cloud-kms-v1` (REST/JSON). It does not retry here:
//! core's retry policy owns retries within the apiserver's deadline.

mod client;
mod config;
mod error;
mod fips;
mod integrity;
mod lifecycle;
mod transport;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key::CryptoKeyPurpose;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState;
use google_cloud_kms_v1::model::{CryptoKey, CryptoKeyVersion};
use polykms_backend::{
    BackendError, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes, WrappedKey,
};

pub use config::{DEFAULT_TIMEOUT_MS, GcpAuth, GcpConfig};
use error::{Operation, classify};
use integrity::{check_returned_crc, check_verified, crc32c, secret_bytes, take_secret};

/// Largest plaintext Cloud KMS encrypts with a SOFTWARE key (64 KiB); HSM keys allow 8 KiB
/// for plaintext and AAD together, which KMS itself enforces.
/// <https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt>
const MAX_PLAINTEXT: usize = 64 * 1024;

/// A Cloud KMS CryptoKey used through `google-cloud-kms-v1`.
pub struct GcpBackend {
    client: KeyManagementService,
    key: String,
    /// Prefix of every version name of `key`, to check what Encrypt says it used.
    version_prefix: String,
    endpoint: Option<String>,
    /// Proxy and CA summary for `describe`.
    network: String,
    auth_method: &'static str,
    timeout: Duration,
}

impl fmt::Debug for GcpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpBackend")
            .field("key", &self.key)
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth_method)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GcpBackend {
    /// Validates config and builds the client. Does not call Cloud KMS: an unreachable key
    /// store is reported by `probe()` later. Fails only on bad config or credentials files,
    /// with kind `Config` and a message naming the field.
    pub async fn connect(config: &GcpConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let (client, network) = client::build_client(config).await?;
        Ok(GcpBackend {
            client,
            key: config.key.clone(),
            version_prefix: format!("{}/cryptoKeyVersions/", config.key),
            endpoint: config.endpoint.clone(),
            network,
            auth_method: config.auth.method(),
            timeout: config.timeout(),
        })
    }

    /// The CryptoKey resource name this backend uses.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Runs one client call under the configured timeout, which also bounds token refresh
    /// (the client's attempt timeout covers only the HTTP exchange).
    async fn call<T>(
        &self,
        op: Operation,
        fut: impl Future<Output = google_cloud_kms_v1::Result<T>>,
    ) -> Result<T, BackendError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(op, &e)),
            Err(_) => Err(BackendError::timeout(format!(
                "cloud kms call did not finish within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    async fn crypto_key(&self) -> Result<CryptoKey, BackendError> {
        self.call(
            Operation::GetCryptoKey,
            self.client
                .get_crypto_key()
                .set_name(self.key.clone())
                .send(),
        )
        .await
    }

    async fn crypto_key_version(&self, name: &str) -> Result<CryptoKeyVersion, BackendError> {
        self.call(
            Operation::GetCryptoKeyVersion,
            self.client
                .get_crypto_key_version()
                .set_name(name.to_owned())
                .send(),
        )
        .await
    }
}

/// The primary version's name, or why the key cannot wrap now.
fn primary_version(key: &CryptoKey, require_usable: bool) -> Result<KeyVersion, BackendError> {
    if require_usable && key.purpose != CryptoKeyPurpose::EncryptDecrypt {
        return Err(BackendError::key_unavailable(format!(
            "{}: purpose is {}, not ENCRYPT_DECRYPT",
            key.name,
            key.purpose.name().unwrap_or("unknown")
        )));
    }
    let primary = key
        .primary
        .as_ref()
        .filter(|p| !p.name.is_empty())
        .ok_or_else(|| {
            BackendError::key_unavailable(format!("{}: the key has no primary version", key.name))
        })?;
    if require_usable && primary.state != CryptoKeyVersionState::Enabled {
        return Err(BackendError::key_unavailable(format!(
            "{}: primary version is {}, not ENABLED",
            primary.name,
            primary.state.name().unwrap_or("in an unknown state")
        )));
    }
    Ok(KeyVersion::new(primary.name.clone()))
}

#[async_trait]
impl KeyEncryptionBackend for GcpBackend {
    fn kind(&self) -> &'static str {
        "gcp"
    }

    fn max_plaintext_len(&self) -> usize {
        MAX_PLAINTEXT
    }

    /// GetCryptoKey → `primary.name`, e.g. `projects/…/cryptoKeys/K/cryptoKeyVersions/3`.
    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        primary_version(&self.crypto_key().await?, false)
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(BackendError::invalid_input(format!(
                "plaintext is {} bytes, Cloud KMS encrypts at most {MAX_PLAINTEXT}",
                plaintext.len()
            )));
        }
        let request = self
            .client
            .encrypt()
            .set_name(self.key.clone())
            .set_plaintext(secret_bytes(plaintext))
            .set_plaintext_crc32c(crc32c(plaintext.expose()))
            .set_additional_authenticated_data(aad.to_vec())
            .set_additional_authenticated_data_crc32c(crc32c(aad));
        let response = self.call(Operation::Encrypt, request.send()).await?;
        check_verified(
            "verified_plaintext_crc32c",
            response.verified_plaintext_crc32c,
        )?;
        check_verified(
            "verified_additional_authenticated_data_crc32c",
            response.verified_additional_authenticated_data_crc32c,
        )?;
        check_returned_crc(
            "ciphertext_crc32c",
            &response.ciphertext,
            response.ciphertext_crc32c,
        )?;
        // The reference says to check `name` to verify the intended key was used.
        let used = response.name.strip_prefix(&self.version_prefix);
        if used.is_none_or(str::is_empty) {
            return Err(BackendError::integrity(format!(
                "cloud kms encrypt answered with version {:?}, not a version of {}",
                response.name, self.key
            )));
        }
        Ok(WrappedKey::new(
            KeyVersion::new(response.name),
            response.ciphertext.to_vec(),
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        if wrapped.ciphertext.is_empty() {
            return Err(BackendError::invalid_input("wrapped key is empty"));
        }
        // Decrypt names the CryptoKey: the ciphertext itself tells KMS which version made it.
        let request = self
            .client
            .decrypt()
            .set_name(self.key.clone())
            .set_ciphertext(wrapped.ciphertext.clone())
            .set_ciphertext_crc32c(crc32c(&wrapped.ciphertext))
            .set_additional_authenticated_data(aad.to_vec())
            .set_additional_authenticated_data_crc32c(crc32c(aad));
        let response = self.call(Operation::Decrypt, request.send()).await?;
        let plaintext = take_secret(response.plaintext);
        check_returned_crc(
            "plaintext_crc32c",
            plaintext.expose(),
            response.plaintext_crc32c,
        )?;
        Ok(plaintext)
    }

    /// GetCryptoKey, then: purpose ENCRYPT_DECRYPT and primary version ENABLED.
    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        primary_version(&self.crypto_key().await?, true)
    }

    /// GetCryptoKey for the primary version, then GetCryptoKeyVersion for each older version
    /// that Decrypts used (few: one per rotation still holding data). Any failed read fails
    /// the whole answer, so core keeps the last complete one.
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let key = self.crypto_key().await?;
        let primary = key.primary.as_ref().map_or("", |p| p.name.as_str());
        let mut older = Vec::new();
        for name in lifecycle::older_in_use(in_use, &self.version_prefix, primary) {
            older.push(self.crypto_key_version(name).await?);
        }
        Ok(KeyLifecycle::of(lifecycle::findings(&key, &older)))
    }

    // Access tokens are short-lived and refreshed by the client library on its own; a service
    // account key does not expire on a schedule we can read. Nothing to report.
    fn credential_expiry(&self) -> Option<std::time::SystemTime> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "gcp cloud kms key={} endpoint={} auth={} timeout={}ms; {}",
            self.key,
            self.endpoint
                .as_deref()
                .unwrap_or("https://cloudkms.googleapis.com (default)"),
            self.auth_method,
            self.timeout.as_millis(),
            self.network
        )
    }
}

#[cfg(test)]
mod tests;
