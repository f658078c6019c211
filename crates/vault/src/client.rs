//! Building the HTTP client once (TLS, timeouts, server name) and cheap vaultrs clients per token.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use polykms_backend::{BackendError, SensitiveString};
use polykms_net::CaRoots;
use polykms_net::Network;
use polykms_net::tls::{ClientIdentity, Trust};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use vaultrs::api::EndpointMiddleware;
use vaultrs::client::{VaultClient, VaultClientSettings, VaultClientSettingsBuilder};
use zeroize::Zeroizing;

use crate::config::VaultConfig;

/// The shared HTTP connection pool plus what every vaultrs client built on it needs.
pub(crate) struct HttpSetup {
    http: reqwest::Client,
    network: Network,
    base: String,
    namespace: Option<String>,
    settings: VaultClientSettings,
}

impl HttpSetup {
    /// Reads CA and client certificate files and builds the connection pool. No network.
    pub fn build(config: &VaultConfig, address: &Url) -> Result<Self, BackendError> {
        let mut base = address.clone();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("polykms/", env!("CARGO_PKG_VERSION")));
        // Plain HTTP needs no trust store; avoids loading the platform one.
        let trust = if address.scheme() == "http" {
            Trust::NoSystem
        } else {
            Trust::System(CaRoots::Only)
        };
        let network = config.network.resolve()?;
        let identity = match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => {
                let cert = Zeroizing::new(read_file("client_cert_file", cert)?);
                let key = Zeroizing::new(read_file("client_key_file", key)?);
                Some(ClientIdentity::from_pem(
                    "client_cert_file / client_key_file",
                    &cert,
                    &key,
                )?)
            }
            _ => None,
        };
        builder = polykms_net::reqwest_client::configure(
            builder,
            &network,
            trust,
            identity,
            "vault backend",
        )?;
        if let Some(server_name) = &config.tls_server_name {
            // Connect to `address`'s host but verify (and send SNI for) `tls_server_name`:
            // the URL names the server as the certificate does, our resolver maps that name
            // back to the configured host.
            let real_host = address.host_str().unwrap_or_default().to_string();
            base.set_host(Some(server_name))
                .map_err(|e| BackendError::config(format!("tls_server_name: {e}")))?;
            builder = builder.dns_resolver(Arc::new(ServerNameResolver {
                server_name: server_name.to_ascii_lowercase(),
                real_host: real_host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            }));
        }
        let http = builder
            .build()
            .map_err(|e| BackendError::config(format!("building the HTTP client: {e}")))?;
        let base = base.as_str().trim_end_matches('/').to_string();
        let namespace = config
            .namespace
            .as_ref()
            .map(|ns| ns.trim_matches('/').to_string());
        // Every field that vaultrs would otherwise take from VAULT_* env vars is set here.
        let settings = VaultClientSettingsBuilder::default()
            .address(&base)
            .token(String::new())
            .ca_certs(Vec::new())
            .identity(None)
            .verify(true)
            .timeout(Some(config.timeout()))
            .namespace(namespace.clone())
            .build()
            .map_err(|e| BackendError::config(format!("address: {e}")))?;
        Ok(HttpSetup {
            http,
            network,
            base,
            namespace,
            settings,
        })
    }

    /// How requests reach the server (proxy or not) and which CAs are trusted, for `describe`.
    pub fn describe_network(&self) -> String {
        self.network.describe_for(&self.base, CaRoots::Only)
    }

    /// A vaultrs client sending `token` (or none), sharing this setup's connection pool.
    pub fn client(&self, token: Option<&SensitiveString>) -> VaultClient {
        let token = token.map(|t| t.expose().to_string()).unwrap_or_default();
        let mut settings = self.settings.clone();
        settings.token.clone_from(&token);
        VaultClient {
            http: rustify::clients::reqwest::Client::new(&self.base, self.http.clone()),
            middle: EndpointMiddleware {
                token,
                version: "v1".to_string(),
                wrap: None,
                namespace: self.namespace.clone(),
            },
            settings,
        }
    }
}

/// Reads a config-referenced file; the error names the field and the path.
pub(crate) fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, BackendError> {
    fs::read(path).map_err(|e| BackendError::config(format!("{field} {}: {e}", path.display())))
}

/// Resolves `server_name` to the addresses of `real_host`; every other name normally.
struct ServerNameResolver {
    server_name: String,
    real_host: String,
}

impl Resolve for ServerNameResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = if name.as_str().eq_ignore_ascii_case(&self.server_name) {
            self.real_host.clone()
        } else {
            name.as_str().to_string()
        };
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    fn config(address: &str) -> VaultConfig {
        VaultConfig {
            address: address.to_string(),
            mount: "transit".into(),
            key: "k".into(),
            namespace: Some("/team-a/".into()),
            network: Default::default(),
            client_cert_file: None,
            client_key_file: None,
            tls_server_name: None,
            timeout_ms: 1000,
            allow_key_without_aad: false,
            auth: AuthConfig::Token {
                token_file: None,
                token_env: Some("T".into()),
            },
        }
    }

    #[test]
    fn client_carries_token_and_namespace_but_no_env_settings() {
        let c = config("http://127.0.0.1:8207");
        let url = c.validate().unwrap();
        let setup = HttpSetup::build(&c, &url).unwrap();
        let client = setup.client(Some(&SensitiveString::new("s.abc")));
        assert_eq!(client.middle.token, "s.abc");
        assert_eq!(client.middle.namespace.as_deref(), Some("team-a"));
        assert_eq!(client.http.base, "http://127.0.0.1:8207");
        assert!(setup.client(None).middle.token.is_empty());
    }

    #[test]
    fn tls_server_name_rewrites_the_url_host() {
        let mut c = config("https://10.1.2.3:8200");
        c.tls_server_name = Some("vault.example".into());
        let url = c.validate().unwrap();
        let setup = HttpSetup::build(&c, &url).unwrap();
        assert_eq!(setup.base, "https://vault.example:8200");
    }

    #[test]
    fn missing_or_empty_ca_file_is_a_config_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("https://vault.example:8200");
        c.network.ca_file = Some(dir.path().join("missing.pem"));
        let url = c.validate().unwrap();
        let err = HttpSetup::build(&c, &url).err().unwrap();
        assert!(err.message().starts_with("ca_file"), "{err}");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "not a pem").unwrap();
        c.network.ca_file = Some(empty);
        let err = HttpSetup::build(&c, &url).err().unwrap();
        assert!(err.message().starts_with("ca_file"), "{err}");
    }

    #[tokio::test]
    async fn resolver_maps_server_name_to_the_real_host() {
        let r = ServerNameResolver {
            server_name: "vault.example".into(),
            real_host: "127.0.0.1".into(),
        };
        let addrs: Vec<_> = r
            .resolve("vault.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()));
    }
}
