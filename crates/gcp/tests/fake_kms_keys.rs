//! Wrap, unwrap, rotation and key states against the fake Cloud KMS.

mod support;

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};

const AAD: &[u8] = b"polykms:v1:test-provider";

fn seed() -> SecretBytes {
    SecretBytes::copy_from(&[0x5a; 32])
}

#[tokio::test]
async fn wrap_unwrap_round_trips_under_the_seeded_key() {
    let Some(fake) = support::fake("wrap_unwrap_round_trips_under_the_seeded_key") else {
        return;
    };
    let b = fake.backend(&fake.seeded_key).await;
    let version = b.probe().await.unwrap();
    assert!(
        version
            .as_str()
            .starts_with(&format!("{}/cryptoKeyVersions/", fake.seeded_key))
    );
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    assert_eq!(wrapped.key_version, version);
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn key_version_is_stable_across_backends_with_the_same_config() {
    let Some(fake) = support::fake("key_version_is_stable_across_backends_with_the_same_config")
    else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let a = fake.backend(&key).await.key_version().await.unwrap();
    let b = fake.backend(&key).await.key_version().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.as_str(), format!("{key}/cryptoKeyVersions/1"));
}

#[tokio::test]
async fn unwrap_rejects_other_additional_authenticated_data() {
    let Some(fake) = support::fake("unwrap_rejects_other_additional_authenticated_data") else {
        return;
    };
    let b = fake.backend(&fake.seeded_key).await;
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    let err = b
        .unwrap(&wrapped, b"polykms:v1:other-cluster")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        b.unwrap(&wrapped, b"").await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn unwrap_rejects_tampered_ciphertext() {
    let Some(fake) = support::fake("unwrap_rejects_tampered_ciphertext") else {
        return;
    };
    let b = fake.backend(&fake.seeded_key).await;
    let mut wrapped = b.wrap(&seed(), AAD).await.unwrap();
    let last = wrapped.ciphertext.len() - 1;
    wrapped.ciphertext[last] ^= 0x01;
    assert_eq!(
        b.unwrap(&wrapped, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
    wrapped.ciphertext.truncate(3);
    assert_eq!(
        b.unwrap(&wrapped, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn unwrap_rejects_ciphertext_of_another_key() {
    let Some(fake) = support::fake("unwrap_rejects_ciphertext_of_another_key") else {
        return;
    };
    let other = fake.backend(&fake.new_key("ENCRYPT_DECRYPT")).await;
    let wrapped = other.wrap(&seed(), AAD).await.unwrap();
    let b = fake.backend(&fake.seeded_key).await;
    assert_eq!(
        b.unwrap(&wrapped, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn rotation_changes_key_version_and_old_ciphertexts_still_unwrap() {
    let Some(fake) = support::fake("rotation_changes_key_version_and_old_ciphertexts_still_unwrap")
    else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let before = b.key_version().await.unwrap();
    let old = b.wrap(&seed(), AAD).await.unwrap();

    fake.control("rotate", &format!(r#"{{"key":"{key}"}}"#));

    let after = b.probe().await.unwrap();
    assert_ne!(before, after);
    assert_eq!(after.as_str(), format!("{key}/cryptoKeyVersions/2"));
    let new = b.wrap(&seed(), AAD).await.unwrap();
    assert_eq!(new.key_version, after);
    assert_eq!(old.key_version, before);
    assert_eq!(b.unwrap(&old, AAD).await.unwrap(), seed());
    assert_eq!(b.unwrap(&new, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn disabled_primary_makes_probe_unhealthy_and_wrap_fail() {
    let Some(fake) = support::fake("disabled_primary_makes_probe_unhealthy_and_wrap_fail") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let version = b.probe().await.unwrap();
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();

    fake.set_version_state(version.as_str(), "DISABLED");

    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("DISABLED"), "{err}");
    // key_version still names the primary: health is the probe's business.
    assert_eq!(b.key_version().await.unwrap(), version);
    let err = b.wrap(&seed(), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        b.unwrap(&wrapped, AAD).await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );

    fake.set_version_state(version.as_str(), "ENABLED");
    assert_eq!(b.probe().await.unwrap(), version);
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn destroyed_version_makes_its_ciphertexts_key_unavailable() {
    let Some(fake) = support::fake("destroyed_version_makes_its_ciphertexts_key_unavailable")
    else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let old = b.wrap(&seed(), AAD).await.unwrap();
    fake.control("rotate", &format!(r#"{{"key":"{key}"}}"#));
    fake.control(
        "destroy-now",
        &format!(r#"{{"version":"{}"}}"#, old.key_version),
    );

    let err = b.unwrap(&old, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    // The new primary is untouched.
    b.probe().await.unwrap();
    let new = b.wrap(&seed(), AAD).await.unwrap();
    assert_eq!(b.unwrap(&new, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn probe_rejects_a_key_that_cannot_encrypt() {
    let Some(fake) = support::fake("probe_rejects_a_key_that_cannot_encrypt") else {
        return;
    };
    let key = fake.new_key("ASYMMETRIC_SIGN");
    let b = fake.backend(&key).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("ASYMMETRIC_SIGN"), "{err}");
    assert_eq!(
        b.wrap(&seed(), AAD).await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
}

#[tokio::test]
async fn a_missing_key_is_key_unavailable() {
    let Some(fake) = support::fake("a_missing_key_is_key_unavailable") else {
        return;
    };
    let b = fake
        .backend("projects/polykms-test/locations/global/keyRings/tests/cryptoKeys/absent")
        .await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("NOT_FOUND"), "{err}");
    assert_eq!(
        b.wrap(&seed(), AAD).await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
}

#[tokio::test]
async fn requests_carry_crc32c_checksums_of_data_and_aad() {
    let Some(fake) = support::fake("requests_carry_crc32c_checksums_of_data_and_aad") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    b.unwrap(&wrapped, AAD).await.unwrap();
    let log: serde_json::Value = serde_json::from_str(&fake.requests()).unwrap();
    let fields_of = |call: &str| -> Vec<String> {
        let path = format!("{key}:{call}");
        let entry = log["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path.as_str())
            .unwrap_or_else(|| panic!("no {call} call in {log}"));
        serde_json::from_value(entry["fields"].clone()).unwrap()
    };
    let encrypt = fields_of("encrypt");
    assert!(
        encrypt.contains(&"plaintextCrc32c".to_string()),
        "{encrypt:?}"
    );
    assert!(
        encrypt.contains(&"additionalAuthenticatedDataCrc32c".to_string()),
        "{encrypt:?}"
    );
    let decrypt = fields_of("decrypt");
    assert!(
        decrypt.contains(&"ciphertextCrc32c".to_string()),
        "{decrypt:?}"
    );
    assert!(
        decrypt.contains(&"additionalAuthenticatedDataCrc32c".to_string()),
        "{decrypt:?}"
    );
}
