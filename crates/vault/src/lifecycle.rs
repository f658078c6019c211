//! What a Transit key read says of the key's life. Transit keys cannot be disabled or
//! scheduled for deletion, so nothing here stops wraps (a key that is gone fails the probe):
//! the findings are warnings about a key that still works but is set up to go away.
//!
//! - `deletion_allowed = true`: anyone with the policy can delete the key and every version
//!   for good.
//! - `min_decryption_version` above a version Decrypts used since start: those ciphertexts no
//!   longer decrypt until it is lowered.
//! - a version Decrypts used that is below `min_available_version` (trimmed) or above
//!   `latest_version` (the key deleted and made again): gone from Transit.

use polykms_backend::{KeyLifecycle, KeyVersion, LifecycleFinding, LifecycleState};

use crate::transit::KeyInfo;

/// Where the key lives, as the remedies and the findings name it.
pub(crate) struct KeyPath<'a> {
    pub namespace: Option<&'a str>,
    pub mount: &'a str,
    pub key: &'a str,
}

impl KeyPath<'_> {
    /// `[<namespace>/]<mount>/<key>`, the key's public identity in findings.
    fn identity(&self) -> String {
        let ns = self
            .namespace
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default();
        format!("{ns}{}/{}", self.mount, self.key)
    }

    /// The CLI command that writes `setting` to the key's config.
    fn config_write(&self, setting: &str) -> String {
        let ns = self
            .namespace
            .map(|ns| format!(" -namespace={ns}"))
            .unwrap_or_default();
        format!(
            "vault write{ns} {}/keys/{}/config {setting}",
            self.mount, self.key
        )
    }
}

/// The findings for `info` and the Transit versions (`in_use`) that Decrypts used.
/// `version_id` is the backend's public identity of one version.
pub(crate) fn of_key(
    info: &KeyInfo,
    path: &KeyPath<'_>,
    in_use: &[u64],
    version_id: impl Fn(u64) -> KeyVersion,
) -> KeyLifecycle {
    let mut findings = Vec::new();
    if info.deletion_allowed {
        findings.push(LifecycleFinding::new(
            LifecycleState::DeletionAllowed,
            path.identity(),
            path.config_write("deletion_allowed=false"),
        ));
    }
    let mut versions = in_use.to_vec();
    versions.sort_unstable();
    versions.dedup();
    for v in versions {
        let key = version_id(v).as_str().to_owned();
        if info.version_gone(v) {
            findings.push(LifecycleFinding::new(
                LifecycleState::VersionRetired,
                key,
                format!(
                    "none in Transit: version {v} is gone (min_available_version {}, \
                     latest_version {}); only a backup of the key taken before \
                     (`vault write {}/restore/{}`) has it",
                    info.min_available_version, info.latest_version, path.mount, path.key
                ),
            ));
        } else if v < info.min_decryption_version {
            findings.push(LifecycleFinding::new(
                LifecycleState::VersionRetired,
                key,
                path.config_write(&format!("min_decryption_version={v}")),
            ));
        }
    }
    KeyLifecycle::of(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> KeyInfo {
        serde_json::from_str(json).expect("test key read parses")
    }

    const PATH: KeyPath<'static> = KeyPath {
        namespace: None,
        mount: "transit",
        key: "kube",
    };

    fn vid(v: u64) -> KeyVersion {
        KeyVersion::new(format!("vault:transit/kube:v{v}"))
    }

    const READ: &str = r#"{"type":"aes256-gcm96","latest_version":3,"min_decryption_version":1,
        "min_available_version":0,"deletion_allowed":false,"supports_encryption":true,
        "supports_decryption":true,"keys":{"1":1700000000,"2":1700000100,"3":1700000200}}"#;

    #[test]
    fn a_key_that_cannot_be_deleted_and_decrypts_every_used_version_has_nothing_to_say() {
        assert_eq!(
            of_key(&info(READ), &PATH, &[1, 2, 3], vid),
            KeyLifecycle::default()
        );
    }

    #[test]
    fn deletion_allowed_warns_with_the_config_write_that_undoes_it() {
        let read = READ.replace(r#""deletion_allowed":false"#, r#""deletion_allowed":true"#);
        let l = of_key(&info(&read), &PATH, &[], vid);
        assert_eq!(l.findings.len(), 1, "{l:?}");
        let f = &l.findings[0];
        assert_eq!(
            (f.state, f.key.as_str(), f.blocks_wrap),
            (LifecycleState::DeletionAllowed, "transit/kube", false)
        );
        assert_eq!(
            f.remedy,
            "vault write transit/keys/kube/config deletion_allowed=false"
        );
        let ns = KeyPath {
            namespace: Some("team-a"),
            ..PATH
        };
        let f = &of_key(&info(&read), &ns, &[], vid).findings[0];
        assert_eq!(f.key, "team-a/transit/kube");
        assert!(
            f.remedy.starts_with("vault write -namespace=team-a "),
            "{f}"
        );
    }

    #[test]
    fn min_decryption_version_above_a_used_version_names_it_and_how_to_lower_it() {
        let read = READ.replace(
            r#""min_decryption_version":1"#,
            r#""min_decryption_version":3"#,
        );
        let l = of_key(&info(&read), &PATH, &[3, 1, 2, 1], vid);
        let retired: Vec<(&str, &str)> = l
            .findings
            .iter()
            .map(|f| (f.key.as_str(), f.remedy.as_str()))
            .collect();
        assert_eq!(
            retired,
            [
                (
                    "vault:transit/kube:v1",
                    "vault write transit/keys/kube/config min_decryption_version=1"
                ),
                (
                    "vault:transit/kube:v2",
                    "vault write transit/keys/kube/config min_decryption_version=2"
                ),
            ]
        );
        assert!(
            l.findings
                .iter()
                .all(|f| !f.blocks_wrap && f.state == LifecycleState::VersionRetired)
        );
    }

    #[test]
    fn trimmed_or_newer_than_latest_versions_are_reported_gone_not_lowerable() {
        // As Transit answers: `keys` lists only versions from min_decryption_version on.
        let read = r#"{"type":"aes256-gcm96","latest_version":3,"min_decryption_version":3,
            "min_available_version":2,"supports_encryption":true,"supports_decryption":true,
            "keys":{"3":1700000200}}"#;
        let l = of_key(&info(read), &PATH, &[1, 2, 5], vid);
        let remedies: Vec<&str> = l.findings.iter().map(|f| f.remedy.as_str()).collect();
        assert_eq!(remedies.len(), 3, "{l:?}");
        assert!(
            remedies[0].starts_with("none in Transit: version 1 is gone"),
            "{remedies:?}"
        );
        assert_eq!(
            remedies[1],
            "vault write transit/keys/kube/config min_decryption_version=2"
        );
        assert!(
            remedies[2].starts_with("none in Transit: version 5 is gone"),
            "{remedies:?}"
        );
    }
}
