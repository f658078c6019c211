//! Sorting AWS SDK errors into `BackendError` kinds, at the edge, once.
//!
//! Throttling, 5xx and network trouble are retryable; a ciphertext of another key or context
//! is `WrongKey`; a refused caller is `Unauthorized`; a disabled, missing or pending-deletion
//! key is `KeyUnavailable`. Messages carry the operation, the AWS error code and AWS' own
//! message (ARNs at most), never plaintext, key material or credentials.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use polykms_backend::{BackendError, ErrorKind};

/// Longest AWS message kept in an error; AWS messages are short, this bounds odd proxies.
const MAX_MESSAGE_CHARS: usize = 300;

/// Classifies any error of a KMS call `op` (`"Encrypt"`, `"DescribeKey"`, ...).
pub(crate) fn from_sdk_error<E>(op: &str, err: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if let Some(cred) = find_credentials_error(&err) {
        return from_credentials_error(op, cred);
    }
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            classify_service_error(op, ctx.err().code(), ctx.err().message(), Some(status))
        }
        SdkError::TimeoutError(_) => {
            BackendError::timeout(format!("{op}: KMS did not answer within the timeout"))
        }
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            BackendError::timeout(format!("{op}: connecting to KMS timed out"))
        }
        SdkError::DispatchFailure(d) if d.is_user() => BackendError::config(format!(
            "{op}: the request could not be sent: {}",
            clip(&DisplayErrorContext(&err).to_string())
        )),
        SdkError::DispatchFailure(_) => BackendError::unavailable(format!(
            "{op}: KMS endpoint unreachable: {}",
            clip(&DisplayErrorContext(&err).to_string())
        )),
        SdkError::ResponseError(r) => {
            // Unparseable answer: a proxy error page, a truncated body. 5xx is transient.
            let status = r.raw().status().as_u16();
            let e =
                BackendError::unavailable(format!("{op}: unreadable KMS response (HTTP {status})"));
            e.with_retryable(status >= 500 || status == 429)
        }
        SdkError::ConstructionFailure(_) => BackendError::internal(format!(
            "{op}: could not build the request: {}",
            clip(&DisplayErrorContext(&err).to_string())
        )),
        _ => BackendError::internal(format!(
            "{op}: {}",
            clip(&DisplayErrorContext(&err).to_string())
        )),
    }
}

/// Classifies an AWS error response by its error code, falling back on the HTTP status.
pub(crate) fn classify_service_error(
    op: &str,
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
) -> BackendError {
    let code = code.unwrap_or("");
    let detail = match message {
        Some(m) if !m.is_empty() => format!("{op}: {code}: {}", clip(m)),
        _ => format!("{op}: {code}"),
    };
    match code {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "LimitExceededException" => BackendError::unavailable(format!("{detail} (throttled)")),
        "KMSInternalException"
        | "InternalFailure"
        | "InternalError"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "KeyUnavailableException" => BackendError::unavailable(detail),
        "DependencyTimeoutException" | "RequestTimeout" | "RequestTimeoutException" => {
            BackendError::timeout(detail)
        }
        "InvalidCiphertextException" | "IncorrectKeyException" => BackendError::wrong_key(format!(
            "{detail} (ciphertext of another key or encryption context, or tampered)"
        )),
        "AccessDeniedException"
        | "AccessDenied"
        | "NotAuthorized"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException"
        | "ExpiredToken"
        | "RequestExpired" => BackendError::unauthorized(detail),
        "DisabledException"
        | "KMSInvalidStateException"
        | "NotFoundException"
        | "InvalidKeyUsageException"
        | "UnsupportedOperationException"
        | "CustomKeyStoreInvalidStateException" => BackendError::key_unavailable(detail),
        "InvalidArnException" => BackendError::config(format!("key: {detail}")),
        "ValidationException" | "InvalidGrantTokenException" | "SerializationException" => {
            BackendError::invalid_input(detail)
        }
        _ => match status {
            Some(429) => BackendError::unavailable(format!("{detail} (HTTP 429)")),
            Some(s) if s >= 500 => BackendError::unavailable(format!("{detail} (HTTP {s})")),
            Some(401 | 403) => BackendError::unauthorized(format!("{detail} (HTTP 403)")),
            Some(s) => BackendError::new(ErrorKind::Internal, format!("{detail} (HTTP {s})")),
            None => BackendError::internal(detail),
        },
    }
}

fn find_credentials_error<E>(err: &SdkError<E>) -> Option<&CredentialsError>
where
    E: StdError + 'static,
{
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(cred) = e.downcast_ref::<CredentialsError>() {
            return Some(cred);
        }
        source = e.source();
    }
    None
}

/// Credentials that cannot be had: the chain found none, STS refused, IMDS timed out.
pub(crate) fn from_credentials_error(op: &str, err: &CredentialsError) -> BackendError {
    let detail = clip(&DisplayErrorContext(err).to_string());
    match err {
        CredentialsError::CredentialsNotLoaded(_) => BackendError::unauthorized(format!(
            "{op}: no AWS credentials found in the default chain: {detail}"
        )),
        CredentialsError::ProviderTimedOut(_) => {
            BackendError::timeout(format!("{op}: loading AWS credentials timed out"))
        }
        CredentialsError::InvalidConfiguration(_) => {
            BackendError::config(format!("{op}: AWS credentials configuration: {detail}"))
        }
        // STS refusing the role and STS being briefly down look alike from here.
        CredentialsError::ProviderError(_) => {
            BackendError::unauthorized(format!("{op}: loading AWS credentials failed: {detail}"))
                .with_retryable(true)
        }
        _ => BackendError::internal(format!("{op}: loading AWS credentials: {detail}")),
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str, status: u16) -> (ErrorKind, bool) {
        let e = classify_service_error("Decrypt", Some(code), Some("m"), Some(status));
        (e.kind(), e.is_retryable())
    }

    #[test]
    fn throttling_5xx_and_kms_internal_errors_are_retryable() {
        for code in [
            "ThrottlingException",
            "LimitExceededException",
            "KMSInternalException",
        ] {
            assert_eq!(kind(code, 400), (ErrorKind::Unavailable, true), "{code}");
        }
        assert_eq!(
            kind("KeyUnavailableException", 500),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            kind("DependencyTimeoutException", 503),
            (ErrorKind::Timeout, true)
        );
        assert_eq!(kind("SomethingNew", 503), (ErrorKind::Unavailable, true));
        assert_eq!(kind("", 502), (ErrorKind::Unavailable, true));
        assert_eq!(kind("SomethingNew", 429), (ErrorKind::Unavailable, true));
    }

    #[test]
    fn invalid_ciphertext_and_incorrect_key_are_wrong_key() {
        assert_eq!(
            kind("InvalidCiphertextException", 400),
            (ErrorKind::WrongKey, false)
        );
        assert_eq!(
            kind("IncorrectKeyException", 400),
            (ErrorKind::WrongKey, false)
        );
    }

    #[test]
    fn access_denied_and_bad_signatures_are_unauthorized() {
        for code in [
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidSignatureException",
            "ExpiredTokenException",
        ] {
            assert_eq!(kind(code, 400), (ErrorKind::Unauthorized, false), "{code}");
        }
        assert_eq!(kind("Unknown", 403), (ErrorKind::Unauthorized, false));
    }

    #[test]
    fn disabled_invalid_state_and_not_found_are_key_unavailable() {
        for code in [
            "DisabledException",
            "KMSInvalidStateException",
            "NotFoundException",
            "InvalidKeyUsageException",
        ] {
            assert_eq!(
                kind(code, 400),
                (ErrorKind::KeyUnavailable, false),
                "{code}"
            );
        }
    }

    #[test]
    fn validation_is_invalid_input_and_bad_arn_is_config() {
        assert_eq!(
            kind("ValidationException", 400),
            (ErrorKind::InvalidInput, false)
        );
        assert_eq!(kind("InvalidArnException", 400), (ErrorKind::Config, false));
        assert_eq!(kind("WeirdException", 400), (ErrorKind::Internal, false));
    }

    #[test]
    fn message_names_operation_and_code_and_is_clipped() {
        let long = "x".repeat(1000);
        let e = classify_service_error("Encrypt", Some("DisabledException"), Some(&long), None);
        assert!(
            e.message().starts_with("Encrypt: DisabledException: xxx"),
            "{e}"
        );
        assert!(e.message().chars().count() < 400);
    }

    #[test]
    fn credentials_errors_are_sorted() {
        let cases = [
            (
                CredentialsError::not_loaded("no env vars"),
                ErrorKind::Unauthorized,
                false,
            ),
            (
                CredentialsError::provider_timed_out(std::time::Duration::from_secs(5)),
                ErrorKind::Timeout,
                true,
            ),
            (
                CredentialsError::invalid_configuration("loop"),
                ErrorKind::Config,
                false,
            ),
            (
                CredentialsError::provider_error("sts 403"),
                ErrorKind::Unauthorized,
                true,
            ),
            (
                CredentialsError::unhandled("bad utf-8"),
                ErrorKind::Internal,
                false,
            ),
        ];
        for (err, want, retryable) in cases {
            let e = from_credentials_error("Encrypt", &err);
            assert_eq!((e.kind(), e.is_retryable()), (want, retryable), "{e}");
        }
    }
}
