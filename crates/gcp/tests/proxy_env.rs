//! `HTTP_PROXY` / `NO_PROXY` from the environment, against the fake Cloud KMS. Its own test
//! binary with a single test, because it sets process environment variables.

mod support;

use polykms_backend::KeyEncryptionBackend;
use polykms_gcp::GcpBackend;
use polykms_net::testing::ForwardProxy;

#[tokio::test]
async fn environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key_says_otherwise() {
    let Some(f) = support::fake("environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key")
    else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HTTP_PROXY", proxy.url());
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let c = f.config(&f.seeded_key);
    let b = GcpBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe through HTTP_PROXY");
    assert_eq!(proxy.passed().len(), 1);
    assert!(
        b.describe().contains("(from HTTP_PROXY)"),
        "{}",
        b.describe()
    );

    let mut disabled = c.clone();
    disabled.network.proxy = Some(String::new());
    GcpBackend::connect(&disabled)
        .await
        .unwrap()
        .probe()
        .await
        .expect("direct");
    assert_eq!(proxy.passed().len(), 1, "proxy = \"\" must bypass");

    // SAFETY: as above.
    unsafe { std::env::set_var("no_proxy", "127.0.0.1:8281,127.0.0.1") };
    GcpBackend::connect(&c)
        .await
        .unwrap()
        .probe()
        .await
        .expect("direct");
    assert_eq!(proxy.passed().len(), 1, "no_proxy must bypass");
}
