//! Test backends shared by the integration tests of this crate.

use async_trait::async_trait;
use polykms_backend::{BackendError, KeyEncryptionBackend, KeyVersion, SecretBytes, WrappedKey};
use polykms_local::LocalBackend;

/// Wraps with the local backend and pads the result to `pad` bytes, so an envelope with a
/// few of these overflows 1024 bytes and carries wraps in annotations (as RSA-4096 wraps do).
#[derive(Debug)]
pub struct PaddedBackend {
    pub inner: LocalBackend,
    pub pad: usize,
}

#[async_trait]
impl KeyEncryptionBackend for PaddedBackend {
    fn kind(&self) -> &'static str {
        "padded"
    }
    fn max_plaintext_len(&self) -> usize {
        self.inner.max_plaintext_len()
    }
    async fn key_version(&self) -> Result<KeyVersion, BackendError> {
        self.inner.key_version().await
    }
    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError> {
        let mut w = self.inner.wrap(plaintext, aad).await?;
        let len = w.ciphertext.len();
        w.ciphertext.resize(len.max(self.pad - 2), 0xa5);
        w.ciphertext.extend_from_slice(&(len as u16).to_be_bytes());
        Ok(w)
    }
    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let ct = &wrapped.ciphertext;
        let split = ct
            .len()
            .checked_sub(2)
            .ok_or_else(|| BackendError::integrity("short"))?;
        let len = u16::from_be_bytes([ct[split], ct[split + 1]]) as usize;
        let inner = ct
            .get(..len)
            .filter(|_| len <= split)
            .ok_or_else(|| BackendError::integrity("length"))?;
        let unpadded = WrappedKey::new(wrapped.key_version.clone(), inner.to_vec());
        self.inner.unwrap(&unpadded, aad).await
    }
}
