//! Network settings for the AWS SDK: an `HttpClient` that sends each request through the
//! proxy the shared resolver picks for its URL (or directly), trusting `ca_file` in addition
//! to the system roots. Connections are the SDK's own hyper + rustls (aws-lc) connectors, in
//! `CryptoMode::AwsLcFips` in a FIPS build: the SDK then builds its rustls config on
//! `rustls::crypto::default_fips_provider()` (asserting `provider.fips()`), restricted to
//! AES-GCM suites, so the config reports `fips()` (docs/fips.md, "TLS clients").

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use crate::{NetError, Network, Proxies, ProxyRoute};

/// The client to hand to `aws_config::ConfigLoader::http_client` (KMS, STS and the
/// credential providers then all follow the same proxy and CA settings).
pub fn http_client(network: &Network) -> Result<SharedHttpClient, NetError> {
    let mut trust = TrustStore::default();
    if let Some(ca) = network.ca() {
        trust = trust.with_pem_certificate(ca.pem().to_vec());
    }
    let tls = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| NetError::new("ca_file", format!("cannot build the TLS context: {e}")))?;
    let mut via = Vec::new();
    for route in network.proxies().routes() {
        let mut config = ProxyConfig::all(route.uri().to_string())
            .map_err(|e| NetError::new(route.source().to_string(), e.to_string()))?;
        if let Some(auth) = route.auth() {
            config = config.with_basic_auth(auth.user(), auth.expose_password());
        }
        via.push((route.clone(), config));
    }
    Ok(SharedHttpClient::new(RoutingClient {
        proxies: Arc::new(network.proxies().clone()),
        tls,
        via,
        cache: Mutex::new(Vec::new()),
    }))
}

/// The SDK connector's rustls provider: the FIPS one in a FIPS build.
fn crypto_mode() -> CryptoMode {
    #[cfg(feature = "fips")]
    {
        CryptoMode::AwsLcFips
    }
    #[cfg(not(feature = "fips"))]
    {
        CryptoMode::AwsLc
    }
}

type SettingsKey = (Option<Duration>, Option<Duration>);

#[derive(Debug)]
struct RoutingClient {
    proxies: Arc<Proxies>,
    tls: TlsContext,
    via: Vec<(ProxyRoute, ProxyConfig)>,
    /// One connector set per distinct timeout settings, so the connection pools are reused.
    cache: Mutex<Vec<(SettingsKey, SharedHttpConnector)>>,
}

impl RoutingClient {
    fn connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
        proxy: ProxyConfig,
    ) -> SharedHttpConnector {
        let mut builder = Connector::builder().connector_settings(settings.clone());
        builder.set_sleep_impl(components.sleep_impl());
        SharedHttpConnector::new(
            builder
                .proxy_config(proxy)
                .tls_provider(Provider::Rustls(crypto_mode()))
                .tls_context(self.tls.clone())
                .build(),
        )
    }
}

impl HttpClient for RoutingClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let routing = RoutingConnector {
            proxies: Arc::clone(&self.proxies),
            direct: self.connector(settings, components, ProxyConfig::disabled()),
            via: self
                .via
                .iter()
                .map(|(route, config)| {
                    (
                        route.clone(),
                        self.connector(settings, components, config.clone()),
                    )
                })
                .collect(),
        };
        let shared = SharedHttpConnector::new(routing);
        cache.push((key, shared.clone()));
        shared
    }
}

#[derive(Debug)]
struct RoutingConnector {
    proxies: Arc<Proxies>,
    direct: SharedHttpConnector,
    via: Vec<(ProxyRoute, SharedHttpConnector)>,
}

impl HttpConnector for RoutingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let route = http::Uri::try_from(request.uri())
            .ok()
            .and_then(|uri| self.proxies.route_for(&uri).cloned());
        let connector = route
            .and_then(|r| self.via.iter().find(|(v, _)| *v == r).map(|(_, c)| c))
            .unwrap_or(&self.direct);
        connector.call(request)
    }
}
