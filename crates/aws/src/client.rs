//! Building the KMS client: region, endpoint, timeouts, SDK retries and credentials.
//!
//! Credentials come from the SDK's default chain (env, shared profile, web identity / IRSA,
//! ECS / EC2 metadata), optionally exchanged for an assumed role. Nothing here talks to the
//! network: credentials are fetched lazily by the first call, so `connect` works while KMS
//! or STS is down.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kms::config::Region;
use polykms_backend::BackendError;
use polykms_net::CaRoots;

use crate::config::AwsConfig;
use crate::key::KeyRef;

/// Default role session name, visible in CloudTrail.
const DEFAULT_SESSION_NAME: &str = "polykms";

/// A ready client and what was resolved while building it.
pub(crate) struct KmsClient {
    pub(crate) client: aws_sdk_kms::Client,
    pub(crate) region: String,
    /// Proxy and CA summary for `describe`.
    pub(crate) network: String,
    pub(crate) expiry: ExpiryRecorder,
}

/// Builds the client. Fails (kind `Config`, naming the field) only on configuration that can
/// never work: no region anywhere, no credentials provider.
///
/// `credentials` replaces the default chain (tests use static credentials).
pub(crate) async fn build(
    config: &AwsConfig,
    key: &KeyRef,
    credentials: Option<SharedCredentialsProvider>,
) -> Result<KmsClient, BackendError> {
    let timeout = Duration::from_millis(config.timeout_ms);
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .build();
    let retries = RetryConfig::standard().with_max_attempts(config.max_attempts);

    let network = config.network.resolve()?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(polykms_net::aws::http_client(&network)?)
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    // An explicit region wins, then the key ARN's own region, then the SDK's chain.
    if let Some(region) = config.region.as_deref().or(key.region()) {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let sdk = loader.load().await;

    let region = sdk.region().map(ToString::to_string).ok_or_else(|| {
        BackendError::config(
            "region: not set, and neither the key ARN nor AWS_REGION / the profile names one",
        )
    })?;
    let base = credentials
        .or_else(|| sdk.credentials_provider())
        .ok_or_else(|| {
            BackendError::config("assume_role_arn: no AWS credentials provider could be configured")
        })?;

    let provider = match &config.assume_role_arn {
        Some(role) => {
            let session = config
                .assume_role_session_name
                .as_deref()
                .unwrap_or(DEFAULT_SESSION_NAME);
            let mut builder = AssumeRoleProvider::builder(role)
                .session_name(session)
                .configure(&sdk);
            if let Some(external_id) = &config.assume_role_external_id {
                builder = builder.external_id(external_id);
            }
            SharedCredentialsProvider::new(builder.build().await)
        }
        None => base,
    };
    let expiry = ExpiryRecorder::new(provider);

    let mut kms = aws_sdk_kms::config::Builder::from(&sdk).credentials_provider(expiry.clone());
    if let Some(endpoint) = &config.endpoint {
        kms = kms.endpoint_url(endpoint);
    }
    let endpoint = config
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
    Ok(KmsClient {
        client: aws_sdk_kms::Client::from_conf(kms.build()),
        network: network.describe_for(&endpoint, CaRoots::AddToSystem),
        region,
        expiry,
    })
}

/// A credentials provider that remembers when the credentials it last handed out expire.
///
/// The SDK's identity cache calls it only when its cached credentials near expiry, so the
/// recorded time is that of the credentials in use, without any extra STS call.
#[derive(Debug, Clone)]
pub(crate) struct ExpiryRecorder {
    inner: SharedCredentialsProvider,
    expiry: Arc<Mutex<Option<SystemTime>>>,
}

impl ExpiryRecorder {
    fn new(inner: SharedCredentialsProvider) -> Self {
        ExpiryRecorder {
            inner,
            expiry: Arc::new(Mutex::new(None)),
        }
    }

    /// Expiry of the credentials fetched last; `None` before the first fetch or for
    /// long-lived credentials.
    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        *self.expiry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ProvideCredentials for ExpiryRecorder {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let credentials = self.inner.provide_credentials().await?;
            *self.expiry.lock().unwrap_or_else(PoisonError::into_inner) = credentials.expiry();
            Ok(credentials)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kms::config::Credentials;

    #[tokio::test]
    async fn expiry_recorder_reports_expiry_of_last_credentials() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "not-a-secret",
            Some("t".into()),
            Some(at),
            "test",
        );
        let rec = ExpiryRecorder::new(SharedCredentialsProvider::new(creds));
        assert_eq!(rec.expiry(), None);
        rec.provide_credentials().await.unwrap();
        assert_eq!(rec.expiry(), Some(at));
    }

    #[tokio::test]
    async fn build_works_offline_and_takes_region_from_key_arn() {
        let mut cfg = AwsConfig::new("arn:aws:kms:ap-south-2:111122223333:key/k-1");
        cfg.endpoint = Some("http://127.0.0.1:9".into());
        let key = cfg.validate().unwrap();
        let built = build(&cfg, &key, None).await.unwrap();
        assert_eq!(built.region, "ap-south-2");
    }
}
