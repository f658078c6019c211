//! Integrity checks, error classification, timeouts and auth against the fake Cloud KMS.

mod support;

use std::time::{Duration, Instant};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};
use polykms_gcp::{GcpAuth, GcpBackend};

const AAD: &[u8] = b"polykms:v1:test-provider";

fn seed() -> SecretBytes {
    SecretBytes::copy_from(&[0x33; 32])
}

fn corrupt_next(fake: &support::Fake, key: &str, method: &str, field: &str) {
    fake.control(
        "corrupt-next",
        &format!(r#"{{"key":"{key}","method":"{method}","field":"{field}"}}"#),
    );
}

#[tokio::test]
async fn corrupted_ciphertext_crc_in_encrypt_response_is_rejected() {
    let Some(fake) = support::fake("corrupted_ciphertext_crc_in_encrypt_response_is_rejected")
    else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    for field in ["ciphertextCrc32c", "ciphertext"] {
        corrupt_next(&fake, &key, "encrypt", field);
        let err = b.wrap(&seed(), AAD).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{field}: {err}");
        assert!(
            err.is_retryable(),
            "{field}: a retry may get an intact answer"
        );
    }
    // The fault was one-shot: the next call is clean.
    b.wrap(&seed(), AAD).await.unwrap();
}

#[tokio::test]
async fn unverified_request_checksums_are_rejected() {
    let Some(fake) = support::fake("unverified_request_checksums_are_rejected") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    for field in [
        "verifiedPlaintextCrc32c",
        "verifiedAdditionalAuthenticatedDataCrc32c",
    ] {
        corrupt_next(&fake, &key, "encrypt", field);
        let err = b.wrap(&seed(), AAD).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{field}: {err}");
        assert!(err.message().contains("verified"), "{err}");
    }
}

#[tokio::test]
async fn encrypt_answer_naming_another_key_is_rejected() {
    let Some(fake) = support::fake("encrypt_answer_naming_another_key_is_rejected") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    corrupt_next(&fake, &key, "encrypt", "name");
    let err = b.wrap(&seed(), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
}

#[tokio::test]
async fn corrupted_plaintext_crc_in_decrypt_response_is_rejected() {
    let Some(fake) = support::fake("corrupted_plaintext_crc_in_decrypt_response_is_rejected")
    else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    corrupt_next(&fake, &key, "decrypt", "plaintextCrc32c");
    let err = b.unwrap(&wrapped, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.is_retryable());
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn service_errors_are_classified_by_status() {
    let Some(fake) = support::fake("service_errors_are_classified_by_status") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    let cases = [
        ("UNAVAILABLE", ErrorKind::Unavailable, true),
        ("RESOURCE_EXHAUSTED", ErrorKind::Unavailable, true),
        ("DEADLINE_EXCEEDED", ErrorKind::Timeout, true),
        ("PERMISSION_DENIED", ErrorKind::Unauthorized, false),
        ("UNAUTHENTICATED", ErrorKind::Unauthorized, false),
        ("FAILED_PRECONDITION", ErrorKind::KeyUnavailable, false),
        ("NOT_FOUND", ErrorKind::KeyUnavailable, false),
        ("INTERNAL", ErrorKind::Internal, false),
    ];
    for (code, kind, retryable) in cases {
        for method in ["encrypt", "decrypt", "get"] {
            fake.control(
                "fail-next",
                &format!(r#"{{"key":"{key}","method":"{method}","code":"{code}"}}"#),
            );
            let err = match method {
                "encrypt" => b.wrap(&seed(), AAD).await.map(|_| ()),
                "decrypt" => b.unwrap(&wrapped, AAD).await.map(|_| ()),
                _ => b.probe().await.map(|_| ()),
            }
            .unwrap_err();
            assert_eq!(err.kind(), kind, "{code} on {method}: {err}");
            assert_eq!(err.is_retryable(), retryable, "{code} on {method}: {err}");
            assert!(err.message().contains(code), "{err}");
        }
    }
    // INVALID_ARGUMENT means "not ours" on decrypt only.
    fake.control(
        "fail-next",
        &format!(r#"{{"key":"{key}","method":"encrypt","code":"INVALID_ARGUMENT"}}"#),
    );
    assert_eq!(
        b.wrap(&seed(), AAD).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    fake.control(
        "fail-next",
        &format!(r#"{{"key":"{key}","method":"decrypt","code":"INVALID_ARGUMENT"}}"#),
    );
    assert_eq!(
        b.unwrap(&wrapped, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn unavailable_is_not_retried_by_the_client_itself() {
    let Some(fake) = support::fake("unavailable_is_not_retried_by_the_client_itself") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let b = fake.backend(&key).await;
    // Two faults queued: one call must consume exactly one (core owns retries).
    fake.control(
        "fail-next",
        &format!(r#"{{"key":"{key}","code":"UNAVAILABLE","count":2}}"#),
    );
    assert_eq!(b.probe().await.unwrap_err().kind(), ErrorKind::Unavailable);
    assert_eq!(b.probe().await.unwrap_err().kind(), ErrorKind::Unavailable);
    b.probe().await.unwrap();
}

#[tokio::test]
async fn a_slow_answer_times_out_within_timeout_ms() {
    let Some(fake) = support::fake("a_slow_answer_times_out_within_timeout_ms") else {
        return;
    };
    let key = fake.new_key("ENCRYPT_DECRYPT");
    let config = polykms_gcp::GcpConfig {
        timeout_ms: 300,
        ..fake.config(&key)
    };
    let b = GcpBackend::connect(&config).await.unwrap();
    fake.control(
        "delay-next",
        &format!(r#"{{"key":"{key}","method":"encrypt","ms":1500}}"#),
    );
    let started = Instant::now();
    let err = b.wrap(&seed(), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn service_account_key_authenticates_with_a_self_signed_jwt() {
    let Some(fake) = support::fake("service_account_key_authenticates_with_a_self_signed_jwt")
    else {
        return;
    };
    let config = polykms_gcp::GcpConfig {
        auth: GcpAuth::ServiceAccount {
            credentials_file: fake.sa_file.clone().into(),
        },
        ..fake.config(&fake.seeded_key)
    };
    let b = GcpBackend::connect(&config).await.unwrap();
    b.probe().await.unwrap();
    let wrapped = b.wrap(&seed(), AAD).await.unwrap();
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed());
}

#[tokio::test]
async fn untrusted_service_account_is_unauthorized() {
    let Some(fake) = support::fake("untrusted_service_account_is_unauthorized") else {
        return;
    };
    let config = polykms_gcp::GcpConfig {
        auth: GcpAuth::ServiceAccount {
            credentials_file: fake.untrusted_sa_file.clone().into(),
        },
        ..fake.config(&fake.seeded_key)
    };
    let b = GcpBackend::connect(&config).await.unwrap();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.message().contains("UNAUTHENTICATED"), "{err}");
    assert_eq!(
        b.wrap(&seed(), AAD).await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
}
