//! The contract between polykms' core and its key stores.
//!
//! A backend wraps and unwraps small secrets (DEK seeds) with a key-encryption key that lives
//! in a key store. It knows nothing of gRPC, envelopes or Kubernetes; core knows nothing of
//! any key store. This crate has no runtime, no SDK and no network dependency on purpose.

mod binding;
pub mod crypto;
mod error;
mod files;
mod lifecycle;
mod secret;
mod sensitive;
mod types;

use std::fmt::Debug;
use std::time::SystemTime;

use async_trait::async_trait;

pub use binding::{AAD_DIGEST_LEN, AadDigestBinding};
pub use error::{BackendError, ErrorKind};
pub use files::{ConfigFiles, read_private_file};
pub use lifecycle::{KeyLifecycle, LifecycleFinding, LifecycleState};
pub use secret::SecretBytes;
pub use sensitive::SensitiveString;
pub use types::{KeyVersion, WrappedKey};

/// What a key store does for polykms: wrap and unwrap seeds under its current key.
#[async_trait]
pub trait KeyEncryptionBackend: Send + Sync + Debug + 'static {
    /// Short name of the backend type (`local`, `aws`, ...), used in logs and metrics.
    fn kind(&self) -> &'static str;

    /// Identity of the remote key version that `wrap` uses now. Public, never secret.
    async fn key_version(&self) -> Result<KeyVersion, BackendError>;

    /// Wraps `plaintext`, binding it to `aad`. The result records the key version used.
    async fn wrap(&self, plaintext: &SecretBytes, aad: &[u8]) -> Result<WrappedKey, BackendError>;

    /// The largest plaintext `wrap` accepts, known without a remote call (what the backend adds
    /// to it, such as an AAD digest, already taken off). Core refuses a longer plaintext before
    /// calling any backend.
    fn max_plaintext_len(&self) -> usize;

    /// Unwraps what `wrap` produced (under any key version the store still has).
    async fn unwrap(&self, wrapped: &WrappedKey, aad: &[u8]) -> Result<SecretBytes, BackendError>;

    /// Whether `unwrap` can work on this node now. A wrap-only backend (an escrow public key
    /// whose private half is kept offline) says no: Decrypt then skips its wraps without
    /// calling it, and names it when no other wrap could be tried.
    fn can_unwrap(&self) -> bool {
        true
    }

    /// Health check: proves the key store is reachable and the key usable, and returns the
    /// current key version. The default asks for the key version; backends override it when
    /// a cheaper or more thorough check exists.
    async fn probe(&self) -> Result<KeyVersion, BackendError> {
        self.key_version().await
    }

    /// Lifecycle of the keys this backend needs — the current one, and `in_use`, the older
    /// versions Decrypts unwrapped since the plugin started — from a metadata read cheap
    /// enough to run at every probe. The default knows nothing. Errors are logged at debug and
    /// leave the last answer standing: the probe, not this, decides health.
    async fn key_lifecycle(&self, in_use: &[KeyVersion]) -> Result<KeyLifecycle, BackendError> {
        let _ = in_use;
        Ok(KeyLifecycle::default())
    }

    /// When the backend's credentials expire, for those that have expiring credentials.
    fn credential_expiry(&self) -> Option<SystemTime> {
        None
    }

    /// One line describing how the backend reaches its key store (endpoint, proxy, CA bundle),
    /// printed by `polykms check`. No secrets.
    fn describe(&self) -> String {
        self.kind().to_string()
    }
}
