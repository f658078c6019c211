//! `HTTP_PROXY` / `NO_PROXY` from the environment, against moto_server. Its own test binary
//! with a single test, because it sets process environment variables.

mod common;

use polykms_aws::{AwsBackend, AwsConfig};
use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::ForwardProxy;

#[tokio::test]
async fn environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key_says_otherwise() {
    let name = "environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key";
    let Some(endpoint) =
        common::env_or_skip("POLYKMS_AWS_ENDPOINT", "POLYKMS_REQUIRE_INTEGRATION", name)
    else {
        return;
    };
    let key = std::env::var("POLYKMS_AWS_KEY_ARN").expect("moto.env sets POLYKMS_AWS_KEY_ARN");
    let proxy = ForwardProxy::start().await.unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("http_proxy", proxy.url());
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let mut c = AwsConfig::new(&key);
    c.endpoint = Some(endpoint);
    c.max_attempts = 1;

    let b = AwsBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe through http_proxy");
    let through = proxy.passed().len();
    assert!(through > 0);
    assert!(
        b.describe().contains("(from http_proxy)"),
        "{}",
        b.describe()
    );

    let mut disabled = c.clone();
    disabled.network.proxy = Some(String::new());
    AwsBackend::connect(&disabled)
        .await
        .unwrap()
        .probe()
        .await
        .expect("direct");
    assert_eq!(proxy.passed().len(), through, "proxy = \"\" must bypass");

    // SAFETY: as above.
    unsafe { std::env::set_var("NO_PROXY", "127.0.0.1") };
    AwsBackend::connect(&c)
        .await
        .unwrap()
        .probe()
        .await
        .expect("direct");
    assert_eq!(proxy.passed().len(), through, "NO_PROXY must bypass");
}
