//! polykms' SigV4 signer as the SDK's `sigv4` auth scheme: registered on the KMS client, it
//! replaces the stock scheme (same id, so the SDK's auth resolution picks ours) and signs every
//! KMS request with `crate::sigv4`, i.e. inside AWS-LC (the FIPS module in a FIPS build).
//!
//! Used in every build, not only the FIPS one, so that every test of the crate runs the path a
//! FIPS binary runs. What the stock scheme does beyond this (presigning, event streams, clock
//! skew correction from server responses) KMS' Encrypt/Decrypt/DescribeKey do not use, except
//! skew correction: a host clock more than 5 minutes off fails with `InvalidSignatureException`
//! instead of being corrected after the first reply.

use std::borrow::Cow;

use aws_credential_types::Credentials;
use aws_runtime::auth::{HttpSignatureType, SigV4OperationSigningConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::auth::{
    AuthScheme, AuthSchemeEndpointConfig, AuthSchemeId, Sign,
};
use aws_smithy_runtime_api::client::identity::{Identity, SharedIdentityResolver};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::{GetIdentityResolver, RuntimeComponents};
use aws_smithy_types::Document;
use aws_smithy_types::config_bag::ConfigBag;
use aws_types::SigningName;
use aws_types::region::SigningRegion;

use crate::sigv4::{self, Payload, SigV4Error, SignableRequest, SigningCredentials, SigningParams};

/// The SDK's scheme id for SigV4 (`aws_runtime::auth::sigv4::SCHEME_ID`).
pub(crate) const SCHEME_ID: AuthSchemeId = aws_runtime::auth::sigv4::SCHEME_ID;

/// The `sigv4` auth scheme with polykms' signer.
#[derive(Debug, Default)]
pub(crate) struct PolySigV4Scheme {
    signer: PolySigV4Signer,
}

impl AuthScheme for PolySigV4Scheme {
    fn scheme_id(&self) -> AuthSchemeId {
        SCHEME_ID
    }

    fn identity_resolver(
        &self,
        identity_resolvers: &dyn GetIdentityResolver,
    ) -> Option<SharedIdentityResolver> {
        identity_resolvers.identity_resolver(self.scheme_id())
    }

    fn signer(&self) -> &dyn Sign {
        &self.signer
    }
}

#[derive(Debug, Default)]
struct PolySigV4Signer;

/// Why the SDK could not hand the signer what it needs. Carries no credential.
#[derive(Debug, thiserror::Error)]
enum SignerSetupError {
    #[error("SigV4: the identity is not AWS credentials")]
    NotAwsCredentials,
    #[error("SigV4: the operation has no SigV4 signing configuration")]
    NoOperationConfig,
    #[error("SigV4: no signing {0}")]
    Missing(&'static str),
}

impl Sign for PolySigV4Signer {
    fn sign_http_request(
        &self,
        request: &mut HttpRequest,
        identity: &Identity,
        endpoint_config: AuthSchemeEndpointConfig<'_>,
        runtime_components: &RuntimeComponents,
        config_bag: &ConfigBag,
    ) -> Result<(), BoxError> {
        let credentials = identity
            .data::<Credentials>()
            .ok_or(SignerSetupError::NotAwsCredentials)?;
        let operation = config_bag
            .load::<SigV4OperationSigningConfig>()
            .ok_or(SignerSetupError::NoOperationConfig)?;
        let options = &operation.signing_options;
        if options.signature_type != HttpSignatureType::HttpRequestHeaders
            || options.expires_in.is_some()
        {
            return Err(SigV4Error::Unsupported("presigning").into());
        }
        if options.payload_override.is_some() {
            return Err(SigV4Error::Unsupported("a payload override").into());
        }

        // Same precedence as the stock signer: the endpoint's auth scheme properties, then the
        // client's signing name/region, then the operation's.
        let service = endpoint_property(&endpoint_config, "signingName")
            .or_else(|| {
                config_bag
                    .load::<SigningName>()
                    .map(|n| Cow::Borrowed(n.as_ref()))
            })
            .or_else(|| operation.name.as_ref().map(|n| Cow::Borrowed(n.as_ref())))
            .ok_or(SignerSetupError::Missing("name"))?;
        let region = endpoint_property(&endpoint_config, "signingRegion")
            .or_else(|| {
                config_bag
                    .load::<SigningRegion>()
                    .map(|r| Cow::Borrowed(r.as_ref()))
            })
            .or_else(|| operation.region.as_ref().map(|r| Cow::Borrowed(r.as_ref())))
            .ok_or(SignerSetupError::Missing("region"))?;

        let time = runtime_components.time_source().unwrap_or_default().now();
        let params = SigningParams {
            region: &region,
            service: &service,
            time,
            double_uri_encode: options.double_uri_encode,
            normalize_uri_path: options.normalize_uri_path,
            content_sha256_header: options.content_sha256_header,
            omit_session_token: options.omit_session_token,
        };
        let signed = {
            let signable = SignableRequest {
                method: request.method(),
                uri: request.uri(),
                headers: request.headers().iter().collect(),
                payload: request
                    .body()
                    .bytes()
                    .map_or(Payload::Unsigned, Payload::Bytes),
            };
            let creds = SigningCredentials {
                access_key_id: credentials.access_key_id(),
                secret_access_key: credentials.secret_access_key(),
                session_token: credentials.session_token(),
            };
            sigv4::sign(&signable, &creds, &params)?
        };
        for (name, value) in signed.headers {
            let mut value =
                http::HeaderValue::from_str(&value).map_err(|_| SigV4Error::BadHeaderValue)?;
            value.set_sensitive(name == sigv4::X_AMZ_SECURITY_TOKEN);
            request.headers_mut().try_insert(name, value)?;
        }
        #[cfg(test)]
        SIGNED_ON_THIS_THREAD.with(|n| n.set(n.get() + 1));
        Ok(())
    }
}

#[cfg(test)]
thread_local! {
    /// Requests this signer signed on the current thread: a current-thread tokio test sees only
    /// its own, so it can tell this signer from the SDK's stock one.
    pub(crate) static SIGNED_ON_THIS_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A string property of the endpoint's `sigv4` auth scheme entry (`signingName`, ...).
fn endpoint_property<'a>(
    config: &AuthSchemeEndpointConfig<'a>,
    name: &str,
) -> Option<Cow<'a, str>> {
    match config.as_document()? {
        Document::Object(map) => match map.get(name)? {
            Document::String(s) => Some(Cow::Borrowed(s.as_str())),
            _ => None,
        },
        _ => None,
    }
}
