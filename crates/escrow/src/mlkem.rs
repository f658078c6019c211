//! The FIPS-approved escrow suite: HPKE (RFC 9180) base mode with KEM ML-KEM-1024 (FIPS 203,
//! HPKE KEM id 0x0042 of draft-ietf-hpke-pq), KDF HKDF-SHA256 (0x0001) and AEAD AES-256-GCM
//! (0x0002), built only from AWS-LC: its ML-KEM, and `polykms_backend::crypto` for HMAC,
//! HKDF and AES-256-GCM, so that a FIPS build runs every step inside the validated module.
//!
//! ML-KEM alone, not a hybrid: X25519 is not FIPS-approved, and a wrap stays closed as long as
//! ML-KEM-1024 (NIST category 5) holds.
//!
//! One departure from RFC 9180: the AES-256-GCM nonce of the seal is not the key schedule's
//! `base_nonce` but 96 random bits the module draws itself (FIPS 140-3 IG C.H wants an
//! approved GCM encryption to generate its IV inside the module), carried in the wrap. The key
//! schedule still derives a fresh key from each encapsulation, used for this one seal only, so
//! nonce reuse cannot arise either way; the published vectors check the KEM, the key schedule
//! (key and base_nonce) and AES-256-GCM opening (`vectors.rs`).
//!
//! Private keys are kept in FIPS 203's expanded decapsulation-key form (3168 bytes), not the
//! 64-byte seed draft-ietf-hpke-pq serializes: aws-lc-rs 1.19 imports and exports only that
//! form (`DecapsulationKey::new` / `key_bytes`), and has no key generation from a seed.

use aws_lc_rs::kem::{Ciphertext, DecapsulationKey, EncapsulationKey, ML_KEM_1024};
use polykms_backend::crypto::{Aes256Gcm, GCM_NONCE_LEN, GCM_TAG_LEN};
use polykms_backend::{BackendError, SecretBytes};
use zeroize::Zeroizing;

use crate::schedule::{HkdfSha256, Schedule};

/// HPKE KEM id of ML-KEM-1024 (draft-ietf-hpke-pq §8.1, IANA HPKE KEM Identifiers).
pub(crate) const KEM_ID: u16 = 0x0042;
/// HPKE AEAD id of AES-256-GCM (RFC 9180 §7.3).
pub(crate) const AEAD_ID: u16 = 0x0002;
/// AES-256-GCM key length (Nk).
const NK: usize = 32;

/// Encapsulation key (Npk), expanded decapsulation key, and ciphertext (Nenc) sizes.
pub(crate) const PUBLIC_KEY_LEN: usize = 1568;
pub(crate) const PRIVATE_KEY_LEN: usize = 3168;
pub(crate) const ENC_LEN: usize = 1568;
/// Where the encapsulation key sits inside the expanded decapsulation key (FIPS 203
/// Algorithm 16: dk = dk_PKE (384·k bytes) ‖ ek ‖ H(ek) ‖ z, k = 4).
const EK_IN_DK: std::ops::Range<usize> = 1536..1536 + PUBLIC_KEY_LEN;

/// An ML-KEM-1024 encapsulation key with its bytes (for the fingerprint and the key file).
pub(crate) struct PublicKey {
    key: EncapsulationKey,
    bytes: Vec<u8>,
}

/// An ML-KEM-1024 decapsulation key and the public key it belongs to.
pub(crate) struct PrivateKey {
    key: DecapsulationKey,
    public: Vec<u8>,
}

impl PublicKey {
    /// Parses a 1568-byte encapsulation key.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let key = EncapsulationKey::new(&ML_KEM_1024, bytes)
            .map_err(|_| "not a valid ML-KEM-1024 public key".to_string())?;
        Ok(PublicKey {
            key,
            bytes: bytes.to_vec(),
        })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl PrivateKey {
    /// Parses a 3168-byte expanded decapsulation key, and proves it whole: a wrap made to the
    /// public key it holds must open under it (AWS-LC checks only the length on import).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let invalid = || "not a valid ML-KEM-1024 private key".to_string();
        let key = DecapsulationKey::new(&ML_KEM_1024, bytes).map_err(|_| invalid())?;
        let public = bytes.get(EK_IN_DK).ok_or_else(invalid)?.to_vec();
        let ek = EncapsulationKey::new(&ML_KEM_1024, &public).map_err(|_| invalid())?;
        let (ct, sent) = ek.encapsulate().map_err(|_| invalid())?;
        let received = key.decapsulate(ct.as_ref().into()).map_err(|_| invalid())?;
        if aws_lc_rs::constant_time::verify_slices_are_equal(sent.as_ref(), received.as_ref())
            .is_err()
        {
            return Err("damaged: its ML-KEM-1024 private and public parts do not match".into());
        }
        Ok(PrivateKey { key, public })
    }

    /// The public key bytes it belongs to.
    pub(crate) fn public_bytes(&self) -> &[u8] {
        &self.public
    }
}

/// A fresh key pair from the module's random generator: the expanded private key bytes
/// (zeroized on drop) and the public key.
pub(crate) fn generate() -> Result<(Zeroizing<Vec<u8>>, PublicKey), BackendError> {
    let failed = |what: &str| BackendError::internal(format!("ML-KEM-1024 {what} failed"));
    let dk = DecapsulationKey::generate(&ML_KEM_1024).map_err(|_| failed("key generation"))?;
    let private = Zeroizing::new(
        dk.key_bytes()
            .map_err(|_| failed("private key export"))?
            .as_ref()
            .to_vec(),
    );
    let public = dk
        .encapsulation_key()
        .and_then(|ek| ek.key_bytes())
        .map_err(|_| failed("public key export"))?;
    let public = PublicKey::from_bytes(public.as_ref()).map_err(BackendError::internal)?;
    Ok((private, public))
}

fn schedule(shared_secret: &[u8], info: &[u8]) -> Schedule<HkdfSha256> {
    Schedule::base(KEM_ID, AEAD_ID, shared_secret, info)
}

/// Seals `plaintext` to `public` bound to `aad`: `enc ‖ nonce ‖ AES-256-GCM ciphertext ‖ tag`.
pub(crate) fn seal(
    public: &PublicKey,
    info: &[u8],
    plaintext: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let failed = |what: &str| BackendError::internal(format!("escrow seal: {what} failed"));
    let (enc, shared_secret) = public
        .key
        .encapsulate()
        .map_err(|_| failed("ML-KEM-1024 encapsulation"))?;
    let schedule = schedule(shared_secret.as_ref(), info);
    let key = schedule.key(NK).map_err(|_| failed("HPKE key schedule"))?;
    let (nonce, sealed) = Aes256Gcm::new(&key)
        .and_then(|aead| aead.seal(aad, plaintext.expose()))
        .map_err(|_| failed("AES-256-GCM"))?;
    let mut out = Vec::with_capacity(ENC_LEN + GCM_NONCE_LEN + sealed.len());
    out.extend_from_slice(enc.as_ref());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens `enc ‖ nonce ‖ ciphertext ‖ tag` made by [`seal`] for `private`'s public key, under `aad`.
pub(crate) fn open(
    private: &PrivateKey,
    info: &[u8],
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, BackendError> {
    const MIN_LEN: usize = ENC_LEN + GCM_NONCE_LEN + GCM_TAG_LEN;
    if wrapped.len() < MIN_LEN {
        return Err(BackendError::invalid_input(format!(
            "escrow wrap is {} bytes, shorter than suite byte, ML-KEM-1024 ciphertext, nonce \
             and tag ({})",
            1 + wrapped.len(),
            1 + MIN_LEN
        )));
    }
    let refused = || {
        BackendError::wrong_key(
            "escrow wrap authentication failed: another escrow key or context, or tampered",
        )
    };
    let (enc, rest) = wrapped.split_at(ENC_LEN);
    let (nonce, sealed) = rest.split_at(GCM_NONCE_LEN);
    let nonce: &[u8; GCM_NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
    // ML-KEM rejects implicitly: a tampered ciphertext yields an unrelated secret, which the
    // AEAD then refuses.
    let shared_secret = private
        .key
        .decapsulate(Ciphertext::from(enc))
        .map_err(|_| refused())?;
    let schedule = schedule(shared_secret.as_ref(), info);
    let key = schedule.key(NK).map_err(|_| refused())?;
    Aes256Gcm::new(&key)
        .and_then(|aead| aead.open(nonce, aad, sealed))
        .map_err(|_| refused())
}

/// Decapsulation alone, for the published vectors (`vectors.rs`).
#[cfg(test)]
pub(crate) fn decapsulate(private: &PrivateKey, enc: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    private
        .key
        .decapsulate(Ciphertext::from(enc))
        .ok()
        .map(|ss| Zeroizing::new(ss.as_ref().to_vec()))
}
