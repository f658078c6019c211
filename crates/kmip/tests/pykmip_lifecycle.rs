//! Key lifecycle against a real PyKMIP server (`integration/servers/kmip.sh start`, then
//! `source integration/.run/kmip.env && cargo test -p polykms-kmip --test pykmip_lifecycle`):
//! the State of the key that wraps and of older keys Decrypts used, changed with PyKMIP's own
//! client. PyKMIP keeps no Deactivation Date (it refuses to set one and answers nothing when
//! asked), so the Expiring case is tested against the in-process fake (src/tests/lifecycle.rs);
//! here asking for it must not disturb the answer.

mod common;

use polykms_backend::{KeyEncryptionBackend, KeyVersion, LifecycleState, SecretBytes};

use common::{env, unique};

const AAD: &[u8] = b"polykms:v1:test-cluster";

#[tokio::test]
async fn a_revoked_pinned_key_blocks_wraps_and_the_finding_names_a_new_active_key() {
    let Some(e) = env("a_revoked_pinned_key_blocks_wraps_and_the_finding_names_a_new_active_key")
    else {
        return;
    };
    let name = unique("lc-pinned");
    let uid = e.create_key(&name);
    let mut c = e.config(&name);
    c.key_name = None;
    c.key_uid = Some(uid.clone());
    let b = e.backend(&c).await;
    b.probe().await.unwrap();
    let active = b.key_lifecycle(&[]).await.unwrap();
    assert!(active.findings.is_empty(), "{active:?}");

    e.admin(&["revoke", &uid]);
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l
        .blocking()
        .expect("a Deactivated current key blocks wraps");
    assert_eq!(
        (f.key.as_str(), f.state),
        (uid.as_str(), LifecycleState::Disabled)
    );
    assert!(
        f.remedy.contains("Deactivated") && f.remedy.contains("set key_uid"),
        "{f}"
    );
}

#[tokio::test]
async fn older_keys_decrypts_used_warn_when_revoked_and_when_destroyed() {
    let Some(e) = env("older_keys_decrypts_used_warn_when_revoked_and_when_destroyed") else {
        return;
    };
    let name = unique("lc-older");
    let first = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    b.probe().await.unwrap();
    let old = b
        .wrap(&SecretBytes::copy_from(&[1; 32]), AAD)
        .await
        .unwrap();
    let second = e.create_key(&name);
    assert_eq!(b.probe().await.unwrap().as_str(), second);
    let in_use = [
        KeyVersion::new(first.as_str()),
        KeyVersion::new(second.as_str()),
    ];
    assert!(b.key_lifecycle(&in_use).await.unwrap().findings.is_empty());

    e.admin(&["revoke", &first]);
    // PyKMIP refuses Decrypt with the Deactivated key: the warning is what tells it ahead of
    // a Decrypt. The current key still wraps, so nothing blocks.
    let l = b.key_lifecycle(&in_use).await.unwrap();
    assert_eq!(l.blocking(), None);
    let f = &l.findings[..];
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].key.as_str(), f[0].state),
        (first.as_str(), LifecycleState::Disabled)
    );
    assert!(f[0].remedy.contains("reencrypt"), "{}", f[0]);
    assert!(b.unwrap(&old, AAD).await.is_err());

    // PyKMIP deletes destroyed objects: Get Attributes answers Item Not Found.
    e.admin(&["destroy", &first]);
    let l = b.key_lifecycle(&in_use).await.unwrap();
    assert_eq!(l.blocking(), None);
    assert_eq!(
        l.findings
            .iter()
            .map(|f| (f.key.as_str(), f.state))
            .collect::<Vec<_>>(),
        [(first.as_str(), LifecycleState::VersionRetired)]
    );
    assert!(b.probe().await.is_ok());
}

#[tokio::test]
async fn a_named_key_revoked_with_no_other_active_key_is_blocking_after_wraps_fail() {
    let Some(e) = env("a_named_key_revoked_with_no_other_active_key_is_blocking_after_wraps_fail")
    else {
        return;
    };
    let name = unique("lc-named");
    let uid = e.create_key(&name);
    let b = e.backend(&e.config(&name)).await;
    b.wrap(&SecretBytes::copy_from(&[2; 32]), AAD)
        .await
        .unwrap();
    e.admin(&["revoke", &uid]);
    b.wrap(&SecretBytes::copy_from(&[2; 32]), AAD)
        .await
        .unwrap_err();
    b.probe().await.unwrap_err();
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("the revoked key blocks wraps");
    assert_eq!(f.key, uid);
    assert!(f.remedy.contains(&format!("named {name:?}")), "{f}");
}
