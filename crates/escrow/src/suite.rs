//! Which HPKE suite an escrow key and its wraps use, and the byte layout of a wrap:
//! `suite byte ‖ enc ‖ AEAD ciphertext ‖ tag`, the suite byte telling the suites apart.
//!
//! | suite | KEM | KDF | AEAD | builds |
//! |---|---|---|---|---|
//! | 1 | X-Wing (ML-KEM-768 + X25519) | HKDF-SHA256 | ChaCha20-Poly1305 | default only |
//! | 2 | ML-KEM-1024 | HKDF-SHA256 | AES-256-GCM | default and FIPS |

use std::fmt;
use std::str::FromStr;

use hpke::Serializable;
use polykms_backend::{BackendError, SecretBytes};

use crate::{mlkem, xwing};

/// HPKE `info`: names what the sealed secret is, so that an HPKE message made for any other
/// purpose under the same key never opens as an escrow wrap (and the reverse).
pub(crate) const INFO: &[u8] = b"polykms escrow wrap v1";

/// The KEM of an escrow key, which fixes the whole suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kem {
    /// ML-KEM-1024 with HKDF-SHA256 and AES-256-GCM: FIPS-approved.
    MlKem1024,
    /// X-Wing (ML-KEM-768 + X25519) with HKDF-SHA256 and ChaCha20-Poly1305: default build only.
    XWing,
}

impl Kem {
    /// The suite byte that starts every wrap made under a key of this KEM.
    fn suite_byte(self) -> u8 {
        match self {
            Kem::XWing => 1,
            Kem::MlKem1024 => 2,
        }
    }

    /// The whole suite, for messages and `describe`.
    pub fn suite_name(self) -> &'static str {
        match self {
            Kem::XWing => "X-Wing (ML-KEM-768 + X25519), HKDF-SHA256, ChaCha20-Poly1305",
            Kem::MlKem1024 => "ML-KEM-1024, HKDF-SHA256, AES-256-GCM",
        }
    }

    /// What `polykms escrow keygen` makes when `--kem` is not given.
    pub fn default_for(fips: bool) -> Kem {
        if fips { Kem::MlKem1024 } else { Kem::XWing }
    }

    /// Refuses a KEM whose suite is not FIPS-approved when `fips` (a FIPS build) is set.
    pub fn allowed(self, fips: bool) -> Result<(), String> {
        match self {
            Kem::XWing if fips => Err(
                "X-Wing escrow keys use X25519 and ChaCha20-Poly1305, which are not \
                 FIPS-approved, and this is a FIPS build; make an ML-KEM-1024 key with \
                 `polykms escrow keygen --kem ml-kem-1024` (wraps made under an X-Wing key \
                 open only in a default build)"
                    .to_string(),
            ),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Kem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kem::MlKem1024 => "ml-kem-1024",
            Kem::XWing => "x-wing",
        })
    }
}

impl FromStr for Kem {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ml-kem-1024" => Ok(Kem::MlKem1024),
            "x-wing" => Ok(Kem::XWing),
            other => Err(format!(
                "unknown escrow KEM '{other}'; expected ml-kem-1024 or x-wing"
            )),
        }
    }
}

/// An escrow public key of either suite.
pub(crate) enum PublicKey {
    XWing(xwing::PublicKey),
    MlKem1024(mlkem::PublicKey),
}

/// An escrow private key of either suite.
pub(crate) enum PrivateKey {
    XWing(xwing::PrivateKey),
    MlKem1024(mlkem::PrivateKey),
}

impl PublicKey {
    pub(crate) fn kem(&self) -> Kem {
        match self {
            PublicKey::XWing(_) => Kem::XWing,
            PublicKey::MlKem1024(_) => Kem::MlKem1024,
        }
    }

    /// The serialized public key: what the fingerprint hashes and the key file holds.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::XWing(k) => k.to_bytes().to_vec(),
            PublicKey::MlKem1024(k) => k.as_bytes().to_vec(),
        }
    }
}

impl PrivateKey {
    pub(crate) fn kem(&self) -> Kem {
        match self {
            PrivateKey::XWing(_) => Kem::XWing,
            PrivateKey::MlKem1024(_) => Kem::MlKem1024,
        }
    }

    /// The serialized public key this private key belongs to.
    pub(crate) fn public_bytes(&self) -> Vec<u8> {
        match self {
            PrivateKey::XWing(k) => xwing::public_of(k).to_bytes().to_vec(),
            PrivateKey::MlKem1024(k) => k.public_bytes().to_vec(),
        }
    }
}

/// Seals `plaintext` to `public`, bound to `aad`: `suite ‖ enc ‖ AEAD ciphertext`.
pub(crate) fn seal(
    public: &PublicKey,
    plaintext: &SecretBytes,
    aad: &[u8],
) -> Result<Vec<u8>, BackendError> {
    let body = match public {
        PublicKey::XWing(k) => xwing::seal(k, INFO, plaintext, aad)?,
        PublicKey::MlKem1024(k) => mlkem::seal(k, INFO, plaintext, aad)?,
    };
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(public.kem().suite_byte());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] made for the public half of `private`, under the same `aad`.
pub(crate) fn open(
    private: &PrivateKey,
    wrapped: &[u8],
    aad: &[u8],
) -> Result<SecretBytes, BackendError> {
    let Some((&suite, rest)) = wrapped.split_first() else {
        return Err(BackendError::invalid_input("escrow wrap is empty"));
    };
    let kem = private.kem();
    if suite != kem.suite_byte() {
        return Err(BackendError::invalid_input(format!(
            "escrow wrap names suite {suite}; the escrow private key is suite {} ({})",
            kem.suite_byte(),
            kem.suite_name()
        )));
    }
    match private {
        PrivateKey::XWing(k) => xwing::open(k, INFO, rest, aad),
        PrivateKey::MlKem1024(k) => mlkem::open(k, INFO, rest, aad),
    }
}
