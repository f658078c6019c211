//! Version-1 multi-wrap envelopes seen by Decrypt: each distinct one is logged once, so an
//! operator learns what to re-encrypt without a line per read.

use std::collections::HashSet;
use std::sync::Mutex;

/// Distinct envelopes remembered; past this the set starts over (a few repeated lines rather
/// than unbounded memory).
const REMEMBERED: usize = 4096;

/// Digests (of ciphertext and annotations, never of secrets) of legacy envelopes already logged.
#[derive(Debug, Default)]
pub struct LegacyEnvelopes {
    seen: Mutex<HashSet<[u8; 32]>>,
}

impl LegacyEnvelopes {
    /// True the first time `digest` is seen (until the set starts over).
    pub fn first_sighting(&self, digest: &[u8; 32]) -> bool {
        let mut seen = self
            .seen
            .lock()
            .expect("legacy envelope set is never poisoned");
        if seen.contains(digest) {
            return false;
        }
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(*digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_envelope_is_reported_once_and_memory_is_bounded() {
        let legacy = LegacyEnvelopes::default();
        assert!(legacy.first_sighting(&[1; 32]));
        assert!(!legacy.first_sighting(&[1; 32]));
        assert!(legacy.first_sighting(&[2; 32]));
        for i in 0..(REMEMBERED as u32 * 2) {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            d[31] = 9;
            legacy.first_sighting(&d);
        }
        assert!(legacy.seen.lock().unwrap().len() <= REMEMBERED);
    }
}
