//! The X-Wing escrow suite (the default build's default): HPKE (RFC 9180) base mode with KEM
//! X-Wing (ML-KEM-768 + X25519, HPKE KEM id 0x647a), KDF HKDF-SHA256 (0x0001) and AEAD
//! ChaCha20-Poly1305 (0x0003), from RustCrypto's hpke crate: the suite of draft-ietf-hpke-pq
//! Appendix A.5, whose published test vector `vectors.rs` checks. A wrap stolen today stays
//! closed to a future quantum computer as long as ML-KEM-768 holds, and to a classical
//! attacker as long as either ML-KEM-768 or X25519 holds. X25519 and ChaCha20-Poly1305 are not
//! FIPS-approved: a FIPS build refuses this suite (`suite::Kem::allowed`).

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use polykms_backend::{BackendError, SecretBytes};

/// The KEM: X-Wing as specified for HPKE by draft-ietf-hpke-pq.
pub(crate) type Kem = hpke::kem::XWing;
pub(crate) type Kdf = HkdfSha256;
pub(crate) type Aead = ChaCha20Poly1305;

pub(crate) type PublicKey = <Kem as hpke::Kem>::PublicKey;
pub(crate) type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// X-Wing public key, private key (seed) and encapsulated key sizes.
pub(crate) const PUBLIC_KEY_LEN: usize = 1216;
pub(crate) const PRIVATE_KEY_LEN: usize = 32;
const ENC_LEN: usize = 1120;
const TAG_LEN: usize = 16;

/// Seals `plaintext` to `public`, bound to `aad`: `enc ‖ AEAD ciphertext`.
pub(crate) fn seal(
    public: &PublicKey,
    info: &[u8],
    plaintext: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let (enc, sealed) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
        &OpModeS::Base,
        public,
        info,
        plaintext.expose(),
        aad,
    )
    .map_err(|e| BackendError::internal(format!("HPKE seal failed: {e}")))?;
    let mut out = Vec::with_capacity(ENC_LEN + sealed.len());
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] made for the public half of `private`, under the same `aad`.
pub(crate) fn open(
    private: &PrivateKey,
    info: &[u8],
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, BackendError> {
    if wrapped.len() < ENC_LEN + TAG_LEN {
        return Err(BackendError::invalid_input(format!(
            "escrow wrap is {} bytes, shorter than suite byte, encapsulated key and tag ({})",
            1 + wrapped.len(),
            1 + ENC_LEN + TAG_LEN
        )));
    }
    let (enc, sealed) = wrapped.split_at(ENC_LEN);
    let enc = EncappedKey::from_bytes(enc)
        .map_err(|_| BackendError::invalid_input("escrow wrap: malformed encapsulated key"))?;
    hpke::single_shot_open::<Aead, Kdf, Kem>(&OpModeR::Base, private, &enc, info, sealed, aad)
        .map(SecretBytes::new)
        .map_err(|_| {
            BackendError::wrong_key(
                "escrow wrap authentication failed: another escrow key or context, or tampered",
            )
        })
}

/// The public half of `private`.
pub(crate) fn public_of(private: &PrivateKey) -> PublicKey {
    <Kem as hpke::Kem>::sk_to_pk(private)
}

/// A fresh key pair from the operating system's random source.
pub(crate) fn generate() -> (PrivateKey, PublicKey) {
    <Kem as hpke::Kem>::gen_keypair()
}
