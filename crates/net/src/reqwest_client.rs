//! Network settings for reqwest-based clients (vault, gcp, azure).

use std::sync::Arc;

use crate::tls::{self, ClientIdentity, Trust};
use crate::{CaRoots, NetError, Network, Proxies};

/// The ALPN protocols reqwest offers itself when built, as here, without its `http2` feature.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// [`configure`] with the system roots and `ca_file` as `roots` says, no client certificate.
pub fn apply(
    builder: reqwest::ClientBuilder,
    network: &Network,
    roots: CaRoots,
) -> Result<reqwest::ClientBuilder, NetError> {
    configure(builder, network, Trust::System(roots), None, "HTTP client")
}

/// Applies `network` to `builder`: every request asks the shared resolver for its proxy
/// (reqwest's own environment lookup is switched off), and TLS is our own rustls config
/// ([`tls::client_config`]: this build's provider, `trust`, `identity`), checked to be FIPS in a
/// FIPS build, handed to reqwest whole so that reqwest builds none of its own.
pub fn configure(
    mut builder: reqwest::ClientBuilder,
    network: &Network,
    trust: Trust,
    identity: Option<ClientIdentity>,
    client: &str,
) -> Result<reqwest::ClientBuilder, NetError> {
    builder = builder.no_proxy();
    let proxies = Arc::new(network.proxies().clone());
    for route in network.proxies().routes() {
        let target = reqwest::Url::parse(&route.uri().to_string())
            .map_err(|e| NetError::new(route.source().to_string(), format!("{e}")))?;
        let wanted = route.clone();
        let resolver: Arc<Proxies> = Arc::clone(&proxies);
        let mut proxy = reqwest::Proxy::custom(move |url| {
            let uri = http::Uri::try_from(url.as_str()).ok()?;
            (resolver.route_for(&uri) == Some(&wanted)).then(|| target.clone())
        });
        if let Some(auth) = route.auth() {
            proxy = proxy.basic_auth(auth.user(), auth.expose_password());
        }
        builder = builder.proxy(proxy);
    }
    let config = tls::client_config(network, trust, identity, ALPN, client)?;
    Ok(builder.tls_backend_preconfigured(config))
}
