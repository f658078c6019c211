//! Unit tests of the backend that need no server.

use std::time::Instant;

use google_cloud_kms_v1::model::CryptoKeyVersion;
use polykms_backend::ErrorKind;

use super::*;

const KEY: &str = "projects/p/locations/global/keyRings/r/cryptoKeys/k";

fn key_with(purpose: CryptoKeyPurpose, primary: Option<(u32, CryptoKeyVersionState)>) -> CryptoKey {
    let key = CryptoKey::new().set_name(KEY).set_purpose(purpose);
    match primary {
        Some((n, state)) => key.set_primary(
            CryptoKeyVersion::new()
                .set_name(format!("{KEY}/cryptoKeyVersions/{n}"))
                .set_state(state),
        ),
        None => key,
    }
}

fn anonymous(endpoint: &str, timeout_ms: u64) -> GcpConfig {
    GcpConfig {
        key: KEY.into(),
        endpoint: Some(endpoint.into()),
        auth: GcpAuth::Anonymous,
        timeout_ms,
        network: Default::default(),
    }
}

#[test]
fn primary_version_is_the_key_version() {
    let key = key_with(
        CryptoKeyPurpose::EncryptDecrypt,
        Some((3, CryptoKeyVersionState::Enabled)),
    );
    let v = primary_version(&key, true).unwrap();
    assert_eq!(v.as_str(), format!("{KEY}/cryptoKeyVersions/3"));
}

#[test]
fn probe_rejects_a_disabled_or_destroyed_primary() {
    for state in [
        CryptoKeyVersionState::Disabled,
        CryptoKeyVersionState::DestroyScheduled,
        CryptoKeyVersionState::Destroyed,
    ] {
        let key = key_with(CryptoKeyPurpose::EncryptDecrypt, Some((1, state.clone())));
        let err = primary_version(&key, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{state:?}");
        assert!(err.message().contains("not ENABLED"), "{err}");
        // key_version itself still names the version: only probe judges health.
        assert!(primary_version(&key, false).is_ok());
    }
}

#[test]
fn probe_rejects_a_key_with_the_wrong_purpose() {
    let key = key_with(CryptoKeyPurpose::AsymmetricSign, None);
    let err = primary_version(&key, true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(err.message().contains("ASYMMETRIC_SIGN"), "{err}");
}

#[test]
fn a_key_without_primary_is_unavailable() {
    let key = key_with(CryptoKeyPurpose::EncryptDecrypt, None);
    assert_eq!(
        primary_version(&key, false).unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
}

#[tokio::test]
async fn connect_rejects_bad_config_naming_the_field() {
    let mut config = anonymous("http://127.0.0.1:9", 100);
    config.key = "projects/p/keyRings/r".into();
    let err = GcpBackend::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("key:"), "{err}");

    let config = GcpConfig {
        auth: GcpAuth::ServiceAccount {
            credentials_file: "/nonexistent/sa.json".into(),
        },
        ..anonymous("http://127.0.0.1:9", 100)
    };
    let err = GcpBackend::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("auth.credentials_file:"), "{err}");
}

#[tokio::test]
async fn connect_does_not_need_the_key_store() {
    // A port that was just free: connect succeeds, the probe reports the refusal.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b = GcpBackend::connect(&anonymous(&format!("http://127.0.0.1:{port}"), 2000))
        .await
        .unwrap();
    let started = Instant::now();
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_configured_timeout() {
    // Accepts connections, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let b = GcpBackend::connect(&anonymous(&format!("http://{addr}"), 300))
        .await
        .unwrap();
    let started = Instant::now();
    let err = b
        .wrap(&SecretBytes::copy_from(&[1; 32]), b"aad")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(listener);
}

#[tokio::test]
async fn oversized_plaintext_is_rejected_before_any_call() {
    let b = GcpBackend::connect(&anonymous("http://127.0.0.1:9", 100))
        .await
        .unwrap();
    let big = SecretBytes::new(vec![0; MAX_PLAINTEXT + 1]);
    assert_eq!(
        b.wrap(&big, b"a").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let empty = WrappedKey::new(KeyVersion::new("v"), vec![]);
    assert_eq!(
        b.unwrap(&empty, b"a").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn debug_and_describe_name_the_key_and_auth_method() {
    let config = anonymous("https://cloudkms.example.test", 100);
    let b = GcpBackend::connect(&config).await.unwrap();
    for shown in [format!("{b:?}"), b.describe()] {
        assert!(shown.contains(KEY), "{shown}");
        assert!(shown.contains("anonymous"), "{shown}");
        assert!(shown.contains("https://cloudkms.example.test"), "{shown}");
    }
    assert_eq!(b.kind(), "gcp");
    assert_eq!(b.credential_expiry(), None);
}
