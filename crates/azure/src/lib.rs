//! The Azure Key Vault backend: the key-encryption key is a Key Vault (or Managed HSM) key,
//! used through the wrapKey and unwrapKey operations of the official Azure SDK
//! (`azure_security_keyvault_keys`).
//!
//! The key version that wrapped a seed is the key's `kid`
//! (`https://<vault>/keys/<name>/<version>`), so rotating the key in the vault changes
//! polykms' key_id, and unwrap always goes to the exact version recorded in the envelope.

mod backend;
mod binding;
mod config;
mod credential;
mod error;
mod lifecycle;
mod transport;

pub use backend::AzureBackend;
pub use config::{AzureAuth, AzureConfig, WrapAlgorithm};
