//! Network settings shared by the remote backends: which HTTP(S) proxy a request goes through
//! (config keys over `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`), and extra trusted CA roots.
//!
//! Each backend config embeds [`NetworkConfig`] (`#[serde(flatten)]`, so the keys `proxy`,
//! `no_proxy`, `proxy_credentials_file` and `ca_file` sit next to the backend's own), resolves it
//! once into a [`Network`], and builds its HTTP client from that: [`reqwest_client`] for the
//! reqwest-based SDKs, [`aws`] for the AWS SDK. One resolver decides for every stack, so the
//! four backends treat proxies the same way. [`tls`] says which rustls crypto provider every
//! TLS client uses (the FIPS one in a FIPS build) and checks each client config against it.

mod ca;
mod error;
mod no_proxy;
mod proxy;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "reqwest")]
pub mod reqwest_client;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::path::PathBuf;

use serde::Deserialize;

pub use ca::CaBundle;
pub use error::NetError;
pub use no_proxy::NoProxy;
pub use proxy::{Proxies, ProxyAuth, ProxyRoute, ProxySource};

/// The network keys every remote backend accepts, with the same names and meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetworkConfig {
    /// Proxy for every request of this backend (`http://host:port`), overriding
    /// `HTTPS_PROXY` / `HTTP_PROXY`; `""` disables proxies, environment included.
    #[serde(default)]
    pub proxy: Option<String>,
    /// File holding `user:password` for the proxy (Basic auth); never inline in the config.
    #[serde(default)]
    pub proxy_credentials_file: Option<PathBuf>,
    /// Hosts reached directly, overriding `NO_PROXY`: names (with subdomains), IPs, CIDRs,
    /// optional `:port`, or `*`.
    #[serde(default)]
    pub no_proxy: Option<Vec<String>>,
    /// PEM bundle of CA certificates trusted in addition to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl NetworkConfig {
    /// `proxy_credentials_file` and `ca_file` when set, for [`polykms_backend::ConfigFiles`].
    pub fn file_paths_mut(&mut self) -> Vec<&mut PathBuf> {
        self.proxy_credentials_file
            .iter_mut()
            .chain(self.ca_file.iter_mut())
            .collect()
    }

    /// Resolves against the process environment (see [`NetworkConfig::resolve_with`]).
    pub fn resolve(&self) -> Result<Network, NetError> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// Resolves the settings: reads the credentials and CA files and the proxy variables
    /// through `env` (tests pass a snapshot instead of touching the process environment).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Network, NetError> {
        let proxies = Proxies::resolve(self, &env)?;
        let ca = self.ca_file.as_deref().map(CaBundle::load).transpose()?;
        Ok(Network { proxies, ca })
    }
}

/// How `ca_file` combines with the system roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaRoots {
    /// Trust the bundle in addition to the system roots (the default meaning of `ca_file`).
    AddToSystem,
    /// Trust only the bundle (Vault's `VAULT_CACERT` meaning, kept for its `ca_file`).
    Only,
}

/// Resolved network settings: the proxy routes and the extra CA bundle, ready to build clients.
#[derive(Debug, Clone, Default)]
pub struct Network {
    proxies: Proxies,
    ca: Option<CaBundle>,
}

impl Network {
    /// No proxy, no extra roots (what a backend with no network settings and an empty
    /// environment gets).
    pub fn direct() -> Self {
        Network::default()
    }

    /// The proxy routing rules.
    pub fn proxies(&self) -> &Proxies {
        &self.proxies
    }

    /// The extra CA bundle, if `ca_file` was set.
    pub fn ca(&self) -> Option<&CaBundle> {
        self.ca.as_ref()
    }

    /// One line for `polykms check`: how requests to `endpoint` travel and which roots are
    /// trusted. Never shows proxy credentials.
    pub fn describe_for(&self, endpoint: &str, roots: CaRoots) -> String {
        let route = match http::Uri::try_from(endpoint) {
            Ok(uri) => match self.proxies.route_for(&uri) {
                Some(r) => format!("proxy {} (from {})", r.uri(), r.source()),
                None if self.proxies.bypasses(&uri) => "no proxy (no_proxy match)".to_owned(),
                None => "no proxy".to_owned(),
            },
            Err(_) => "no proxy (endpoint is not a URL)".to_owned(),
        };
        let ca = match &self.ca {
            Some(ca) if roots == CaRoots::Only => format!("ca_file {} only", ca.path().display()),
            Some(ca) => format!("ca_file {} + system roots", ca.path().display()),
            None => "system roots".to_owned(),
        };
        format!("{route}, {ca}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_next_to_a_backends_own_and_unknown_keys_still_fail() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Backend {
            #[allow(dead_code)]
            key: String,
            #[serde(flatten)]
            network: NetworkConfig,
        }
        let b: Backend = toml::from_str(
            r#"
            key = "k"
            proxy = "http://proxy.corp:3128"
            proxy_credentials_file = "/etc/polykms/proxy-auth"
            no_proxy = ["10.0.0.0/8", ".svc"]
            ca_file = "/etc/polykms/ca.pem"
            "#,
        )
        .unwrap();
        assert_eq!(b.network.proxy.as_deref(), Some("http://proxy.corp:3128"));
        assert_eq!(b.network.no_proxy.as_ref().map(Vec::len), Some(2));
        let err = toml::from_str::<Backend>("key = \"k\"\nproxi = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("proxi"), "{err}");

        // The binary's shape: a `type`-tagged enum flattened into the `[[backends]]` entry.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase")]
        enum Settings {
            Remote(Backend),
        }
        #[derive(Debug, Deserialize)]
        struct Entry {
            #[allow(dead_code)]
            name: String,
            #[serde(flatten)]
            settings: Settings,
        }
        let e: Entry = toml::from_str(
            "name = \"a\"\ntype = \"remote\"\nkey = \"k\"\nno_proxy = [\"x\"]\nproxy = \"\"\n",
        )
        .unwrap();
        let Settings::Remote(b) = e.settings;
        assert_eq!(b.network.proxy.as_deref(), Some(""));
        let err =
            toml::from_str::<Entry>("name = \"a\"\ntype = \"remote\"\nkey = \"k\"\nca = \"x\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("ca"), "{err}");
    }

    #[test]
    fn describe_says_which_proxy_and_which_roots_without_credentials() {
        let env = |name: &str| {
            (name == "HTTPS_PROXY").then(|| "http://alice:s3cret@proxy.corp:3128".to_owned())
        };
        let net = NetworkConfig::default().resolve_with(env).unwrap();
        let text = net.describe_for("https://kms.eu-west-1.amazonaws.com", CaRoots::AddToSystem);
        assert_eq!(
            text,
            "proxy http://proxy.corp:3128/ (from HTTPS_PROXY), system roots"
        );
        assert!(!text.contains("s3cret") && !text.contains("alice"));
        assert_eq!(
            net.describe_for("http://127.0.0.1:8200", CaRoots::Only),
            "no proxy, system roots"
        );
    }
}
