//! Against a real OpenBao dev server started by `integration/servers/openbao.sh start`:
//! `source integration/.run/openbao.env && cargo test -p polykms-vault --test openbao`.

mod common;

use std::time::{Duration, Instant, SystemTime};

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};
use vaultrs::api::token::requests::CreateTokenRequest;
use vaultrs::api::transit::requests::{CreateKeyRequest, UpdateKeyConfigurationRequest};

use common::{Proxy, env};

const AAD: &[u8] = b"polykms:v1:test-cluster";

fn seed(byte: u8) -> SecretBytes {
    SecretBytes::copy_from(&[byte; 32])
}

/// A fresh AES-GCM key only this test touches (tests run in parallel).
async fn fresh_key(e: &common::Env, name: &str) {
    let root = e.root();
    let _ = vaultrs::transit::key::delete(&root, "transit", name).await;
    vaultrs::transit::key::create(
        &root,
        "transit",
        name,
        Some(&mut CreateKeyRequest::builder()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn round_trips_with_token_auth_and_reports_the_wrapping_version() {
    let Some(e) = env("round_trips_with_token_auth_and_reports_the_wrapping_version") else {
        return;
    };
    let b = e
        .backend(&e.config(&e.key, e.token_auth(e.token_file.clone())))
        .await;
    let version = b.probe().await.unwrap();
    assert!(
        version
            .as_str()
            .starts_with(&format!("vault:transit/{}:v", e.key)),
        "{version}"
    );
    let wrapped = b.wrap(&seed(7), AAD).await.unwrap();
    assert_eq!(wrapped.key_version, version);
    assert!(wrapped.ciphertext.starts_with(b"vault:v"));
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(7));
    // A periodic token: expiry is known and in the future.
    let expiry = b.credential_expiry().expect("periodic token has an expiry");
    assert!(expiry > SystemTime::now());
}

#[tokio::test]
async fn round_trips_with_approle_limited_to_the_key() {
    let Some(e) = env("round_trips_with_approle_limited_to_the_key") else {
        return;
    };
    let b = e.backend(&e.config(&e.key, e.approle())).await;
    b.probe().await.unwrap();
    let wrapped = b.wrap(&seed(1), AAD).await.unwrap();
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(1));
    assert!(b.credential_expiry().is_some());
    // The policy grants nothing on other keys.
    let other = e.backend(&e.config("polykms-scratch", e.approle())).await;
    assert_eq!(
        other.probe().await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
}

#[tokio::test]
async fn unwrap_rejects_other_associated_data() {
    let Some(e) = env("unwrap_rejects_other_associated_data") else {
        return;
    };
    let b = e.backend(&e.config(&e.key, e.approle())).await;
    let wrapped = b.wrap(&seed(2), AAD).await.unwrap();
    let err = b
        .unwrap(&wrapped, b"polykms:v1:other-cluster")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    let err = b.unwrap(&wrapped, b"").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongKey, "{err}");
    let mut tampered = wrapped.clone();
    let n = tampered.ciphertext.len();
    tampered.ciphertext[n - 2] = if tampered.ciphertext[n - 2] == b'A' {
        b'B'
    } else {
        b'A'
    };
    assert_eq!(
        b.unwrap(&tampered, AAD).await.unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[tokio::test]
async fn rotation_changes_key_version_and_old_ciphertexts_unwrap_until_retired() {
    let Some(e) = env("rotation_changes_key_version_and_old_ciphertexts_unwrap_until_retired")
    else {
        return;
    };
    fresh_key(&e, "polykms-rotate").await;
    let root_token = e.root_token_file.clone();
    let b = e
        .backend(&e.config("polykms-rotate", e.token_auth(root_token)))
        .await;
    let v1 = b.probe().await.unwrap();
    let old = b.wrap(&seed(3), AAD).await.unwrap();

    vaultrs::transit::key::rotate(&e.root(), "transit", "polykms-rotate")
        .await
        .unwrap();
    let v2 = b.probe().await.unwrap();
    assert_ne!(v1, v2);
    assert!(v2.as_str().ends_with(":v2"), "{v2}");
    let new = b.wrap(&seed(3), AAD).await.unwrap();
    assert_eq!(new.key_version, v2);
    assert_eq!(b.unwrap(&old, AAD).await.unwrap(), seed(3));

    let mut retire = UpdateKeyConfigurationRequest::builder();
    retire.min_decryption_version(2u64);
    vaultrs::transit::key::update(&e.root(), "transit", "polykms-rotate", Some(&mut retire))
        .await
        .unwrap();
    let err = b.unwrap(&old, AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable, "{err}");
    assert_eq!(b.unwrap(&new, AAD).await.unwrap(), seed(3));
}

#[tokio::test]
async fn missing_key_is_key_unavailable_and_rsa_key_is_refused() {
    let Some(e) = env("missing_key_is_key_unavailable_and_rsa_key_is_refused") else {
        return;
    };
    let root = e.token_auth(e.root_token_file.clone());
    let missing = e
        .backend(&e.config("polykms-does-not-exist", root.clone()))
        .await;
    assert_eq!(
        missing.probe().await.unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );

    let rsa = e.backend(&e.config("polykms-rsa", root.clone())).await;
    let err = rsa.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("rsa-2048") && err.message().contains("allow_key_without_aad"));
    let err = rsa.wrap(&seed(4), AAD).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn approle_without_policy_is_unauthorized() {
    let Some(e) = env("approle_without_policy_is_unauthorized") else {
        return;
    };
    let b = e.backend(&e.config(&e.key, e.nopolicy_approle())).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        b.wrap(&seed(5), AAD).await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
}

#[tokio::test]
async fn revoked_token_is_replaced_from_the_rewritten_token_file() {
    let Some(e) = env("revoked_token_is_replaced_from_the_rewritten_token_file") else {
        return;
    };
    let root = e.root();
    let mint = || async {
        let mut req = CreateTokenRequest::builder();
        req.policies(vec!["polykms-transit".to_string()]).ttl("1h");
        vaultrs::token::new(&root, Some(&mut req))
            .await
            .unwrap()
            .client_token
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first = mint().await;
    std::fs::write(&file, &first).unwrap();
    let b = e
        .backend(&e.config(&e.key, e.token_auth(file.clone())))
        .await;
    let wrapped = b.wrap(&seed(6), AAD).await.unwrap();

    vaultrs::token::revoke(&root, &first).await.unwrap();
    std::fs::write(&file, mint().await).unwrap();
    // The first call after revocation gets 403, re-reads the file and retries once.
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(6));
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_and_replaced_across_several_ttls() {
    let Some(e) = env("short_lived_tokens_are_renewed_and_replaced_across_several_ttls") else {
        return;
    };
    // Role polykms-short: token_ttl 6 s, token_max_ttl 15 s.
    let b = e.backend(&e.config(&e.key, e.short_approle())).await;
    let started = SystemTime::now();
    b.probe().await.unwrap();
    let first_expiry = b.credential_expiry().expect("approle token expires");
    assert!(first_expiry <= started + Duration::from_secs(8));
    let deadline = Instant::now() + Duration::from_secs(22);
    let mut expiries = vec![first_expiry];
    while Instant::now() < deadline {
        let wrapped = b.wrap(&seed(8), AAD).await.expect("wrap stays possible");
        assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(8));
        b.probe().await.expect("stays healthy");
        let expiry = b.credential_expiry().unwrap();
        assert!(expiry > SystemTime::now(), "token expired while in use");
        if Some(&expiry) != expiries.last() {
            expiries.push(expiry);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Renewals moved the expiry several times; a re-login was needed past max_ttl (15 s).
    assert!(expiries.len() >= 4, "{expiries:?}");
    assert!(
        *expiries.last().unwrap() > started + Duration::from_secs(16),
        "{expiries:?}"
    );
}

#[tokio::test]
async fn outage_turns_probe_unhealthy_quickly_and_recovery_heals_it() {
    let Some(e) = env("outage_turns_probe_unhealthy_quickly_and_recovery_heals_it") else {
        return;
    };
    let proxy = Proxy::start(&e.addr).await;
    let mut config = e.config(&e.key, e.approle());
    config.address = proxy.addr.clone();
    config.timeout_ms = 1000;
    let b = e.backend(&config).await;
    let before = b.probe().await.unwrap();
    let wrapped = b.wrap(&seed(9), AAD).await.unwrap();

    proxy.set_up(false);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    let err = b.probe().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(b.unwrap(&wrapped, AAD).await.unwrap_err().is_retryable());

    proxy.set_up(true);
    assert_eq!(b.probe().await.unwrap(), before);
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(9));
}

#[tokio::test]
async fn connect_to_a_stopped_server_succeeds_and_first_use_logs_in() {
    let Some(e) = env("connect_to_a_stopped_server_succeeds_and_first_use_logs_in") else {
        return;
    };
    let proxy = Proxy::start(&e.addr).await;
    proxy.set_up(false);
    let mut config = e.config(&e.key, e.approle());
    config.address = proxy.addr.clone();
    let b = e.backend(&config).await;
    assert!(b.probe().await.unwrap_err().is_retryable());
    assert!(b.credential_expiry().is_none());
    proxy.set_up(true);
    let wrapped = b.wrap(&seed(10), AAD).await.unwrap();
    assert_eq!(b.unwrap(&wrapped, AAD).await.unwrap(), seed(10));
    assert!(b.credential_expiry().is_some());
}
