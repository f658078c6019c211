//! Why network settings could not be resolved. Messages start with the config key (or
//! environment variable) at fault and never contain proxy credentials.

use polykms_backend::BackendError;

/// A network setting that cannot work; `field` is the config key or environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct NetError {
    /// The config key or environment variable at fault, e.g. `proxy` or `HTTPS_PROXY`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl NetError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NetError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<NetError> for BackendError {
    fn from(e: NetError) -> Self {
        BackendError::config(e.to_string())
    }
}
