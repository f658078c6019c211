//! Backend tests that need no server: config handling, offline behaviour, identities.

use std::time::{Duration, Instant};

use polykms_backend::{ErrorKind, LifecycleState};

use super::*;

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token_config(dir: &tempfile::TempDir, port: u16) -> VaultConfig {
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s.super-secret-token\n").unwrap();
    VaultConfig {
        address: format!("http://127.0.0.1:{port}"),
        mount: "transit".into(),
        key: "kube".into(),
        namespace: None,
        network: Default::default(),
        client_cert_file: None,
        client_key_file: None,
        tls_server_name: None,
        timeout_ms: 500,
        allow_key_without_aad: false,
        auth: AuthConfig::Token {
            token_file: Some(token_file),
            token_env: None,
        },
    }
}

#[tokio::test]
async fn connect_succeeds_while_the_server_is_down_and_probe_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = VaultBackend::connect(&token_config(&dir, dead_port()))
        .await
        .unwrap();
    let started = Instant::now();
    let err = backend.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(backend.credential_expiry().is_none());
    assert!(!err.message().contains("super-secret"));
}

#[tokio::test]
async fn connect_fails_on_a_missing_credentials_file_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, dead_port());
    config.auth = AuthConfig::AppRole {
        role_id_file: dir.path().join("role_id"),
        secret_id_file: dir.path().join("secret_id"),
        mount: "approle".into(),
    };
    let err = VaultBackend::connect(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("auth.role_id_file"), "{err}");
}

#[tokio::test]
async fn connect_fails_on_an_unset_token_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, dead_port());
    config.auth = AuthConfig::Token {
        token_file: None,
        token_env: Some("POLYKMS_VAULT_TEST_SURELY_UNSET".into()),
    };
    let err = VaultBackend::connect(&config).await.unwrap_err();
    assert!(err.message().starts_with("auth.token_env"), "{err}");
}

#[tokio::test]
async fn debug_and_describe_show_where_not_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, 8207);
    config.namespace = Some("team-a".into());
    // No proxy whatever the environment says, so the text is fixed.
    config.network.proxy = Some(String::new());
    let backend = VaultBackend::connect(&config).await.unwrap();
    let debug = format!("{backend:?}");
    let described = backend.describe();
    for shown in [&debug, &described] {
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("kube"), "{shown}");
    }
    assert_eq!(
        described,
        "vault http://127.0.0.1:8207 namespace team-a transit key transit/kube \
         (auth token; no proxy, system roots)"
    );
}

#[tokio::test]
async fn key_version_names_namespace_mount_key_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, 8207);
    let plain = VaultBackend::connect(&config).await.unwrap();
    assert_eq!(plain.version_id(3).as_str(), "vault:transit/kube:v3");
    config.namespace = Some("/team-a/".into());
    let namespaced = VaultBackend::connect(&config).await.unwrap();
    assert_eq!(
        namespaced.version_id(1).as_str(),
        "vault:team-a/transit/kube:v1"
    );
}

#[tokio::test]
async fn unwrap_rejects_bytes_that_are_not_transit_ciphertext_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let backend = VaultBackend::connect(&token_config(&dir, dead_port()))
        .await
        .unwrap();
    let junk = WrappedKey::new(
        KeyVersion::new("vault:transit/kube:v1"),
        vec![0xff, 0x00, 0x01],
    );
    let err = backend.unwrap(&junk, b"ctx").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn non_aead_key_types_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, 8207);
    let strict = VaultBackend::connect(&config).await.unwrap();
    let rsa = KeyInfo {
        key_type: "rsa-4096".into(),
        latest_version: 1,
        min_decryption_version: 1,
        supports_encryption: true,
        supports_decryption: true,
        derived: false,
        soft_deleted: false,
        deletion_allowed: false,
        min_available_version: 0,
    };
    let err = strict.check_usable(&rsa).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("allow_key_without_aad"), "{err}");
    config.allow_key_without_aad = true;
    let lenient = VaultBackend::connect(&config).await.unwrap();
    lenient.check_usable(&rsa).unwrap();
    assert_eq!(lenient.aad_fields(&rsa, b"ctx"), (None, None));

    let signing = KeyInfo {
        key_type: "ed25519".into(),
        supports_encryption: false,
        ..rsa
    };
    assert_eq!(
        lenient.check_usable(&signing).unwrap_err().kind(),
        ErrorKind::KeyUnavailable
    );
}

#[tokio::test]
async fn aad_goes_as_associated_data_and_as_context_for_derived_keys() {
    let dir = tempfile::tempdir().unwrap();
    let backend = VaultBackend::connect(&token_config(&dir, 8207))
        .await
        .unwrap();
    let mut aes = KeyInfo {
        key_type: "aes256-gcm96".into(),
        latest_version: 1,
        min_decryption_version: 1,
        supports_encryption: true,
        supports_decryption: true,
        derived: false,
        soft_deleted: false,
        deletion_allowed: false,
        min_available_version: 0,
    };
    assert_eq!(backend.aad_fields(&aes, b"ab"), (Some("YWI=".into()), None));
    aes.derived = true;
    assert_eq!(
        backend.aad_fields(&aes, b"ab"),
        (Some("YWI=".into()), Some("YWI=".into()))
    );
    assert_eq!(backend.aad_fields(&aes, b""), (None, None));
}

#[tokio::test]
async fn only_this_keys_versions_translate_back_to_transit_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = token_config(&dir, dead_port());
    config.namespace = Some("team-a".into());
    let b = VaultBackend::connect(&config).await.unwrap();
    let n = |s: &str| b.transit_version(&KeyVersion::new(s));
    assert_eq!(n("vault:team-a/transit/kube:v7"), Some(7));
    assert_eq!(n("vault:team-a/transit/kube:v12"), Some(12));
    for other in [
        "vault:transit/kube:v7",
        "vault:team-a/transit/kube2:v7",
        "vault:team-a/transit/kube:v07",
        "vault:team-a/transit/kube:v",
        "vault:team-a/transit/kube:vx",
    ] {
        assert_eq!(n(other), None, "{other}");
    }
}

#[tokio::test]
async fn lifecycle_reuses_the_probes_key_read_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let b = VaultBackend::connect(&token_config(&dir, dead_port()))
        .await
        .unwrap();
    // Nothing read yet and the server is down: the read's error, classified.
    let err = b.key_lifecycle(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let read: KeyInfo = serde_json::from_str(
        r#"{"type":"aes256-gcm96","latest_version":2,"min_decryption_version":2,
        "deletion_allowed":true,"supports_encryption":true,"supports_decryption":true,
        "keys":{"1":1700000000,"2":1700000100}}"#,
    )
    .unwrap();
    b.key_info.store(Some(Arc::new(read)));
    let used = [
        KeyVersion::new("vault:transit/kube:v1"),
        KeyVersion::new("vault:transit/kube:v2"),
        KeyVersion::new("vault:transit/other:v1"),
    ];
    let l = b.key_lifecycle(&used).await.unwrap();
    let found: Vec<(LifecycleState, &str)> = l
        .findings
        .iter()
        .map(|f| (f.state, f.key.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (LifecycleState::DeletionAllowed, "transit/kube"),
            (LifecycleState::VersionRetired, "vault:transit/kube:v1"),
        ]
    );
    assert!(l.blocking().is_none(), "Transit findings never stop wraps");
}
