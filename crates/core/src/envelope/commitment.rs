//! The commitment of format versions 2 and 3: a MAC under a key derived from the seed, over every byte of the
//! envelope that precedes it and every annotation value it refers to. Whoever verifies it with
//! the seed their backend unwrapped knows the whole envelope was made by someone who held that
//! seed: no wrap, flag, name or key version can be altered or swapped in for another seed's.

use polykms_backend::SecretBytes;
use polykms_backend::crypto::{self, HmacSha256};
use zeroize::Zeroizing;

/// Bytes of HMAC-SHA256 kept at the end of a sealed envelope (the full tag).
pub const COMMITMENT_LEN: usize = 32;

/// HKDF salt and info: fixed and versioned, so the key is used for nothing else and a future
/// layout derives a different one.
const SALT: &[u8] = b"polykms envelope";
const INFO_V2: &[u8] = b"polykms:envelope:v2:commitment";
const INFO_V3: &[u8] = b"polykms:envelope:v3:commitment";

/// The MAC over an envelope: the bytes before the commitment, then each wrap stored in an
/// annotation, in wrap order, as a 4-byte big-endian length and the value.
pub(super) struct Commitment(HmacSha256);

impl Commitment {
    pub(super) fn new(format: u8, seed: &SecretBytes, envelope_head: &[u8]) -> Self {
        let info = if format == super::FORMAT_V2 {
            INFO_V2
        } else {
            INFO_V3
        };
        let mut key = Zeroizing::new([0u8; 32]);
        crypto::hkdf_sha256(SALT, seed.expose(), &[info], key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut mac = HmacSha256::new(key.as_ref());
        mac.update(envelope_head);
        Commitment(mac)
    }

    pub(super) fn annotation(&mut self, value: &[u8]) {
        self.0.update(&(value.len() as u32).to_be_bytes());
        self.0.update(value);
    }

    pub(super) fn tag(self) -> [u8; COMMITMENT_LEN] {
        self.0.finish()
    }

    /// Constant-time comparison with the tag an envelope carries.
    pub(super) fn verify(self, tag: &[u8]) -> bool {
        self.0.verify(tag)
    }
}
