//! Building the KMS client: region, endpoint, timeouts, SDK retries and credentials.
//!
//! Credentials come from the SDK's default chain (env, shared profile, web identity / IRSA,
//! ECS / EC2 metadata), optionally exchanged for an assumed role. Nothing here talks to the
//! network: credentials are fetched lazily by the first call, so `connect` works while KMS
//! or STS is down. KMS requests are signed by polykms' own SigV4 (`sigv4_auth`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kms::config::Region;
use aws_sdk_kms::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use polykms_backend::BackendError;
use polykms_net::CaRoots;

use crate::config::AwsConfig;
use crate::key::KeyRef;
use crate::sigv4_auth::PolySigV4Scheme;

/// Default role session name, visible in CloudTrail.
const DEFAULT_SESSION_NAME: &str = "polykms";

/// A ready client and what was resolved while building it.
pub(crate) struct KmsClient {
    pub(crate) client: aws_sdk_kms::Client,
    pub(crate) region: String,
    /// The KMS endpoint the SDK resolves (FIPS or not), or the configured override.
    pub(crate) endpoint: String,
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
    build_with_http(config, key, credentials, None).await
}

/// `build`, with `http` replacing the proxy-aware client (tests capture requests with it).
pub(crate) async fn build_with_http(
    config: &AwsConfig,
    key: &KeyRef,
    credentials: Option<SharedCredentialsProvider>,
    http: Option<SharedHttpClient>,
) -> Result<KmsClient, BackendError> {
    let timeout = Duration::from_millis(config.timeout_ms);
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(timeout)
        .operation_attempt_timeout(timeout)
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .build();
    let retries = RetryConfig::standard().with_max_attempts(config.max_attempts);

    let network = config.network.resolve()?;
    let http = match http {
        Some(http) => http,
        None => polykms_net::aws::http_client(&network)?,
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retries);
    // `use_fips_endpoint` is set on the KMS client only (below): STS has FIPS endpoints in the
    // US and GovCloud regions alone, so turning it on for the credential chain would break web
    // identity (IRSA) everywhere else. AWS_USE_FIPS_ENDPOINT / a profile's use_fips_endpoint
    // still apply to every client, as for any SDK program.
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
            // `base`, not the SDK's chain again, so a provider given for tests is the one used.
            SharedCredentialsProvider::new(builder.build_from_provider(base).await)
        }
        None => base,
    };
    let expiry = ExpiryRecorder::new(provider);

    let use_fips = config.use_fips_endpoint || sdk.use_fips().unwrap_or(false);
    let endpoint = resolve_endpoint(&region, use_fips, config.endpoint.as_deref()).await?;
    let mut kms = aws_sdk_kms::config::Builder::from(&sdk)
        .credentials_provider(expiry.clone())
        .push_auth_scheme(PolySigV4Scheme::default());
    if config.use_fips_endpoint {
        kms = kms.use_fips(true);
    }
    if let Some(endpoint) = &config.endpoint {
        kms = kms.endpoint_url(endpoint);
    }
    Ok(KmsClient {
        client: aws_sdk_kms::Client::from_conf(kms.build()),
        network: network.describe_for(&endpoint, CaRoots::AddToSystem),
        region,
        endpoint,
        expiry,
    })
}

/// The URL the SDK's own endpoint rules give KMS, so a region or partition without a FIPS
/// endpoint (or FIPS with an `endpoint` override, which the rules refuse) fails at start with
/// the field named, not at the first call.
async fn resolve_endpoint(
    region: &str,
    use_fips: bool,
    endpoint: Option<&str>,
) -> Result<String, BackendError> {
    let params = Params::builder()
        .region(region)
        .use_fips(use_fips)
        .use_dual_stack(false)
        .set_endpoint(endpoint.map(str::to_owned))
        .build()
        .map_err(|e| BackendError::config(format!("region: {e}")))?;
    match DefaultResolver::new().resolve_endpoint(&params).await {
        Ok(resolved) => Ok(resolved.url().to_owned()),
        Err(e) if use_fips => Err(BackendError::config(format!(
            "use_fips_endpoint (or AWS_USE_FIPS_ENDPOINT / the profile's use_fips_endpoint): \
             no FIPS endpoint for KMS in region {region}{}: {e}",
            if endpoint.is_some() {
                " with endpoint set"
            } else {
                ""
            }
        ))),
        Err(e) => Err(BackendError::config(format!(
            "region: the SDK has no KMS endpoint for region {region}: {e}"
        ))),
    }
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
#[path = "client_tests.rs"]
mod tests;
