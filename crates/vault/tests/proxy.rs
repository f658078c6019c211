//! The vault backend through a forward proxy and behind a private CA, against OpenBao
//! (`integration/servers/openbao.sh start`); the HTTPS cases also need the test CA of
//! `integration/servers/azure-fake.sh start`. Environment-variable cases: `tests/proxy_env.rs`.

mod common;

use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::{
    ForwardProxy, TlsRelay, assert_bypassed_by_no_proxy, assert_proxied_with_test_credentials,
    assert_refused_proxy_is_quick_unavailable, refusing_proxy_url, socket_addr_of, test_ca,
    write_test_proxy_credentials,
};
use polykms_vault::VaultConfig;

use common::env;

fn config(e: &common::Env) -> VaultConfig {
    e.config(&e.key, e.token_auth(e.token_file.clone()))
}

#[tokio::test]
async fn config_proxy_carries_every_request_in_absolute_form() {
    let Some(e) = env("config_proxy_carries_every_request_in_absolute_form") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = config(&e);
    c.network.proxy = Some(proxy.url());
    let b = e.backend(&c).await;
    b.probe().await.expect("probe through the proxy");
    let passed = proxy.passed();
    assert!(!passed.is_empty());
    for p in &passed {
        assert!(p.target.starts_with(&e.addr), "{p:?}");
        assert_eq!(p.proxy_authorization, None);
    }
    assert!(
        b.describe()
            .contains(&format!("proxy {}/ (from config proxy)", proxy.url()))
    );
}

#[tokio::test]
async fn no_proxy_sends_matching_hosts_direct() {
    let Some(e) = env("no_proxy_sends_matching_hosts_direct") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = config(&e);
    c.network.proxy = Some(proxy.url());
    c.network.no_proxy = Some(vec!["localhost".into(), "127.0.0.0/8".into()]);
    let b = e.backend(&c).await;
    b.probe().await.expect("probe direct");
    assert_bypassed_by_no_proxy(&proxy, &b.describe());
}

#[tokio::test]
async fn proxy_credentials_come_from_the_file() {
    let Some(e) = env("proxy_credentials_come_from_the_file") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = write_test_proxy_credentials(dir.path());
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = config(&e);
    c.network.proxy = Some(proxy.url());
    c.network.proxy_credentials_file = Some(file);
    let b = e.backend(&c).await;
    b.probe().await.expect("probe through the proxy");
    assert_proxied_with_test_credentials(&proxy.passed(), &b.describe());
}

#[tokio::test]
async fn refused_proxy_is_a_quick_unavailable_error() {
    let Some(e) = env("refused_proxy_is_a_quick_unavailable_error") else {
        return;
    };
    let mut c = config(&e);
    c.network.proxy = Some(refusing_proxy_url().await.unwrap());
    let b = e.backend(&c).await;
    assert_refused_proxy_is_quick_unavailable(&b).await;
}

#[tokio::test]
async fn https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy() {
    let name = "https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy";
    let (Some(e), Some(ca)) = (env(name), test_ca(name)) else {
        return;
    };
    let upstream = socket_addr_of(&e.addr).expect("POLYKMS_VAULT_ADDR is http://ip:port");
    let relay = TlsRelay::start(&ca.cert_file, &ca.key_file, upstream)
        .await
        .unwrap();

    let mut c = config(&e);
    c.address = relay.url();
    let untrusted = e.backend(&c).await;
    let err = untrusted.probe().await.unwrap_err();
    eprintln!("untrusted CA: {err}");
    let text = err.to_string().to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "not a TLS error: {err}"
    );

    c.network.ca_file = Some(ca.ca_file.clone());
    let trusted = e.backend(&c).await;
    trusted.probe().await.expect("probe with ca_file");
    assert!(
        trusted
            .describe()
            .contains(&format!("ca_file {} only", ca.ca_file.display())),
        "{}",
        trusted.describe()
    );

    let proxy = ForwardProxy::start().await.unwrap();
    c.network.proxy = Some(proxy.url());
    let tunnelled = e.backend(&c).await;
    tunnelled.probe().await.expect("probe through CONNECT");
    let passed = proxy.passed();
    let relay_authority = relay.url().trim_start_matches("https://").to_owned();
    assert!(!passed.is_empty());
    assert!(
        passed
            .iter()
            .all(|p| p.method == "CONNECT" && p.target == relay_authority),
        "{passed:?}"
    );
}
