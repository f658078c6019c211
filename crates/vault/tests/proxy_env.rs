//! `HTTP_PROXY` / `NO_PROXY` from the environment, against OpenBao. Its own test binary with a
//! single test, because it sets process environment variables that no other test may see.

mod common;

use polykms_backend::KeyEncryptionBackend;
use polykms_net::testing::ForwardProxy;

use common::env;

#[tokio::test]
async fn environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key_says_otherwise() {
    let Some(e) = env("environment_proxy_is_used_unless_no_proxy_or_an_empty_proxy_key") else {
        return;
    };
    let proxy = ForwardProxy::start().await.unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HTTP_PROXY", proxy.url());
        std::env::set_var("https_proxy", proxy.url());
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let c = e.config(&e.key, e.token_auth(e.token_file.clone()));

    let b = e.backend(&c).await;
    b.probe().await.expect("probe through HTTP_PROXY");
    let through = proxy.passed().len();
    assert!(through > 0);
    assert!(
        b.describe().contains("(from HTTP_PROXY)"),
        "{}",
        b.describe()
    );

    let mut disabled = c.clone();
    disabled.network.proxy = Some(String::new());
    e.backend(&disabled).await.probe().await.expect("direct");
    assert_eq!(proxy.passed().len(), through, "proxy = \"\" must bypass");

    // SAFETY: as above.
    unsafe { std::env::set_var("NO_PROXY", "example.org, 127.0.0.1") };
    e.backend(&c).await.probe().await.expect("direct");
    assert_eq!(proxy.passed().len(), through, "NO_PROXY must bypass");
}
