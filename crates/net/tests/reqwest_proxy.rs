//! The reqwest helper against a local origin and the recording proxy: no external servers.

use polykms_net::testing::{ForwardProxy, refusing_proxy_url};
use polykms_net::{CaRoots, NetworkConfig};

fn client(config: &NetworkConfig, env: &[(&str, &str)]) -> reqwest::Client {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let network = config
        .resolve_with(|name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .unwrap();
    polykms_net::reqwest_client::apply(reqwest::Client::builder(), &network, CaRoots::AddToSystem)
        .unwrap()
        .build()
        .unwrap()
}

async fn get(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn env_snapshot_proxy_is_used_and_no_proxy_or_empty_proxy_key_bypass_it() {
    let target = format!("http://{}", polykms_net::testing::origin().await);
    let proxy = ForwardProxy::start().await.unwrap();
    let url = proxy.url();
    let via_env = client(&NetworkConfig::default(), &[("HTTP_PROXY", &url)]);
    assert_eq!(get(&via_env, &format!("{target}/a")).await, "origin");
    assert_eq!(proxy.passed().len(), 1);
    assert_eq!(proxy.passed()[0].target, format!("{target}/a"));

    let excluded = client(
        &NetworkConfig::default(),
        &[("HTTP_PROXY", &url), ("NO_PROXY", "127.0.0.1")],
    );
    assert_eq!(get(&excluded, &format!("{target}/b")).await, "origin");
    let disabled = NetworkConfig {
        proxy: Some(String::new()),
        ..Default::default()
    };
    assert_eq!(
        get(
            &client(&disabled, &[("HTTP_PROXY", &url)]),
            &format!("{target}/c")
        )
        .await,
        "origin"
    );
    assert_eq!(proxy.passed().len(), 1, "{:?}", proxy.passed());
}

#[tokio::test]
async fn config_proxy_wins_over_the_environment() {
    let target = format!("http://{}", polykms_net::testing::origin().await);
    let proxy = ForwardProxy::start().await.unwrap();
    let config = NetworkConfig {
        proxy: Some(proxy.url()),
        ..Default::default()
    };
    let refused = refusing_proxy_url().await.unwrap();
    let c = client(&config, &[("HTTP_PROXY", &refused)]);
    assert_eq!(get(&c, &format!("{target}/x")).await, "origin");
    assert_eq!(proxy.passed().len(), 1);
}

#[tokio::test]
async fn refused_proxy_fails_the_request_as_a_connect_error() {
    let target = format!("http://{}", polykms_net::testing::origin().await);
    let config = NetworkConfig {
        proxy: Some(refusing_proxy_url().await.unwrap()),
        ..Default::default()
    };
    let err = client(&config, &[])
        .get(format!("{target}/y"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}
