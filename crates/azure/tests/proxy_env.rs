//! `HTTPS_PROXY` / `NO_PROXY` from the environment, against the fake Key Vault. Its own test
//! binary with a single test, because it sets process environment variables.

mod common;

use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::ForwardProxy;
use serde_json::json;

use common::fake;

#[tokio::test]
async fn environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key_says_otherwise() {
    let Some(f) = fake("environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HTTPS_PROXY", proxy.url());
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let c = f.config("polykms-kek");
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    b.probe().await.expect("probe through HTTPS_PROXY");
    let through = proxy.passed().len();
    assert!(through > 0);
    assert!(
        b.describe().contains("(from HTTPS_PROXY)"),
        "{}",
        b.describe()
    );

    let disabled = f.config_with("polykms-kek", json!({"proxy": ""}));
    let b = polykms_azure::AzureBackend::connect(&disabled)
        .await
        .unwrap();
    b.probe().await.expect("direct");
    assert_eq!(proxy.passed().len(), through, "proxy = \"\" must bypass");

    // SAFETY: as above.
    unsafe { std::env::set_var("no_proxy", "localhost,127.0.0.0/8") };
    let b = polykms_azure::AzureBackend::connect(&c).await.unwrap();
    b.probe().await.expect("direct");
    assert_eq!(proxy.passed().len(), through, "no_proxy must bypass");
}
