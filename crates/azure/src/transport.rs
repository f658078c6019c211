//! The HTTP side of the SDK pipeline: a reqwest client with the extra CA and timeouts, and
//! the retry policy.
//!
//! The SDK's default transport cannot take extra roots, so we hand it our own
//! `reqwest::Client` through `ClientOptions::transport` (azure_core implements its
//! `HttpClient` trait for `reqwest::Client`).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::http::{ClientOptions, FixedRetryOptions, RetryOptions, Transport};
use azure_core::time::Duration;
use polykms_backend::BackendError;
use polykms_net::tls::Trust;
use polykms_net::{CaRoots, Network};

use crate::config::AzureConfig;

/// Delay before an SDK retry when the server gave no `Retry-After`.
const RETRY_DELAY: Duration = Duration::milliseconds(200);

/// Connecting must not eat the whole call budget: leave room for one retry.
const MAX_CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(2);

/// Client options shared by the Key Vault client and the credential.
pub(crate) fn client_options(
    config: &AzureConfig,
    network: &Network,
) -> Result<ClientOptions, BackendError> {
    let timeout = StdDuration::from_millis(config.timeout_ms);
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        // Key Vault does not redirect; following one would carry the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true);
    let trust = Trust::System(CaRoots::AddToSystem);
    builder =
        polykms_net::reqwest_client::configure(builder, network, trust, None, "azure backend")?;
    let http = builder
        .build()
        .map_err(|e| BackendError::config(format!("ca_file: cannot build the TLS client: {e}")))?;

    let retry = if config.max_retries == 0 {
        RetryOptions::none()
    } else {
        RetryOptions::fixed(FixedRetryOptions {
            delay: RETRY_DELAY,
            max_retries: config.max_retries,
            max_total_elapsed: Duration::milliseconds(
                i64::try_from(config.timeout_ms).unwrap_or(i64::MAX),
            ),
        })
    };

    let cloud = match &config.authority_host {
        Some(host) => {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.clone();
            Some(Arc::new(CloudConfiguration::from(custom)))
        }
        None => None,
    };

    Ok(ClientOptions {
        transport: Some(Transport::new(Arc::new(http))),
        retry,
        cloud,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> AzureConfig {
        serde_json::from_str(&format!(
            r#"{{"vault_url":"https://kv.vault.azure.net","key_name":"k",
                "auth":{{"method":"managed_identity"}}{extra}}}"#
        ))
        .unwrap()
    }

    fn options(config: &AzureConfig) -> Result<ClientOptions, BackendError> {
        let network = config.network.resolve_with(|_| None)?;
        client_options(config, &network)
    }

    #[test]
    fn missing_or_garbage_ca_file_is_a_config_error() {
        let err = options(&config(r#","ca_file":"/nonexistent/ca.pem""#)).unwrap_err();
        assert!(err.message().starts_with("ca_file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let err = options(&config(&format!(r#","ca_file":{:?}"#, path))).unwrap_err();
        assert!(err.message().starts_with("ca_file"), "{err}");
    }

    #[test]
    fn options_build_without_a_ca_file() {
        options(&config("")).unwrap();
        options(&config(
            r#","max_retries":0,"authority_host":"https://login.microsoftonline.us""#,
        ))
        .unwrap();
    }
}
