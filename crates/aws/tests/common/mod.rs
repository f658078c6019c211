//! Shared by the moto and real-AWS suites: env gating and the checks both run.
#![allow(dead_code)]

use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes, WrappedKey};

/// The value of `var`, or `None` after printing why the test is skipped. Panics instead when
/// `require_var` is `1`: CI must not pass by skipping.
pub fn env_or_skip(var: &str, require_var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var(require_var).as_deref() == Ok("1") => {
            panic!("{test}: {var} is not set but {require_var}=1")
        }
        _ => {
            eprintln!("skipped {test}: {var} is not set");
            None
        }
    }
}

/// A backend for `key` with test-friendly timeouts.
pub async fn backend(key: &str, endpoint: Option<&str>, region: Option<&str>) -> AwsBackend {
    let mut cfg = AwsConfig::new(key);
    cfg.endpoint = endpoint.map(str::to_owned);
    cfg.region = region.map(str::to_owned);
    cfg.timeout_ms = 5_000;
    AwsBackend::connect(&cfg).await.expect("connect")
}

/// A random-looking 32-byte seed, different per call.
pub fn seed(tag: u8) -> SecretBytes {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut bytes = [tag; 32];
    bytes[..4].copy_from_slice(&nanos.to_le_bytes());
    SecretBytes::copy_from(&bytes)
}

/// Wrap, unwrap, and the version recorded is the probe's.
pub async fn check_round_trip(b: &AwsBackend) -> WrappedKey {
    let version = b.probe().await.expect("probe");
    let s = seed(1);
    let w = b.wrap(&s, b"polykms:v1:test").await.expect("wrap");
    assert_eq!(w.key_version, version);
    assert_ne!(w.ciphertext, s.expose());
    assert_eq!(b.unwrap(&w, b"polykms:v1:test").await.expect("unwrap"), s);
    assert_eq!(b.key_version().await.expect("key_version"), version);
    w
}

/// Another AAD, and a flipped byte, are `WrongKey`.
pub async fn check_context_and_tampering_rejected(b: &AwsBackend) {
    let mut w = b
        .wrap(&seed(2), b"polykms:v1:cluster-a")
        .await
        .expect("wrap");
    let err = b.unwrap(&w, b"polykms:v1:cluster-b").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    let err = b.unwrap(&w, b"").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    let mid = w.ciphertext.len() / 2;
    w.ciphertext[mid] ^= 0x40;
    let err = b.unwrap(&w, b"polykms:v1:cluster-a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
}
