//! Key usability checks and the public key version: the key ARN plus its current key material.
//!
//! Format: `<key-arn>`, `<key-arn>#material=<key-material-id>` or `<key-arn>#rotated=<secs>.<nanos>`.
//! KMS reports the current key material id in DescribeKey for keys that can rotate; where it
//! does not, the newest entry of ListKeyRotations stands in for it. Either way an automatic or
//! on-demand rotation changes the version, and nothing else does.

use aws_sdk_kms::types::{
    KeyMaterialState, KeyMetadata, KeySpec, KeyState, KeyUsageType, RotationsListEntry,
};
use polykms_backend::{BackendError, KeyVersion};

/// What is known about the key material that `Encrypt` uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Material {
    /// KMS named the current key material.
    Id(String),
    /// The newest rotation completed at this instant (seconds, nanoseconds since the epoch).
    RotatedAt(i64, u32),
    /// Never rotated, or rotations cannot be listed (not allowed, not supported).
    Initial,
}

/// The version string for `arn` with `material`.
pub(crate) fn key_version(arn: &str, material: &Material) -> KeyVersion {
    match material {
        Material::Id(id) => KeyVersion::new(format!("{arn}#material={id}")),
        Material::RotatedAt(secs, nanos) => {
            KeyVersion::new(format!("{arn}#rotated={secs}.{nanos:09}"))
        }
        Material::Initial => KeyVersion::new(arn),
    }
}

/// The key ARN a version string starts with.
pub(crate) fn arn_of(version: &KeyVersion) -> &str {
    let s = version.as_str();
    s.split_once('#').map_or(s, |(arn, _)| arn)
}

/// The current material among rotation entries: the one marked CURRENT, else the newest
/// rotation, else `Initial`.
pub(crate) fn current_material(entries: &[RotationsListEntry]) -> Material {
    let current = entries.iter().find(|e| {
        e.key_material_state() == Some(&KeyMaterialState::Current) && e.key_material_id().is_some()
    });
    if let Some(id) = current.and_then(|e| e.key_material_id()) {
        return Material::Id(id.to_owned());
    }
    entries
        .iter()
        .filter_map(|e| e.rotation_date())
        .map(|d| (d.secs(), d.subsec_nanos()))
        .max()
        .map_or(Material::Initial, |(s, n)| Material::RotatedAt(s, n))
}

/// Fails unless the key can wrap for polykms now: enabled, ENCRYPT_DECRYPT, SYMMETRIC_DEFAULT.
pub(crate) fn check_usable(meta: &KeyMetadata) -> Result<(), BackendError> {
    let name = meta.arn().unwrap_or(meta.key_id());
    match meta.key_state() {
        Some(KeyState::Enabled) => {}
        None if meta.enabled() => {}
        Some(KeyState::Updating | KeyState::Creating) => {
            return Err(BackendError::unavailable(format!(
                "key {name} is being updated, retry later"
            )));
        }
        // The deletion date and what undoes it travel in the lifecycle finding core reads
        // from the same DescribeKey answer; the probe error only says why it failed.
        Some(KeyState::PendingDeletion) => {
            return Err(BackendError::key_unavailable(format!(
                "key {name} is pending deletion"
            )));
        }
        Some(state) => {
            return Err(BackendError::key_unavailable(format!(
                "key {name} is {}, not Enabled",
                state.as_str()
            )));
        }
        None => {
            return Err(BackendError::key_unavailable(format!(
                "key {name} is disabled"
            )));
        }
    }
    match meta.key_usage() {
        Some(KeyUsageType::EncryptDecrypt) | None => {}
        Some(other) => {
            return Err(BackendError::key_unavailable(format!(
                "key {name} has key usage {}, polykms needs ENCRYPT_DECRYPT",
                other.as_str()
            )));
        }
    }
    match meta.key_spec() {
        Some(KeySpec::SymmetricDefault) | None => Ok(()),
        Some(other) => Err(BackendError::key_unavailable(format!(
            "key {name} has key spec {}, polykms needs SYMMETRIC_DEFAULT (encryption context \
             needs a symmetric key)",
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::primitives::DateTime;
    use polykms_backend::ErrorKind;

    const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn meta(state: KeyState, usage: KeyUsageType, spec: KeySpec) -> KeyMetadata {
        KeyMetadata::builder()
            .key_id("1234abcd-12ab-34cd-56ef-1234567890ab")
            .arn(ARN)
            .enabled(state == KeyState::Enabled)
            .key_state(state)
            .key_usage(usage)
            .key_spec(spec)
            .build()
            .expect("key_id is set")
    }

    #[test]
    fn enabled_symmetric_encrypt_decrypt_key_is_usable() {
        check_usable(&meta(
            KeyState::Enabled,
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
        ))
        .unwrap();
    }

    #[test]
    fn disabled_or_pending_deletion_key_is_unavailable_with_reason() {
        let e = check_usable(&meta(
            KeyState::Disabled,
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
        ))
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KeyUnavailable);
        assert!(e.message().contains("Disabled"), "{e}");
        let e = check_usable(&meta(
            KeyState::PendingDeletion,
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
        ))
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KeyUnavailable);
        assert!(e.message().contains("pending deletion"), "{e}");
        let e = check_usable(&meta(
            KeyState::Updating,
            KeyUsageType::EncryptDecrypt,
            KeySpec::SymmetricDefault,
        ))
        .unwrap_err();
        assert!(e.is_retryable());
    }

    #[test]
    fn wrong_usage_or_asymmetric_key_is_unavailable() {
        let e = check_usable(&meta(
            KeyState::Enabled,
            KeyUsageType::SignVerify,
            KeySpec::EccNistP256,
        ))
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::KeyUnavailable);
        assert!(e.message().contains("SIGN_VERIFY"), "{e}");
        let e = check_usable(&meta(
            KeyState::Enabled,
            KeyUsageType::EncryptDecrypt,
            KeySpec::Rsa2048,
        ))
        .unwrap_err();
        assert!(e.message().contains("RSA_2048"), "{e}");
    }

    #[test]
    fn version_is_arn_plus_material_and_arn_is_recoverable() {
        for m in [
            Material::Initial,
            Material::Id("abc".into()),
            Material::RotatedAt(1_700_000_000, 5),
        ] {
            let v = key_version(ARN, &m);
            assert_eq!(arn_of(&v), ARN);
        }
        assert_eq!(key_version(ARN, &Material::Initial).as_str(), ARN);
        assert_eq!(
            key_version(ARN, &Material::RotatedAt(1_700_000_000, 5)).as_str(),
            format!("{ARN}#rotated=1700000000.000000005")
        );
    }

    #[test]
    fn current_material_prefers_current_id_then_newest_rotation() {
        let old = RotationsListEntry::builder()
            .rotation_date(DateTime::from_secs(100))
            .build();
        let new = RotationsListEntry::builder()
            .rotation_date(DateTime::from_secs(200))
            .build();
        assert_eq!(current_material(&[]), Material::Initial);
        assert_eq!(
            current_material(&[new.clone(), old.clone()]),
            Material::RotatedAt(200, 0)
        );
        let cur = RotationsListEntry::builder()
            .key_material_id("m-2")
            .key_material_state(KeyMaterialState::Current)
            .build();
        assert_eq!(
            current_material(&[old, cur, new]),
            Material::Id("m-2".into())
        );
    }
}
