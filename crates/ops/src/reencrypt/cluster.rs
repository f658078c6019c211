//! The cluster a run talks to: the client from `--kubeconfig`/`--context`, and what identifies
//! the cluster for the state file (its URL, and the kube-system namespace's UID when readable).

use kube::Client;
use kube::client::ConfigExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Request;
use serde_json::Value;

use super::state::Target;
use super::{Options, ReencryptError, api};

/// A connected client and the URL it talks to.
pub struct Cluster {
    /// The API client.
    pub client: Client,
    /// The API server URL, as configured.
    pub server: String,
}

/// Builds the client from `--kubeconfig`/`--context` (else the usual inference).
pub async fn connect(options: &Options) -> Result<Cluster, ReencryptError> {
    let kopts = KubeConfigOptions {
        context: options.context.clone(),
        ..Default::default()
    };
    let bad = |e: &dyn std::fmt::Display| ReencryptError::Config(format!("kubeconfig: {e}"));
    let config = match (&options.kubeconfig, &options.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                ReencryptError::Config(format!("--kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kopts)
                .await
                .map_err(|e| bad(&e))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&kopts)
            .await
            .map_err(|e| bad(&e))?,
        (None, None) => kube::Config::infer().await.map_err(|e| bad(&e))?,
    };
    let mut config = config;
    // Every retry goes through the run's own rules (at the --qps pace, Retry-After honoured, a
    // bounded number of attempts): kube's built-in retry layer would add attempts beside them
    // that --qps does not see (and, with a request that kept failing, was seen to stall).
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    check_tls(&config, polykms_backend::crypto::FIPS_BUILD)?;
    let client = Client::try_from(config)
        .map_err(|e| ReencryptError::Config(format!("building the Kubernetes client: {e}")))?;
    Ok(Cluster { client, server })
}

/// What a FIPS build (`fips`) refuses before connecting: `insecure-skip-tls-verify` (the
/// server's certificate and handshake signature would go unverified, so the channel's key
/// establishment is unauthenticated), and a TLS config that does not report `fips()`. kube builds
/// its rustls config from the process-default provider, which the binary installs at start.
fn check_tls(config: &kube::Config, fips: bool) -> Result<(), ReencryptError> {
    if !fips {
        return Ok(());
    }
    if config.accept_invalid_certs {
        return Err(ReencryptError::Config(
            "kubeconfig: insecure-skip-tls-verify is set; a FIPS build refuses unauthenticated \
             TLS to the API server"
                .into(),
        ));
    }
    if config.cluster_url.scheme_str() != Some("https") {
        return Ok(());
    }
    let tls = config
        .rustls_client_config()
        .map_err(|e| ReencryptError::Config(format!("kubeconfig: TLS settings: {e}")))?;
    check_fips(&tls)
}

fn check_fips(tls: &rustls::ClientConfig) -> Result<(), ReencryptError> {
    polykms_net::tls::require_fips_in(tls, "kubernetes client", true)
        .map_err(|e| ReencryptError::Config(e.to_string()))
}

impl Cluster {
    /// What the state file records: the URL, the kube-system UID if this identity may read the
    /// namespace (an unreadable one is not an error: the URL then stands for the cluster), and
    /// the key_id the run rewrites to.
    pub async fn target(&self, expect_key_id: Option<&str>) -> Target {
        let request = Request::new("/api/v1/namespaces")
            .get("kube-system", &Default::default())
            .expect("a GET request always builds");
        let cluster_uid = match api::call::<Value>(&self.client, request).await {
            Ok(ns) => ns["metadata"]["uid"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            Err(e) => {
                tracing::debug!(code = e.code, "kube-system namespace not readable: {e}");
                None
            }
        };
        Target {
            server: self.server.clone(),
            cluster_uid,
            expect_key_id: expect_key_id.map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn config(insecure: bool) -> kube::Config {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:6443\n    \
             insecure-skip-tls-verify: {insecure}\n\
             contexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n"
        );
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_fips_build_refuses_insecure_skip_tls_verify() {
        let insecure = config(true).await;
        let err = check_tls(&insecure, true).unwrap_err().to_string();
        assert!(err.contains("insecure-skip-tls-verify"), "{err}");
        check_tls(&insecure, false).unwrap();
    }

    #[test]
    fn a_fips_build_refuses_a_kube_tls_config_that_is_not_fips() {
        let _ = polykms_net::tls::install_default();
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES.to_vec();
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let err = check_fips(&tls).unwrap_err().to_string();
        assert!(err.contains("kubernetes client"), "{err}");
    }

    #[tokio::test]
    async fn the_kube_tls_config_is_this_builds_provider() {
        polykms_net::tls::install_default().unwrap();
        let tls = config(false).await.rustls_client_config().unwrap();
        assert_eq!(tls.fips(), polykms_backend::crypto::FIPS_BUILD);
        if polykms_backend::crypto::FIPS_BUILD {
            check_tls(&config(false).await, true).unwrap();
        }
    }
}
