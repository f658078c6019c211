use std::fmt;

/// What went wrong, in terms a caller can act on. Core maps each kind to one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is malformed (bad length, bad encoding).
    InvalidInput,
    /// The ciphertext was made by another key or under another context.
    WrongKey,
    /// The ciphertext or a response failed an integrity check (tampered, corrupted in transit).
    Integrity,
    /// The key store refused our credentials or permissions.
    Unauthorized,
    /// The key exists nowhere usable: disabled, deleted, pending deletion, wrong usage.
    KeyUnavailable,
    /// The key store did not answer in time.
    Timeout,
    /// The key store could not be reached or is overloaded (network, 5xx, throttled).
    Unavailable,
    /// The backend is configured wrongly (bad file, bad key material, unsupported key type).
    Config,
    /// Anything else: a bug or an answer the backend does not understand.
    Internal,
}

impl ErrorKind {
    /// Stable lowercase label, used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::WrongKey => "wrong_key",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::KeyUnavailable => "key_unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Config => "config",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a key store, sorted into a kind at the backend's edge.
///
/// The message is for operators: it never contains key material, plaintext or tokens.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    kind: ErrorKind,
    message: String,
    retryable: bool,
}

impl BackendError {
    /// A new error; retryability follows from the kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(kind, ErrorKind::Timeout | ErrorKind::Unavailable);
        BackendError {
            kind,
            message: message.into(),
            retryable,
        }
    }

    /// Overrides the kind's default retryability (e.g. an integrity error on a response,
    /// which a second call may not repeat).
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    pub fn wrong_key(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::WrongKey, message)
    }
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    pub fn key_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::KeyUnavailable, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same call may succeed if tried again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_kinds_are_retryable_by_default() {
        assert!(BackendError::timeout("t").is_retryable());
        assert!(BackendError::unavailable("u").is_retryable());
        for e in [
            BackendError::wrong_key("w"),
            BackendError::integrity("i"),
            BackendError::unauthorized("a"),
            BackendError::key_unavailable("k"),
            BackendError::invalid_input("x"),
            BackendError::config("c"),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
        assert!(
            BackendError::integrity("crc")
                .with_retryable(true)
                .is_retryable()
        );
    }

    #[test]
    fn display_names_kind_and_message() {
        let e = BackendError::key_unavailable("key disabled");
        assert_eq!(e.to_string(), "key_unavailable: key disabled");
    }
}
