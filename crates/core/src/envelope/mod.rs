//! The plugin's ciphertext: a small versioned envelope naming which backend(s) wrapped the
//! seed under which key version, sealed (format versions 2 and 3) by a commitment that binds
//! the seed to every byte of it. Format 3 also binds every wrap to the format itself (through
//! the AAD, [`wrap_aad`]), so no wrap it holds unwraps when read as an older format. Layout in `docs/envelope.md`; parsing untrusted bytes never panics and
//! never allocates more than the input's size.

mod commitment;

use std::collections::BTreeMap;

use polykms_backend::SecretBytes;
use thiserror::Error;

pub use commitment::COMMITMENT_LEN;
use commitment::Commitment;

const MAGIC: [u8; 2] = *b"PK";
/// The first format: wraps are not bound to each other (read, never written).
pub const FORMAT_V1: u8 = 1;
/// Version 1's layout followed by a commitment; wraps bound to the same AAD as version 1's
/// (read, no longer written).
pub const FORMAT_V2: u8 = 2;
/// The format Encrypt writes: version 2's layout, its wraps bound to an AAD that names the
/// format, so a version-3 envelope rewritten as version 1 or 2 unwraps nowhere.
pub const FORMAT_V3: u8 = 3;
/// The format Encrypt writes.
pub const FORMAT_CURRENT: u8 = FORMAT_V3;
/// Most wraps one envelope may carry.
pub const MAX_WRAPS: usize = 8;
/// The contract's bound on a plugin ciphertext.
pub const MAX_CIPHERTEXT: usize = 1024;
const FLAG_IN_ANNOTATION: u8 = 0x01;
/// An external wrap keeps this many bytes of the SHA-256 of its annotation value inline, so
/// an altered, swapped or missing annotation is refused before any backend is called.
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
    /// The commitment does not verify under the seed a backend unwrapped.
    #[error("ciphertext was altered: the envelope does not match the seed its wrap holds")]
    Altered,
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
pub struct Envelope {
    /// [`FORMAT_V1`], [`FORMAT_V2`] or [`FORMAT_V3`].
    pub version: u8,
    pub wraps: Vec<Wrap>,
    /// Which wraps were stored in annotations.
    external: Vec<bool>,
    /// Versions 2 and 3: the envelope bytes before the commitment, and the commitment.
    sealed: Option<(Vec<u8>, [u8; COMMITMENT_LEN])>,
}

/// The annotation key under which wrap `index` is stored when it does not fit inline.
pub fn annotation_key(index: usize) -> String {
    format!("wrap-{index}{ANNOTATION_SUFFIX}")
}

/// The format version of what looks like a polykms envelope, read without parsing the rest
/// (for `polykms audit`, which has no seed).
pub fn format_version(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [m0, m1, version, ..] if [*m0, *m1] == MAGIC => Some(*version),
        _ => None,
    }
}

/// The AAD every wrap of a `format` envelope is bound to, through each backend's own
/// mechanism. Versions 1 and 2 share one; version 3 names itself, so its wraps unwrap only in
/// a version-3 envelope: rewriting the format byte (a downgrade) makes every wrap fail.
pub fn wrap_aad(provider_name: &str, format: u8) -> Vec<u8> {
    match format {
        FORMAT_V1 | FORMAT_V2 => format!("polykms:v1:{provider_name}").into_bytes(),
        _ => format!("polykms:envelope-v{format}:{provider_name}").into_bytes(),
    }
}

/// Encodes `wraps` (made under [`wrap_aad`] of [`FORMAT_CURRENT`]) as an envelope sealed with
/// a commitment under `seed`, moving wraps (last first) into annotations until the envelope
/// fits in [`MAX_CIPHERTEXT`] bytes.
pub fn seal(wraps: &[Wrap], seed: &SecretBytes) -> Result<(Vec<u8>, Annotations), EnvelopeError> {
    encode(FORMAT_CURRENT, wraps, Some(seed))
}

/// Encodes `wraps` in the version-2 layout: only for tests of the version-2 read path.
#[cfg(test)]
pub(crate) fn seal_v2(
    wraps: &[Wrap],
    seed: &SecretBytes,
) -> Result<(Vec<u8>, Annotations), EnvelopeError> {
    encode(FORMAT_V2, wraps, Some(seed))
}

/// Encodes `wraps` in the legacy version-1 layout: only for tests of the legacy read path.
#[cfg(test)]
pub(crate) fn encode_v1(wraps: &[Wrap]) -> Result<(Vec<u8>, Annotations), EnvelopeError> {
    encode(FORMAT_V1, wraps, None)
}

fn encode(
    version: u8,
    wraps: &[Wrap],
    seed: Option<&SecretBytes>,
) -> Result<(Vec<u8>, Annotations), EnvelopeError> {
    if wraps.is_empty() || wraps.len() > MAX_WRAPS {
        return Err(EnvelopeError::Malformed("wrap count out of range"));
    }
    for w in wraps {
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
    let trailer = if seed.is_some() { COMMITMENT_LEN } else { 0 };
    let mut external = vec![false; wraps.len()];
    // Wraps move to annotations last first. Versions 1 and 2 keep the first wrap inline;
    // version 3 moves it too when nothing else makes the envelope fit (a post-quantum escrow
    // wrap alone is larger than the whole ciphertext bound).
    let movable = if version >= FORMAT_V3 { 0 } else { 1 };
    for moved in (movable..=wraps.len()).rev() {
        let mut bytes = encode_head(version, wraps, &external);
        if bytes.len() + trailer <= MAX_CIPHERTEXT {
            if let Some(seed) = seed {
                let tag = commitment(version, seed, &bytes, wraps, &external).tag();
                bytes.extend_from_slice(&tag);
            }
            let annotations = wraps
                .iter()
                .enumerate()
                .filter(|(i, _)| external[*i])
                .map(|(i, w)| (annotation_key(i), w.ciphertext.clone()))
                .collect();
            return Ok((bytes, annotations));
        }
        if moved == movable {
            return Err(EnvelopeError::TooLarge(bytes.len() + trailer));
        }
        external[moved - 1] = true;
    }
    unreachable!("the loop returns on its last iteration")
}

fn encode_head(version: u8, wraps: &[Wrap], external: &[bool]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_CIPHERTEXT);
    out.extend_from_slice(&MAGIC);
    out.push(version);
    out.push(wraps.len() as u8);
    for (w, &ext) in wraps.iter().zip(external) {
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

impl Envelope {
    /// Parses untrusted bytes plus the annotations stored beside them. Every annotation must be
    /// one this envelope refers to, and every wrap it stores outside must be present: added,
    /// removed or renamed annotations are an error. A sealed envelope still has to pass
    /// [`Envelope::verify`] with the unwrapped seed before anything is returned to a caller.
    pub fn decode(
        bytes: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, EnvelopeError> {
        let version = format_version(bytes).ok_or(EnvelopeError::NotEnvelope)?;
        let (head, tag) = match version {
            FORMAT_V1 => (bytes, None),
            FORMAT_V2 | FORMAT_V3 => {
                let split = bytes
                    .len()
                    .checked_sub(COMMITMENT_LEN)
                    .ok_or(EnvelopeError::Malformed("truncated"))?;
                let (head, tag) = bytes.split_at(split);
                let tag: [u8; COMMITMENT_LEN] = tag
                    .try_into()
                    .expect("split leaves exactly COMMITMENT_LEN bytes");
                (head, Some(tag))
            }
            other => return Err(EnvelopeError::UnsupportedVersion(other)),
        };
        let mut r = Cursor { buf: head };
        r.take(3)?; // magic and version, read above
        let count = r.u8()? as usize;
        if count == 0 || count > MAX_WRAPS {
            return Err(EnvelopeError::Malformed("wrap count out of range"));
        }
        let mut wraps = Vec::with_capacity(count);
        let mut external = Vec::with_capacity(count);
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
            let in_annotation = flags & FLAG_IN_ANNOTATION != 0;
            let ciphertext = if in_annotation {
                if (index == 0 && version < FORMAT_V3) || inline.len() != ANNOTATION_DIGEST_LEN {
                    return Err(EnvelopeError::Malformed("misplaced external wrap"));
                }
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
            external.push(in_annotation);
            wraps.push(Wrap {
                backend,
                key_version,
                ciphertext,
            });
        }
        if !r.buf.is_empty() {
            return Err(EnvelopeError::Malformed("trailing bytes"));
        }
        let referenced = external.iter().filter(|e| **e).count();
        if annotations.len() != referenced {
            let unexpected: Vec<&str> = annotations
                .keys()
                .filter(|k| (0..count).all(|i| **k != annotation_key(i)))
                .map(String::as_str)
                .take(3)
                .collect();
            return Err(EnvelopeError::Annotations(format!(
                "unexpected annotations {unexpected:?}"
            )));
        }
        Ok(Envelope {
            version,
            wraps,
            external,
            sealed: tag.map(|tag| (head.to_vec(), tag)),
        })
    }

    /// Checks the commitment with the seed a backend unwrapped from one of the wraps: the seed
    /// may be returned only when this succeeds. Version 1 has no commitment (always `Ok`).
    pub fn verify(&self, seed: &SecretBytes) -> Result<(), EnvelopeError> {
        let Some((head, tag)) = &self.sealed else {
            return Ok(());
        };
        if commitment(self.version, seed, head, &self.wraps, &self.external).verify(tag) {
            Ok(())
        } else {
            Err(EnvelopeError::Altered)
        }
    }

    /// A version-1 envelope with more than one wrap: its wraps are not bound to each other, so
    /// operators should re-encrypt it.
    pub fn is_legacy_multi_wrap(&self) -> bool {
        self.version == FORMAT_V1 && self.wraps.len() > 1
    }
}

/// The MAC a sealed envelope carries, for sealing and for verifying alike: the envelope bytes
/// before it, then the value of every wrap stored in an annotation, in wrap order.
fn commitment(
    format: u8,
    seed: &SecretBytes,
    head: &[u8],
    wraps: &[Wrap],
    external: &[bool],
) -> Commitment {
    let mut mac = Commitment::new(format, seed, head);
    for (w, _) in wraps.iter().zip(external).filter(|(_, ext)| **ext) {
        mac.annotation(&w.ciphertext);
    }
    mac
}

fn annotation_digest(value: &[u8]) -> [u8; ANNOTATION_DIGEST_LEN] {
    let digest = polykms_backend::crypto::sha256(value);
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
