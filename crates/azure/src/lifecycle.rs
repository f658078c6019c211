//! What Key Vault says of the life of the key versions this backend needs, from the key
//! attributes of Get Key (<https://learn.microsoft.com/rest/api/keyvault/keys/get-key/get-key>):
//! `enabled`, `exp` (NumericDate) and `recoveryLevel` (the vault's soft-delete and purge
//! protection, <https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview>).

use std::time::{Duration, SystemTime};

use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::KeyAttributes;
use polykms_backend::{LifecycleFinding, LifecycleState};

/// Remedies, in the Azure CLI's terms.
const ENABLE: &str = "set the key enabled (az keyvault key set-attributes --enabled true)";
const EXTEND: &str = "set a later expiry (az keyvault key set-attributes --expires) \
                      or rotate the key (az keyvault key rotate)";
const PROTECT: &str = "enable purge protection on the vault \
                       (az keyvault update --enable-purge-protection true; \
                       Managed HSM: az keyvault update-hsm)";

/// Findings for the version wrap uses now. `kid` names it; `key_id` is the versionless key,
/// which purge protection concerns as a whole.
pub(crate) fn current(
    attrs: Option<&KeyAttributes>,
    kid: &str,
    key_id: &str,
    now: OffsetDateTime,
    expiry_warning: Duration,
) -> Vec<LifecycleFinding> {
    let Some(attrs) = attrs else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if attrs.enabled == Some(false) {
        out.push(LifecycleFinding::new(LifecycleState::Disabled, kid, ENABLE).blocking());
    }
    if let Some(exp) = attrs.expires {
        let at = SystemTime::from(exp);
        if exp <= now {
            out.push(
                LifecycleFinding::new(LifecycleState::Expired, kid, EXTEND)
                    .blocking()
                    .at(at),
            );
        } else if exp - now <= expiry_warning {
            out.push(LifecycleFinding::new(LifecycleState::Expiring, kid, EXTEND).at(at));
        }
    }
    // "If it contains 'Purgeable' the key can be permanently deleted by a privileged user"
    // (KeyAttributes.recoveryLevel): no purge protection.
    if attrs
        .recovery_level
        .as_ref()
        .is_some_and(|level| level.to_string().contains("Purgeable"))
    {
        out.push(LifecycleFinding::new(
            LifecycleState::DeletionAllowed,
            key_id,
            PROTECT,
        ));
    }
    out
}

/// Findings for an older version that Decrypts still use: a warning when disabled (its
/// unwraps fail). Past `exp` is no finding: Key Vault still unwraps with expired keys, only
/// new wraps are refused.
pub(crate) fn older(attrs: Option<&KeyAttributes>, kid: &str) -> Option<LifecycleFinding> {
    let version = kid.rsplit('/').next().unwrap_or_default();
    attrs.filter(|a| a.enabled == Some(false)).map(|_| {
        LifecycleFinding::new(
            LifecycleState::Disabled,
            kid,
            format!(
                "set the key version enabled \
                 (az keyvault key set-attributes --version {version} --enabled true)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const KID: &str = "https://kv.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef";
    const KEY: &str = "https://kv.vault.azure.net/keys/kek";
    const DAY: Duration = Duration::from_secs(24 * 3600);
    const NOW: i64 = 1_800_000_000;

    /// Attributes as Get Key returns them on the wire, so the field names are the real ones.
    fn attrs(v: serde_json::Value) -> KeyAttributes {
        serde_json::from_value(v).expect("valid key attributes")
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).expect("in range")
    }

    fn states(f: &[LifecycleFinding]) -> Vec<(LifecycleState, bool)> {
        f.iter().map(|f| (f.state, f.blocks_wrap)).collect()
    }

    #[test]
    fn an_enabled_key_under_purge_protection_says_nothing() {
        for level in [
            "Recoverable",
            "Recoverable+ProtectedSubscription",
            "CustomizedRecoverable",
        ] {
            let a =
                attrs(json!({"enabled": true, "exp": NOW + 90 * 86400, "recoveryLevel": level}));
            assert_eq!(current(Some(&a), KID, KEY, now(), 30 * DAY), [], "{level}");
        }
        assert_eq!(current(None, KID, KEY, now(), 30 * DAY), []);
    }

    #[test]
    fn a_disabled_key_blocks_wrap_and_says_how_to_enable_it() {
        let a = attrs(json!({"enabled": false, "recoveryLevel": "Recoverable"}));
        let f = current(Some(&a), KID, KEY, now(), 30 * DAY);
        assert_eq!(states(&f), [(LifecycleState::Disabled, true)]);
        assert_eq!(f[0].key, KID);
        assert_eq!(
            f[0].remedy,
            "set the key enabled (az keyvault key set-attributes --enabled true)"
        );
    }

    #[test]
    fn a_key_past_exp_blocks_wrap_and_one_within_the_window_warns() {
        let past = attrs(json!({"enabled": true, "exp": NOW - 1, "recoveryLevel": "Recoverable"}));
        let f = current(Some(&past), KID, KEY, now(), 30 * DAY);
        assert_eq!(states(&f), [(LifecycleState::Expired, true)]);
        let soon =
            attrs(json!({"enabled": true, "exp": NOW + 86400, "recoveryLevel": "Recoverable"}));
        let f = current(Some(&soon), KID, KEY, now(), 30 * DAY);
        assert_eq!(states(&f), [(LifecycleState::Expiring, false)]);
        assert_eq!(
            f[0].at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64 + 86400))
        );
        // Outside a shorter window: nothing yet.
        assert_eq!(current(Some(&soon), KID, KEY, now(), DAY / 2), []);
    }

    #[test]
    fn a_purgeable_recovery_level_warns_about_the_whole_key() {
        for level in [
            "Purgeable",
            "Recoverable+Purgeable",
            "CustomizedRecoverable+Purgeable",
        ] {
            let a = attrs(json!({"enabled": true, "recoveryLevel": level}));
            let f = current(Some(&a), KID, KEY, now(), 30 * DAY);
            assert_eq!(
                states(&f),
                [(LifecycleState::DeletionAllowed, false)],
                "{level}"
            );
            assert_eq!(f[0].key, KEY);
            assert!(f[0].remedy.contains("purge protection"), "{}", f[0]);
        }
    }

    #[test]
    fn an_older_version_warns_only_when_disabled() {
        let off = attrs(json!({"enabled": false, "exp": NOW - 1}));
        let f = older(Some(&off), KID).expect("disabled is reported");
        assert_eq!((f.state, f.blocks_wrap), (LifecycleState::Disabled, false));
        assert!(
            f.remedy
                .contains("--version 0123456789abcdef0123456789abcdef"),
            "{f}"
        );
        let expired = attrs(json!({"enabled": true, "exp": NOW - 1}));
        assert_eq!(older(Some(&expired), KID), None);
    }
}
