//! `AwsBackend`: KMS Encrypt / Decrypt with an EncryptionContext, DescribeKey as the probe.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyMetadata;
use polykms_backend::{
    BackendError, KeyEncryptionBackend, KeyLifecycle, KeyVersion, SecretBytes, WrappedKey,
};

use crate::client::{self, ExpiryRecorder};
use crate::config::AwsConfig;
use crate::context::encryption_context;
use crate::error::from_sdk_error;
use crate::key::{KeyRef, KmsArn};
use crate::lifecycle::{self, LastDescribe};
use crate::version::{self, Material};

/// KMS accepts at most 4096 bytes of plaintext per Encrypt.
const MAX_PLAINTEXT: usize = 4096;
/// KMS ciphertext blobs are at most 6144 bytes.
const MAX_CIPHERTEXT: usize = 6144;
/// Bound on ListKeyRotations pages (1000 entries each) so a misbehaving endpoint cannot loop us.
const MAX_ROTATION_PAGES: usize = 16;

/// Wraps seeds with an AWS KMS symmetric key.
pub struct AwsBackend {
    client: aws_sdk_kms::Client,
    key: KeyRef,
    key_id: String,
    region: String,
    /// The KMS endpoint: the override, or what the SDK resolves (kms-fips.… with use_fips_endpoint).
    endpoint: String,
    /// Proxy and CA summary for `describe`.
    network: String,
    assume_role_arn: Option<String>,
    context: BTreeMap<String, String>,
    expiry: ExpiryRecorder,
    /// The version found by the last DescribeKey; labels what `wrap` produces.
    current: Mutex<Option<KeyVersion>>,
    /// Set once ListKeyRotations was refused, so the fallback is logged once, not every probe.
    rotations_fallback_logged: AtomicBool,
    /// The probe's DescribeKey answer, for the lifecycle read that follows it.
    last_describe: LastDescribe,
}

impl fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsBackend")
            .field("key", &self.key)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("assume_role_arn", &self.assume_role_arn)
            .field("encryption_context", &self.context)
            .finish_non_exhaustive()
    }
}

impl AwsBackend {
    /// Validates config and builds the client. Must NOT fail because the key store is down right
    /// now (that is reported by probe()/health later); fails only on bad config/credentials files
    /// (kind Config) with a message naming the config field.
    pub async fn connect(config: &AwsConfig) -> Result<Self, BackendError> {
        Self::connect_with(config, None).await
    }

    /// `connect` with the credentials provider replaced (tests).
    pub(crate) async fn connect_with(
        config: &AwsConfig,
        credentials: Option<SharedCredentialsProvider>,
    ) -> Result<Self, BackendError> {
        let key = config.validate()?;
        let built = client::build(config, &key, credentials).await?;
        Ok(AwsBackend {
            client: built.client,
            key,
            key_id: config.key.clone(),
            region: built.region,
            network: built.network,
            endpoint: built.endpoint,
            assume_role_arn: config.assume_role_arn.clone(),
            context: config.encryption_context.clone(),
            expiry: built.expiry,
            current: Mutex::new(None),
            rotations_fallback_logged: AtomicBool::new(false),
            last_describe: LastDescribe::default(),
        })
    }

    /// DescribeKey (and ListKeyRotations where needed): checks the key is usable and returns,
    /// and remembers, its current version.
    async fn inspect(&self) -> Result<KeyVersion, BackendError> {
        let described = self.describe_key().await;
        self.last_describe.record(described.clone());
        let meta = &described?;
        let arn = meta
            .arn()
            .ok_or_else(|| BackendError::internal("DescribeKey: response has no key ARN"))?;
        version::check_usable(meta)?;
        let material = match meta.current_key_material_id() {
            Some(id) => Material::Id(id.to_owned()),
            None => self.rotation_material(arn).await?,
        };
        let v = version::key_version(arn, &material);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(v.clone());
        Ok(v)
    }

    /// DescribeKey of the configured key, checked to be the key asked for.
    async fn describe_key(&self) -> Result<KeyMetadata, BackendError> {
        let out = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| from_sdk_error("DescribeKey", e))?;
        let meta = out
            .key_metadata
            .ok_or_else(|| BackendError::internal("DescribeKey: response has no KeyMetadata"))?;
        let arn = meta
            .arn()
            .ok_or_else(|| BackendError::internal("DescribeKey: response has no key ARN"))?;
        if self.key.names_key_arn(arn) == Some(false) {
            return Err(BackendError::internal(format!(
                "DescribeKey: asked for {:?}, KMS answered for {arn}",
                self.key
            )));
        }
        Ok(meta)
    }

    /// The newest rotation from ListKeyRotations, or `Initial` where listing is refused or
    /// unsupported. Transient failures are errors: guessing would flip the key version.
    async fn rotation_material(&self, arn: &str) -> Result<Material, BackendError> {
        let mut entries = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_ROTATION_PAGES {
            let res = self
                .client
                .list_key_rotations()
                .key_id(arn)
                .set_marker(marker.take())
                .send()
                .await;
            let page = match res {
                Ok(page) => page,
                Err(e) if rotations_not_listable(&e) => {
                    if !self.rotations_fallback_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            key = arn,
                            code = e.code().unwrap_or("-"),
                            "ListKeyRotations is not allowed or not supported; the key version \
                             is the key ARN alone and will not follow rotations"
                        );
                    }
                    return Ok(Material::Initial);
                }
                Err(e) => return Err(from_sdk_error("ListKeyRotations", e)),
            };
            entries.extend_from_slice(page.rotations());
            match page.next_marker() {
                Some(next) if page.truncated() => marker = Some(next.to_owned()),
                _ => return Ok(version::current_material(&entries)),
            }
        }
        Err(BackendError::internal("ListKeyRotations: too many pages"))
    }

    /// The version to record for a ciphertext Encrypt made with `arn`.
    async fn version_for_wrap(&self, arn: &str) -> Result<KeyVersion, BackendError> {
        let cached = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(v) = cached.filter(|v| version::arn_of(v) == arn) {
            return Ok(v);
        }
        let v = self.inspect().await?;
        if version::arn_of(&v) == arn {
            Ok(v)
        } else {
            // The alias moved between Encrypt and DescribeKey: record what Encrypt used.
            Ok(version::key_version(arn, &Material::Initial))
        }
    }
}

/// ListKeyRotations refused for good: no permission, key type without rotation, or an
/// endpoint that does not implement the operation.
fn rotations_not_listable<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    let code = err.code().unwrap_or("");
    let status = err.raw_response().map(|r| r.status().as_u16());
    matches!(
        code,
        "AccessDeniedException"
            | "AccessDenied"
            | "UnsupportedOperationException"
            | "UnknownOperationException"
            | "InvalidAction"
            | "NotImplemented"
    ) || (matches!(err, SdkError::ServiceError(_)) && matches!(status, Some(404 | 501)))
}

#[async_trait]
impl KeyEncryptionBackend for AwsBackend {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn max_plaintext_len(&self) -> usize {
        MAX_PLAINTEXT
    }

    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        self.inspect().await
    }

    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(BackendError::invalid_input(format!(
                "plaintext is {} bytes; KMS Encrypt takes 1 to {MAX_PLAINTEXT}",
                plaintext.len()
            )));
        }
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext.expose()))
            .set_encryption_context(Some(encryption_context(&self.context, aad)))
            .send()
            .await
            .map_err(|e| from_sdk_error("Encrypt", e))?;
        let arn = out
            .key_id()
            .ok_or_else(|| BackendError::internal("Encrypt: response has no KeyId"))?;
        if KmsArn::parse(arn).is_none() || self.key.names_key_arn(arn) == Some(false) {
            return Err(BackendError::internal(format!(
                "Encrypt: asked for {:?}, KMS answered with key {arn:?}",
                self.key
            )));
        }
        let ciphertext = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| BackendError::internal("Encrypt: response has no CiphertextBlob"))?;
        let key_version = self.version_for_wrap(arn).await?;
        Ok(WrappedKey::new(key_version, ciphertext))
    }

    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let ct = &wrapped.ciphertext;
        if ct.is_empty() || ct.len() > MAX_CIPHERTEXT {
            return Err(BackendError::invalid_input(format!(
                "wrapped key is {} bytes; KMS ciphertexts are 1 to {MAX_CIPHERTEXT}",
                ct.len()
            )));
        }
        // A version naming another key is refused before any call: Decrypt is pinned to ours.
        let recorded = version::arn_of(&wrapped.key_version);
        if KmsArn::parse(recorded).is_some() && self.key.names_key_arn(recorded) == Some(false) {
            return Err(BackendError::wrong_key(format!(
                "wrapped under key {recorded}, this backend uses {:?}",
                self.key
            )));
        }
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ct.as_slice()))
            .set_encryption_context(Some(encryption_context(&self.context, aad)))
            .send()
            .await
            .map_err(|e| from_sdk_error("Decrypt", e))?;
        if let Some(arn) = out.key_id()
            && self.key.names_key_arn(arn) == Some(false)
        {
            return Err(BackendError::wrong_key(format!(
                "Decrypt used key {arn}, this backend uses {:?}",
                self.key
            )));
        }
        out.plaintext
            .map(|b| SecretBytes::new(b.into_inner()))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| BackendError::internal("Decrypt: response has no Plaintext"))
    }

    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        self.inspect().await
    }

    /// The key's state from the probe's DescribeKey (or a DescribeKey of its own when no probe
    /// just ran). `in_use` is not read: key material versions share the key's state.
    async fn key_lifecycle(&self, _in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let meta = match self.last_describe.take_fresh() {
            Some(outcome) => outcome?,
            None => self.describe_key().await?,
        };
        Ok(lifecycle::of_metadata(&meta))
    }

    fn credential_expiry(&self) -> Option<SystemTime> {
        self.expiry.expiry()
    }

    fn describe(&self) -> String {
        let endpoint = &self.endpoint;
        let role = self
            .assume_role_arn
            .as_deref()
            .map(|r| format!(", assuming {r}"))
            .unwrap_or_default();
        format!(
            "aws kms key {:?} in {} via {endpoint}{role}; {}",
            self.key, self.region, self.network
        )
    }
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
