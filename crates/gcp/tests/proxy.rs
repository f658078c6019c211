//! The gcp backend through a forward proxy and behind a private CA, against the fake Cloud KMS
//! (`integration/servers/gcp-fake.sh start`); the HTTPS case also needs the test CA of
//! `integration/servers/azure-fake.sh start`. Environment-variable cases: `tests/proxy_env.rs`.

mod support;

use polykms_backend::{KeyEncryptionBackend, SecretBytes};
use polykms_gcp::GcpBackend;
use polykms_net::testing::{
    ForwardProxy, TlsRelay, assert_bypassed_by_no_proxy, assert_proxied_with_test_credentials,
    assert_refused_proxy_is_quick_unavailable, refusing_proxy_url, socket_addr_of, test_ca,
    write_test_proxy_credentials,
};

async fn round_trip(b: &GcpBackend) {
    b.probe().await.expect("probe");
    let seed = SecretBytes::copy_from(&[7u8; 32]);
    let wrapped = b.wrap(&seed, b"polykms:v1:proxy").await.expect("wrap");
    let back = b
        .unwrap(&wrapped, b"polykms:v1:proxy")
        .await
        .expect("unwrap");
    assert_eq!(back, seed);
}

#[tokio::test]
async fn config_proxy_carries_every_request_with_the_credentials_from_the_file() {
    let Some(f) =
        support::fake("config_proxy_carries_every_request_with_the_credentials_from_the_file")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = write_test_proxy_credentials(dir.path());
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = f.config(&f.seeded_key);
    c.network.proxy = Some(proxy.url());
    c.network.proxy_credentials_file = Some(auth);
    let b = GcpBackend::connect(&c).await.unwrap();
    round_trip(&b).await;
    let passed = proxy.passed();
    assert_eq!(passed.len(), 3, "{passed:?}");
    for p in &passed {
        assert!(p.target.starts_with(&f.endpoint), "{p:?}");
    }
    assert_proxied_with_test_credentials(&passed, &b.describe());
}

#[tokio::test]
async fn no_proxy_sends_the_endpoint_direct() {
    let Some(f) = support::fake("no_proxy_sends_the_endpoint_direct") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = f.config(&f.seeded_key);
    c.network.proxy = Some(proxy.url());
    c.network.no_proxy = Some(vec!["127.0.0.0/8".into()]);
    let b = GcpBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe direct");
    assert_bypassed_by_no_proxy(&proxy, &b.describe());
}

#[tokio::test]
async fn refused_proxy_is_a_quick_unavailable_error() {
    let Some(f) = support::fake("refused_proxy_is_a_quick_unavailable_error") else {
        return;
    };
    let mut c = f.config(&f.seeded_key);
    c.network.proxy = Some(refusing_proxy_url().await.unwrap());
    let b = GcpBackend::connect(&c).await.unwrap();
    assert_refused_proxy_is_quick_unavailable(&b).await;
}

#[tokio::test]
async fn https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy() {
    let name = "https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy";
    let (Some(f), Some(ca)) = (support::fake(name), test_ca(name)) else {
        return;
    };
    let upstream = socket_addr_of(&f.endpoint).expect("POLYKMS_GCP_ENDPOINT is http://ip:port");
    let relay = TlsRelay::start(&ca.cert_file, &ca.key_file, upstream)
        .await
        .unwrap();
    let mut c = f.config(&f.seeded_key);
    c.endpoint = Some(relay.url());

    let err = GcpBackend::connect(&c)
        .await
        .unwrap()
        .probe()
        .await
        .unwrap_err();
    eprintln!("untrusted CA: {err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "not a TLS error: {err}"
    );

    c.network.ca_file = Some(ca.ca_file.clone());
    round_trip(&GcpBackend::connect(&c).await.unwrap()).await;

    let proxy = ForwardProxy::start().await.unwrap();
    c.network.proxy = Some(proxy.url());
    GcpBackend::connect(&c)
        .await
        .unwrap()
        .probe()
        .await
        .expect("probe through CONNECT");
    let relay_authority = relay.url().trim_start_matches("https://").to_owned();
    let passed = proxy.passed();
    assert!(!passed.is_empty());
    assert!(
        passed
            .iter()
            .all(|p| p.method == "CONNECT" && p.target == relay_authority),
        "{passed:?}"
    );
}
