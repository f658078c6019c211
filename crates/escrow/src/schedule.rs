//! The HPKE key schedule of RFC 9180 §5.1, base mode, on the workspace's cryptographic module:
//! HMAC-SHA256 for LabeledExtract (HKDF-Extract is HMAC with the salt as key) and AWS-LC's
//! HKDF-Expand for LabeledExpand. Generic over the suite (KEM and AEAD ids, key length) and
//! the KDF, so that the published vectors of other suites check the same code.

use polykms_backend::crypto::{self, CryptoError};
use zeroize::{Zeroize, Zeroizing};

/// An HKDF of RFC 9180 §7.2 (Extract and Expand of RFC 5869).
pub(crate) trait Kdf {
    /// HPKE KDF identifier.
    const ID: u16;
    /// HKDF-Extract(salt, concatenation of `ikm`).
    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<Vec<u8>>;
    /// HKDF-Expand(prk, concatenation of `info`) into `out`.
    fn expand(prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError>;
}

/// HKDF-SHA256 (KDF id 0x0001), through `polykms_backend::crypto` and AWS-LC.
pub(crate) struct HkdfSha256;

impl Kdf for HkdfSha256 {
    const ID: u16 = 0x0001;

    fn extract(salt: &[u8], ikm: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let mut prk = crypto::hmac_sha256(salt, ikm);
        let out = Zeroizing::new(prk.to_vec());
        prk.zeroize();
        out
    }

    fn expand(prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        crypto::hkdf_expand(crypto::HKDF_SHA256, prk, info, out)
    }
}

const VERSION_LABEL: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0x00;

/// The secrets of one HPKE context (base mode), derived from the KEM's shared secret.
pub(crate) struct Schedule<K: Kdf> {
    suite_id: [u8; 10],
    /// `secret` of RFC 9180 §5.1: the PRK every context key is expanded from.
    secret: Zeroizing<Vec<u8>>,
    /// `key_schedule_context` = mode ‖ psk_id_hash ‖ info_hash (public).
    context: Vec<u8>,
    kdf: std::marker::PhantomData<K>,
}

impl<K: Kdf> Schedule<K> {
    /// KeySchedule(mode_base, shared_secret, info, default_psk, default_psk_id) for the suite
    /// `kem_id`, `K`, `aead_id`.
    pub(crate) fn base(kem_id: u16, aead_id: u16, shared_secret: &[u8], info: &[u8]) -> Self {
        let mut suite_id = [0u8; 10];
        suite_id[..4].copy_from_slice(b"HPKE");
        suite_id[4..6].copy_from_slice(&kem_id.to_be_bytes());
        suite_id[6..8].copy_from_slice(&K::ID.to_be_bytes());
        suite_id[8..].copy_from_slice(&aead_id.to_be_bytes());
        let extract = |salt: &[u8], label: &[u8], ikm: &[u8]| {
            K::extract(salt, &[VERSION_LABEL, &suite_id, label, ikm])
        };
        let psk_id_hash = extract(b"", b"psk_id_hash", b"");
        let info_hash = extract(b"", b"info_hash", info);
        let mut context = Vec::with_capacity(1 + psk_id_hash.len() + info_hash.len());
        context.push(MODE_BASE);
        context.extend_from_slice(&psk_id_hash);
        context.extend_from_slice(&info_hash);
        let secret = extract(shared_secret, b"secret", b"");
        Schedule {
            suite_id,
            secret,
            context,
            kdf: std::marker::PhantomData,
        }
    }

    /// LabeledExpand(secret, label, key_schedule_context, out.len()).
    fn labeled_expand(&self, label: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        let len = u16::try_from(out.len())
            .map_err(|_| CryptoError::Module("HPKE LabeledExpand length"))?
            .to_be_bytes();
        K::expand(
            &self.secret,
            &[&len, VERSION_LABEL, &self.suite_id, label, &self.context],
            out,
        )
    }

    /// The AEAD key, `nk` bytes.
    pub(crate) fn key(&self, nk: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut key = Zeroizing::new(vec![0u8; nk]);
        self.labeled_expand(b"key", &mut key)?;
        Ok(key)
    }

    /// The base nonce (checked against the vectors; the escrow seal lets the module draw its
    /// GCM nonce instead, `mlkem`).
    #[cfg(test)]
    pub(crate) fn base_nonce(&self) -> Result<[u8; crypto::GCM_NONCE_LEN], CryptoError> {
        let mut nonce = [0u8; crypto::GCM_NONCE_LEN];
        self.labeled_expand(b"base_nonce", &mut nonce)?;
        Ok(nonce)
    }

    /// The exporter secret, `nh` bytes (checked against the vectors; escrow exports nothing).
    #[cfg(test)]
    pub(crate) fn exporter_secret(&self, nh: usize) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut secret = Zeroizing::new(vec![0u8; nh]);
        self.labeled_expand(b"exp", &mut secret)?;
        Ok(secret)
    }
}
