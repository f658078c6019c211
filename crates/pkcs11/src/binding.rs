//! Binding a key-wrapped seed to its AAD.
//!
//! AES key wrap (RFC 5649) has no associated data, so, as the Azure backend does, the
//! binding travels inside the wrapped value: we wrap `SHA-256(domain || aad) || seed` and,
//! after C_UnwrapKey, refuse a value whose digest does not match. A ciphertext moved to a
//! plugin with another provider name then fails with `WrongKey`.

use polykms_backend::{BackendError, SecretBytes};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const DOMAIN: &[u8] = b"polykms pkcs11 aad v1\0";
/// Length of the AAD digest in front of the seed.
pub(crate) const DIGEST_LEN: usize = 32;

fn digest(aad: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(aad);
    h.finalize().into()
}

/// The value given to C_WrapKey: the AAD digest followed by the seed.
pub(crate) fn seal(seed: &SecretBytes, aad: &[u8]) -> SecretBytes {
    let mut out = Vec::with_capacity(DIGEST_LEN + seed.len());
    out.extend_from_slice(&digest(aad));
    out.extend_from_slice(seed.expose());
    SecretBytes::new(out)
}

/// The seed inside what C_UnwrapKey returned, if it was sealed under `aad`.
pub(crate) fn open(unwrapped: &SecretBytes, aad: &[u8]) -> Result<SecretBytes, BackendError> {
    let bytes = unwrapped.expose();
    if bytes.len() < DIGEST_LEN {
        return Err(BackendError::wrong_key(
            "unwrapped value is not a polykms seal",
        ));
    }
    let (tag, seed) = bytes.split_at(DIGEST_LEN);
    if !bool::from(tag.ct_eq(&digest(aad))) {
        return Err(BackendError::wrong_key(
            "unwrapped seed is bound to another context (AAD)",
        ));
    }
    Ok(SecretBytes::copy_from(seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use polykms_backend::ErrorKind;

    #[test]
    fn seal_then_open_returns_the_seed_and_other_aad_fails() {
        let seed = SecretBytes::copy_from(&[7u8; 32]);
        let sealed = seal(&seed, b"cluster-a");
        assert_eq!(open(&sealed, b"cluster-a").unwrap(), seed);
        assert_eq!(
            open(&sealed, b"cluster-b").unwrap_err().kind(),
            ErrorKind::WrongKey
        );
        let short = SecretBytes::copy_from(&[0u8; 8]);
        assert_eq!(
            open(&short, b"cluster-a").unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }
}
