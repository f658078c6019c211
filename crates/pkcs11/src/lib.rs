//! The PKCS#11 backend: the key-encryption key is an AES key object in a hardware security
//! module (or SoftHSM2, a TPM through tpm2-pkcs11, …), used through the vendor's PKCS#11
//! library, loaded at run time by the `cryptoki` crate.
//!
//! Several key objects may carry `key_label`: the one with the greatest CKA_ID wraps, and the
//! key version is `label:hex(CKA_ID)`, so creating a key object with a higher CKA_ID rotates
//! key_id at the next probe, while wraps under older objects keep unwrapping until those
//! objects are deleted. CKA_IDs compare as unsigned numbers, so two objects whose IDs are the
//! same number (`01`, `0001`) are refused as ambiguous. Every call into the module runs on a blocking thread, at most
//! `max_sessions` at once, each with its own logged-in session.

mod backend;
mod backoff;
mod binding;
mod config;
mod error;
mod hsm;
mod idle;
mod keys;
mod lifecycle;
mod mechanism;
mod module;
mod pin;
#[cfg(test)]
mod softhsm_tests;

pub use backend::Pkcs11Backend;
pub use config::{Pkcs11Config, WrapMechanism};
