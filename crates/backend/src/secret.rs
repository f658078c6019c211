use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Plaintext or key material: zeroized on drop, never printed.
///
/// It has no `Display`, and `Debug` shows only the length. Equality is constant-time.
#[derive(Clone, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of `bytes`; the caller's vector is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies `bytes` into a new secret buffer.
    pub fn copy_from(bytes: &[u8]) -> Self {
        SecretBytes(bytes.to_vec())
    }

    /// The secret bytes; the name makes every use visible in review.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret bytes, writable in place (decryption into the buffer).
    pub(crate) fn expose_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// Keeps the first `len` bytes, zeroizing the rest first.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {} bytes])", self.0.len())
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        // Constant time in the content; the length is not secret.
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for SecretBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_content() {
        let s = SecretBytes::copy_from(b"hunter2-hunter2");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("15 bytes"));
    }

    #[test]
    fn zeroize_clears_content() {
        let mut s = SecretBytes::copy_from(&[7u8; 32]);
        s.zeroize();
        assert!(s.expose().iter().all(|b| *b == 0) || s.is_empty());
    }

    #[test]
    fn equality_compares_content() {
        assert_eq!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"abc")
        );
        assert_ne!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"abd")
        );
        assert_ne!(
            SecretBytes::copy_from(b"abc"),
            SecretBytes::copy_from(b"ab")
        );
    }
}
