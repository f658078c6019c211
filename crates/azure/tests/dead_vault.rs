//! A vault that is down or hangs: connect still succeeds, calls fail fast and retryably.
//! These need no fake server.

use std::time::{Duration, Instant};

use polykms_azure::{AzureBackend, AzureConfig};
use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};
use serde_json::json;

fn config(dir: &tempfile::TempDir, url: &str, timeout_ms: u64) -> AzureConfig {
    let token = dir.path().join("token");
    std::fs::write(&token, "test-token").unwrap();
    serde_json::from_value(json!({
        "vault_url": url,
        "key_name": "kek",
        "verify_challenge_resource": false,
        "max_retries": 0,
        "timeout_ms": timeout_ms,
        "auth": {"method": "token_file", "token_file": token},
    }))
    .unwrap()
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn connect_succeeds_while_the_vault_is_down_and_calls_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{}", closed_port());
    let b = AzureBackend::connect(&config(&dir, &url, 5000))
        .await
        .unwrap();
    let started = Instant::now();
    let err = b.probe().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let err = b
        .wrap(&SecretBytes::copy_from(&[1; 32]), b"aad")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn a_vault_that_never_answers_times_out() {
    // Accepts TCP connections and then says nothing, not even a TLS hello.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let b = AzureBackend::connect(&config(&dir, &url, 500))
        .await
        .unwrap();
    let started = Instant::now();
    let err = b.key_version().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    hold.abort();
}

#[tokio::test]
async fn connect_rejects_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir, "https://kv.vault.azure.net", 5000);
    c.network.ca_file = Some(dir.path().join("missing-ca.pem"));
    let err = AzureBackend::connect(&c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().starts_with("ca_file"), "{err}");

    let c = config(&dir, "http://kv.vault.azure.net", 5000);
    let err = AzureBackend::connect(&c).await.unwrap_err();
    assert!(err.message().starts_with("vault_url"), "{err}");
}

#[tokio::test]
async fn debug_and_describe_show_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let b = AzureBackend::connect(&config(&dir, "https://kv.vault.azure.net", 5000))
        .await
        .unwrap();
    let shown = format!("{b:?} {}", b.describe());
    assert!(!shown.contains("test-token"), "{shown}");
    assert!(
        shown.contains("kv.vault.azure.net") && shown.contains("kek"),
        "{shown}"
    );
    assert_eq!(b.kind(), "azure");
    assert!(
        b.credential_expiry().is_none(),
        "opaque token has no known expiry"
    );
}
