//! Sorting Azure SDK errors into `BackendError` kinds, in one place.
//!
//! Key Vault answers errors as `{"error":{"code","message","innererror":{"code"}}}`
//! (https://learn.microsoft.com/rest/api/keyvault/keys/get-key/get-key#keyvaulterror).
//! The classification follows issue 7: 429/5xx/network are retryable, 401/403 are
//! Unauthorized, 404 or a disabled key is KeyUnavailable, 400 on unwrap is WrongKey.

use std::error::Error as _;

use azure_core::error::{Error as AzureError, ErrorKind as AzureKind};
use azure_core::http::headers::RETRY_AFTER;
use polykms_backend::BackendError;
use serde::Deserialize;

/// The Key Vault operation that failed; it decides what a 400 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Get,
    Wrap,
    Unwrap,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Get => "get key",
            Operation::Wrap => "wrapKey",
            Operation::Unwrap => "unwrapKey",
        }
    }
}

/// Inner error codes Key Vault uses when the key exists but cannot be used.
const KEY_STATE_CODES: &[&str] = &[
    "KeyDisabled",
    "KeyExpired",
    "KeyNotYetValid",
    "KeyOperationForbidden",
];

/// Server messages are operator-facing text, never secret, but keep them short.
const MAX_SERVER_MESSAGE: usize = 200;

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    innererror: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    code: Option<String>,
}

/// What an HTTP error response said, reduced to what classification needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct HttpFailure {
    pub status: u16,
    pub code: Option<String>,
    pub inner_code: Option<String>,
    pub message: Option<String>,
    pub retry_after: Option<String>,
}

impl HttpFailure {
    fn from_parts(
        status: u16,
        error_code: Option<&str>,
        body: &[u8],
        retry_after: Option<&str>,
    ) -> Self {
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| b.error);
        let (code, message, inner_code) = match detail {
            Some(d) => (d.code, d.message, d.innererror.and_then(|i| i.code)),
            None => (None, None, None),
        };
        HttpFailure {
            status,
            code: code.or_else(|| error_code.map(str::to_owned)),
            inner_code,
            message,
            retry_after: retry_after.map(str::to_owned),
        }
    }

    fn describe(&self, op: Operation) -> String {
        let mut s = format!("{} failed: HTTP {}", op.as_str(), self.status);
        if let Some(code) = &self.code {
            s.push_str(&format!(" {code}"));
        }
        if let Some(inner) = &self.inner_code {
            s.push_str(&format!(" ({inner})"));
        }
        if let Some(msg) = &self.message {
            let msg: String = msg.chars().take(MAX_SERVER_MESSAGE).collect();
            s.push_str(&format!(": {msg}"));
        }
        if let Some(after) = &self.retry_after {
            s.push_str(&format!("; retry after {after}s"));
        }
        s
    }

    fn is_key_state(&self) -> bool {
        [&self.code, &self.inner_code]
            .into_iter()
            .flatten()
            .any(|c| KEY_STATE_CODES.iter().any(|k| k.eq_ignore_ascii_case(c)))
    }

    /// The classification table of issue 7.
    pub(crate) fn classify(&self, op: Operation) -> BackendError {
        let msg = self.describe(op);
        match self.status {
            400 => match op {
                Operation::Unwrap => BackendError::wrong_key(msg),
                Operation::Wrap => BackendError::invalid_input(msg),
                Operation::Get => BackendError::config(msg),
            },
            401 => BackendError::unauthorized(msg),
            403 if self.is_key_state() => BackendError::key_unavailable(msg),
            403 => BackendError::unauthorized(msg),
            404 => BackendError::key_unavailable(msg),
            408 | 504 => BackendError::timeout(msg),
            429 | 500..=599 => BackendError::unavailable(msg),
            409 if self.is_key_state() => BackendError::key_unavailable(msg),
            _ => BackendError::internal(msg),
        }
    }
}

/// Classifies an SDK error from `op`.
pub(crate) fn classify(op: Operation, err: &AzureError) -> BackendError {
    match err.kind() {
        AzureKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } => {
            let (body, retry_after) = match raw_response {
                Some(raw) => (
                    raw.body().as_ref(),
                    raw.headers().get_optional_str(&RETRY_AFTER),
                ),
                None => (&[][..], None),
            };
            HttpFailure::from_parts(u16::from(*status), error_code.as_deref(), body, retry_after)
                .classify(op)
        }
        AzureKind::Connection | AzureKind::Io if is_untrusted_certificate(err) => {
            BackendError::config(format!(
                "{}: the vault's TLS certificate is not trusted (check ca_file): {}",
                op.as_str(),
                chain(err)
            ))
        }
        AzureKind::Connection => {
            BackendError::unavailable(format!("{}: cannot connect: {}", op.as_str(), chain(err)))
        }
        AzureKind::Io if is_timeout(err) => BackendError::timeout(format!(
            "{}: no answer in time: {}",
            op.as_str(),
            chain(err)
        )),
        AzureKind::Io => {
            BackendError::unavailable(format!("{}: network error: {}", op.as_str(), chain(err)))
        }
        // Token acquisition failed (identity endpoint down, token file being replaced, ...):
        // the credentials are the problem, but trying again may well help.
        AzureKind::Credential => BackendError::unauthorized(format!(
            "{}: could not get a token: {}",
            op.as_str(),
            chain(err)
        ))
        .with_retryable(true),
        AzureKind::DataConversion => BackendError::internal(format!(
            "{}: unexpected answer from Key Vault: {}",
            op.as_str(),
            chain(err)
        )),
        _ => {
            let text = chain(err);
            // The SDK's own refusals that only a config change fixes.
            if text.contains("verify_challenge_resource") {
                BackendError::config(format!(
                    "{}: {text} (set verify_challenge_resource = false for private endpoints)",
                    op.as_str()
                ))
            } else if text.contains("non-TLS") {
                BackendError::config(format!("{}: {text}", op.as_str()))
            } else {
                BackendError::internal(format!("{}: {text}", op.as_str()))
            }
        }
    }
}

/// A deadline that the backend itself enforces around a call.
pub(crate) fn deadline_exceeded(op: Operation, timeout_ms: u64) -> BackendError {
    BackendError::timeout(format!("{}: no answer within {timeout_ms} ms", op.as_str()))
}

/// rustls' verdict on a certificate chain it cannot trust; retrying will not change it.
fn is_untrusted_certificate(err: &AzureError) -> bool {
    chain(err).contains("invalid peer certificate")
}

fn is_timeout(err: &AzureError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes on one line. SDK errors carry URLs and status text, not
/// tokens or request bodies.
fn chain(err: &AzureError) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use polykms_backend::ErrorKind;

    fn http(status: u16, body: &str, retry_after: Option<&str>) -> HttpFailure {
        HttpFailure::from_parts(status, None, body.as_bytes(), retry_after)
    }

    fn kind(status: u16, body: &str, op: Operation) -> ErrorKind {
        http(status, body, None).classify(op).kind()
    }

    const DISABLED: &str = r#"{"error":{"code":"Forbidden","message":"Operation wrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#;
    const DENIED: &str = r#"{"error":{"code":"Forbidden","message":"The user, group or application does not have keys wrapKey permission","innererror":{"code":"AccessDenied"}}}"#;

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        for status in [429, 500, 502, 503] {
            let e = http(status, "", None).classify(Operation::Wrap);
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{status}");
            assert!(e.is_retryable());
        }
        for status in [408, 504] {
            let e = http(status, "", None).classify(Operation::Get);
            assert_eq!(e.kind(), ErrorKind::Timeout, "{status}");
            assert!(e.is_retryable());
        }
    }

    #[test]
    fn throttling_message_carries_retry_after() {
        let body = r#"{"error":{"code":"Throttled","message":"Request was not processed because too many requests were received."}}"#;
        let e = http(429, body, Some("3")).classify(Operation::Unwrap);
        assert!(e.message().contains("retry after 3s"), "{e}");
        assert!(e.message().contains("Throttled"), "{e}");
    }

    #[test]
    fn unauthenticated_and_forbidden_are_unauthorized() {
        let no_token = r#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#;
        for op in [Operation::Get, Operation::Wrap, Operation::Unwrap] {
            assert_eq!(kind(401, no_token, op), ErrorKind::Unauthorized);
            assert_eq!(kind(403, DENIED, op), ErrorKind::Unauthorized);
        }
        assert!(
            !http(403, DENIED, None)
                .classify(Operation::Wrap)
                .is_retryable()
        );
    }

    #[test]
    fn missing_or_disabled_key_is_key_unavailable() {
        let missing = r#"{"error":{"code":"KeyNotFound","message":"A key with (name/id) kek was not found in this key vault."}}"#;
        for op in [Operation::Get, Operation::Wrap, Operation::Unwrap] {
            assert_eq!(kind(404, missing, op), ErrorKind::KeyUnavailable);
            assert_eq!(kind(403, DISABLED, op), ErrorKind::KeyUnavailable);
        }
        let top_level = r#"{"error":{"code":"KeyDisabled","message":"disabled"}}"#;
        assert_eq!(
            kind(403, top_level, Operation::Wrap),
            ErrorKind::KeyUnavailable
        );
    }

    #[test]
    fn bad_request_depends_on_the_operation() {
        let bad = r#"{"error":{"code":"BadParameter","message":"Unwrap failed"}}"#;
        assert_eq!(kind(400, bad, Operation::Unwrap), ErrorKind::WrongKey);
        assert_eq!(kind(400, bad, Operation::Wrap), ErrorKind::InvalidInput);
        assert_eq!(kind(400, bad, Operation::Get), ErrorKind::Config);
    }

    #[test]
    fn odd_statuses_and_bodies_are_internal() {
        assert_eq!(kind(418, "not json", Operation::Get), ErrorKind::Internal);
        assert_eq!(
            kind(409, r#"{"error":{"code":"Conflict"}}"#, Operation::Wrap),
            ErrorKind::Internal
        );
    }

    #[test]
    fn long_server_messages_are_cut() {
        let long = format!(
            r#"{{"error":{{"code":"X","message":"{}"}}}}"#,
            "a".repeat(5000)
        );
        let e = http(500, &long, None).classify(Operation::Get);
        assert!(e.message().len() < 400, "{}", e.message().len());
    }

    #[test]
    fn sdk_http_error_uses_status_and_code() {
        let err = AzureError::new(
            AzureKind::HttpResponse {
                status: azure_core::http::StatusCode::NotFound,
                error_code: Some("KeyNotFound".into()),
                raw_response: None,
            },
            "not found",
        );
        let e = classify(Operation::Get, &err);
        assert_eq!(e.kind(), ErrorKind::KeyUnavailable);
        assert!(e.message().contains("KeyNotFound"), "{e}");
    }

    #[test]
    fn network_and_token_errors_are_retryable() {
        let conn = AzureError::with_message(AzureKind::Connection, "connection refused");
        let e = classify(Operation::Wrap, &conn);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());

        let io = AzureError::new(
            AzureKind::Io,
            std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"),
        );
        assert_eq!(classify(Operation::Wrap, &io).kind(), ErrorKind::Timeout);

        let cred = AzureError::with_message(AzureKind::Credential, "token file is empty");
        let e = classify(Operation::Get, &cred);
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(e.is_retryable());
    }

    #[test]
    fn challenge_resource_mismatch_is_a_config_error() {
        let err = AzureError::with_message(
            AzureKind::Other,
            "challenge resource 'https://vault.azure.net/.default' doesn't match the requested domain '127.0.0.1'. Set verify_challenge_resource in client options to disable this validation if necessary.",
        );
        let e = classify(Operation::Get, &err);
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(!e.is_retryable());
    }

    #[test]
    fn untrusted_vault_certificate_is_a_config_error() {
        let err = AzureError::with_message(
            AzureKind::Connection,
            "client error (Connect): invalid peer certificate: UnknownIssuer",
        );
        let e = classify(Operation::Get, &err);
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.message().contains("ca_file"), "{e}");
    }

    #[test]
    fn garbled_answers_are_internal() {
        let err = AzureError::with_message(AzureKind::DataConversion, "missing field kid");
        assert_eq!(classify(Operation::Wrap, &err).kind(), ErrorKind::Internal);
    }
}
