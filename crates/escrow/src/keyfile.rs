//! Escrow key files: a versioned, PEM-like text armor, so that a key can be printed and kept
//! on paper or in a vault entry as well as on a disk.
//!
//! ```text
//! # polykms escrow public key: ML-KEM-1024 for HPKE (ML-KEM-1024, HKDF-SHA256, AES-256-GCM)
//! # fingerprint escrow:0123456789abcdef
//! -----BEGIN POLYKMS ESCROW MLKEM1024 PUBLIC KEY-----
//! <base64 of the 1568-byte ML-KEM-1024 encapsulation key, 64 columns>
//! -----END POLYKMS ESCROW MLKEM1024 PUBLIC KEY-----
//! ```
//!
//! The label names the suite and format version, so a file says which suite it is for:
//!
//! | label | holds |
//! |---|---|
//! | `POLYKMS ESCROW MLKEM1024 PUBLIC KEY` | the 1568-byte ML-KEM-1024 encapsulation key |
//! | `POLYKMS ESCROW MLKEM1024 PRIVATE KEY` | the 3168-byte expanded decapsulation key |
//! | `POLYKMS ESCROW XWING PUBLIC KEY` | the 1216-byte X-Wing encapsulation key |
//! | `POLYKMS ESCROW XWING PRIVATE KEY` | the 32-byte X-Wing decapsulation key (seed) |
//!
//! Lines starting with `#` before BEGIN are comments. Files written before ML-KEM-1024 keys
//! existed (X-Wing) read unchanged.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hpke::{Deserializable, Serializable};
use polykms_backend::crypto::{FIPS_BUILD, sha256};
use polykms_backend::{BackendError, KeyVersion, read_private_file};
use zeroize::{Zeroize, Zeroizing};

use crate::suite::{Kem, PrivateKey, PublicKey};
use crate::{mlkem, xwing};

/// The armor of one suite's key files.
struct Armor {
    kem: Kem,
    public_label: &'static str,
    private_label: &'static str,
    public_len: usize,
    private_len: usize,
    /// How the suite is named in key file comments and errors.
    name: &'static str,
}

const ARMORS: [Armor; 2] = [
    Armor {
        kem: Kem::MlKem1024,
        public_label: "POLYKMS ESCROW MLKEM1024 PUBLIC KEY",
        private_label: "POLYKMS ESCROW MLKEM1024 PRIVATE KEY",
        public_len: mlkem::PUBLIC_KEY_LEN,
        private_len: mlkem::PRIVATE_KEY_LEN,
        name: "ML-KEM-1024",
    },
    Armor {
        kem: Kem::XWing,
        public_label: "POLYKMS ESCROW XWING PUBLIC KEY",
        private_label: "POLYKMS ESCROW XWING PRIVATE KEY",
        public_len: xwing::PUBLIC_KEY_LEN,
        private_len: xwing::PRIVATE_KEY_LEN,
        name: "X-Wing",
    },
];

fn armor_of(kem: Kem) -> &'static Armor {
    ARMORS
        .iter()
        .find(|a| a.kem == kem)
        .expect("every Kem has an armor")
}

/// Which half of a key pair a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Half {
    Public,
    Private,
}

impl Half {
    fn label(self, armor: &Armor) -> &'static str {
        match self {
            Half::Public => armor.public_label,
            Half::Private => armor.private_label,
        }
    }

    fn len(self, armor: &Armor) -> usize {
        match self {
            Half::Public => armor.public_len,
            Half::Private => armor.private_len,
        }
    }
}

impl std::fmt::Display for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Half::Public => "public",
            Half::Private => "private",
        })
    }
}

/// `escrow:` + the first 16 hex characters of the SHA-256 of the public key bytes: the key
/// version of every wrap under this key, shown by keygen, `check` and in envelopes.
pub(crate) fn fingerprint(public_key_bytes: &[u8]) -> KeyVersion {
    let digest = sha256(public_key_bytes);
    KeyVersion::new(format!("escrow:{}", hex::encode(&digest[..8])))
}

/// Refuses, naming the file, a key whose suite a FIPS build (`fips`) may not use.
fn check_allowed(
    kem: Kem,
    fips: bool,
    half: Half,
    shown: &dyn std::fmt::Display,
) -> Result<(), BackendError> {
    kem.allowed(fips)
        .map_err(|why| BackendError::config(format!("escrow {half} key file {shown}: {why}")))
}

/// Reads an escrow public key file of either suite. A file of another kind (a private key, a
/// PEM block of another type, raw bytes), of the wrong length, or (when `fips`) of a suite
/// that is not FIPS-approved is refused, naming the file.
pub(crate) fn read_public_key_file(path: &Path, fips: bool) -> Result<PublicKey, BackendError> {
    let shown = path.display();
    let raw = fs::read(path)
        .map_err(|e| BackendError::config(format!("escrow public key file {shown}: {e}")))?;
    let (armor, bytes) = decode_armor(&raw, Half::Public)
        .map_err(|m| BackendError::config(format!("escrow public key file {shown}: {m}")))?;
    check_allowed(armor.kem, fips, Half::Public, &shown)?;
    let invalid = || {
        BackendError::config(format!(
            "escrow public key file {shown}: not a valid {} public key",
            armor.name
        ))
    };
    match armor.kem {
        Kem::XWing => xwing::PublicKey::from_bytes(&bytes)
            .map(PublicKey::XWing)
            .map_err(|_| invalid()),
        Kem::MlKem1024 => mlkem::PublicKey::from_bytes(&bytes)
            .map(PublicKey::MlKem1024)
            .map_err(|_| invalid()),
    }
}

/// Reads an escrow private key file: owner-only (like local key files), zeroized after use;
/// refused like [`read_public_key_file`].
pub(crate) fn read_private_key_file(path: &Path, fips: bool) -> Result<PrivateKey, BackendError> {
    let shown = path.display();
    let raw = read_private_file(path, "escrow private key file")?;
    let (armor, bytes) = decode_armor(&raw, Half::Private)
        .map_err(|m| BackendError::config(format!("escrow private key file {shown}: {m}")))?;
    check_allowed(armor.kem, fips, Half::Private, &shown)?;
    match armor.kem {
        Kem::XWing => xwing::PrivateKey::from_bytes(&bytes)
            .map(PrivateKey::XWing)
            .map_err(|_| {
                BackendError::config(format!(
                    "escrow private key file {shown}: not a valid X-Wing private key"
                ))
            }),
        Kem::MlKem1024 => mlkem::PrivateKey::from_bytes(&bytes)
            .map(PrivateKey::MlKem1024)
            .map_err(|m| BackendError::config(format!("escrow private key file {shown}: {m}"))),
    }
}

/// Writes a fresh key pair of `kem`: the private key with mode 0600, then the public key
/// (0644). Never overwrites: an existing file at either path is an error and nothing is
/// written. A FIPS build refuses a KEM that is not FIPS-approved. Returns the public key's
/// fingerprint.
pub fn generate_key_pair(
    public_out: &Path,
    private_out: &Path,
    kem: Kem,
) -> Result<KeyVersion, BackendError> {
    write_key_pair(public_out, private_out, kem, FIPS_BUILD)
}

/// [`generate_key_pair`] as a build with (`fips`) or without the FIPS module does it.
pub(crate) fn write_key_pair(
    public_out: &Path,
    private_out: &Path,
    kem: Kem,
    fips: bool,
) -> Result<KeyVersion, BackendError> {
    kem.allowed(fips).map_err(BackendError::config)?;
    for (path, what) in [(public_out, "public"), (private_out, "private")] {
        if path.symlink_metadata().is_ok() {
            return Err(BackendError::config(format!(
                "escrow {what} key file {}: exists; keygen never overwrites a key",
                path.display()
            )));
        }
    }
    let (secret, public) = match kem {
        Kem::XWing => {
            let (private, public) = xwing::generate();
            let mut bytes = private.to_bytes();
            let secret = Zeroizing::new(bytes.to_vec());
            bytes.as_mut_slice().zeroize();
            (secret, public.to_bytes().to_vec())
        }
        Kem::MlKem1024 => {
            let (secret, public) = mlkem::generate()?;
            (secret, public.as_bytes().to_vec())
        }
    };
    let armor = armor_of(kem);
    let version = fingerprint(&public);
    let private_text = Zeroizing::new(armor_text(
        armor.private_label,
        &format!(
            "# polykms escrow PRIVATE key ({}): keep it offline; it opens every escrow wrap \
             made under {version}\n",
            armor.name
        ),
        &secret,
    ));
    let public_text = armor_text(
        armor.public_label,
        &format!(
            "# polykms escrow public key: {} for HPKE ({})\n\
             # fingerprint {version}\n",
            armor.name,
            kem.suite_name()
        ),
        &public,
    );
    write_new(private_out, 0o600, private_text.as_bytes(), "private")?;
    if let Err(e) = write_new(public_out, 0o644, public_text.as_bytes(), "public") {
        // The pair is useless without its public half; leave no orphan private key behind.
        let _ = fs::remove_file(private_out);
        return Err(e);
    }
    Ok(version)
}

fn write_new(path: &Path, mode: u32, content: &[u8], what: &str) -> Result<(), BackendError> {
    let shown = path.display();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .map_err(|e| BackendError::config(format!("creating {}: {e}", parent.display())))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| BackendError::config(format!("escrow {what} key file {shown}: {e}")))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(|e| BackendError::config(format!("writing escrow {what} key file {shown}: {e}")))
}

fn armor_text(label: &str, comment: &str, bytes: &[u8]) -> String {
    let encoded = Zeroizing::new(STANDARD.encode(bytes));
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 64 + 200);
    out.push_str(comment);
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in encoded.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The suite and bytes of the escrow key block of `raw`, which must hold the `half` of a key
/// pair, of exactly that suite's length. Errors say what the file holds instead, never its
/// content.
fn decode_armor(raw: &[u8], half: Half) -> Result<(&'static Armor, Zeroizing<Vec<u8>>), String> {
    let expected = || {
        ARMORS
            .iter()
            .map(|a| format!("'-----BEGIN {}-----'", half.label(a)))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let text = std::str::from_utf8(raw).map_err(|_| {
        format!(
            "not a polykms escrow key file (binary content, {} bytes); expected a {} block \
             made by `polykms escrow keygen`",
            raw.len(),
            expected()
        )
    })?;
    let mut lines = text.lines().map(str::trim);
    let begin = lines
        .by_ref()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("empty; expected a {} block", expected()))?;
    let found = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.strip_suffix("-----"))
        .ok_or_else(|| {
            format!(
                "not a polykms escrow key file: expected a {} line made by `polykms escrow \
                 keygen`",
                expected()
            )
        })?;
    let Some(armor) = ARMORS.iter().find(|a| half.label(a) == found) else {
        let other = match half {
            Half::Public => Half::Private,
            Half::Private => Half::Public,
        };
        let hint = if ARMORS.iter().any(|a| other.label(a) == found) {
            format!(" (this is the escrow {other} key, not the {half} key)")
        } else {
            String::new()
        };
        return Err(format!(
            "holds a '{found}' block, expected {}{hint}",
            expected()
        ));
    };
    let label = half.label(armor);
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::new());
    let mut ended = false;
    for line in lines.by_ref() {
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Err(format!("no '{end}' line"));
    }
    if lines.any(|l| !l.is_empty()) {
        return Err(format!("content after the '{end}' line"));
    }
    let bytes = Zeroizing::new(
        STANDARD
            .decode(body.as_bytes())
            .map_err(|_| format!("the '{label}' block is not valid base64"))?,
    );
    let len = half.len(armor);
    if bytes.len() != len {
        return Err(format!(
            "the '{label}' block holds {} bytes; an {} {half} key is {len} bytes",
            bytes.len(),
            armor.name
        ));
    }
    Ok((armor, bytes))
}

#[cfg(test)]
#[path = "keyfile_tests.rs"]
mod tests;
