//! polykms' own cryptography, in one place: SHA-256, HMAC-SHA256, HKDF-SHA256, AES-256-GCM and
//! random numbers, all from AWS-LC through aws-lc-rs. With the `fips` feature AWS-LC is its
//! FIPS 140-3 module (aws-lc-fips-sys), so a FIPS build runs every one of these operations
//! inside the validated boundary (docs/fips.md); nothing else in the workspace implements them.

use std::time::Duration;

use aws_lc_rs::{aead, digest, hkdf, hmac, rand};

/// The HKDF hash choices of [`hkdf_expand`] (`HKDF_SHA256`, …), re-exported from aws-lc-rs.
pub use aws_lc_rs::hkdf::{Algorithm as HkdfAlgorithm, HKDF_SHA256, HKDF_SHA384};

use crate::SecretBytes;

/// Whether this binary was built with the FIPS module (`--features fips`).
pub const FIPS_BUILD: bool = cfg!(feature = "fips");

/// Length of a SHA-256 digest and of an HMAC-SHA256 tag.
pub const SHA256_LEN: usize = 32;

/// Length of an AES-256-GCM nonce.
pub const GCM_NONCE_LEN: usize = 12;

/// Length of an AES-256-GCM tag.
pub const GCM_TAG_LEN: usize = 16;

/// A cryptographic operation the module refused. Carries no key, plaintext or input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// AES-256-GCM refused the ciphertext, nonce or AAD (authentication failed).
    #[error("authenticated decryption failed")]
    Open,
    /// A key of the wrong length for the algorithm.
    #[error("{algorithm} key must be {expected} bytes, got {got}")]
    KeyLength {
        algorithm: &'static str,
        expected: usize,
        got: usize,
    },
    /// The module's random generator, or another primitive, reported a failure.
    #[error("{0} failed in the cryptographic module")]
    Module(&'static str),
    /// A FIPS build whose module is not in FIPS mode (or failed its self tests).
    #[error("the cryptographic module {module} is not in FIPS mode: {reason}")]
    NotFipsMode { module: String, reason: String },
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; SHA256_LEN] {
    let mut h = Sha256::new();
    h.update(data);
    h.finish()
}

/// Incremental SHA-256.
#[derive(Clone)]
pub struct Sha256(digest::Context);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(digest::Context::new(&digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; SHA256_LEN] {
        let mut out = [0u8; SHA256_LEN];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; SHA256_LEN] {
    let mut mac = HmacSha256::new(key);
    for part in parts {
        mac.update(part);
    }
    mac.finish()
}

/// Incremental HMAC-SHA256.
#[derive(Clone)]
pub struct HmacSha256(hmac::Context);

impl HmacSha256 {
    pub fn new(key: &[u8]) -> Self {
        HmacSha256(hmac::Context::with_key(&hmac::Key::new(
            hmac::HMAC_SHA256,
            key,
        )))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; SHA256_LEN] {
        let mut out = [0u8; SHA256_LEN];
        out.copy_from_slice(self.0.sign().as_ref());
        out
    }

    /// Whether `tag` is the full tag, compared in constant time.
    pub fn verify(self, tag: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.finish(), tag).is_ok()
    }
}

impl std::fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha256(..)")
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt` from `ikm`, expand with the concatenation of
/// `info` into `out` (at most 255 × 32 bytes).
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    // HKDF-Extract is HMAC(salt, ikm); an empty salt is HashLen zero bytes, which HMAC's key
    // padding makes the same key.
    let prk = zeroize::Zeroizing::new(hmac_sha256(salt, &[ikm]));
    hkdf_expand(hkdf::HKDF_SHA256, prk.as_ref(), info, out)
}

/// HKDF-Expand (RFC 5869) under `algorithm` (`HKDF_SHA256`; others for test vectors) of a PRK
/// that came out of HKDF-Extract, with the concatenation of `info`, into `out`.
pub fn hkdf_expand(
    algorithm: HkdfAlgorithm,
    prk: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    hkdf::Prk::new_less_safe(algorithm, prk)
        .expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| CryptoError::Module("HKDF-Expand"))
}

/// Fills `buf` from the module's random generator (the FIPS DRBG in a FIPS build).
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    rand::fill(buf).map_err(|_| CryptoError::Module("random generation"))
}

/// `n` random bytes, held as a secret (zeroized on drop).
pub fn random_secret(n: usize) -> Result<SecretBytes, CryptoError> {
    let mut bytes = vec![0u8; n];
    fill_random(&mut bytes)?;
    Ok(SecretBytes::new(bytes))
}

/// A uniformly random `f64` in `[0, 1)`, for retry jitter.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    // Jitter only spreads retries: should the generator ever fail, no spread is still correct.
    if fill_random(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `base` scaled by a random factor in `[low, high)`: retry and refresh jitter.
pub fn jitter(base: Duration, low: f64, high: f64) -> Duration {
    base.mul_f64(low + (high - low) * random_unit())
}

/// An AES-256-GCM key whose encryption nonces the module makes itself (96 random bits from its
/// DRBG: the internally generated IV that FIPS 140-3 IG C.H asks of an approved GCM encryption).
pub struct Aes256Gcm(aead::RandomizedNonceKey);

impl Aes256Gcm {
    /// The key from its 32 bytes.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        aead::RandomizedNonceKey::new(&aead::AES_256_GCM, key)
            .map(Aes256Gcm)
            .map_err(|_| CryptoError::KeyLength {
                algorithm: "AES-256-GCM",
                expected: 32,
                got: key.len(),
            })
    }

    /// Encrypts `plaintext` bound to `aad` under a fresh nonce: the nonce, and the ciphertext
    /// followed by the 16-byte tag.
    pub fn seal(
        &self,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; GCM_NONCE_LEN], Vec<u8>), CryptoError> {
        let mut buf = Vec::with_capacity(plaintext.len() + GCM_TAG_LEN);
        buf.extend_from_slice(plaintext);
        let nonce = self
            .0
            .seal_in_place_append_tag(aead::Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Module("AES-256-GCM encryption"))?;
        Ok((*nonce.as_ref(), buf))
    }

    /// Decrypts ciphertext-and-tag; the plaintext comes back as a secret.
    pub fn open(
        &self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<SecretBytes, CryptoError> {
        let mut buf = SecretBytes::new(ciphertext_and_tag.to_vec());
        let len = self
            .0
            .open_in_place(
                aead::Nonce::assume_unique_for_key(*nonce),
                aead::Aad::from(aad),
                buf.expose_mut(),
            )
            .map_err(|_| CryptoError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl std::fmt::Debug for Aes256Gcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes256Gcm(..)")
    }
}

/// The cryptographic module this binary runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// "AWS-LC" or "AWS-LC FIPS".
    pub name: &'static str,
    /// The linked AWS-LC release (e.g. `4.0.0` for the FIPS 4.x branch).
    pub version: &'static str,
    /// The FIPS module branch the headers name (e.g. 4), when the build is a FIPS one.
    pub fips_branch: Option<u32>,
    /// Whether the module says it is in FIPS mode now.
    pub fips_mode: bool,
}

impl std::fmt::Display for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if self.fips_mode {
            f.write_str(" (FIPS mode)")?;
        } else if FIPS_BUILD {
            f.write_str(" (NOT in FIPS mode)")?;
        }
        Ok(())
    }
}

/// What the linked module is and whether it is in FIPS mode.
pub fn module() -> Module {
    Module {
        name: if FIPS_BUILD { "AWS-LC FIPS" } else { "AWS-LC" },
        version: aws_lc_rs::awslc_version(),
        fips_branch: aws_lc_rs::fips_version(),
        fips_mode: aws_lc_rs::try_fips_mode().is_ok(),
    }
}

/// The start-up check of a FIPS build: the module is in FIPS mode (its power-on self tests and
/// integrity check passed, or the process would have aborted) and all its algorithm self tests
/// pass when run again now. A build without the module has nothing to check.
pub fn self_check() -> Result<Module, CryptoError> {
    let module = module();
    if !FIPS_BUILD {
        return Ok(module);
    }
    let self_tests = aws_lc_rs::try_fips_self_test().map_err(|_| ());
    judge(module, self_tests)
}

/// The verdict of [`self_check`] on what the module reported (separate so that both outcomes
/// are tested in every build).
fn judge(module: Module, self_tests: Result<(), ()>) -> Result<Module, CryptoError> {
    if !module.fips_mode {
        return Err(CryptoError::NotFipsMode {
            module: module.to_string(),
            reason: "FIPS_mode() returned 0".into(),
        });
    }
    if self_tests.is_err() {
        return Err(CryptoError::NotFipsMode {
            module: module.to_string(),
            reason: "its algorithm self tests failed".into(),
        });
    }
    Ok(module)
}

#[cfg(test)]
#[path = "crypto_tests.rs"]
mod tests;
