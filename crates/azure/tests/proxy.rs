//! The azure backend through a forward proxy (CONNECT tunnels: Key Vault is HTTPS-only) and
//! the test CA, against the fake (`integration/servers/azure-fake.sh start`).
//! Environment-variable cases: `tests/proxy_env.rs`.

mod common;

use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::{
    ForwardProxy, assert_bypassed_by_no_proxy, assert_proxied_with_test_credentials,
    assert_refused_proxy_is_quick_unavailable, refusing_proxy_url, write_test_proxy_credentials,
};
use serde_json::json;

use common::fake;

fn authority(url: &str) -> String {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test]
async fn config_proxy_tunnels_every_request_with_the_credentials_from_the_file() {
    let Some(f) = fake("config_proxy_tunnels_every_request_with_the_credentials_from_the_file")
    else {
        return;
    };
    let key = f.create_key("proxy", json!({"kty": "RSA"})).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = write_test_proxy_credentials(dir.path());
    let proxy = ForwardProxy::start().await.unwrap();
    let c = f.config_with(
        &key,
        json!({"proxy": proxy.url(), "proxy_credentials_file": auth}),
    );
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe through the proxy");
    let passed = proxy.passed();
    for p in &passed {
        assert_eq!(
            (p.method.as_str(), p.target.clone()),
            ("CONNECT", authority(&f.url))
        );
    }
    let d = b.describe();
    assert_proxied_with_test_credentials(&passed, &d);
    assert!(d.contains("+ system roots"), "{d}");
}

#[tokio::test]
async fn no_proxy_sends_the_vault_direct() {
    let Some(f) = fake("no_proxy_sends_the_vault_direct") else {
        return;
    };
    let key = f.create_key("proxy", json!({"kty": "RSA"})).await;
    let proxy = ForwardProxy::start().await.unwrap();
    let c = f.config_with(
        &key,
        json!({"proxy": proxy.url(), "no_proxy": ["127.0.0.1"]}),
    );
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe direct");
    assert_bypassed_by_no_proxy(&proxy, &b.describe());
}

#[tokio::test]
async fn refused_proxy_is_a_quick_unavailable_error() {
    let Some(f) = fake("refused_proxy_is_a_quick_unavailable_error") else {
        return;
    };
    let c = f.config_with(
        "polykms-kek",
        json!({"proxy": refusing_proxy_url().await.unwrap()}),
    );
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    assert_refused_proxy_is_quick_unavailable(&b).await;
}

#[tokio::test]
async fn without_ca_file_the_test_ca_is_a_clear_tls_error() {
    let Some(f) = fake("without_ca_file_the_test_ca_is_a_clear_tls_error") else {
        return;
    };
    let c = f.config_with("polykms-kek", json!({"ca_file": null}));
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    let err = b.probe().await.unwrap_err();
    eprintln!("untrusted CA: {err}");
    assert!(err.message().contains("ca_file"), "{err}");
    assert!(
        err.message().to_lowercase().contains("certificate"),
        "{err}"
    );
}
