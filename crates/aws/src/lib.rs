//! The AWS KMS backend: seeds are wrapped with KMS `Encrypt` under a symmetric key, bound to
//! the plugin's AAD through the EncryptionContext, and unwrapped with `Decrypt` pinned to the
//! same key and context, so a ciphertext of another key or context is refused as `WrongKey`.
//!
//! The key version is the key ARN plus the current key material (DescribeKey, or the newest
//! ListKeyRotations entry), so automatic or on-demand rotation changes `key_id`. The probe is
//! DescribeKey: a disabled, pending-deletion or wrong-usage key fails health with the reason,
//! and the same answer tells core the key's lifecycle (what undoes a deletion or a disable).
//! Credentials come from the SDK's default chain, optionally through an assumed role. Requests
//! are signed with polykms' own SigV4 on `polykms_backend::crypto` (the FIPS module in a FIPS
//! build); `use_fips_endpoint` sends KMS calls to AWS' FIPS endpoint.

mod backend;
mod client;
mod config;
mod context;
mod error;
mod key;
mod lifecycle;
mod profile_role;
mod sigv4;
mod sigv4_auth;
#[cfg(test)]
mod test_server;
mod version;

pub use backend::AwsBackend;
pub use config::{AwsConfig, DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_MS};
pub use context::{AAD_KEY, AAD_KEY_BASE64};
