//! The cluster a run talks to: the client from `--kubeconfig`/`--context`, and what identifies
//! the cluster for the state file (its URL, and the kube-system namespace's UID when readable).

use kube::Client;
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
    let client = Client::try_from(config)
        .map_err(|e| ReencryptError::Config(format!("building the Kubernetes client: {e}")))?;
    Ok(Cluster { client, server })
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
