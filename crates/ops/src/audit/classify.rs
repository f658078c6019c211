//! What a value stored in etcd is, judged by the prefixes kube-apiserver writes (see
//! kms-protocol.md, "What lands in etcd"). Reads the KMS v2 `EncryptedObject` header fields
//! only; the encrypted payload is never touched.

use prost::Message;

pub use polykms_core::storage::EncryptedObject;

/// The storage class of one etcd value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueClass {
    /// Not encrypted: kube protobuf (`k8s\0`) or JSON.
    Identity,
    /// `k8s:enc:aescbc:v1:<key name>:`
    AesCbc { key: String },
    /// `k8s:enc:aesgcm:v1:<key name>:`
    AesGcm { key: String },
    /// `k8s:enc:secretbox:v1:<key name>:`
    Secretbox { key: String },
    /// `k8s:enc:kms:v1:<provider>:` (one DEK per object, plugin on every write), with the
    /// key_id of its DEK's polykms envelope (None: another plugin's DEK, or malformed).
    KmsV1 {
        provider: String,
        key_id: Option<String>,
    },
    /// `k8s:enc:kms:v2:<provider>:` with a well-formed `EncryptedObject`.
    KmsV2 {
        provider: String,
        key_id: String,
        dek_source: DekSource,
        envelope: EnvelopeFormat,
    },
    /// `k8s:enc:kms:v2:<provider>:` whose `EncryptedObject` does not parse or validate.
    KmsV2Malformed { provider: String, reason: String },
    /// Anything else (an unknown `k8s:enc:` transformer, or bytes no apiserver writes).
    Unknown,
}

/// The plugin ciphertext (`encryptedDEKSource`) as far as it can be read without a key: the
/// polykms envelope format version and wrap count, or another plugin's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeFormat {
    /// A polykms envelope: format version and number of wraps (header bytes 2 and 3).
    Polykms { version: u8, wraps: u8 },
    /// Not a polykms envelope (another KMS plugin wrote it).
    Foreign,
}

impl EnvelopeFormat {
    /// Reads the envelope header of a plugin ciphertext.
    pub fn of(ciphertext: &[u8]) -> Self {
        match (
            polykms_core::envelope::format_version(ciphertext),
            ciphertext.get(3),
        ) {
            (Some(version), Some(&wraps)) => EnvelopeFormat::Polykms { version, wraps },
            _ => EnvelopeFormat::Foreign,
        }
    }

    /// Stable label for the counts: `v3` (written now), `v2`, `v1`, `v1-multi-wrap` (re-encrypt
    /// these), `other`. Version-2 multi-wrap envelopes keep the `v2` label; the report counts
    /// them apart ([`EnvelopeFormat::is_v2_multi_wrap`]).
    pub fn label(self) -> String {
        match self {
            EnvelopeFormat::Polykms { version: 1, wraps } if wraps > 1 => "v1-multi-wrap".into(),
            EnvelopeFormat::Polykms { version, .. } => format!("v{version}"),
            EnvelopeFormat::Foreign => "other".into(),
        }
    }

    /// A version-2 envelope with several wraps: its wraps share version 1's AAD, so an etcd
    /// writer can rewrite it as a version-1 multi-wrap (docs/envelope.md); re-encrypt it.
    pub fn is_v2_multi_wrap(self) -> bool {
        matches!(self, EnvelopeFormat::Polykms { version: 2, wraps } if wraps > 1)
    }
}

/// What the KMS v2 plugin wrapped for this object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DekSource {
    /// A 32-byte AES-GCM key (`AES_GCM_KEY`).
    AesGcmKey,
    /// A seed for per-object HKDF-SHA256 derived keys (`HKDF_SHA256_XNONCE_AES_GCM_SEED`).
    HkdfSeed,
}

impl ValueClass {
    /// Short stable label used for the counts (`identity`, `aescbc`, ..., `kms-v2`).
    pub fn label(&self) -> &'static str {
        match self {
            ValueClass::Identity => "identity",
            ValueClass::AesCbc { .. } => "aescbc",
            ValueClass::AesGcm { .. } => "aesgcm",
            ValueClass::Secretbox { .. } => "secretbox",
            ValueClass::KmsV1 { .. } => "kms-v1",
            ValueClass::KmsV2 { .. } => "kms-v2",
            ValueClass::KmsV2Malformed { .. } => "kms-v2-malformed",
            ValueClass::Unknown => "unknown",
        }
    }
}

const ENC_PREFIX: &[u8] = b"k8s:enc:";
/// The upstream limits (kmsv2/envelope.go) that `ValidateEncryptedObject` enforces.
const KEY_ID_MAX: usize = 1024;
const DEK_SOURCE_MAX: usize = 1024;

/// Classifies one stored value.
pub fn classify(value: &[u8]) -> ValueClass {
    let Some(rest) = value.strip_prefix(ENC_PREFIX) else {
        return if value.starts_with(b"k8s\x00") || value.starts_with(b"{") {
            ValueClass::Identity
        } else {
            ValueClass::Unknown
        };
    };
    let Some((transformer, rest)) = split_field(rest) else {
        return ValueClass::Unknown;
    };
    let Some((version, rest)) = split_field(rest) else {
        return ValueClass::Unknown;
    };
    let Some((name, body)) = split_field(rest) else {
        return ValueClass::Unknown;
    };
    let name = String::from_utf8_lossy(name).into_owned();
    match (transformer, version) {
        (b"aescbc", b"v1") => ValueClass::AesCbc { key: name },
        (b"aesgcm", b"v1") => ValueClass::AesGcm { key: name },
        (b"secretbox", b"v1") => ValueClass::Secretbox { key: name },
        (b"kms", b"v1") => ValueClass::KmsV1 {
            provider: name,
            key_id: kms_v1_key_id(body),
        },
        (b"kms", b"v2") => match parse_encrypted_object(body) {
            Ok((key_id, dek_source, envelope)) => ValueClass::KmsV2 {
                provider: name,
                key_id,
                dek_source,
                envelope,
            },
            Err(reason) => ValueClass::KmsV2Malformed {
                provider: name,
                reason,
            },
        },
        _ => ValueClass::Unknown,
    }
}

/// The key_id of a KMS v1 value written through polykms. The apiserver's v1 envelope
/// transformer (`staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/envelope/envelope.go`,
/// `TransformToStorage`) writes a 2-byte big-endian length, the plugin's ciphertext of the DEK,
/// then the encrypted object. polykms' ciphertext is its envelope (v1beta1 has no annotations,
/// so every wrap is inline), and the key_id is recomputed from its wraps as Status computes it.
pub fn kms_v1_key_id(body: &[u8]) -> Option<String> {
    let (len, rest) = body.split_first_chunk::<2>()?;
    let dek = rest.get(..usize::from(u16::from_be_bytes(*len)))?;
    let envelope = polykms_core::envelope::Envelope::decode(dek, &Default::default()).ok()?;
    Some(polykms_core::plugin::envelope_key_id(&envelope))
}

/// Splits `a:rest` at the first `:`; `None` when there is none.
fn split_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|b| *b == b':')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// Decodes and validates an `EncryptedObject` the way the apiserver does before it reads one
/// (`ValidateEncryptedObject`), returning its key_id, DEK source type and envelope format.
pub fn parse_encrypted_object(body: &[u8]) -> Result<(String, DekSource, EnvelopeFormat), String> {
    let object = EncryptedObject::decode(body).map_err(|e| format!("not a protobuf: {e}"))?;
    let dek_source = match object.encrypted_dek_source_type {
        0 => DekSource::AesGcmKey,
        1 => DekSource::HkdfSeed,
        other => return Err(format!("unknown encryptedDEKSourceType {other}")),
    };
    if object.encrypted_data.is_empty() {
        return Err("encryptedData is empty".into());
    }
    if object.encrypted_dek_source.is_empty() || object.encrypted_dek_source.len() > DEK_SOURCE_MAX
    {
        return Err(format!(
            "encryptedDEKSource is {} bytes (want 1..={DEK_SOURCE_MAX})",
            object.encrypted_dek_source.len()
        ));
    }
    if object.key_id.is_empty() || object.key_id.len() > KEY_ID_MAX {
        return Err(format!(
            "keyID is {} bytes (want 1..={KEY_ID_MAX})",
            object.key_id.len()
        ));
    }
    let envelope = EnvelopeFormat::of(&object.encrypted_dek_source);
    Ok((object.key_id, dek_source, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kms_v2(provider: &str, object: &EncryptedObject) -> Vec<u8> {
        let mut v = format!("k8s:enc:kms:v2:{provider}:").into_bytes();
        v.extend(object.encode_to_vec());
        v
    }

    fn object(key_id: &str, source_type: i32) -> EncryptedObject {
        EncryptedObject {
            encrypted_data: vec![7; 60],
            key_id: key_id.into(),
            encrypted_dek_source: vec![9; 80],
            annotations: std::collections::HashMap::from([(
                "backend.polykms.io".to_string(),
                b"a".to_vec(),
            )]),
            encrypted_dek_source_type: source_type,
        }
    }

    #[test]
    fn kms_v2_value_yields_provider_key_id_and_source_type() {
        let v = kms_v2("polykms", &object("kid-1", 1));
        assert_eq!(
            classify(&v),
            ValueClass::KmsV2 {
                provider: "polykms".into(),
                key_id: "kid-1".into(),
                dek_source: DekSource::HkdfSeed,
                envelope: EnvelopeFormat::Foreign,
            }
        );
        let v = kms_v2("other", &object("kid-2", 0));
        assert!(matches!(
            classify(&v),
            ValueClass::KmsV2 { dek_source: DekSource::AesGcmKey, ref key_id, .. } if key_id == "kid-2"
        ));
    }

    #[test]
    fn encrypted_object_field_numbers_match_the_upstream_layout() {
        // Hand-encoded: field 2 (keyID) = "k", field 3 = [1], field 1 = [2], field 5 = 1.
        let body = [
            0x12, 0x01, b'k', 0x1a, 0x01, 0x01, 0x0a, 0x01, 0x02, 0x28, 0x01,
        ];
        assert_eq!(
            parse_encrypted_object(&body),
            Ok((
                "k".to_string(),
                DekSource::HkdfSeed,
                EnvelopeFormat::Foreign
            ))
        );
    }

    #[test]
    fn malformed_kms_v2_objects_are_reported_not_counted_as_encrypted() {
        let cases = [
            (kms_v2("p", &object("", 1)), "keyID"),
            (kms_v2("p", &object("k", 7)), "encryptedDEKSourceType"),
            (
                kms_v2(
                    "p",
                    &EncryptedObject {
                        encrypted_data: vec![],
                        ..object("k", 1)
                    },
                ),
                "encryptedData",
            ),
            (
                kms_v2(
                    "p",
                    &EncryptedObject {
                        encrypted_dek_source: vec![1; 1025],
                        ..object("k", 1)
                    },
                ),
                "encryptedDEKSource",
            ),
            (b"k8s:enc:kms:v2:p:\xff\xff\xff".to_vec(), "protobuf"),
        ];
        for (value, needle) in cases {
            match classify(&value) {
                ValueClass::KmsV2Malformed { provider, reason } => {
                    assert_eq!(provider, "p");
                    assert!(reason.contains(needle), "{reason} lacks {needle}");
                }
                other => panic!("{needle}: classified as {other:?}"),
            }
        }
    }

    #[test]
    fn every_other_apiserver_prefix_is_classified() {
        let cases: [(&[u8], ValueClass); 8] = [
            (b"k8s\x00\x0a\x0d\x0a\x02v1", ValueClass::Identity),
            (b"{\"kind\":\"Secret\"}", ValueClass::Identity),
            (
                b"k8s:enc:aescbc:v1:key1:\x01\x02",
                ValueClass::AesCbc { key: "key1".into() },
            ),
            (
                b"k8s:enc:aesgcm:v1:key2:\x01",
                ValueClass::AesGcm { key: "key2".into() },
            ),
            (
                b"k8s:enc:secretbox:v1:key3:\x01",
                ValueClass::Secretbox { key: "key3".into() },
            ),
            (
                b"k8s:enc:kms:v1:vault:\x00\x10",
                ValueClass::KmsV1 {
                    provider: "vault".into(),
                    key_id: None,
                },
            ),
            (b"k8s:enc:rot13:v1:x:abc", ValueClass::Unknown),
            (b"\x00\x01garbage", ValueClass::Unknown),
        ];
        for (value, want) in cases {
            assert_eq!(classify(value), want, "{value:?}");
        }
    }

    #[test]
    fn truncated_prefixes_are_unknown() {
        for v in [
            &b"k8s:enc:"[..],
            b"k8s:enc:kms",
            b"k8s:enc:kms:v2",
            b"k8s:enc:kms:v2:name-without-colon",
            b"",
        ] {
            assert_eq!(classify(v), ValueClass::Unknown, "{v:?}");
        }
    }

    #[test]
    fn envelope_format_is_read_from_the_header_without_a_key() {
        assert_eq!(EnvelopeFormat::of(b"PK\x03\x01rest").label(), "v3");
        assert_eq!(EnvelopeFormat::of(b"PK\x03\x02rest").label(), "v3");
        assert_eq!(EnvelopeFormat::of(b"PK\x02\x01rest").label(), "v2");
        assert_eq!(EnvelopeFormat::of(b"PK\x02\x02rest").label(), "v2");
        assert!(EnvelopeFormat::of(b"PK\x02\x02rest").is_v2_multi_wrap());
        assert!(!EnvelopeFormat::of(b"PK\x02\x01rest").is_v2_multi_wrap());
        assert!(!EnvelopeFormat::of(b"PK\x03\x02rest").is_v2_multi_wrap());
        assert_eq!(EnvelopeFormat::of(b"PK\x01\x01rest").label(), "v1");
        assert_eq!(
            EnvelopeFormat::of(b"PK\x01\x03rest").label(),
            "v1-multi-wrap"
        );
        assert_eq!(EnvelopeFormat::of(b"PK\x02").label(), "other");
        assert_eq!(EnvelopeFormat::of(b"\x0a\x20vault:v1:abc").label(), "other");
        let mut o = object("kid", 1);
        o.encrypted_dek_source = b"PK\x01\x02xyz".to_vec();
        assert!(matches!(
            classify(&kms_v2("polykms", &o)),
            ValueClass::KmsV2 {
                envelope: EnvelopeFormat::Polykms {
                    version: 1,
                    wraps: 2
                },
                ..
            }
        ));
    }

    #[test]
    fn kms_v1_values_of_polykms_report_the_key_id_of_their_envelope() {
        use polykms_core::envelope::{Envelope, Wrap, seal};
        let wraps = [Wrap {
            backend: "local".into(),
            key_version: "file-2".into(),
            ciphertext: vec![5; 60],
        }];
        let seed = polykms_backend::SecretBytes::from(vec![1; 32]);
        let (dek, annotations) = seal(&wraps, &seed).expect("one small wrap seals");
        assert!(annotations.is_empty());
        let mut value = b"k8s:enc:kms:v1:polykms:".to_vec();
        value.extend((dek.len() as u16).to_be_bytes());
        value.extend(&dek);
        value.extend([9; 40]); // the encrypted object
        let want = polykms_core::plugin::envelope_key_id(
            &Envelope::decode(&dek, &Default::default()).expect("decodes"),
        );
        assert_eq!(want, polykms_core::keyid::key_id([("local", "file-2")]));
        assert_eq!(
            classify(&value),
            ValueClass::KmsV1 {
                provider: "polykms".into(),
                key_id: Some(want),
            }
        );
        // Another plugin's DEK, or a length past the end: no key_id.
        for bad in [
            &b"k8s:enc:kms:v1:vault:\x00\x03abcdef"[..],
            b"k8s:enc:kms:v1:vault:\x04\x00PK",
            b"k8s:enc:kms:v1:vault:\x00",
        ] {
            assert!(
                matches!(classify(bad), ValueClass::KmsV1 { key_id: None, .. }),
                "{bad:?}"
            );
        }
    }
}
