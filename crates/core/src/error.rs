//! Every failure of a plugin call, and the one place where each becomes a gRPC status.

use polykms_backend::{BackendError, ErrorKind};
use thiserror::Error;
use tonic::{Code, Status};

use crate::envelope::EnvelopeError;

/// Why a KMS call failed. Messages name backends and kinds, never key material or plaintext.
#[derive(Debug, Clone, Error)]
pub enum CoreError {
    /// The request is malformed (sizes, key_id, annotations).
    #[error("{0}")]
    InvalidRequest(String),
    /// The ciphertext is not an envelope this plugin can read.
    #[error("{0}")]
    Envelope(String),
    /// The envelope names backends that are not configured.
    #[error("envelope was wrapped by backend(s) {0:?}, none of which is configured")]
    UnknownBackends(Vec<String>),
    /// The only configured backends the envelope names cannot unwrap on this node.
    #[error(
        "envelope can only be unwrapped by wrap-only backend(s) {0:?}: their private key is not \
         configured on this node (see docs/operations.md, \"Disaster recovery\")"
    )]
    WrapOnly(Vec<String>),
    /// A backend failed.
    #[error("backend {backend}: {source}")]
    Backend {
        backend: String,
        #[source]
        source: BackendError,
    },
    /// The call ran out of its deadline.
    #[error("deadline exceeded {0}")]
    Deadline(String),
    /// The plugin configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

impl CoreError {
    pub fn backend(backend: &str, source: BackendError) -> Self {
        CoreError::Backend {
            backend: backend.to_string(),
            source,
        }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            CoreError::InvalidRequest(_) | CoreError::Envelope(_) => Code::InvalidArgument,
            CoreError::UnknownBackends(_) | CoreError::WrapOnly(_) => Code::FailedPrecondition,
            CoreError::Deadline(_) => Code::DeadlineExceeded,
            CoreError::Config(_) => Code::Internal,
            CoreError::Backend { source, .. } => match source.kind() {
                // A corrupted answer that a retry may not repeat is the key store's problem.
                ErrorKind::Integrity if source.is_retryable() => Code::Unavailable,
                ErrorKind::InvalidInput | ErrorKind::WrongKey | ErrorKind::Integrity => {
                    Code::InvalidArgument
                }
                ErrorKind::KeyUnavailable => Code::FailedPrecondition,
                ErrorKind::Unauthorized => Code::PermissionDenied,
                // Our own attempt timed out inside the caller's deadline: the key store is
                // unavailable, and the caller may retry.
                ErrorKind::Timeout | ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::Config | ErrorKind::Internal => Code::Internal,
            },
        }
    }

    /// Short label for metrics and logs: `ok` is never an error, kinds otherwise.
    pub fn outcome(&self) -> &'static str {
        match self {
            CoreError::InvalidRequest(_) => "invalid_request",
            CoreError::Envelope(_) => "invalid_envelope",
            CoreError::UnknownBackends(_) => "unknown_backend",
            CoreError::WrapOnly(_) => "wrap_only",
            CoreError::Deadline(_) => "deadline",
            CoreError::Config(_) => "config",
            CoreError::Backend { source, .. } => source.kind().as_str(),
        }
    }
}

impl From<EnvelopeError> for CoreError {
    fn from(e: EnvelopeError) -> Self {
        CoreError::Envelope(e.to_string())
    }
}

impl From<CoreError> for Status {
    fn from(e: CoreError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_kinds_map_to_grpc_codes() {
        let cases = [
            (BackendError::invalid_input("x"), Code::InvalidArgument),
            (BackendError::wrong_key("x"), Code::InvalidArgument),
            (BackendError::integrity("x"), Code::InvalidArgument),
            (
                BackendError::integrity("crc").with_retryable(true),
                Code::Unavailable,
            ),
            (BackendError::key_unavailable("x"), Code::FailedPrecondition),
            (BackendError::unauthorized("x"), Code::PermissionDenied),
            (BackendError::timeout("x"), Code::Unavailable),
            (BackendError::unavailable("x"), Code::Unavailable),
            (BackendError::config("x"), Code::Internal),
            (BackendError::internal("x"), Code::Internal),
        ];
        for (err, code) in cases {
            let e = CoreError::backend("aws-prod", err);
            assert_eq!(e.code(), code, "{e}");
            assert!(Status::from(e).message().contains("aws-prod"));
        }
    }

    #[test]
    fn request_errors_are_invalid_argument_and_unknown_backend_failed_precondition() {
        assert_eq!(
            CoreError::InvalidRequest("x".into()).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            CoreError::from(EnvelopeError::NotEnvelope).code(),
            Code::InvalidArgument
        );
        let e = CoreError::UnknownBackends(vec!["gone".into()]);
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.to_string().contains("gone"));
    }
}
