use std::fmt;

/// Public identity of one version of a remote key (e.g. an ARN plus rotation id, a Transit key
/// name plus version). It goes into key_id hashes and envelopes; it must never be secret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyVersion(String);

impl KeyVersion {
    pub fn new(version: impl Into<String>) -> Self {
        KeyVersion(version.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyVersion({})", self.0)
    }
}

/// A seed wrapped by a backend, with the key version that wrapped it.
///
/// The bytes are ciphertext: safe to store and log by length, but not to interpret outside
/// the backend that made them.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_version: KeyVersion,
    pub ciphertext: Vec<u8>,
}

impl WrappedKey {
    pub fn new(key_version: KeyVersion, ciphertext: Vec<u8>) -> Self {
        WrappedKey {
            key_version,
            ciphertext,
        }
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_version", &self.key_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}
