//! Key lifecycle against a real OpenBao dev server (`integration/servers/openbao.sh start`,
//! then `source integration/.run/openbao.env`): what an operator's key config writes and trims
//! do to the findings, read from the probe's own key read.

mod common;

use polykms_backend::{KeyEncryptionBackend, KeyLifecycle, LifecycleState, SecretBytes};
use vaultrs::api::transit::requests::{
    CreateKeyRequest, UpdateKeyConfigurationRequest, UpdateKeyConfigurationRequestBuilder,
};

use common::env;

async fn configure(
    e: &common::Env,
    key: &str,
    f: impl FnOnce(&mut UpdateKeyConfigurationRequestBuilder),
) {
    let mut req = UpdateKeyConfigurationRequest::builder();
    f(&mut req);
    vaultrs::transit::key::update(&e.root(), "transit", key, Some(&mut req))
        .await
        .expect("key config write");
}

fn states(l: &KeyLifecycle) -> Vec<(LifecycleState, String)> {
    l.findings
        .iter()
        .map(|f| (f.state, f.key.clone()))
        .collect()
}

#[tokio::test]
async fn deletion_allowed_retired_and_trimmed_versions_warn_without_blocking() {
    let Some(e) = env("deletion_allowed_retired_and_trimmed_versions_warn_without_blocking") else {
        return;
    };
    // A new key per run: keys cannot be deleted without deletion_allowed, which this test
    // leaves off at the end.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let key = format!("polykms-lifecycle-{nanos}");
    let key = key.as_str();
    let root = e.root();
    vaultrs::transit::key::create(
        &root,
        "transit",
        key,
        Some(&mut CreateKeyRequest::builder()),
    )
    .await
    .expect("create key");
    let b = e
        .backend(&e.config(key, e.token_auth(e.root_token_file.clone())))
        .await;
    let v1 = b.probe().await.expect("probe");
    assert_eq!(b.key_lifecycle(&[]).await.unwrap(), KeyLifecycle::default());

    configure(&e, key, |c| {
        c.deletion_allowed(true);
    })
    .await;
    b.probe().await.expect("a deletable key still wraps");
    let l = b.key_lifecycle(&[]).await.unwrap();
    assert_eq!(
        states(&l),
        [(LifecycleState::DeletionAllowed, format!("transit/{key}"))]
    );
    assert!(l.blocking().is_none());
    assert_eq!(
        l.findings[0].remedy,
        format!("vault write transit/keys/{key}/config deletion_allowed=false")
    );
    configure(&e, key, |c| {
        c.deletion_allowed(false);
    })
    .await;

    let old = b
        .wrap(&SecretBytes::copy_from(&[4; 32]), b"aad")
        .await
        .unwrap();
    assert_eq!(old.key_version, v1);
    vaultrs::transit::key::rotate(&root, "transit", key)
        .await
        .unwrap();
    configure(&e, key, |c| {
        c.min_decryption_version(2u64);
    })
    .await;
    b.probe().await.expect("the current version still wraps");
    let l = b.key_lifecycle(std::slice::from_ref(&v1)).await.unwrap();
    assert_eq!(
        states(&l),
        [(LifecycleState::VersionRetired, v1.to_string())]
    );
    assert!(l.blocking().is_none());
    assert_eq!(
        l.findings[0].remedy,
        format!("vault write transit/keys/{key}/config min_decryption_version=1")
    );

    // The remedy works: the old ciphertext decrypts again and the finding goes.
    configure(&e, key, |c| {
        c.min_decryption_version(1u64);
    })
    .await;
    b.probe().await.unwrap();
    assert_eq!(
        b.key_lifecycle(std::slice::from_ref(&v1)).await.unwrap(),
        KeyLifecycle::default()
    );
    b.unwrap(&old, b"aad").await.expect("v1 decrypts again");

    // Trimmed below min_available_version: gone for good, no config write brings it back.
    configure(&e, key, |c| {
        c.min_decryption_version(2u64);
        c.min_encryption_version(2u64);
    })
    .await;
    vaultrs::transit::key::trim(&root, "transit", key, 2)
        .await
        .expect("trim");
    b.probe().await.unwrap();
    let l = b.key_lifecycle(std::slice::from_ref(&v1)).await.unwrap();
    assert_eq!(
        states(&l),
        [(LifecycleState::VersionRetired, v1.to_string())]
    );
    assert!(
        l.findings[0]
            .remedy
            .starts_with("none in Transit: version 1 is gone"),
        "{}",
        l.findings[0]
    );
}
