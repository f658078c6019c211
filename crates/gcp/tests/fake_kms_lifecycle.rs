//! Key lifecycle against the fake Cloud KMS: version states changed through the real REST
//! calls (UpdateCryptoKeyVersion, DestroyCryptoKeyVersion, RestoreCryptoKeyVersion).

mod support;

use std::time::{Duration, SystemTime};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, LifecycleState, SecretBytes};

const AAD: &[u8] = b"polykms:v1:test-provider";

/// How far ahead the keys made here schedule destruction (`destroyScheduledDuration`).
const DESTROY_AFTER: Duration = Duration::from_secs(3 * 24 * 3600);

/// A new ENCRYPT_DECRYPT key whose destroy calls schedule destruction `DESTROY_AFTER` ahead.
fn new_key(fake: &support::Fake) -> String {
    let ring = "projects/polykms-test/locations/global/keyRings/lifecycle";
    let (status, _) = fake.http(
        "POST",
        "/v1/projects/polykms-test/locations/global/keyRings?keyRingId=lifecycle",
        "{}",
    );
    assert!(status == 200 || status == 409, "create key ring: {status}");
    let id = format!("k{:016x}", rand::random::<u64>());
    let (status, body) = fake.http(
        "POST",
        &format!("/v1/{ring}/cryptoKeys?cryptoKeyId={id}"),
        &format!(
            r#"{{"purpose":"ENCRYPT_DECRYPT","destroyScheduledDuration":"{}s"}}"#,
            DESTROY_AFTER.as_secs()
        ),
    );
    assert_eq!(status, 200, "create crypto key: {body}");
    format!("{ring}/cryptoKeys/{id}")
}

fn destroy(fake: &support::Fake, version: &str) {
    let (status, body) = fake.http("POST", &format!("/v1/{version}:destroy"), "");
    assert_eq!(status, 200, "destroy: {body}");
}

fn restore(fake: &support::Fake, version: &str) {
    let (status, body) = fake.http("POST", &format!("/v1/{version}:restore"), "");
    assert_eq!(status, 200, "restore: {body}");
}

/// Within a minute of `want` (the fake and this test read the clock at slightly different times).
fn near(at: Option<SystemTime>, want: SystemTime) -> bool {
    at.is_some_and(|at| {
        let apart = at.duration_since(want).unwrap_or_else(|e| e.duration());
        apart < Duration::from_secs(60)
    })
}

#[tokio::test]
async fn a_healthy_key_reports_nothing() {
    let Some(fake) = support::fake("a_healthy_key_reports_nothing") else {
        return;
    };
    let key = new_key(&fake);
    let b = fake.backend(&key).await;
    let v = b.probe().await.unwrap();
    assert_eq!(b.key_lifecycle(&[v]).await.unwrap().findings, []);
}

#[tokio::test]
async fn a_disabled_primary_blocks_wrap_until_enabled_again() {
    let Some(fake) = support::fake("a_disabled_primary_blocks_wrap_until_enabled_again") else {
        return;
    };
    let key = new_key(&fake);
    let b = fake.backend(&key).await;
    let primary = b.probe().await.unwrap();
    fake.set_version_state(primary.as_str(), "DISABLED");

    let l = b.key_lifecycle(&[]).await.unwrap();
    let f = l.blocking().expect("a disabled primary blocks wrap");
    assert_eq!(f.state, LifecycleState::Disabled);
    assert_eq!(f.key, primary.as_str());
    assert_eq!(f.remedy, "UpdateCryptoKeyVersion state=ENABLED");

    fake.set_version_state(primary.as_str(), "ENABLED");
    assert_eq!(b.key_lifecycle(&[]).await.unwrap().findings, []);
}

#[tokio::test]
async fn a_primary_scheduled_for_destruction_blocks_wrap_with_its_destroy_time() {
    let Some(fake) =
        support::fake("a_primary_scheduled_for_destruction_blocks_wrap_with_its_destroy_time")
    else {
        return;
    };
    let key = new_key(&fake);
    let b = fake.backend(&key).await;
    let primary = b.probe().await.unwrap();
    destroy(&fake, primary.as_str());
    let scheduled = SystemTime::now() + DESTROY_AFTER;

    let l = b
        .key_lifecycle(std::slice::from_ref(&primary))
        .await
        .unwrap();
    assert_eq!(l.findings.len(), 1, "{l:?}");
    let f = l.blocking().expect("a primary being destroyed blocks wrap");
    assert_eq!(f.state, LifecycleState::PendingDeletion);
    assert!(near(f.at, scheduled), "destroyTime {:?}", f.at);
    assert!(f.remedy.starts_with("RestoreCryptoKeyVersion"), "{f}");

    // Restore leaves the version DISABLED: still blocking, now with the enable remedy.
    restore(&fake, primary.as_str());
    let l = b.key_lifecycle(&[]).await.unwrap();
    assert_eq!(
        l.blocking().map(|f| f.state),
        Some(LifecycleState::Disabled)
    );
    fake.set_version_state(primary.as_str(), "ENABLED");
    assert_eq!(b.key_lifecycle(&[]).await.unwrap().findings, []);
}

#[tokio::test]
async fn an_older_version_decrypts_use_warns_without_blocking() {
    let Some(fake) = support::fake("an_older_version_decrypts_use_warns_without_blocking") else {
        return;
    };
    let key = new_key(&fake);
    let b = fake.backend(&key).await;
    let wrapped = b
        .wrap(&SecretBytes::copy_from(&[7; 32]), AAD)
        .await
        .unwrap();
    let v1 = wrapped.key_version.clone();
    fake.control("rotate", &format!(r#"{{"key":"{key}"}}"#));
    let v2 = b.probe().await.unwrap();
    assert_ne!(v1, v2);
    // A version nobody decrypts with is none of polykms' business.
    fake.control("rotate", &format!(r#"{{"key":"{key}"}}"#));
    let v3 = b.probe().await.unwrap();
    fake.set_version_state(v2.as_str(), "DISABLED");
    destroy(&fake, v1.as_str());
    let scheduled = SystemTime::now() + DESTROY_AFTER;

    let l = b.key_lifecycle(&[v1.clone(), v3.clone()]).await.unwrap();
    assert_eq!(l.blocking(), None, "{l:?}");
    assert_eq!(l.findings.len(), 1, "{l:?}");
    let f = &l.findings[0];
    assert_eq!(
        (f.state, f.key.as_str()),
        (LifecycleState::PendingDeletion, v1.as_str())
    );
    assert!(near(f.at, scheduled), "destroyTime {:?}", f.at);

    // Once Decrypts used the disabled version too, it is reported as well.
    let l = b.key_lifecycle(&[v1.clone(), v2.clone()]).await.unwrap();
    assert!(l.blocking().is_none());
    assert!(
        l.findings
            .iter()
            .any(|f| f.state == LifecycleState::Disabled && f.key == v2.as_str()),
        "{l:?}"
    );

    restore(&fake, v1.as_str());
    fake.set_version_state(v1.as_str(), "ENABLED");
    fake.set_version_state(v2.as_str(), "ENABLED");
    assert_eq!(b.key_lifecycle(&[v1, v2]).await.unwrap().findings, []);
}

#[tokio::test]
async fn a_denied_metadata_read_is_an_error_not_a_finding() {
    let Some(fake) = support::fake("a_denied_metadata_read_is_an_error_not_a_finding") else {
        return;
    };
    let key = new_key(&fake);
    let b = fake.backend(&key).await;
    let v1 = b.probe().await.unwrap();
    fake.control("rotate", &format!(r#"{{"key":"{key}"}}"#));
    // The version read fails after the key read succeeded: no partial answer.
    fake.control(
        "fail-next",
        &format!(r#"{{"code":"PERMISSION_DENIED","method":"get","key":"{v1}"}}"#),
    );
    let err = b.key_lifecycle(&[v1]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("get crypto key version"), "{err}");
}
