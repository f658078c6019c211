//! Kubernetes auth against OpenBao, whose TokenReview calls go to the fake HTTPS API server
//! started by `integration/servers/openbao.sh start` (integration/fakes/vault/tokenreview.py).

mod common;

use std::path::PathBuf;

use polykms_backend::{ErrorKind, KeyEncryptionBackend, SecretBytes};
use polykms_vault::AuthConfig;

use common::env;

fn kubernetes(token_file: PathBuf) -> AuthConfig {
    AuthConfig::Kubernetes {
        role: std::env::var("POLYKMS_VAULT_K8S_ROLE").unwrap_or_else(|_| "polykms".into()),
        token_file,
        mount: "kubernetes".into(),
    }
}

fn sa_token_file() -> PathBuf {
    PathBuf::from(
        std::env::var("POLYKMS_VAULT_K8S_TOKEN_FILE").expect("POLYKMS_VAULT_K8S_TOKEN_FILE"),
    )
}

#[tokio::test]
async fn kubernetes_login_round_trips_through_token_review() {
    let Some(e) = env("kubernetes_login_round_trips_through_token_review") else {
        return;
    };
    let b = e
        .backend(&e.config(&e.key, kubernetes(sa_token_file())))
        .await;
    b.probe().await.unwrap();
    let seed = SecretBytes::copy_from(&[11u8; 32]);
    let wrapped = b.wrap(&seed, b"polykms:v1:k8s").await.unwrap();
    assert_eq!(b.unwrap(&wrapped, b"polykms:v1:k8s").await.unwrap(), seed);
    assert!(b.credential_expiry().is_some());
    assert!(b.describe().contains("auth kubernetes"));
}

#[tokio::test]
async fn kubernetes_login_with_a_token_the_api_server_rejects_is_unauthorized() {
    let Some(e) = env("kubernetes_login_with_a_token_the_api_server_rejects_is_unauthorized")
    else {
        return;
    };
    // Same claims, different signature: the fake TokenReview does not authenticate it.
    let real = std::fs::read_to_string(sa_token_file()).unwrap();
    let (unsigned, _) = real.trim().rsplit_once('.').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let forged = dir.path().join("token");
    std::fs::write(&forged, format!("{unsigned}.Zm9yZ2Vk")).unwrap();
    let b = e.backend(&e.config(&e.key, kubernetes(forged))).await;
    let err = b.probe().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(!err.message().contains(unsigned), "{err}");
}
