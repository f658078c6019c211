//! The kube-apiserver KMS v2 envelope, byte for byte (see README.md for the upstream files):
//!
//! ```text
//! etcd value = "k8s:enc:kms:v2:" + provider + ":" + EncryptedObject (protobuf)
//! EncryptedObject.encryptedData = info (32 random bytes) || nonce (12) || AES-256-GCM(ct || tag)
//!   key = HKDF-SHA256-Expand(prk = seed, info, 32 bytes)    (no Extract step)
//!   AAD = the etcd key, e.g. "/registry/secrets/ns/name"
//! ```

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use prost::Message;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// `EncryptedDEKSourceType_HKDF_SHA256_XNONCE_AES_GCM_SEED`.
pub const SOURCE_TYPE_HKDF_SEED: i32 = 1;
/// The seed length the apiserver generates (`MinSeedSizeExtendedNonceGCM`).
pub const SEED_LEN: usize = 32;
const INFO_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

pub use polykms_core::storage::EncryptedObject;

/// Errors reading or writing an envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The value does not start with `k8s:enc:kms:v2:<provider>:`.
    #[error("not a KMS v2 value of provider {0:?}")]
    NotKmsV2(String),
    /// The EncryptedObject does not decode.
    #[error("EncryptedObject does not decode: {0}")]
    Decode(String),
    /// Only HKDF seeds are written by apiservers >= 1.29 and by this emulator.
    #[error("encryptedDEKSourceType {0} is not the HKDF seed type")]
    SourceType(i32),
    /// Too short, wrong seed, wrong etcd key (AAD) or tampered.
    #[error("AES-GCM open failed: wrong seed, wrong etcd key or tampered data")]
    Open,
    /// The seed has the wrong length.
    #[error("seed is {0} bytes, want {SEED_LEN}")]
    SeedLength(usize),
}

/// The value prefix the apiserver's KMS v2 transformer writes.
pub fn value_prefix(provider: &str) -> Vec<u8> {
    format!("k8s:enc:kms:v2:{provider}:").into_bytes()
}

/// A data-encryption seed: per-object keys are derived from it.
pub struct Seed(Zeroizing<[u8; SEED_LEN]>);

impl Seed {
    /// 32 fresh random bytes, as `GenerateKey(MinSeedSizeExtendedNonceGCM)`.
    pub fn generate() -> Self {
        let mut s = Zeroizing::new([0u8; SEED_LEN]);
        rand::rng().fill_bytes(s.as_mut());
        Seed(s)
    }

    /// A seed returned by the plugin's Decrypt.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let arr: [u8; SEED_LEN] = bytes
            .try_into()
            .map_err(|_| EnvelopeError::SeedLength(bytes.len()))?;
        Ok(Seed(Zeroizing::new(arr)))
    }

    /// The raw bytes, to hand to the plugin's Encrypt.
    pub fn expose(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn cipher(&self, info: &[u8]) -> Aes256Gcm {
        let hk = Hkdf::<Sha256>::from_prk(self.0.as_ref())
            .expect("a 32-byte seed is a valid HKDF-SHA256 PRK");
        let mut key = Zeroizing::new([0u8; 32]);
        hk.expand(info, key.as_mut())
            .expect("32 bytes is within HKDF-SHA256's output limit");
        Aes256Gcm::new_from_slice(key.as_ref()).expect("the derived key is 32 bytes")
    }

    /// `encryptedData` for `plaintext` stored under the etcd key `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut head = [0u8; INFO_LEN + NONCE_LEN];
        rand::rng().fill_bytes(&mut head);
        let (info, nonce) = head.split_at(INFO_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split gives NONCE_LEN bytes");
        let sealed = self
            .cipher(info)
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(head.len() + sealed.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&sealed);
        out
    }

    /// The plaintext of `encryptedData` stored under the etcd key `aad`.
    pub fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        if data.len() < INFO_LEN + NONCE_LEN + TAG_LEN {
            return Err(EnvelopeError::Open);
        }
        let (info, rest) = data.split_at(INFO_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| EnvelopeError::Open)?;
        self.cipher(info)
            .decrypt(&Nonce::from(nonce), Payload { msg: sealed, aad })
            .map_err(|_| EnvelopeError::Open)
    }
}

/// The full etcd value for an object.
pub fn encode_value(provider: &str, object: &EncryptedObject) -> Vec<u8> {
    let mut out = value_prefix(provider);
    object.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// The KMS v1 etcd value (`storage/value/encrypt/envelope/envelope.go`, `TransformToStorage`):
/// `k8s:enc:kms:v1:<provider>:` + 2-byte big-endian length of the plugin's ciphertext of the
/// DEK + that ciphertext + the encrypted object. (Upstream encrypts the object with AES-CBC or
/// AES-GCM under the DEK; the emulator seals it as its v2 data, which nothing outside reads.)
pub fn encode_v1_value(provider: &str, dek_ciphertext: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = format!("k8s:enc:kms:v1:{provider}:").into_bytes();
    let len = u16::try_from(dek_ciphertext.len()).expect("plugin ciphertexts are <= 1024 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(dek_ciphertext);
    out.extend_from_slice(data);
    out
}

/// The DEK ciphertext and the encrypted object of a KMS v1 value of `provider`, if it is one.
pub fn decode_v1_value<'a>(provider: &str, value: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let body = value.strip_prefix(format!("k8s:enc:kms:v1:{provider}:").as_bytes())?;
    let (len, rest) = body.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Parses an etcd value written for `provider`.
pub fn decode_value(provider: &str, value: &[u8]) -> Result<EncryptedObject, EnvelopeError> {
    let body = value
        .strip_prefix(value_prefix(provider).as_slice())
        .ok_or_else(|| EnvelopeError::NotKmsV2(provider.to_string()))?;
    let object = EncryptedObject::decode(body).map_err(|e| EnvelopeError::Decode(e.to_string()))?;
    if object.encrypted_dek_source_type != SOURCE_TYPE_HKDF_SEED {
        return Err(EnvelopeError::SourceType(object.encrypted_dek_source_type));
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_has_the_upstream_layout_and_round_trips() {
        let seed = Seed::generate();
        let data = seed.seal(b"hello", b"/registry/secrets/ns/a");
        assert_eq!(data.len(), INFO_LEN + NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(
            seed.open(&data, b"/registry/secrets/ns/a").as_deref(),
            Ok(&b"hello"[..])
        );
    }

    #[test]
    fn open_fails_under_another_etcd_key_or_seed() {
        let seed = Seed::generate();
        let data = seed.seal(b"x", b"/registry/secrets/ns/a");
        assert_eq!(
            seed.open(&data, b"/registry/secrets/ns/b"),
            Err(EnvelopeError::Open)
        );
        assert_eq!(
            Seed::generate().open(&data, b"/registry/secrets/ns/a"),
            Err(EnvelopeError::Open)
        );
        assert_eq!(
            seed.open(&data[..40], b"/registry/secrets/ns/a"),
            Err(EnvelopeError::Open)
        );
    }

    #[test]
    fn derivation_is_hkdf_expand_only_with_the_info_prefix() {
        // RFC 5869 A.1: its PRK and info, and the first 32 bytes of its OKM. The apiserver calls
        // Go's hkdf.Expand with the seed as PRK, so Expand alone must reproduce the RFC's OKM.
        let prk = hex_bytes("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5");
        let info = hex_bytes("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 32];
        Hkdf::<Sha256>::from_prk(&prk)
            .expect("32-byte prk")
            .expand(&info, &mut okm)
            .expect("32 bytes");
        assert_eq!(
            okm.to_vec(),
            hex_bytes("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf")
        );
    }

    #[test]
    fn value_round_trips_through_prefix_and_protobuf() {
        let object = EncryptedObject {
            encrypted_data: vec![1, 2, 3],
            key_id: "kid".into(),
            encrypted_dek_source: vec![4],
            annotations: std::collections::HashMap::from([("a.polykms.io".into(), b"v".to_vec())]),
            encrypted_dek_source_type: SOURCE_TYPE_HKDF_SEED,
        };
        let value = encode_value("polykms", &object);
        assert!(value.starts_with(b"k8s:enc:kms:v2:polykms:"));
        assert_eq!(decode_value("polykms", &value), Ok(object));
        assert!(matches!(
            decode_value("other", &value),
            Err(EnvelopeError::NotKmsV2(_))
        ));
    }

    #[test]
    fn kms_v1_values_carry_the_dek_length_then_the_dek_then_the_data() {
        let value = encode_v1_value("p", b"DEK", b"data");
        assert_eq!(value, b"k8s:enc:kms:v1:p:\x00\x03DEKdata".to_vec());
        assert_eq!(
            decode_v1_value("p", &value),
            Some((&b"DEK"[..], &b"data"[..]))
        );
        assert_eq!(decode_v1_value("q", &value), None);
        assert_eq!(decode_v1_value("p", b"k8s:enc:kms:v1:p:\x00\x09DEK"), None);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex is valid"))
            .collect()
    }
}
