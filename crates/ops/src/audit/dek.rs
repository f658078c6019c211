//! The plugin ciphertext a stored value carries, in the form the apiserver hands back to
//! Decrypt: the DEK envelope of a KMS v2 `EncryptedObject` (with its keyID and annotations), or
//! the DEK of a KMS v1 value (no key_id, no annotations). The encrypted object itself is never
//! read.

use std::collections::BTreeMap;

use polykms_backend::crypto::Sha256;
use prost::Message;

use super::classify::EncryptedObject;

/// Which KMS API stored the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KmsApi {
    /// `k8s:enc:kms:v1:` (one DEK per object).
    V1,
    /// `k8s:enc:kms:v2:` (a DEK seed shared by many objects).
    V2,
}

/// What a Decrypt of this value's DEK is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDek {
    pub api: KmsApi,
    /// The plugin's ciphertext (`encryptedDEKSource`, or the DEK of a KMS v1 value).
    pub ciphertext: Vec<u8>,
    /// KMS v2 annotations (empty for KMS v1).
    pub annotations: BTreeMap<String, Vec<u8>>,
    /// The keyID stored with a KMS v2 value; None for KMS v1, whose value has none.
    pub key_id: Option<String>,
}

impl StoredDek {
    /// One digest per distinct Decrypt request: values that share it share one DEK envelope
    /// and need one unwrap, as the apiserver's DEK cache does.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&[match self.api {
            KmsApi::V1 => 1,
            KmsApi::V2 => 2,
        }]);
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(
            &mut h,
            self.key_id.as_deref().unwrap_or_default().as_bytes(),
        );
        field(&mut h, &self.ciphertext);
        for (k, v) in &self.annotations {
            field(&mut h, k.as_bytes());
            field(&mut h, v);
        }
        h.finish()
    }
}

/// The DEK of a KMS v1 or v2 value; None for every other value, and for KMS values whose
/// framing is broken (a malformed `EncryptedObject`, a length past the end): those are findings
/// of the classification already.
pub fn stored_dek(value: &[u8]) -> Option<StoredDek> {
    let rest = value.strip_prefix(b"k8s:enc:kms:")?;
    let (api, rest) = if let Some(rest) = rest.strip_prefix(b"v1:") {
        (KmsApi::V1, rest)
    } else {
        (KmsApi::V2, rest.strip_prefix(b"v2:")?)
    };
    // The provider name ends at the first ':' (it cannot contain one).
    let body = &rest[rest.iter().position(|b| *b == b':')? + 1..];
    match api {
        KmsApi::V1 => {
            let (len, rest) = body.split_first_chunk::<2>()?;
            let dek = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
            (!dek.is_empty()).then(|| StoredDek {
                api,
                ciphertext: dek.to_vec(),
                annotations: BTreeMap::new(),
                key_id: None,
            })
        }
        KmsApi::V2 => {
            let object = EncryptedObject::decode(body).ok()?;
            (!object.encrypted_dek_source.is_empty()).then(|| StoredDek {
                api,
                ciphertext: object.encrypted_dek_source,
                annotations: object.annotations.into_iter().collect(),
                key_id: Some(object.key_id),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_value(key_id: &str, dek: &[u8], annotations: &[(&str, &[u8])]) -> Vec<u8> {
        let object = EncryptedObject {
            encrypted_data: vec![7; 40],
            key_id: key_id.into(),
            encrypted_dek_source: dek.to_vec(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            encrypted_dek_source_type: 1,
        };
        let mut v = b"k8s:enc:kms:v2:polykms:".to_vec();
        v.extend(object.encode_to_vec());
        v
    }

    #[test]
    fn kms_v2_values_yield_ciphertext_key_id_and_annotations() {
        let v = v2_value("kid", b"PK\x03\x01abc", &[("wrap-1.polykms.io", b"w")]);
        let dek = stored_dek(&v).expect("a KMS v2 value has a DEK");
        assert_eq!(dek.api, KmsApi::V2);
        assert_eq!(dek.ciphertext, b"PK\x03\x01abc");
        assert_eq!(dek.key_id.as_deref(), Some("kid"));
        assert_eq!(dek.annotations["wrap-1.polykms.io"], b"w");
    }

    #[test]
    fn kms_v1_values_yield_the_dek_between_its_length_and_the_data() {
        let v = b"k8s:enc:kms:v1:vault:\x00\x03DEKdata-data";
        let dek = stored_dek(v).expect("a KMS v1 value has a DEK");
        assert_eq!(dek.api, KmsApi::V1);
        assert_eq!(dek.ciphertext, b"DEK");
        assert!(dek.key_id.is_none() && dek.annotations.is_empty());
    }

    #[test]
    fn other_values_and_broken_framing_have_no_dek() {
        for v in [
            &b"k8s\x00\x0a\x02v1"[..],
            b"k8s:enc:aescbc:v1:key1:abc",
            b"k8s:enc:kms:v1:vault:\x04\x00PK",
            b"k8s:enc:kms:v1:vault:\x00\x00data",
            b"k8s:enc:kms:v2:polykms:\xff\xff",
            b"k8s:enc:kms:v2:no-colon",
            b"k8s:enc:kms:v3:p:abc",
        ] {
            assert_eq!(stored_dek(v), None, "{v:?}");
        }
    }

    #[test]
    fn the_digest_tells_apart_what_a_decrypt_is_given() {
        let base = stored_dek(&v2_value("kid", b"PKabc", &[])).expect("a DEK");
        let same = stored_dek(&v2_value("kid", b"PKabc", &[])).expect("a DEK");
        assert_eq!(base.digest(), same.digest());
        for other in [
            v2_value("kid2", b"PKabc", &[]),
            v2_value("kid", b"PKabd", &[]),
            v2_value("kid", b"PKabc", &[("wrap-1.polykms.io", b"")]),
        ] {
            let other = stored_dek(&other).expect("a DEK");
            assert_ne!(base.digest(), other.digest(), "{other:?}");
        }
    }
}
