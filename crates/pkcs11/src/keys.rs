//! The AES key objects under `key_label`: which one wraps (greatest CKA_ID), which one a
//! wrapped key names, and the public key version of each (label + hex CKA_ID).

use std::cmp::Ordering;

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use polykms_backend::{BackendError, KeyVersion};

use crate::config::WrapMechanism;
use crate::error::Operation;
use crate::hsm::Failure;
use crate::lifecycle::EndDate;

/// One AES key object.
#[derive(Debug, Clone)]
pub(crate) struct KeyObject {
    pub(crate) id: Vec<u8>,
    pub(crate) version: KeyVersion,
    pub(crate) handle: ObjectHandle,
    /// Why the object cannot be used with the configured mechanism, if it cannot.
    pub(crate) unusable: Option<String>,
    /// A warning for operators: the key can leave the token in the clear.
    pub(crate) exposure: Option<&'static str>,
    /// CKA_END_DATE, when set.
    pub(crate) end_date: Option<EndDate>,
}

/// The key objects found in one module generation, ordered by CKA_ID (greatest last).
#[derive(Debug)]
pub(crate) struct KeySet {
    pub(crate) generation: u64,
    pub(crate) label: String,
    pub(crate) keys: Vec<KeyObject>,
}

impl KeySet {
    /// The key that wraps: the greatest CKA_ID, which must be usable.
    pub(crate) fn current(&self) -> Result<&KeyObject, BackendError> {
        let key = self.keys.last().ok_or_else(|| {
            BackendError::key_unavailable(format!(
                "no AES key object labelled {:?} on the token",
                self.label
            ))
        })?;
        match &key.unusable {
            Some(why) => Err(BackendError::key_unavailable(format!(
                "key {} (greatest CKA_ID) {why}",
                key.version
            ))),
            None => Ok(key),
        }
    }

    /// The key object with CKA_ID `id`.
    pub(crate) fn with_id(&self, id: &[u8]) -> Option<&KeyObject> {
        self.keys.iter().find(|k| k.id == id)
    }
}

/// `label:hex(CKA_ID)`.
pub(crate) fn version_of(label: &str, id: &[u8]) -> KeyVersion {
    KeyVersion::new(format!("{label}:{}", hex::encode(id)))
}

/// The CKA_ID a key version names, if it names one of our label's objects.
pub(crate) fn id_of(label: &str, version: &KeyVersion) -> Result<Vec<u8>, BackendError> {
    let (l, id) = version.as_str().rsplit_once(':').ok_or_else(|| {
        BackendError::invalid_input(format!("key version {version} is not label:hex-id"))
    })?;
    if l != label {
        return Err(BackendError::wrong_key(format!(
            "wrapped by key label {l:?}, not the configured key_label {label:?}"
        )));
    }
    hex::decode(id).map_err(|_| {
        BackendError::invalid_input(format!("key version {version}: CKA_ID is not hex"))
    })
}

/// CKA_IDs compared as unsigned big-endian integers.
pub(crate) fn compare_ids(a: &[u8], b: &[u8]) -> Ordering {
    fn significant(x: &[u8]) -> &[u8] {
        let start = x.iter().position(|b| *b != 0).unwrap_or(x.len());
        &x[start..]
    }
    let (a, b) = (significant(a), significant(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Fails when two of the `sorted` CKA_IDs are equal under [`compare_ids`] (`01` and `0001` are
/// other bytes but the same number): which of them is "greatest" would then depend on the
/// order the module lists them in, and replicas could wrap under different keys.
pub(crate) fn ensure_distinct(label: &str, sorted: &[&[u8]]) -> Result<(), BackendError> {
    let Some(pair) = sorted
        .windows(2)
        .find(|w| compare_ids(w[0], w[1]) == Ordering::Equal)
    else {
        return Ok(());
    };
    let (a, b) = (hex::encode(pair[0]), hex::encode(pair[1]));
    let same = if a == b {
        format!("share CKA_ID {a:?}")
    } else {
        format!("have CKA_IDs {a:?} and {b:?}, which are the same number")
    };
    Err(BackendError::config(format!(
        "key_label: two key objects labelled {label:?} {same}, so the key that wraps (the \
         greatest CKA_ID) is ambiguous; give each key object a numerically distinct CKA_ID"
    )))
}

/// Finds every AES secret key labelled `label`. Blocking.
pub(crate) fn find(
    session: &Session,
    generation: u64,
    label: &str,
    mechanism: WrapMechanism,
) -> Result<KeySet, Failure> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let handles = session
        .find_objects(&template)
        .map_err(|e| Failure::Module(Operation::FindKeys, e))?;
    let wanted = [
        AttributeType::Id,
        AttributeType::Encrypt,
        AttributeType::Decrypt,
        AttributeType::Wrap,
        AttributeType::Unwrap,
        AttributeType::Extractable,
        AttributeType::Sensitive,
    ];
    let mut keys: Vec<KeyObject> = Vec::with_capacity(handles.len());
    for handle in handles {
        let attrs = session
            .get_attributes(handle, &wanted)
            .map_err(|e| Failure::Module(Operation::FindKeys, e))?;
        let (mut id, mut enc, mut dec, mut wrap, mut unwrap) =
            (Vec::new(), false, false, false, false);
        let (mut extractable, mut sensitive) = (false, true);
        for a in attrs {
            match a {
                Attribute::Id(v) => id = v,
                Attribute::Encrypt(v) => enc = v,
                Attribute::Decrypt(v) => dec = v,
                Attribute::Wrap(v) => wrap = v,
                Attribute::Unwrap(v) => unwrap = v,
                Attribute::Extractable(v) => extractable = v,
                Attribute::Sensitive(v) => sensitive = v,
                _ => {}
            }
        }
        let version = version_of(label, &id);
        let unusable = match mechanism {
            WrapMechanism::AesGcm if !(enc && dec) => {
                Some("does not permit CKA_ENCRYPT and CKA_DECRYPT (needed by aes-gcm)".to_string())
            }
            WrapMechanism::AesKeyWrapPad if !(wrap && unwrap) => Some(
                "does not permit CKA_WRAP and CKA_UNWRAP (needed by aes-key-wrap-pad)".to_string(),
            ),
            _ => None,
        };
        let exposure = match (extractable, sensitive) {
            (true, false) => {
                Some("is extractable and not sensitive: its value can leave the token in the clear")
            }
            (true, true) => Some("is extractable: it can be wrapped out of the token"),
            (false, false) => Some("is not sensitive: its value can be read from the token"),
            (false, true) => None,
        };
        let end_date = end_date(session, handle, &version);
        keys.push(KeyObject {
            id,
            version,
            handle,
            unusable,
            exposure,
            end_date,
        });
    }
    keys.sort_by(|a, b| compare_ids(&a.id, &b.id));
    let ids: Vec<&[u8]> = keys.iter().map(|k| k.id.as_slice()).collect();
    ensure_distinct(label, &ids)?;
    Ok(KeySet {
        generation,
        label: label.to_string(),
        keys,
    })
}

/// CKA_END_DATE of a key object, read on its own: a module that answers it badly (a date
/// cryptoki cannot parse) then costs the lifecycle warning, not the key look-up.
fn end_date(session: &Session, handle: ObjectHandle, version: &KeyVersion) -> Option<EndDate> {
    match session.get_attributes(handle, &[AttributeType::EndDate]) {
        Ok(attrs) => attrs.iter().find_map(|a| match a {
            Attribute::EndDate(d) => EndDate::of(d),
            _ => None,
        }),
        Err(e) => {
            tracing::debug!(key_version = %version, error = %e, "pkcs11: CKA_END_DATE not readable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_unsigned_big_endian_integers() {
        assert_eq!(compare_ids(&[0x02], &[0x01]), Ordering::Greater);
        assert_eq!(compare_ids(&[0x00, 0x02], &[0x01]), Ordering::Greater);
        assert_eq!(compare_ids(&[0x01, 0x00], &[0xff]), Ordering::Greater);
        assert_eq!(compare_ids(&[0x00, 0x01], &[0x01]), Ordering::Equal);
        assert_eq!(compare_ids(&[], &[0x00]), Ordering::Equal);
        assert_eq!(compare_ids(&[0x7f], &[0x80]), Ordering::Less);
    }

    #[test]
    fn ids_equal_as_numbers_are_rejected_naming_both() {
        for (a, b) in [
            (&[0x01][..], &[0x00, 0x01][..]),
            (&[][..], &[0x00][..]),
            (&[0x2a][..], &[0x2a][..]),
        ] {
            let mut ids = vec![&[0x05][..], a, b, &[0x00, 0x00, 0xff][..]];
            ids.sort_by(|x, y| compare_ids(x, y));
            let err = ensure_distinct("kube-kek", &ids).unwrap_err();
            assert_eq!(err.kind(), polykms_backend::ErrorKind::Config, "{err}");
            for id in [a, b] {
                let shown = format!("{:?}", hex::encode(id));
                assert!(err.message().contains(&shown), "{shown} not in {err}");
            }
            assert!(err.message().contains("\"kube-kek\""), "{err}");
        }
    }

    #[test]
    fn numerically_distinct_ids_pass() {
        let ids = [&[][..], &[0x01][..], &[0x00, 0x02][..], &[0x01, 0x00][..]];
        ensure_distinct("kube-kek", &ids).unwrap();
        ensure_distinct("kube-kek", &[]).unwrap();
    }

    #[test]
    fn versions_are_label_and_hex_id_and_parse_back() {
        let v = version_of("kube-kek", &[0x00, 0x2a]);
        assert_eq!(v.as_str(), "kube-kek:002a");
        assert_eq!(id_of("kube-kek", &v).unwrap(), vec![0x00, 0x2a]);
        let other = id_of("other", &v).unwrap_err();
        assert_eq!(other.kind(), polykms_backend::ErrorKind::WrongKey);
        let bad = id_of("kube-kek", &KeyVersion::new("kube-kek:zz")).unwrap_err();
        assert_eq!(bad.kind(), polykms_backend::ErrorKind::InvalidInput);
        // A label may itself contain ':'.
        let colon = version_of("a:b", &[1]);
        assert_eq!(id_of("a:b", &colon).unwrap(), vec![1]);
    }
}
