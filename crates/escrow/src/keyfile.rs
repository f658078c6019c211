//! Escrow key files: a versioned, PEM-like text armor, so that a key can be printed and kept
//! on paper or in a vault entry as well as on a disk.
//!
//! ```text
//! # polykms escrow public key: X-Wing (ML-KEM-768 + X25519) for HPKE
//! # fingerprint escrow:0123456789abcdef
//! -----BEGIN POLYKMS ESCROW XWING PUBLIC KEY-----
//! <base64 of the 1216-byte X-Wing encapsulation key, 64 columns>
//! -----END POLYKMS ESCROW XWING PUBLIC KEY-----
//! ```
//!
//! The private key file has the label `POLYKMS ESCROW XWING PRIVATE KEY` and holds the 32-byte
//! X-Wing decapsulation key (its seed form). Lines starting with `#` before BEGIN are comments.
//! The label names the key type and format version: another suite gets another label.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hpke::{Deserializable, Serializable};
use polykms_backend::{BackendError, KeyVersion, read_private_file};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::suite::{self, PRIVATE_KEY_LEN, PUBLIC_KEY_LEN, PrivateKey, PublicKey};

const PUBLIC_LABEL: &str = "POLYKMS ESCROW XWING PUBLIC KEY";
const PRIVATE_LABEL: &str = "POLYKMS ESCROW XWING PRIVATE KEY";

/// `escrow:` + the first 16 hex characters of the SHA-256 of the public key bytes: the key
/// version of every wrap under this key, shown by keygen, `check` and in envelopes.
pub fn fingerprint(public: &PublicKey) -> KeyVersion {
    let digest = Sha256::digest(public.to_bytes());
    KeyVersion::new(format!("escrow:{}", hex::encode(&digest[..8])))
}

/// Reads an escrow public key file. A file of another kind (a private key, a PEM block of
/// another type, raw bytes) or of the wrong length is refused, naming the file.
pub fn read_public_key_file(path: &Path) -> Result<PublicKey, BackendError> {
    let shown = path.display();
    let raw = fs::read(path)
        .map_err(|e| BackendError::config(format!("escrow public key file {shown}: {e}")))?;
    let bytes = decode_armor(&raw, PUBLIC_LABEL, PUBLIC_KEY_LEN)
        .map_err(|m| BackendError::config(format!("escrow public key file {shown}: {m}")))?;
    PublicKey::from_bytes(&bytes).map_err(|_| {
        BackendError::config(format!(
            "escrow public key file {shown}: not a valid X-Wing public key"
        ))
    })
}

/// Reads an escrow private key file: owner-only (like local key files), zeroized after use.
pub fn read_private_key_file(path: &Path) -> Result<PrivateKey, BackendError> {
    let shown = path.display();
    let raw = read_private_file(path, "escrow private key file")?;
    let bytes = decode_armor(&raw, PRIVATE_LABEL, PRIVATE_KEY_LEN)
        .map_err(|m| BackendError::config(format!("escrow private key file {shown}: {m}")))?;
    PrivateKey::from_bytes(&bytes).map_err(|_| {
        BackendError::config(format!(
            "escrow private key file {shown}: not a valid X-Wing private key"
        ))
    })
}

/// Writes a fresh key pair: the private key with mode 0600, then the public key (0644).
/// Never overwrites: an existing file at either path is an error and nothing is written.
/// Returns the public key's fingerprint.
pub fn generate_key_pair(
    public_out: &Path,
    private_out: &Path,
) -> Result<KeyVersion, BackendError> {
    for (path, what) in [(public_out, "public"), (private_out, "private")] {
        if path.symlink_metadata().is_ok() {
            return Err(BackendError::config(format!(
                "escrow {what} key file {}: exists; keygen never overwrites a key",
                path.display()
            )));
        }
    }
    let (private, public) = suite::generate();
    let version = fingerprint(&public);
    let mut secret = private.to_bytes();
    let private_text = Zeroizing::new(armor(
        PRIVATE_LABEL,
        &format!(
            "# polykms escrow PRIVATE key: keep it offline; it opens every escrow wrap made \
             under {version}\n"
        ),
        &secret,
    ));
    secret.as_mut_slice().zeroize();
    let public_text = armor(
        PUBLIC_LABEL,
        &format!(
            "# polykms escrow public key: X-Wing (ML-KEM-768 + X25519) for HPKE\n\
             # fingerprint {version}\n"
        ),
        &public.to_bytes(),
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

fn armor(label: &str, comment: &str, bytes: &[u8]) -> String {
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

/// The bytes inside the `label` block of `raw`, exactly `len` of them. Errors say what the
/// file holds instead, never its content.
fn decode_armor(raw: &[u8], label: &str, len: usize) -> Result<Zeroizing<Vec<u8>>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| {
        format!(
            "not a polykms escrow key file (binary content, {} bytes); expected a \
             '-----BEGIN {label}-----' block made by `polykms escrow keygen`",
            raw.len()
        )
    })?;
    let mut lines = text.lines().map(str::trim);
    let begin = lines
        .by_ref()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("empty; expected a '-----BEGIN {label}-----' block"))?;
    let found = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|rest| rest.strip_suffix("-----"))
        .ok_or_else(|| {
            format!(
                "not a polykms escrow key file: expected a '-----BEGIN {label}-----' line made \
                 by `polykms escrow keygen`"
            )
        })?;
    if found != label {
        let hint = match found {
            PRIVATE_LABEL => " (this is the escrow private key, not the public key)",
            PUBLIC_LABEL => " (this is the escrow public key, not the private key)",
            _ => "",
        };
        return Err(format!("holds a '{found}' block, expected '{label}'{hint}"));
    }
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
    if bytes.len() != len {
        return Err(format!(
            "the '{label}' block holds {} bytes; an X-Wing key of this kind is {len} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pair(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, KeyVersion) {
        let (public, private) = (dir.join("escrow.pub"), dir.join("escrow.key"));
        let v = generate_key_pair(&public, &private).unwrap();
        (public, private, v)
    }

    #[test]
    fn generated_pair_reads_back_with_matching_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (public, private, v) = pair(dir.path());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&public), 0o644);
        let pk = read_public_key_file(&public).unwrap();
        let sk = read_private_key_file(&private).unwrap();
        assert_eq!(fingerprint(&pk), v);
        assert_eq!(fingerprint(&suite::public_of(&sk)), v);
        assert!(v.as_str().starts_with("escrow:") && v.as_str().len() == 7 + 16);
        assert!(fs::read_to_string(&public).unwrap().contains(v.as_str()));
    }

    #[test]
    fn fingerprint_is_sha256_of_the_public_key_bytes() {
        let (_, pk) = suite::generate();
        let digest = Sha256::digest(pk.to_bytes());
        assert_eq!(
            fingerprint(&pk).as_str(),
            format!("escrow:{}", hex::encode(&digest[..8]))
        );
    }

    #[test]
    fn keygen_never_overwrites_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let (public, private, _) = pair(dir.path());
        let before = (fs::read(&public).unwrap(), fs::read(&private).unwrap());
        let fresh = dir.path().join("new.key");
        let err = generate_key_pair(&public, &fresh).unwrap_err();
        assert!(err.message().contains("exists"), "{err}");
        assert!(!fresh.exists(), "no private key is left behind");
        let err = generate_key_pair(&dir.path().join("new.pub"), &private).unwrap_err();
        assert!(err.message().contains("exists"), "{err}");
        assert_eq!(
            before,
            (fs::read(&public).unwrap(), fs::read(&private).unwrap())
        );
    }

    #[test]
    fn group_readable_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, private, _) = pair(dir.path());
        fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private_key_file(&private).err().expect("refused");
        assert!(err.message().contains("chmod 600"), "{err}");
    }

    #[test]
    fn keys_of_the_wrong_kind_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (public, private, _) = pair(dir.path());
        // The private key given as the public key, and the reverse.
        let err = read_public_key_file(&private).unwrap_err();
        assert!(
            err.message().contains("private key, not the public key"),
            "{err}"
        );
        assert!(
            err.message().contains(&private.display().to_string()),
            "{err}"
        );
        let swapped = dir.path().join("swapped.key");
        fs::copy(&public, &swapped).unwrap();
        fs::set_permissions(&swapped, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_private_key_file(&swapped).err().expect("refused");
        assert!(
            err.message().contains("public key, not the private key"),
            "{err}"
        );

        let rsa = dir.path().join("rsa.pem");
        fs::write(
            &rsa,
            "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let err = read_public_key_file(&rsa).unwrap_err();
        assert!(
            err.message().contains("holds a 'PUBLIC KEY' block"),
            "{err}"
        );

        let raw = dir.path().join("raw.bin");
        fs::write(&raw, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
        let err = read_public_key_file(&raw).unwrap_err();
        assert!(err.message().contains("binary content"), "{err}");
    }

    #[test]
    fn a_public_key_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.pub");
        fs::write(&short, armor(PUBLIC_LABEL, "", &[7u8; 800])).unwrap();
        let err = read_public_key_file(&short).unwrap_err();
        assert!(err.message().contains("holds 800 bytes"), "{err}");
        assert!(err.message().contains("1216"), "{err}");
        assert!(read_public_key_file(&dir.path().join("absent.pub")).is_err());
    }

    #[test]
    fn truncated_or_trailing_armor_is_refused() {
        let good = armor(PUBLIC_LABEL, "# c\n", &[1u8; PUBLIC_KEY_LEN]);
        let cut = good.replace(&format!("-----END {PUBLIC_LABEL}-----\n"), "");
        assert!(
            decode_armor(cut.as_bytes(), PUBLIC_LABEL, PUBLIC_KEY_LEN)
                .unwrap_err()
                .contains("no '-----END")
        );
        let trailing = format!("{good}extra\n");
        assert!(
            decode_armor(trailing.as_bytes(), PUBLIC_LABEL, PUBLIC_KEY_LEN)
                .unwrap_err()
                .contains("after")
        );
        assert_eq!(
            decode_armor(good.as_bytes(), PUBLIC_LABEL, PUBLIC_KEY_LEN)
                .unwrap()
                .len(),
            PUBLIC_KEY_LEN
        );
    }
}
