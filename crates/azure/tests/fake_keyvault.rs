//! polykms-azure against the fake Key Vault: real HTTPS with a test CA, the 401 bearer
//! challenge, real RSA-OAEP-256 / AES key wrap, rotation, disable, throttling.
//! Start it with `integration/servers/azure-fake.sh start` and `source integration/.run/azure-fake.env`.

mod common;

use std::time::{Duration, Instant};

use polykms_azure::AzureBackend;
use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};
use serde_json::json;

const AAD: &[u8] = b"polykms:v1:test-provider";

fn seed(byte: u8) -> SecretBytes {
    SecretBytes::copy_from(&[byte; 32])
}

macro_rules! fake_or_skip {
    ($name:literal) => {
        match common::fake($name) {
            Some(f) => f,
            None => return,
        }
    };
}

#[tokio::test]
async fn wrap_unwrap_round_trips_and_records_the_version_used() {
    let fake = fake_or_skip!("wrap_unwrap_round_trips_and_records_the_version_used");
    let key = fake
        .create_key("roundtrip", json!({"kty": "RSA", "size": 2048}))
        .await;
    let b = fake.backend(&key).await;
    let current = b.probe().await.unwrap();
    assert!(
        current
            .as_str()
            .starts_with(&format!("{}/keys/{key}/", fake.url)),
        "{current}"
    );
    assert_eq!(b.key_version().await.unwrap(), current);

    let w = b.wrap(&seed(1), AAD).await.unwrap();
    assert_eq!(w.key_version, current);
    assert_eq!(w.ciphertext.len(), 256, "RSA-2048 ciphertext");
    assert_eq!(b.unwrap(&w, AAD).await.unwrap(), seed(1));
}

#[tokio::test]
async fn unwrap_rejects_other_encryption_context() {
    let fake = fake_or_skip!("unwrap_rejects_other_encryption_context");
    let key = fake.create_key("aad", json!({})).await;
    let b = fake.backend(&key).await;
    let w = b.wrap(&seed(2), b"polykms:v1:cluster-a").await.unwrap();
    let err = b.unwrap(&w, b"polykms:v1:cluster-b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
}

#[tokio::test]
async fn tampered_ciphertext_is_wrong_key() {
    let fake = fake_or_skip!("tampered_ciphertext_is_wrong_key");
    let key = fake.create_key("tamper", json!({})).await;
    let b = fake.backend(&key).await;
    let mut w = b.wrap(&seed(3), AAD).await.unwrap();
    w.ciphertext[10] ^= 0x40;
    let err = b.unwrap(&w, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn rotation_changes_key_version_and_old_ciphertexts_still_unwrap() {
    let fake = fake_or_skip!("rotation_changes_key_version_and_old_ciphertexts_still_unwrap");
    let key = fake.create_key("rotate", json!({})).await;
    let b = fake.backend(&key).await;
    let v1 = b.key_version().await.unwrap();
    let old = b.wrap(&seed(4), AAD).await.unwrap();

    fake.control(&format!("keys/{key}/rotate"), Some(json!({})))
        .await;
    let v2 = b.probe().await.unwrap();
    assert_ne!(v1, v2, "a versionless key follows rotation");
    let new = b.wrap(&seed(5), AAD).await.unwrap();
    assert_eq!(new.key_version, v2);
    assert_eq!(b.unwrap(&old, AAD).await.unwrap(), seed(4));
    assert_eq!(b.unwrap(&new, AAD).await.unwrap(), seed(5));
}

#[tokio::test]
async fn pinned_version_ignores_rotation() {
    let fake = fake_or_skip!("pinned_version_ignores_rotation");
    let key = fake.create_key("pinned", json!({})).await;
    let first = fake.backend(&key).await.key_version().await.unwrap();
    let version = first.as_str().rsplit('/').next().unwrap().to_owned();
    fake.control(&format!("keys/{key}/rotate"), Some(json!({})))
        .await;

    let pinned = AzureBackend::connect(&fake.config_with(&key, json!({"key_version": version})))
        .await
        .unwrap();
    assert_eq!(pinned.probe().await.unwrap(), first);
    let w = pinned.wrap(&seed(6), AAD).await.unwrap();
    assert_eq!(w.key_version, first);
    // The versionless backend can still unwrap it: unwrap goes to the recorded version.
    assert_eq!(
        fake.backend(&key).await.unwrap(&w, AAD).await.unwrap(),
        seed(6)
    );
}

#[tokio::test]
async fn disabled_key_is_unavailable_until_enabled() {
    let fake = fake_or_skip!("disabled_key_is_unavailable_until_enabled");
    let key = fake.create_key("disable", json!({})).await;
    let b = fake.backend(&key).await;
    let w = b.wrap(&seed(7), AAD).await.unwrap();

    fake.control(&format!("keys/{key}/disable"), Some(json!({})))
        .await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("disabled"), "{err}");
    let err = b.wrap(&seed(7), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    let err = b.unwrap(&w, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(!err.is_retryable());

    fake.control(&format!("keys/{key}/enable"), Some(json!({})))
        .await;
    b.probe().await.unwrap();
    assert_eq!(b.unwrap(&w, AAD).await.unwrap(), seed(7));
}

#[tokio::test]
async fn expired_key_or_key_without_wrap_permission_fails_probe() {
    let fake = fake_or_skip!("expired_key_or_key_without_wrap_permission_fails_probe");
    let expired = fake
        .create_key("expired", json!({"exp": 1_000_000_000}))
        .await;
    let err = fake.backend(&expired).await.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");

    let sign_only = fake
        .create_key("signonly", json!({"key_ops": ["sign", "verify"]}))
        .await;
    let b = fake.backend(&sign_only).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("wrapKey"), "{err}");
    let err = b.wrap(&seed(8), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
}

#[tokio::test]
async fn missing_key_is_key_unavailable() {
    let fake = fake_or_skip!("missing_key_is_key_unavailable");
    let b = fake.backend(&common::unique_name("never-created")).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert!(err.message().contains("KeyNotFound"), "{err}");
}

#[tokio::test]
async fn aes_key_wrap_works_on_managed_hsm_style_keys() {
    let fake = fake_or_skip!("aes_key_wrap_works_on_managed_hsm_style_keys");
    for alg in ["A256KW", "CKM_AES_KEY_WRAP_PAD"] {
        let key = fake
            .create_key("octhsm", json!({"kty": "oct-HSM", "size": 256}))
            .await;
        let b = AzureBackend::connect(&fake.config_with(&key, json!({"algorithm": alg})))
            .await
            .unwrap();
        b.probe().await.unwrap();
        let w = b.wrap(&seed(9), AAD).await.unwrap();
        assert_eq!(
            w.ciphertext.len(),
            32 + 32 + 8,
            "{alg}: digest + seed + KW block"
        );
        assert_eq!(b.unwrap(&w, AAD).await.unwrap(), seed(9), "{alg}");
        assert_eq!(
            b.unwrap(&w, b"other").await.unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }
}

#[tokio::test]
async fn algorithm_that_does_not_fit_the_key_type_fails_probe_as_config() {
    let fake = fake_or_skip!("algorithm_that_does_not_fit_the_key_type_fails_probe_as_config");
    let key = fake.create_key("mismatch", json!({"kty": "RSA"})).await;
    let b = AzureBackend::connect(&fake.config_with(&key, json!({"algorithm": "A256KW"})))
        .await
        .unwrap();
    assert_eq!(b.probe().await.unwrap_err().kind(), ErrorKind::Config);
    assert_eq!(
        b.wrap(&seed(1), AAD).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn throttled_call_is_retried_after_retry_after() {
    let fake = fake_or_skip!("throttled_call_is_retried_after_retry_after");
    let key = fake.create_key("throttle", json!({})).await;
    let b = AzureBackend::connect(&fake.config_with(&key, json!({"max_retries": 1})))
        .await
        .unwrap();
    b.probe().await.unwrap();
    fake.control(
        &format!("keys/{key}/fault"),
        Some(json!({"count": 1, "status": 429, "retry_after": 1})),
    )
    .await;
    let started = Instant::now();
    let w = b.wrap(&seed(10), AAD).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(b.unwrap(&w, AAD).await.unwrap(), seed(10));
    let stats = fake.control(&format!("keys/{key}/stats"), None).await;
    assert_eq!(stats["faulted"], 1);
}

#[tokio::test]
async fn throttling_and_server_errors_are_retryable_for_core() {
    let fake = fake_or_skip!("throttling_and_server_errors_are_retryable_for_core");
    let key = fake.create_key("busy", json!({})).await;
    let b = fake.backend(&key).await; // max_retries = 0: the error reaches core at once
    b.probe().await.unwrap();
    for (status, kind) in [
        (429, ErrorKind::Unavailable),
        (503, ErrorKind::Unavailable),
        (504, ErrorKind::Timeout),
    ] {
        fake.control(
            &format!("keys/{key}/fault"),
            Some(json!({"count": 1, "status": status, "retry_after": 7})),
        )
        .await;
        let err = b.wrap(&seed(11), AAD).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert!(err.is_retryable(), "{status}");
        assert!(err.message().contains("retry after 7s"), "{err}");
    }
    b.wrap(&seed(11), AAD).await.unwrap();
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_a_rotated_token_file_is_picked_up() {
    let fake = fake_or_skip!("wrong_token_is_unauthorized_and_a_rotated_token_file_is_picked_up");
    let key = fake.create_key("token", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "not-a-valid-token\n").unwrap();
    let cfg = fake.config_with(
        &key,
        json!({"auth": {"method": "token_file", "token_file": token_file}}),
    );
    let b = AzureBackend::connect(&cfg).await.unwrap();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable());
    assert!(!err.message().contains("not-a-valid-token"), "{err}");

    let fresh = common::unique_name("rotated-token");
    fake.control("tokens", Some(json!({"token": fresh}))).await;
    std::fs::write(&token_file, &fresh).unwrap();
    b.probe().await.unwrap();
}

#[tokio::test]
async fn challenge_for_another_resource_is_refused_when_verification_is_on() {
    let fake = fake_or_skip!("challenge_for_another_resource_is_refused_when_verification_is_on");
    let key = fake.create_key("challenge", json!({})).await;
    // The fake's challenge names https://vault.azure.net; 127.0.0.1 is not under it.
    let b =
        AzureBackend::connect(&fake.config_with(&key, json!({"verify_challenge_resource": true})))
            .await
            .unwrap();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.message().contains("verify_challenge_resource"), "{err}");
}

#[tokio::test]
async fn vault_certificate_must_be_trusted() {
    let fake = fake_or_skip!("vault_certificate_must_be_trusted");
    let key = fake.create_key("tls", json!({})).await;
    let b = AzureBackend::connect(&fake.config_with(&key, json!({"ca_file": null})))
        .await
        .unwrap();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(!err.is_retryable());
    assert!(err.message().contains("ca_file"), "{err}");
}

#[tokio::test]
async fn envelope_of_another_key_is_wrong_key() {
    let fake = fake_or_skip!("envelope_of_another_key_is_wrong_key");
    let a = fake.create_key("key-a", json!({})).await;
    let b_name = fake.create_key("key-b", json!({})).await;
    let w = fake.backend(&a).await.wrap(&seed(12), AAD).await.unwrap();
    let err = fake
        .backend(&b_name)
        .await
        .unwrap(&w, AAD)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
}

#[tokio::test]
async fn describe_names_vault_and_key_but_no_token() {
    let fake = fake_or_skip!("describe_names_vault_and_key_but_no_token");
    let b = fake.backend("polykms-kek").await;
    let line = b.describe();
    assert!(
        line.contains(&fake.url) && line.contains("polykms-kek") && line.contains("RSA-OAEP-256"),
        "{line}"
    );
    let token = std::fs::read_to_string(&fake.token_file).unwrap();
    assert!(!line.contains(token.trim()));
    assert!(!format!("{b:?}").contains(token.trim()));
}
