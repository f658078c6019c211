//! The plugin's ciphertext: a small versioned envelope naming which backend wrapped the seed
//! under which key version. Layout in `docs/envelope.md`; parsing untrusted bytes never
//! panics and never allocates more than the input's size.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use thiserror::Error;

const MAGIC: [u8; 2] = *b"PK";
/// Current format version.
pub const FORMAT_V1: u8 = 1;
/// Most wraps one envelope may carry.
pub const MAX_WRAPS: usize = 8;
/// The contract's bound on a plugin ciphertext.
pub const MAX_CIPHERTEXT: usize = 1024;
const FLAG_IN_ANNOTATION: u8 = 0x01;
/// An external wrap keeps this many bytes of the SHA-256 of its annotation value inline, so
/// the annotation cannot be swapped or altered without the envelope noticing.
const ANNOTATION_DIGEST_LEN: usize = 16;
const ANNOTATION_SUFFIX: &str = ".polykms.io";

/// Why bytes are not an envelope polykms made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("ciphertext is not a polykms envelope")]
    NotEnvelope,
    #[error("unsupported envelope format version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("annotations do not match the envelope: {0}")]
    Annotations(String),
    #[error(
        "envelope is {0} bytes with its wraps, over the {MAX_CIPHERTEXT}-byte limit even with annotations"
    )]
    TooLarge(usize),
}

/// Wraps kept in annotations, by annotation key.
pub type Annotations = BTreeMap<String, Vec<u8>>;

/// One backend's wrap of the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrap {
    pub backend: String,
    pub key_version: String,
    pub ciphertext: Vec<u8>,
}

/// A parsed envelope: every wrap, in the order of `encrypt.with` when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeV1 {
    pub wraps: Vec<Wrap>,
}

/// The annotation key under which wrap `index` is stored when it does not fit inline.
pub fn annotation_key(index: usize) -> String {
    format!("wrap-{index}{ANNOTATION_SUFFIX}")
}

impl EnvelopeV1 {
    /// Encodes the envelope, moving wraps (last first) into annotations until the inline part
    /// fits in [`MAX_CIPHERTEXT`] bytes.
    pub fn encode(&self) -> Result<(Vec<u8>, Annotations), EnvelopeError> {
        if self.wraps.is_empty() || self.wraps.len() > MAX_WRAPS {
            return Err(EnvelopeError::Malformed("wrap count out of range"));
        }
        for w in &self.wraps {
            if w.backend.is_empty() || w.backend.len() > 255 {
                return Err(EnvelopeError::Malformed("backend name length"));
            }
            if w.key_version.is_empty() || w.key_version.len() > u16::MAX as usize {
                return Err(EnvelopeError::Malformed("key version length"));
            }
            if w.ciphertext.is_empty() || w.ciphertext.len() > u16::MAX as usize {
                return Err(EnvelopeError::Malformed("wrapped key length"));
            }
        }
        let mut external = vec![false; self.wraps.len()];
        // The first wrap always stays inline: an envelope must be decryptable on its own.
        for moved in (1..=self.wraps.len()).rev() {
            let bytes = self.encode_inline(&external);
            if bytes.len() <= MAX_CIPHERTEXT {
                let annotations = self
                    .wraps
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| external[*i])
                    .map(|(i, w)| (annotation_key(i), w.ciphertext.clone()))
                    .collect();
                return Ok((bytes, annotations));
            }
            if moved == 1 {
                return Err(EnvelopeError::TooLarge(bytes.len()));
            }
            external[moved - 1] = true;
        }
        unreachable!("the loop returns on its last iteration")
    }

    fn encode_inline(&self, external: &[bool]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_CIPHERTEXT);
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_V1);
        out.push(self.wraps.len() as u8);
        for (w, &ext) in self.wraps.iter().zip(external) {
            out.push(if ext { FLAG_IN_ANNOTATION } else { 0 });
            out.push(w.backend.len() as u8);
            out.extend_from_slice(w.backend.as_bytes());
            out.extend_from_slice(&(w.key_version.len() as u16).to_be_bytes());
            out.extend_from_slice(w.key_version.as_bytes());
            let digest;
            let inline: &[u8] = if ext {
                digest = annotation_digest(&w.ciphertext);
                &digest
            } else {
                &w.ciphertext
            };
            out.extend_from_slice(&(inline.len() as u16).to_be_bytes());
            out.extend_from_slice(inline);
        }
        out
    }

    /// Parses untrusted bytes plus the annotations stored beside them. Every annotation must be
    /// one this envelope refers to, and every wrap it stores outside must be present: added,
    /// removed or renamed annotations are an error.
    pub fn decode(
        bytes: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, EnvelopeError> {
        let mut r = Cursor { buf: bytes };
        if r.take(2).ok() != Some(&MAGIC[..]) {
            return Err(EnvelopeError::NotEnvelope);
        }
        let version = r.u8()?;
        if version != FORMAT_V1 {
            return Err(EnvelopeError::UnsupportedVersion(version));
        }
        let count = r.u8()? as usize;
        if count == 0 || count > MAX_WRAPS {
            return Err(EnvelopeError::Malformed("wrap count out of range"));
        }
        let mut wraps = Vec::with_capacity(count);
        let mut referenced = 0usize;
        for index in 0..count {
            let flags = r.u8()?;
            if flags & !FLAG_IN_ANNOTATION != 0 {
                return Err(EnvelopeError::Malformed("unknown wrap flags"));
            }
            let name_len = r.u8()? as usize;
            let backend = r.utf8(name_len, "backend name")?;
            if backend.is_empty() {
                return Err(EnvelopeError::Malformed("empty backend name"));
            }
            let version_len = r.u16()? as usize;
            let key_version = r.utf8(version_len, "key version")?;
            if key_version.is_empty() {
                return Err(EnvelopeError::Malformed("empty key version"));
            }
            let ct_len = r.u16()? as usize;
            let inline = r.take(ct_len)?;
            let ciphertext = if flags & FLAG_IN_ANNOTATION != 0 {
                if index == 0 || inline.len() != ANNOTATION_DIGEST_LEN {
                    return Err(EnvelopeError::Malformed("misplaced external wrap"));
                }
                referenced += 1;
                let key = annotation_key(index);
                let value = annotations
                    .get(&key)
                    .ok_or_else(|| EnvelopeError::Annotations(format!("missing {key}")))?;
                if value.is_empty() {
                    return Err(EnvelopeError::Annotations(format!("empty {key}")));
                }
                if annotation_digest(value)[..] != *inline {
                    return Err(EnvelopeError::Annotations(format!("{key} was altered")));
                }
                value.clone()
            } else {
                if inline.is_empty() {
                    return Err(EnvelopeError::Malformed("empty wrapped key"));
                }
                inline.to_vec()
            };
            wraps.push(Wrap {
                backend,
                key_version,
                ciphertext,
            });
        }
        if !r.buf.is_empty() {
            return Err(EnvelopeError::Malformed("trailing bytes"));
        }
        if annotations.len() != referenced {
            let unexpected: Vec<&str> = annotations
                .keys()
                .filter(|k| (1..count).all(|i| **k != annotation_key(i)))
                .map(String::as_str)
                .take(3)
                .collect();
            return Err(EnvelopeError::Annotations(format!(
                "unexpected annotations {unexpected:?}"
            )));
        }
        Ok(EnvelopeV1 { wraps })
    }
}

fn annotation_digest(value: &[u8]) -> [u8; ANNOTATION_DIGEST_LEN] {
    let digest = Sha256::digest(value);
    let mut out = [0u8; ANNOTATION_DIGEST_LEN];
    out.copy_from_slice(&digest[..ANNOTATION_DIGEST_LEN]);
    out
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EnvelopeError> {
        if self.buf.len() < n {
            return Err(EnvelopeError::Malformed("truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, EnvelopeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EnvelopeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn utf8(&mut self, n: usize, what: &'static str) -> Result<String, EnvelopeError> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| EnvelopeError::Malformed(what))
    }
}

#[cfg(test)]
mod tests;
