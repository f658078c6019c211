//! Binding a seed to its AAD where the key store's wrap has no associated data (RSA-OAEP and
//! AES key wrap on Key Vault, AES key wrap on a PKCS#11 token): the binding travels inside the
//! wrapped value. We wrap `SHA-256(domain || aad) || seed` and, after the unwrap, refuse a
//! value whose digest does not match, so a ciphertext moved to a plugin with another provider
//! name fails with `WrongKey`, as with the backends that bind AAD natively. Like them, it does
//! not stop someone who holds unwrap permission and calls the key store directly.

use subtle::ConstantTimeEq;

use crate::{BackendError, SecretBytes};

/// Length of the AAD digest in front of the seed.
pub const AAD_DIGEST_LEN: usize = 32;

/// `SHA-256(domain || aad) || seed` sealing under a backend's own domain string.
#[derive(Debug, Clone, Copy)]
pub struct AadDigestBinding {
    domain: &'static [u8],
}

impl AadDigestBinding {
    /// A binding whose digests start with `domain` (distinct per backend and version).
    pub const fn new(domain: &'static [u8]) -> Self {
        AadDigestBinding { domain }
    }

    fn digest(&self, aad: &[u8]) -> [u8; AAD_DIGEST_LEN] {
        let mut h = crate::crypto::Sha256::new();
        h.update(self.domain);
        h.update(aad);
        h.finish()
    }

    /// The value to wrap: the AAD digest followed by the seed.
    pub fn seal(&self, seed: &SecretBytes, aad: &[u8]) -> SecretBytes {
        let mut out = Vec::with_capacity(AAD_DIGEST_LEN + seed.len());
        out.extend_from_slice(&self.digest(aad));
        out.extend_from_slice(seed.expose());
        SecretBytes::new(out)
    }

    /// The seed inside an unwrapped value, if it was sealed under `aad`.
    pub fn open(&self, unwrapped: &SecretBytes, aad: &[u8]) -> Result<SecretBytes, BackendError> {
        let bytes = unwrapped.expose();
        if bytes.len() < AAD_DIGEST_LEN {
            return Err(BackendError::wrong_key(
                "unwrapped value is not a polykms seal",
            ));
        }
        let (tag, seed) = bytes.split_at(AAD_DIGEST_LEN);
        if !bool::from(tag.ct_eq(&self.digest(aad))) {
            return Err(BackendError::wrong_key(
                "unwrapped seed is bound to another context (AAD)",
            ));
        }
        Ok(SecretBytes::copy_from(seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const A: AadDigestBinding = AadDigestBinding::new(b"test a\0");
    const B: AadDigestBinding = AadDigestBinding::new(b"test b\0");

    #[test]
    fn seal_then_open_returns_the_seed() {
        let seed = SecretBytes::copy_from(&[7u8; 32]);
        let sealed = A.seal(&seed, b"polykms:v1:a");
        assert_eq!(sealed.len(), AAD_DIGEST_LEN + 32);
        assert_eq!(A.open(&sealed, b"polykms:v1:a").unwrap(), seed);
    }

    #[test]
    fn open_rejects_other_aad_other_domain_and_short_values() {
        let sealed = A.seal(&SecretBytes::copy_from(&[1u8; 32]), b"cluster-a");
        for err in [
            A.open(&sealed, b"cluster-b"),
            A.open(&sealed, b""),
            B.open(&sealed, b"cluster-a"),
            A.open(&SecretBytes::copy_from(&[0u8; 8]), b"cluster-a"),
        ] {
            assert_eq!(err.unwrap_err().kind(), ErrorKind::WrongKey);
        }
    }
}
