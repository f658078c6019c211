//! Network settings for reqwest-based clients (vault, gcp, azure).

use std::sync::Arc;

use crate::{CaRoots, NetError, Network, Proxies};

/// Applies `network` to `builder`: every request asks the shared resolver for its proxy
/// (reqwest's own environment lookup is switched off), and `ca_file` joins the roots.
pub fn apply(
    mut builder: reqwest::ClientBuilder,
    network: &Network,
    roots: CaRoots,
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
    if let Some(ca) = network.ca() {
        let certs = ca
            .certificates()
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetError::new("ca_file", format!("{}: {e}", ca.path().display())))?;
        builder = match roots {
            CaRoots::AddToSystem => builder.tls_certs_merge(certs),
            CaRoots::Only => builder.tls_certs_only(certs),
        };
    }
    Ok(builder)
}
