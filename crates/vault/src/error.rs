//! Sorting vaultrs / HTTP errors into `BackendError` kinds, in one place.

use std::error::Error as _;

use polykms_backend::{BackendError, ErrorKind};
use rustify::errors::ClientError as RestError;
use vaultrs::error::ClientError;

/// Longest server message kept in an error (Vault may return long multi-error texts).
const MAX_DETAIL: usize = 300;

/// Classifies a failed call `op` (e.g. "transit decrypt") into a `BackendError`.
pub(crate) fn classify(op: &str, err: &ClientError) -> BackendError {
    match err {
        ClientError::APIError { code, errors } => from_status(op, *code, &errors.join("; ")),
        ClientError::RestClientError { source } => from_rest(op, source),
        ClientError::FileNotFoundError { path } | ClientError::FileReadError { path, .. } => {
            BackendError::config(format!("{op}: cannot read {path}"))
        }
        ClientError::ParseCertificateError { path, .. } => {
            BackendError::config(format!("{op}: bad certificate in {path}"))
        }
        ClientError::RestClientBuildError { source } => {
            BackendError::config(format!("{op}: HTTP client: {source}"))
        }
        ClientError::JsonParseError { .. }
        | ClientError::ResponseEmptyError
        | ClientError::ResponseDataEmptyError
        | ClientError::ResponseWrapError => {
            BackendError::internal(format!("{op}: unexpected answer from the server: {err}"))
        }
        other => BackendError::internal(format!("{op}: {other}")),
    }
}

fn from_rest(op: &str, err: &RestError) -> BackendError {
    match err {
        // Not JSON (a proxy's HTML error page, for instance): the status alone decides.
        RestError::ServerResponseError { code, .. } => from_status(op, *code, ""),
        RestError::RequestError { .. } | RestError::ResponseError { .. } => from_transport(op, err),
        RestError::ResponseParseError { .. } | RestError::ResponseConversionError { .. } => {
            BackendError::internal(format!("{op}: unparsable answer from the server"))
        }
        other => BackendError::internal(format!("{op}: {other}")),
    }
}

/// Network-level failures: find the reqwest error in the chain and ask it what happened.
fn from_transport(op: &str, err: &RestError) -> BackendError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = cause {
        if let Some(re) = e.downcast_ref::<reqwest::Error>() {
            let detail = describe_reqwest(re);
            if re.is_timeout() {
                return BackendError::timeout(format!("{op}: no answer in time ({detail})"));
            }
            return BackendError::unavailable(format!("{op}: {detail}"));
        }
        cause = e.source();
    }
    BackendError::unavailable(format!("{op}: request failed: {err}"))
}

/// The reqwest error plus its innermost cause (connection refused, certificate unknown...).
fn describe_reqwest(err: &reqwest::Error) -> String {
    let mut innermost: Option<&(dyn std::error::Error + 'static)> = None;
    let mut cause = err.source();
    while let Some(e) = cause {
        innermost = Some(e);
        cause = e.source();
    }
    match innermost {
        Some(root) => format!("{err}: {root}"),
        None => err.to_string(),
    }
}

/// Maps an HTTP status plus Vault's error text to a kind.
pub(crate) fn from_status(op: &str, code: u16, detail: &str) -> BackendError {
    let detail = shorten(detail);
    let message = if detail.is_empty() {
        format!("{op}: HTTP {code}")
    } else {
        format!("{op}: HTTP {code}: {detail}")
    };
    let text = detail.to_ascii_lowercase();
    let kind = match code {
        401 | 403 => ErrorKind::Unauthorized,
        404 => ErrorKind::KeyUnavailable,
        // 412: a performance standby has not caught up yet; 429: rate limited or standby.
        412 | 429 | 500..=599 => ErrorKind::Unavailable,
        400 if text.contains("key not found") || text.contains("no existing key") => {
            ErrorKind::KeyUnavailable
        }
        // min_decryption_version moved past the ciphertext's version: the key version is gone
        // for us, not the ciphertext broken.
        400 if text.contains("disallowed by policy") || text.contains("too old") => {
            ErrorKind::KeyUnavailable
        }
        400 if text.contains("message authentication failed")
            || text.contains("invalid ciphertext")
            || text.contains("decode ciphertext")
            || text.contains("unable to decrypt") =>
        {
            ErrorKind::WrongKey
        }
        400 if text.contains("does not support encryption")
            || text.contains("does not support decryption")
            || text.contains("disabled") =>
        {
            ErrorKind::KeyUnavailable
        }
        400 | 405 | 413 | 414 | 422 => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    };
    BackendError::new(kind, message)
}

fn shorten(detail: &str) -> String {
    let flat: String = detail.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_DETAIL {
        return flat;
    }
    let mut cut: String = flat.chars().take(MAX_DETAIL).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, msg: &str) -> BackendError {
        classify(
            "op",
            &ClientError::APIError {
                code,
                errors: vec![msg.to_string()],
            },
        )
    }

    #[test]
    fn server_side_trouble_is_retryable() {
        for (code, msg) in [
            (500, "internal error"),
            (502, ""),
            (503, "Vault is sealed"),
            (429, "rate limit quota exceeded"),
            (412, "required index state not present"),
        ] {
            let e = api(code, msg);
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{code}");
            assert!(e.is_retryable(), "{code}");
        }
    }

    #[test]
    fn permission_denied_is_unauthorized() {
        let e = api(403, "1 error occurred:\n\t* permission denied\n\n");
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert!(!e.is_retryable());
        assert_eq!(
            e.message(),
            "op: HTTP 403: 1 error occurred: * permission denied"
        );
        assert_eq!(api(401, "").kind(), ErrorKind::Unauthorized);
    }

    #[test]
    fn authentication_failure_and_foreign_ciphertext_are_wrong_key() {
        for msg in [
            "cipher: message authentication failed",
            "invalid ciphertext: no prefix",
            "invalid ciphertext: version number could not be decoded",
            "unable to decrypt ciphertext",
        ] {
            assert_eq!(api(400, msg).kind(), ErrorKind::WrongKey, "{msg}");
        }
    }

    #[test]
    fn missing_deleted_or_retired_keys_are_key_unavailable() {
        assert_eq!(api(404, "").kind(), ErrorKind::KeyUnavailable);
        assert_eq!(
            api(400, "encryption key not found").kind(),
            ErrorKind::KeyUnavailable
        );
        let old = api(
            400,
            "ciphertext or signature version is disallowed by policy (too old)",
        );
        assert_eq!(old.kind(), ErrorKind::KeyUnavailable);
        let usage = api(400, "key type rsa does not support encryption");
        assert_eq!(usage.kind(), ErrorKind::KeyUnavailable);
    }

    #[test]
    fn other_bad_requests_are_invalid_input() {
        assert_eq!(
            api(400, "missing plaintext to encrypt").kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(api(418, "").kind(), ErrorKind::Internal);
    }

    #[test]
    fn non_json_error_pages_are_classified_by_status() {
        let err = ClientError::RestClientError {
            source: RestError::ServerResponseError {
                code: 502,
                content: Some("<html>".into()),
            },
        };
        assert_eq!(classify("op", &err).kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn malformed_answers_are_internal() {
        assert_eq!(
            classify("op", &ClientError::ResponseDataEmptyError).kind(),
            ErrorKind::Internal
        );
    }

    #[test]
    fn long_server_messages_are_cut() {
        let e = api(400, &"x".repeat(1000));
        assert!(e.message().len() < 400);
    }

    #[tokio::test]
    async fn refused_connection_is_unavailable_and_slow_server_times_out() {
        // A port nothing listens on (bound then dropped).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let refused = http
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        let e = from_transport("op", &wrap_reqwest(refused));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());

        // A server that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let _conn = listener.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        let slow = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_millis(200))
            .build()
            .unwrap();
        let timed_out = slow
            .get(format!("http://{addr}/"))
            .send()
            .await
            .unwrap_err();
        let e = from_transport("op", &wrap_reqwest(timed_out));
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }

    /// The shape rustify gives a failed send.
    fn wrap_reqwest(err: reqwest::Error) -> RestError {
        RestError::RequestError {
            source: err.into(),
            url: String::new(),
            method: String::new(),
        }
    }
}
