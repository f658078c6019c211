//! Sorting Cloud KMS client errors into `BackendError` kinds, in one place.
//!
//! Service errors carry a canonical code (the JSON `error.status` field of the REST error body,
//! <https://cloud.google.com/apis/design/errors#http_mapping>); errors raised before or around
//! the HTTP exchange (connect, timeout, credentials) carry none and are sorted by their class.

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use polykms_backend::{BackendError, ErrorKind};

/// Longest server message copied into an error; Google's messages are short, this bounds
/// whatever an unexpected proxy returns.
const MAX_MESSAGE: usize = 200;

/// The Cloud KMS call that failed: the same code means different things per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Encrypt,
    Decrypt,
    GetCryptoKey,
    GetCryptoKeyVersion,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Encrypt => "encrypt",
            Operation::Decrypt => "decrypt",
            Operation::GetCryptoKey => "get crypto key",
            Operation::GetCryptoKeyVersion => "get crypto key version",
        }
    }
}

/// Sorts a client error into a kind. Messages name the call and the code, never request or
/// response bodies (a failed Decrypt's body may hold plaintext).
pub(crate) fn classify(op: Operation, err: &GaxError) -> BackendError {
    let what = op.as_str();
    if let Some(status) = err.status() {
        let kind = kind_of_code(op, status.code);
        let message = truncate(&status.message);
        return BackendError::new(
            kind,
            format!("cloud kms {what}: {} {message}", status.code.name()),
        );
    }
    if err.is_timeout() {
        return BackendError::timeout(format!("cloud kms {what}: no answer in time"));
    }
    if err.is_authentication() {
        // Transient: the token endpoint or metadata server did not answer; permanent: the
        // credentials themselves are unusable.
        let transient = credentials_error_is_transient(err);
        let kind = if transient {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Unauthorized
        };
        return BackendError::new(
            kind,
            format!(
                "cloud kms {what}: cannot get an access token: {}",
                chain(err)
            ),
        );
    }
    if err.is_connect() || err.is_io() || err.is_transport() || err.is_exhausted() {
        if let Some(code) = err.http_status_code() {
            return BackendError::new(
                kind_of_http(op, code),
                format!("cloud kms {what}: HTTP {code} without a Google error body"),
            );
        }
        return BackendError::unavailable(format!("cloud kms {what}: {}", chain(err)));
    }
    if let Some(code) = err.http_status_code() {
        return BackendError::new(
            kind_of_http(op, code),
            format!("cloud kms {what}: HTTP {code} without a Google error body"),
        );
    }
    if err.is_deserialization() {
        return BackendError::internal(format!(
            "cloud kms {what}: response is not a valid {what} response"
        ));
    }
    if err.is_binding() {
        return BackendError::config(format!("key: not a name cloud kms {what} accepts"));
    }
    BackendError::internal(format!("cloud kms {what}: unexpected client error"))
}

/// The table: transient codes retry, auth codes are Unauthorized, a key that is not
/// usable is KeyUnavailable, and INVALID_ARGUMENT on Decrypt means "not our ciphertext or not
/// our AAD" (Cloud KMS does not say which, on purpose).
fn kind_of_code(op: Operation, code: Code) -> ErrorKind {
    match code {
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::Cancelled => {
            ErrorKind::Unavailable
        }
        Code::DeadlineExceeded => ErrorKind::Timeout,
        Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Unauthorized,
        Code::FailedPrecondition | Code::NotFound => ErrorKind::KeyUnavailable,
        Code::InvalidArgument if op == Operation::Decrypt => ErrorKind::WrongKey,
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

/// For answers from proxies and load balancers that carry no Google status.
fn kind_of_http(op: Operation, code: u16) -> ErrorKind {
    match code {
        408 => ErrorKind::Timeout,
        429 | 502 | 503 | 504 => ErrorKind::Unavailable,
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::KeyUnavailable,
        400 if op == Operation::Decrypt => ErrorKind::WrongKey,
        400 => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    }
}

fn credentials_error_is_transient(err: &GaxError) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
        .is_some_and(|c| c.is_transient())
}

/// The error and its causes on one line. Only used for errors raised before a response body
/// exists (connect, credentials), which hold no payload.
fn chain(err: &GaxError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    truncate(&out)
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use google_cloud_gax::error::CredentialsError;
    use google_cloud_gax::error::rpc::Status;

    use super::*;

    fn service(code: Code) -> GaxError {
        GaxError::service(
            Status::default()
                .set_code(code)
                .set_message("details from the server"),
        )
    }

    fn kind(op: Operation, err: &GaxError) -> ErrorKind {
        classify(op, err).kind()
    }

    #[test]
    fn transient_codes_are_retryable() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
        ] {
            for op in [
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::GetCryptoKey,
            ] {
                let e = classify(op, &service(code));
                assert!(e.is_retryable(), "{code:?} {op:?}: {e}");
            }
        }
        assert_eq!(
            kind(Operation::Encrypt, &service(Code::Unavailable)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(Operation::Encrypt, &service(Code::ResourceExhausted)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(Operation::Decrypt, &service(Code::DeadlineExceeded)),
            ErrorKind::Timeout
        );
    }

    #[test]
    fn permission_denied_and_unauthenticated_are_unauthorized() {
        for code in [Code::PermissionDenied, Code::Unauthenticated] {
            let e = classify(Operation::Decrypt, &service(code));
            assert_eq!(e.kind(), ErrorKind::Unauthorized);
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn failed_precondition_and_not_found_are_key_unavailable() {
        for code in [Code::FailedPrecondition, Code::NotFound] {
            for op in [
                Operation::Encrypt,
                Operation::Decrypt,
                Operation::GetCryptoKey,
            ] {
                let e = classify(op, &service(code));
                assert_eq!(e.kind(), ErrorKind::KeyUnavailable, "{code:?} {op:?}");
                assert!(!e.is_retryable());
            }
        }
    }

    #[test]
    fn invalid_argument_is_wrong_key_on_decrypt_only() {
        assert_eq!(
            kind(Operation::Decrypt, &service(Code::InvalidArgument)),
            ErrorKind::WrongKey
        );
        assert_eq!(
            kind(Operation::Encrypt, &service(Code::InvalidArgument)),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(Operation::GetCryptoKey, &service(Code::InvalidArgument)),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn other_codes_are_internal_and_not_retried() {
        for code in [
            Code::Internal,
            Code::Unknown,
            Code::Unimplemented,
            Code::DataLoss,
        ] {
            let e = classify(Operation::Encrypt, &service(code));
            assert_eq!(e.kind(), ErrorKind::Internal, "{code:?}");
            assert!(!e.is_retryable());
        }
    }

    #[test]
    fn message_names_call_code_and_server_text() {
        let e = classify(Operation::Decrypt, &service(Code::FailedPrecondition));
        assert_eq!(
            e.message(),
            "cloud kms decrypt: FAILED_PRECONDITION details from the server"
        );
    }

    #[test]
    fn long_server_messages_are_cut() {
        let long = "x".repeat(5000);
        let err = GaxError::service(Status::default().set_code(Code::Internal).set_message(long));
        assert!(classify(Operation::Encrypt, &err).message().len() < 300);
    }

    #[test]
    fn timeouts_and_connect_failures_are_retryable() {
        let e = classify(Operation::Encrypt, &GaxError::timeout("attempt timeout"));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        let e = classify(Operation::Encrypt, &GaxError::connect("connection refused"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.message().contains("connection refused"), "{e}");
        let e = classify(Operation::Decrypt, &GaxError::io("reset by peer"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn bare_http_errors_are_sorted_by_status() {
        let http = |code| {
            GaxError::http(
                code,
                Default::default(),
                bytes::Bytes::from_static(b"<html>"),
            )
        };
        assert_eq!(kind(Operation::Encrypt, &http(503)), ErrorKind::Unavailable);
        assert_eq!(kind(Operation::Encrypt, &http(429)), ErrorKind::Unavailable);
        assert_eq!(
            kind(Operation::Encrypt, &http(403)),
            ErrorKind::Unauthorized
        );
        assert_eq!(
            kind(Operation::Encrypt, &http(404)),
            ErrorKind::KeyUnavailable
        );
        assert_eq!(kind(Operation::Decrypt, &http(400)), ErrorKind::WrongKey);
        assert_eq!(kind(Operation::Encrypt, &http(500)), ErrorKind::Internal);
        // The body is never copied into the message.
        assert!(
            !classify(Operation::Decrypt, &http(400))
                .message()
                .contains("html")
        );
    }

    #[test]
    fn credential_failures_split_by_transience() {
        let e = GaxError::authentication(CredentialsError::from_msg(true, "metadata server down"));
        assert_eq!(kind(Operation::Encrypt, &e), ErrorKind::Unavailable);
        let e = GaxError::authentication(CredentialsError::from_msg(false, "invalid_grant"));
        let b = classify(Operation::Encrypt, &e);
        assert_eq!(b.kind(), ErrorKind::Unauthorized);
        assert!(b.message().contains("invalid_grant"), "{b}");
    }

    #[test]
    fn undecodable_responses_are_internal_without_payload() {
        let e = classify(
            Operation::Decrypt,
            &GaxError::deser("plaintext-ish payload at line 1"),
        );
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(!e.message().contains("payload"), "{e}");
    }
}
