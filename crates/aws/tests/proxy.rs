//! The aws backend through a forward proxy and behind a private CA, against moto_server
//! (`integration/servers/moto.sh start`); the HTTPS case also needs the test CA of
//! `integration/servers/azure-fake.sh start`. Environment-variable cases: `tests/proxy_env.rs`.

mod common;

use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::{
    ForwardProxy, TlsRelay, assert_bypassed_by_no_proxy, assert_proxied_with_test_credentials,
    assert_refused_proxy_is_quick_unavailable, refusing_proxy_url, socket_addr_of, test_ca,
    write_test_proxy_credentials,
};

struct Moto {
    endpoint: String,
    key: String,
}

fn moto(test: &str) -> Option<Moto> {
    let endpoint =
        common::env_or_skip("POLYKMS_AWS_ENDPOINT", "POLYKMS_REQUIRE_INTEGRATION", test)?;
    let key = std::env::var("POLYKMS_AWS_KEY_ARN").expect("moto.env sets POLYKMS_AWS_KEY_ARN");
    Some(Moto { endpoint, key })
}

impl Moto {
    fn config(&self) -> AwsConfig {
        let mut c = AwsConfig::new(&self.key);
        c.endpoint = Some(self.endpoint.clone());
        c.timeout_ms = 5_000;
        c.max_attempts = 1;
        c
    }
}

#[tokio::test]
async fn config_proxy_carries_every_request_with_the_credentials_from_the_file() {
    let Some(m) = moto("config_proxy_carries_every_request_with_the_credentials_from_the_file")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let auth = write_test_proxy_credentials(dir.path());
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = m.config();
    c.network.proxy = Some(proxy.url());
    c.network.proxy_credentials_file = Some(auth);
    let b = AwsBackend::connect(&c).await.unwrap();
    common::check_round_trip(&b).await;
    let passed = proxy.passed();
    assert!(passed.len() >= 3, "{passed:?}");
    for p in &passed {
        assert!(p.target.starts_with(&m.endpoint), "{p:?}");
    }
    assert_proxied_with_test_credentials(&passed, &b.describe());
}

#[tokio::test]
async fn no_proxy_sends_the_endpoint_direct() {
    let Some(m) = moto("no_proxy_sends_the_endpoint_direct") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    let mut c = m.config();
    c.network.proxy = Some(proxy.url());
    c.network.no_proxy = Some(vec!["127.0.0.1".into()]);
    let b = AwsBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe direct");
    assert_bypassed_by_no_proxy(&proxy, &b.describe());
}

#[tokio::test]
async fn refused_proxy_is_a_quick_unavailable_error() {
    let Some(m) = moto("refused_proxy_is_a_quick_unavailable_error") else {
        return;
    };
    let mut c = m.config();
    c.network.proxy = Some(refusing_proxy_url().await.unwrap());
    let b = AwsBackend::connect(&c).await.unwrap();
    assert_refused_proxy_is_quick_unavailable(&b).await;
}

#[tokio::test]
async fn https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy() {
    let name = "https_endpoint_of_a_private_ca_needs_ca_file_and_tunnels_through_the_proxy";
    let (Some(m), Some(ca)) = (moto(name), test_ca(name)) else {
        return;
    };
    let upstream = socket_addr_of(&m.endpoint).expect("POLYKMS_AWS_ENDPOINT is http://ip:port");
    let relay = TlsRelay::start(&ca.cert_file, &ca.key_file, upstream)
        .await
        .unwrap();
    let mut c = m.config();
    c.endpoint = Some(relay.url());

    let err = AwsBackend::connect(&c)
        .await
        .unwrap()
        .probe()
        .await
        .unwrap_err();
    eprintln!("untrusted CA: {err}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("certificate"), "not a TLS error: {err}");

    c.network.ca_file = Some(ca.ca_file.clone());
    let trusted = AwsBackend::connect(&c).await.unwrap();
    common::check_round_trip(&trusted).await;

    let proxy = ForwardProxy::start().await.unwrap();
    c.network.proxy = Some(proxy.url());
    let tunnelled = AwsBackend::connect(&c).await.unwrap();
    tunnelled.probe().await.expect("probe through CONNECT");
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
