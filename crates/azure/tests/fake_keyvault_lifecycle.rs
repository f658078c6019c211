//! Key lifecycle against the fake Key Vault: key attributes changed through Update Key (the
//! call behind `az keyvault key set-attributes`) and the vault's recovery level.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, LifecycleState, SecretBytes};
use serde_json::json;

const AAD: &[u8] = b"polykms:v1:test-provider";
const DAY: u64 = 24 * 3600;

macro_rules! fake_or_skip {
    ($name:literal) => {
        match common::fake($name) {
            Some(f) => f,
            None => return,
        }
    };
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The version id at the end of a kid.
fn version_of(kid: &str) -> &str {
    kid.rsplit('/').next().expect("a kid has a version")
}

/// A key whose vault has purge protection, so only what a test changes is reported.
async fn protected_key(fake: &common::Fake, prefix: &str) -> String {
    fake.create_key(
        prefix,
        json!({"kty": "RSA", "size": 2048, "recovery_level": "Recoverable"}),
    )
    .await
}

#[tokio::test]
async fn a_protected_enabled_key_reports_nothing() {
    let fake = fake_or_skip!("a_protected_enabled_key_reports_nothing");
    let key = protected_key(&fake, "lc-quiet").await;
    let b = fake.backend(&key).await;
    let kid = b.probe().await.unwrap();
    assert_eq!(b.key_lifecycle(&[kid]).await.unwrap().findings, []);
}

#[tokio::test]
async fn a_disabled_key_blocks_wrap_until_enabled_again() {
    let fake = fake_or_skip!("a_disabled_key_blocks_wrap_until_enabled_again");
    let key = protected_key(&fake, "lc-disabled").await;
    let b = fake.backend(&key).await;
    let kid = b.probe().await.unwrap();
    let version = version_of(kid.as_str());
    fake.update_key(&key, version, json!({"attributes": {"enabled": false}}))
        .await;

    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("a disabled key blocks wrap");
    assert_eq!(f.state, LifecycleState::Disabled);
    assert_eq!(f.key, kid.as_str());
    assert_eq!(
        f.remedy,
        "set the key enabled (az keyvault key set-attributes --enabled true)"
    );

    fake.update_key(&key, version, json!({"attributes": {"enabled": true}}))
        .await;
    assert_eq!(b.key_lifecycle(&[]).await.unwrap().findings, []);
}

#[tokio::test]
async fn exp_past_blocks_and_exp_within_the_window_warns_at_exp() {
    let fake = fake_or_skip!("exp_past_blocks_and_exp_within_the_window_warns_at_exp");
    let key = protected_key(&fake, "lc-exp").await;
    let b = fake.backend(&key).await;
    let kid = b.probe().await.unwrap();
    let version = version_of(kid.as_str());

    let exp = unix_now() + 10 * DAY;
    fake.update_key(&key, version, json!({"attributes": {"exp": exp}}))
        .await;
    let l = b.key_lifecycle(&[]).await.unwrap();
    assert_eq!(l.blocking(), None, "{l:?}");
    assert_eq!(l.findings.len(), 1, "{l:?}");
    assert_eq!(l.findings[0].state, LifecycleState::Expiring);
    assert_eq!(
        l.findings[0].at,
        Some(UNIX_EPOCH + Duration::from_secs(exp))
    );

    // A window shorter than the time left: nothing yet.
    let short = fake.config_with(&key, json!({"expiry_warning": "5d"}));
    let b5 = polykms_azure::AzureBackend::connect(&short).await.unwrap();
    assert_eq!(b5.key_lifecycle(&[]).await.unwrap().findings, []);

    fake.update_key(
        &key,
        version,
        json!({"attributes": {"exp": unix_now() - 60}}),
    )
    .await;
    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("an expired key blocks wrap");
    assert_eq!(f.state, LifecycleState::Expired);
    assert!(f.remedy.contains("--expires"), "{f}");
}

#[tokio::test]
async fn a_vault_without_purge_protection_warns_without_blocking() {
    let fake = fake_or_skip!("a_vault_without_purge_protection_warns_without_blocking");
    let key = protected_key(&fake, "lc-purge").await;
    let b = fake.backend(&key).await;
    for level in [
        "Recoverable+Purgeable",
        "Purgeable",
        "CustomizedRecoverable+Purgeable",
    ] {
        fake.control(
            &format!("keys/{key}/recovery-level"),
            Some(json!({"recovery_level": level})),
        )
        .await;
        let l = b.key_lifecycle(&[]).await.unwrap();
        assert_eq!(l.blocking(), None, "{level}: {l:?}");
        assert_eq!(l.findings.len(), 1, "{level}: {l:?}");
        let f = &l.findings[0];
        assert_eq!(f.state, LifecycleState::DeletionAllowed, "{level}");
        assert_eq!(f.key, format!("{}/keys/{key}", fake.url));
        assert!(f.remedy.contains("purge protection"), "{f}");
    }
}

#[tokio::test]
async fn a_disabled_older_version_decrypts_use_warns_without_blocking() {
    let fake = fake_or_skip!("a_disabled_older_version_decrypts_use_warns_without_blocking");
    let key = protected_key(&fake, "lc-older").await;
    let b = fake.backend(&key).await;
    let old = b
        .wrap(&SecretBytes::copy_from(&[3; 32]), AAD)
        .await
        .unwrap()
        .key_version;
    fake.control(&format!("keys/{key}/rotate"), Some(json!({})))
        .await;
    let current = b.probe().await.unwrap();
    assert_ne!(old, current);
    fake.update_key(
        &key,
        version_of(old.as_str()),
        json!({"attributes": {"enabled": false}}),
    )
    .await;

    // Not used by any Decrypt: not reported.
    assert_eq!(b.key_lifecycle(&[]).await.unwrap().findings, []);
    let l = b
        .key_lifecycle(&[old.clone(), current.clone()])
        .await
        .unwrap();
    assert_eq!(l.blocking(), None, "{l:?}");
    assert_eq!(l.findings.len(), 1, "{l:?}");
    assert_eq!(
        (l.findings[0].state, l.findings[0].key.as_str()),
        (LifecycleState::Disabled, old.as_str())
    );
    assert!(
        l.findings[0]
            .remedy
            .contains(&format!("--version {}", version_of(old.as_str()))),
        "{}",
        l.findings[0]
    );
}

#[tokio::test]
async fn a_denied_metadata_read_is_an_error_not_a_finding() {
    let fake = fake_or_skip!("a_denied_metadata_read_is_an_error_not_a_finding");
    let key = protected_key(&fake, "lc-denied").await;
    let b = fake.backend(&key).await;
    fake.control(
        &format!("keys/{key}/fault"),
        Some(json!({"count": 1, "status": 403, "retry_after": 0})),
    )
    .await;
    let err = b.key_lifecycle(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}
