//! Building the Cloud KMS client (`google-cloud-kms-v1`) from the config.

use std::path::Path;
use std::time::Duration;

use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_kms_v1::client::KeyManagementService;
use polykms_backend::{BackendError, SensitiveString};
use polykms_net::CaRoots;
use polykms_net::tls::Trust;

use crate::config::{GcpAuth, GcpConfig};
use crate::transport::{DEFAULT_ENDPOINT, RestTransport};

/// Builds the client and says how it reaches the endpoint (proxy, CA) for `describe`. No
/// network call happens here: tokens are fetched on first use, so a key store or metadata
/// server that is down now does not fail startup.
///
/// There are no client-library retries: core retries with backoff inside the apiserver's
/// deadline, and a second loop here would multiply attempts and blow that deadline.
pub(crate) async fn build_client(
    config: &GcpConfig,
) -> Result<(KeyManagementService, String), BackendError> {
    let credentials = build_credentials(&config.auth).await?;
    let network = config.network.resolve()?;
    let endpoint = config.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
    let builder = reqwest::Client::builder()
        .timeout(config.timeout())
        .connect_timeout(config.timeout().min(MAX_CONNECT_TIMEOUT))
        // Cloud KMS does not redirect; following one would carry the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("polykms/", env!("CARGO_PKG_VERSION")));
    let trust = Trust::System(CaRoots::AddToSystem);
    let http =
        polykms_net::reqwest_client::configure(builder, &network, trust, None, "gcp backend")?
            .build()
            .map_err(|e| {
                BackendError::config(format!("endpoint: cannot build the HTTP client: {e}"))
            })?;
    let client = KeyManagementService::from_stub(RestTransport::new(http, endpoint, credentials));
    Ok((client, network.describe_for(endpoint, CaRoots::AddToSystem)))
}

/// Connecting must not eat the whole call budget.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

async fn build_credentials(auth: &GcpAuth) -> Result<Credentials, BackendError> {
    match auth {
        GcpAuth::Adc => credentials::Builder::default().build().map_err(|e| {
            BackendError::config(format!(
                "auth: application default credentials are unusable \
                 (check GOOGLE_APPLICATION_CREDENTIALS): {e}"
            ))
        }),
        GcpAuth::ServiceAccount { credentials_file } => {
            let key = read_service_account_key(credentials_file).await?;
            credentials::service_account::Builder::new(key)
                .build()
                .map_err(|_| {
                    BackendError::config(format!(
                        "auth.credentials_file: {} is not a usable service account key",
                        credentials_file.display()
                    ))
                })
        }
        GcpAuth::Anonymous => {
            tracing::warn!(
                "gcp backend uses anonymous credentials: only for emulators and tests, \
                 Cloud KMS itself rejects unauthenticated calls"
            );
            Ok(credentials::anonymous::Builder::new().build())
        }
    }
}

/// Reads and checks a service account JSON key file. Error messages name the file and the
/// problem, never its content (it holds a private key).
async fn read_service_account_key(path: &Path) -> Result<serde_json::Value, BackendError> {
    let field = "auth.credentials_file";
    let text = tokio::fs::read_to_string(path)
        .await
        .map(SensitiveString::new)
        .map_err(|e| {
            BackendError::config(format!("{field}: cannot read {}: {e}", path.display()))
        })?;
    let key: serde_json::Value = serde_json::from_str(text.expose()).map_err(|_| {
        BackendError::config(format!("{field}: {} is not valid JSON", path.display()))
    })?;
    let kind = key.get("type").and_then(serde_json::Value::as_str);
    if kind != Some("service_account") {
        return Err(BackendError::config(format!(
            "{field}: {} is not a service account key (\"type\" must be \"service_account\")",
            path.display()
        )));
    }
    for required in ["client_email", "private_key"] {
        if key
            .get(required)
            .and_then(serde_json::Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(BackendError::config(format!(
                "{field}: {} has no \"{required}\"",
                path.display()
            )));
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use polykms_backend::ErrorKind;

    use super::*;

    fn file_with(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    #[tokio::test]
    async fn missing_key_file_is_a_config_error_naming_the_field() {
        let err = read_service_account_key(Path::new("/nonexistent/sa.json"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().starts_with("auth.credentials_file:"), "{err}");
    }

    #[tokio::test]
    async fn key_file_errors_never_echo_the_content() {
        let secret = "-----BEGIN PRIVATE KEY-----MIIEsecret";
        for content in [
            format!("{{ \"private_key\": \"{secret}\" "),
            format!("{{ \"type\": \"authorized_user\", \"private_key\": \"{secret}\" }}"),
            format!("{{ \"type\": \"service_account\", \"private_key\": \"{secret}\" }}"),
        ] {
            let f = file_with(&content);
            let err = read_service_account_key(f.path()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(!err.to_string().contains("MIIE"), "{err}");
        }
    }

    #[tokio::test]
    async fn a_complete_key_file_is_accepted() {
        let f = file_with(
            r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com",
                "private_key":"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n"}"#,
        );
        let key = read_service_account_key(f.path()).await.unwrap();
        assert_eq!(key["client_email"], "a@p.iam.gserviceaccount.com");
    }

    #[tokio::test]
    async fn anonymous_client_builds_without_network() {
        let config = GcpConfig {
            key: "projects/p/locations/l/keyRings/r/cryptoKeys/k".into(),
            endpoint: Some("http://127.0.0.1:9".into()),
            auth: GcpAuth::Anonymous,
            timeout_ms: 100,
            network: Default::default(),
        };
        build_client(&config).await.unwrap();
    }
}
