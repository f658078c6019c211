//! What Cloud KMS says of the life of the versions this backend needs: the primary (which
//! Encrypt uses) and the older versions Decrypts still use. Read from `CryptoKey.primary` and
//! `CryptoKeyVersion.state` / `destroyTime`
//! (<https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions#CryptoKeyVersionState>,
//! <https://cloud.google.com/kms/docs/key-states>).

use std::time::SystemTime;

use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionState;
use google_cloud_kms_v1::model::{CryptoKey, CryptoKeyVersion};
use polykms_backend::{KeyVersion, LifecycleFinding, LifecycleState};

/// Remedies, in Cloud KMS's own method names.
const ENABLE: &str = "UpdateCryptoKeyVersion state=ENABLED";
const RESTORE: &str = "RestoreCryptoKeyVersion, then UpdateCryptoKeyVersion state=ENABLED";
const NEW_PRIMARY: &str =
    "UpdatePrimaryVersion to an ENABLED version (or CreateCryptoKeyVersion as the new primary)";
const DESTROYED: &str = "none for generated key material (an imported version can be imported \
                         again with ImportCryptoKeyVersion); Decrypts of it fail";

/// The versions among `in_use` that belong to the key (their names start with
/// `version_prefix`) other than the primary: the ones whose own state must be read.
pub(crate) fn older_in_use<'a>(
    in_use: &'a [KeyVersion],
    version_prefix: &str,
    primary: &str,
) -> Vec<&'a str> {
    let mut out: Vec<&str> = in_use
        .iter()
        .map(KeyVersion::as_str)
        .filter(|v| {
            v.strip_prefix(version_prefix)
                .is_some_and(|id| !id.is_empty())
        })
        .filter(|v| *v != primary)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Findings for the primary version of `key` (blocking: Encrypt uses nothing else) and for
/// `older`, versions Decrypts still use (warnings: they no longer wrap, and a Status turned
/// unhealthy over them would take apiservers out of service early).
pub(crate) fn findings(key: &CryptoKey, older: &[CryptoKeyVersion]) -> Vec<LifecycleFinding> {
    let mut out = Vec::new();
    if let Some(primary) = key.primary.as_ref().filter(|p| !p.name.is_empty()) {
        out.extend(primary_finding(primary));
    }
    out.extend(older.iter().filter_map(older_finding));
    out
}

fn primary_finding(v: &CryptoKeyVersion) -> Option<LifecycleFinding> {
    let finding = match &v.state {
        CryptoKeyVersionState::Enabled => return None,
        // Transitional: the key store is still making it; the probe reports it meanwhile.
        CryptoKeyVersionState::PendingGeneration | CryptoKeyVersionState::PendingImport => {
            return None;
        }
        CryptoKeyVersionState::Disabled => {
            LifecycleFinding::new(LifecycleState::Disabled, &v.name, ENABLE)
        }
        CryptoKeyVersionState::DestroyScheduled => with_destroy_time(
            LifecycleFinding::new(LifecycleState::PendingDeletion, &v.name, RESTORE),
            v,
        ),
        // Destroyed, failed or in an unknown state: only another primary wraps again.
        _ => LifecycleFinding::new(LifecycleState::Disabled, &v.name, NEW_PRIMARY),
    };
    Some(finding.blocking())
}

fn older_finding(v: &CryptoKeyVersion) -> Option<LifecycleFinding> {
    match &v.state {
        CryptoKeyVersionState::Disabled => Some(LifecycleFinding::new(
            LifecycleState::Disabled,
            &v.name,
            ENABLE,
        )),
        CryptoKeyVersionState::DestroyScheduled => Some(with_destroy_time(
            LifecycleFinding::new(LifecycleState::PendingDeletion, &v.name, RESTORE),
            v,
        )),
        CryptoKeyVersionState::Destroyed
        | CryptoKeyVersionState::PendingExternalDestruction
        | CryptoKeyVersionState::ExternalDestructionFailed => Some(LifecycleFinding::new(
            LifecycleState::VersionRetired,
            &v.name,
            DESTROYED,
        )),
        _ => None,
    }
}

/// `destroyTime`: when the key material goes, present while DESTROY_SCHEDULED.
fn with_destroy_time(finding: LifecycleFinding, v: &CryptoKeyVersion) -> LifecycleFinding {
    match v.destroy_time.map(SystemTime::try_from) {
        Some(Ok(at)) => finding.at(at),
        _ => finding,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;

    const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

    /// A version as the REST API returns it (proto3 JSON), so field names are the real ones.
    fn version(n: u32, state: &str, destroy_time: Option<&str>) -> CryptoKeyVersion {
        let mut v = json!({"name": format!("{KEY}/cryptoKeyVersions/{n}"), "state": state});
        if let Some(t) = destroy_time {
            v["destroyTime"] = json!(t);
        }
        serde_json::from_value(v).expect("a valid CryptoKeyVersion")
    }

    fn key(primary: CryptoKeyVersion) -> CryptoKey {
        CryptoKey::new().set_name(KEY).set_primary(primary)
    }

    #[test]
    fn an_enabled_primary_and_enabled_older_versions_say_nothing() {
        let f = findings(
            &key(version(2, "ENABLED", None)),
            &[version(1, "ENABLED", None)],
        );
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn a_disabled_primary_blocks_wrap_and_names_update_crypto_key_version() {
        let f = findings(&key(version(3, "DISABLED", None)), &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].state, LifecycleState::Disabled);
        assert!(f[0].blocks_wrap);
        assert_eq!(f[0].key, format!("{KEY}/cryptoKeyVersions/3"));
        assert_eq!(f[0].remedy, "UpdateCryptoKeyVersion state=ENABLED");
    }

    #[test]
    fn a_primary_scheduled_for_destruction_blocks_wrap_until_its_destroy_time() {
        let f = findings(
            &key(version(
                3,
                "DESTROY_SCHEDULED",
                Some("2030-01-02T03:04:05.5Z"),
            )),
            &[],
        );
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].state, LifecycleState::PendingDeletion);
        assert!(f[0].blocks_wrap);
        assert_eq!(
            f[0].at,
            Some(UNIX_EPOCH + Duration::from_millis(1_893_553_445_500))
        );
        assert!(
            f[0].remedy.starts_with("RestoreCryptoKeyVersion"),
            "{}",
            f[0]
        );
    }

    #[test]
    fn a_destroyed_primary_blocks_wrap_until_another_version_is_primary() {
        let f = findings(&key(version(1, "DESTROYED", None)), &[]);
        assert!(f[0].blocks_wrap);
        assert!(f[0].remedy.starts_with("UpdatePrimaryVersion"), "{}", f[0]);
    }

    #[test]
    fn older_versions_warn_without_blocking() {
        let f = findings(
            &key(version(4, "ENABLED", None)),
            &[
                version(1, "DESTROY_SCHEDULED", Some("2030-01-01T00:00:00Z")),
                version(2, "DISABLED", None),
                version(3, "DESTROYED", None),
            ],
        );
        let states: Vec<_> = f.iter().map(|f| f.state).collect();
        assert_eq!(
            states,
            [
                LifecycleState::PendingDeletion,
                LifecycleState::Disabled,
                LifecycleState::VersionRetired
            ]
        );
        assert!(f.iter().all(|f| !f.blocks_wrap), "{f:?}");
        assert_eq!(
            f[0].at,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        assert_eq!(f[1].key, format!("{KEY}/cryptoKeyVersions/2"));
    }

    #[test]
    fn only_other_versions_of_this_key_are_read() {
        let prefix = format!("{KEY}/cryptoKeyVersions/");
        let in_use = [
            KeyVersion::new(format!("{KEY}/cryptoKeyVersions/2")),
            KeyVersion::new(format!("{KEY}/cryptoKeyVersions/1")),
            KeyVersion::new(format!("{KEY}/cryptoKeyVersions/2")),
            KeyVersion::new(format!("{KEY}/cryptoKeyVersions/3")),
            KeyVersion::new(
                "projects/p/locations/global/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1",
            ),
            KeyVersion::new(prefix.clone()),
        ];
        let primary = format!("{KEY}/cryptoKeyVersions/3");
        assert_eq!(
            older_in_use(&in_use, &prefix, &primary),
            [
                format!("{KEY}/cryptoKeyVersions/1"),
                format!("{KEY}/cryptoKeyVersions/2")
            ]
        );
    }
}
