//! The bytes of a KMIP wrap: what Decrypt needs besides the key, which the envelope records as
//! the key version (the key's Unique Identifier).
//!
//! ```text
//! 0x01 | iv length (1 byte) | iv | tag length (1 byte) | tag | ciphertext
//! ```

use polykms_backend::BackendError;

const FORMAT_GCM: u8 = 0x01;
/// Longest ciphertext accepted (seeds are 32 bytes; the envelope caps wraps at 1 KiB anyway).
pub const MAX_CIPHERTEXT: usize = 1024;

/// An AES-GCM result of KMIP Encrypt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcmWrap {
    pub iv: Vec<u8>,
    pub tag: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl GcmWrap {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(3 + self.iv.len() + self.tag.len() + self.ciphertext.len());
        out.push(FORMAT_GCM);
        // Lengths are checked by `check` before a wrap is made.
        out.push(self.iv.len() as u8);
        out.extend_from_slice(&self.iv);
        out.push(self.tag.len() as u8);
        out.extend_from_slice(&self.tag);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses untrusted bytes (from an envelope).
    pub fn decode(bytes: &[u8]) -> Result<GcmWrap, BackendError> {
        let bad = |why: &str| BackendError::invalid_input(format!("KMIP wrap: {why}"));
        let (&format, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if format != FORMAT_GCM {
            return Err(bad(&format!("unknown format {format:#04x}")));
        }
        let (iv, rest) = take_prefixed(rest).ok_or_else(|| bad("truncated IV"))?;
        let (tag, ciphertext) = take_prefixed(rest).ok_or_else(|| bad("truncated tag"))?;
        let wrap = GcmWrap {
            iv: iv.to_vec(),
            tag: tag.to_vec(),
            ciphertext: ciphertext.to_vec(),
        };
        wrap.check().map_err(|why| bad(&why))?;
        Ok(wrap)
    }

    /// The sizes a wrap may have: a 96-bit (or longer) IV, a 16-byte tag, some ciphertext.
    pub fn check(&self) -> Result<(), String> {
        if !(12..=64).contains(&self.iv.len()) {
            return Err(format!("IV is {} bytes, expected 12 to 64", self.iv.len()));
        }
        if self.tag.len() != 16 {
            return Err(format!("tag is {} bytes, expected 16", self.tag.len()));
        }
        if self.ciphertext.is_empty() || self.ciphertext.len() > MAX_CIPHERTEXT {
            return Err(format!(
                "ciphertext is {} bytes, expected 1 to {MAX_CIPHERTEXT}",
                self.ciphertext.len()
            ));
        }
        Ok(())
    }
}

fn take_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> GcmWrap {
        GcmWrap {
            iv: vec![1; 12],
            tag: vec![2; 16],
            ciphertext: vec![3; 32],
        }
    }

    #[test]
    fn layout_is_format_iv_tag_ciphertext() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), 1 + 1 + 12 + 1 + 16 + 32);
        assert_eq!(&bytes[..2], &[0x01, 12]);
        assert_eq!(bytes[14], 16);
        assert_eq!(GcmWrap::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn malformed_wraps_are_invalid_input() {
        let good = sample().encode();
        for cut in 0..good.len() - 32 {
            let e = GcmWrap::decode(&good[..cut]).unwrap_err();
            assert_eq!(e.kind(), polykms_backend::ErrorKind::InvalidInput, "{cut}");
        }
        let mut other = good.clone();
        other[0] = 2;
        assert!(
            GcmWrap::decode(&other)
                .unwrap_err()
                .message()
                .contains("format")
        );
        let short_tag = GcmWrap {
            tag: vec![2; 8],
            ..sample()
        };
        assert!(GcmWrap::decode(&short_tag.encode()).is_err());
        // Vault / AWS style ciphertexts are refused up front.
        assert!(GcmWrap::decode(b"vault:v1:abcd").is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = GcmWrap::decode(&bytes);
        }

        #[test]
        fn decode_inverts_encode(iv in proptest::collection::vec(any::<u8>(), 12..=64),
                                 tag in proptest::collection::vec(any::<u8>(), 16..=16),
                                 ct in proptest::collection::vec(any::<u8>(), 1..200)) {
            let w = GcmWrap { iv, tag, ciphertext: ct };
            prop_assert_eq!(GcmWrap::decode(&w.encode()).unwrap(), w);
        }
    }
}
