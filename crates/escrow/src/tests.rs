use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use polykms_backend::ErrorKind;

use super::*;

struct Keys {
    _dir: tempfile::TempDir,
    public: PathBuf,
    private: PathBuf,
}

const BOTH: [Kem; 2] = [Kem::MlKem1024, Kem::XWing];

/// A key pair of `kem`, written as a default build does (X-Wing keys in FIPS builds' tests too).
fn keys_of(kem: Kem) -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (public, private) = (dir.path().join("e.pub"), dir.path().join("e.key"));
    keyfile::write_key_pair(&public, &private, kem, false).unwrap();
    Keys {
        _dir: dir,
        public,
        private,
    }
}

fn keys() -> Keys {
    keys_of(Kem::XWing)
}

fn config(public: &Path, private: Option<&Path>) -> EscrowConfig {
    EscrowConfig {
        public_key_file: public.to_path_buf(),
        private_key_file: private.map(Path::to_path_buf),
    }
}

/// The backend as a default build loads it.
fn backend(public: &Path, private: Option<&Path>) -> Result<EscrowBackend, BackendError> {
    EscrowBackend::load(&config(public, private), false)
}

#[tokio::test]
async fn with_the_private_key_wraps_round_trip() {
    // Larger than the whole 1024-byte ciphertext bound: they live in an annotation.
    for (kem, len) in [
        (Kem::XWing, 1 + 1120 + 32 + 16),
        (Kem::MlKem1024, 1 + 1568 + 12 + 32 + 16),
    ] {
        let k = keys_of(kem);
        let b = backend(&k.public, Some(&k.private)).unwrap();
        assert!(b.can_unwrap() && b.has_private_key());
        assert_eq!(b.kem(), kem);
        let seed = SecretBytes::copy_from(&[42u8; 32]);
        let w = b.wrap(&seed, b"ctx").await.unwrap();
        assert_eq!(w.key_version, b.key_version().await.unwrap());
        assert_eq!(w.ciphertext.len(), len, "{kem}");
        assert_eq!(b.unwrap(&w, b"ctx").await.unwrap(), seed);
        // Two wraps of one seed share nothing: a fresh encapsulation each time.
        let again = b.wrap(&seed, b"ctx").await.unwrap();
        assert_ne!(again.ciphertext, w.ciphertext);
    }
}

#[tokio::test]
async fn ml_kem_wrap_refuses_every_flipped_bit() {
    let k = keys_of(Kem::MlKem1024);
    let b = backend(&k.public, Some(&k.private)).unwrap();
    let w = b
        .wrap(&SecretBytes::copy_from(&[9u8; 32]), b"ctx")
        .await
        .unwrap();
    // Every bit after the suite byte: ML-KEM ciphertext, nonce, AES-GCM ciphertext and tag.
    for i in 1..w.ciphertext.len() {
        for bit in 0..8 {
            let mut bad = w.clone();
            bad.ciphertext[i] ^= 1 << bit;
            let err = b.unwrap(&bad, b"ctx").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WrongKey, "byte {i} bit {bit}: {err}");
        }
    }
    // The suite byte: another suite's, or none known.
    for suite in [0u8, 1, 3, 0xff] {
        let mut bad = w.clone();
        bad.ciphertext[0] = suite;
        let err = b.unwrap(&bad, b"ctx").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "suite {suite}");
    }
    for len in [0, 1, 1568, 1 + 1568 + 12 + 15] {
        let mut short = w.clone();
        short.ciphertext.truncate(len);
        assert_eq!(
            b.unwrap(&short, b"ctx").await.unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "length {len}"
        );
    }
}

#[test]
fn a_fips_build_refuses_x_wing_escrow_keys_at_load_naming_the_file() {
    let k = keys_of(Kem::XWing);
    for private in [None, Some(k.private.as_path())] {
        let err = EscrowBackend::load(&config(&k.public, private), true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.message();
        assert!(
            msg.starts_with("public_key_file: escrow public key file"),
            "{msg}"
        );
        assert!(msg.contains(&k.public.display().to_string()), "{msg}");
        assert!(msg.contains("X25519 and ChaCha20-Poly1305"), "{msg}");
        assert!(
            msg.contains("polykms escrow keygen --kem ml-kem-1024"),
            "{msg}"
        );
    }
    // An ML-KEM-1024 public key with an X-Wing private key: the private key is named.
    let m = keys_of(Kem::MlKem1024);
    let err = EscrowBackend::load(&config(&m.public, Some(&k.private)), true).unwrap_err();
    assert!(
        err.message()
            .starts_with("private_key_file: escrow private key file"),
        "{err}"
    );
    assert!(
        err.message().contains(&k.private.display().to_string()),
        "{err}"
    );
    // The same files load in a default build; ML-KEM-1024 keys load in both.
    assert!(EscrowBackend::load(&config(&k.public, Some(&k.private)), false).is_ok());
    assert!(EscrowBackend::load(&config(&m.public, Some(&m.private)), true).is_ok());
}

#[test]
fn keygen_defaults_to_x_wing_by_default_and_ml_kem_in_fips_builds() {
    assert_eq!(Kem::default_for(false), Kem::XWing);
    assert_eq!(Kem::default_for(true), Kem::MlKem1024);
    assert!(Kem::XWing.allowed(false).is_ok());
    assert!(Kem::XWing.allowed(true).is_err());
    assert!(Kem::MlKem1024.allowed(true).is_ok());
    for kem in BOTH {
        assert_eq!(kem.to_string().parse::<Kem>(), Ok(kem));
    }
    assert!("x25519".parse::<Kem>().is_err());
}

#[tokio::test]
async fn keys_of_different_suites_are_told_apart() {
    let (x, m) = (keys_of(Kem::XWing), keys_of(Kem::MlKem1024));
    // A private key of the other suite is another key pair: refused by fingerprint at load.
    let err = backend(&m.public, Some(&x.private)).unwrap_err();
    assert!(
        err.message().contains("is the private key of escrow:"),
        "{err}"
    );
    let bx = backend(&x.public, Some(&x.private)).unwrap();
    let bm = backend(&m.public, Some(&m.private)).unwrap();
    let w = bx
        .wrap(&SecretBytes::copy_from(&[1u8; 32]), b"ctx")
        .await
        .unwrap();
    let relabelled = WrappedKey::new(bm.key_version().await.unwrap(), w.ciphertext);
    assert_eq!(
        bm.unwrap(&relabelled, b"ctx").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn without_the_private_key_it_wraps_but_cannot_unwrap() {
    let k = keys();
    let wrap_only = backend(&k.public, None).unwrap();
    assert!(!wrap_only.can_unwrap());
    let seed = SecretBytes::copy_from(&[5u8; 32]);
    let w = wrap_only.wrap(&seed, b"ctx").await.unwrap();
    let err = wrap_only.unwrap(&w, b"ctx").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyUnavailable);
    assert!(err.message().contains("private_key_file"), "{err}");
    // Recovery: the same public key plus its private key opens what the node wrapped.
    let recovery = backend(&k.public, Some(&k.private)).unwrap();
    assert_eq!(recovery.unwrap(&w, b"ctx").await.unwrap(), seed);
}

#[tokio::test]
async fn adding_the_private_key_keeps_the_key_version() {
    let k = keys();
    let a = backend(&k.public, None).unwrap();
    let b = backend(&k.public, Some(&k.private)).unwrap();
    assert_eq!(
        a.key_version().await.unwrap(),
        b.key_version().await.unwrap()
    );
    let other = keys();
    let c = backend(&other.public, None).unwrap();
    assert_ne!(
        a.key_version().await.unwrap(),
        c.key_version().await.unwrap()
    );
}

#[tokio::test]
async fn unwrap_refuses_another_aad() {
    for kem in BOTH {
        let k = keys_of(kem);
        let b = backend(&k.public, Some(&k.private)).unwrap();
        let w = b
            .wrap(&SecretBytes::copy_from(&[1u8; 32]), b"polykms:a")
            .await
            .unwrap();
        let err = b.unwrap(&w, b"polykms:b").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongKey);
    }
}

#[tokio::test]
async fn unwrap_refuses_every_tampered_byte_region() {
    let k = keys();
    let b = backend(&k.public, Some(&k.private)).unwrap();
    let w = b
        .wrap(&SecretBytes::copy_from(&[3u8; 32]), b"ctx")
        .await
        .unwrap();
    // Bytes in the encapsulated key (ML-KEM part, X25519 part), the ciphertext and the tag.
    for i in [1, 500, 1088, 1100, 1120, 1121, 1140, w.ciphertext.len() - 1] {
        let mut bad = w.clone();
        bad.ciphertext[i] ^= 0x01;
        let err = b.unwrap(&bad, b"ctx").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WrongKey, "byte {i}: {err}");
    }
    let mut bad = w.clone();
    bad.ciphertext[0] = 2;
    assert_eq!(
        b.unwrap(&bad, b"ctx").await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    for len in [0, 1, 1136] {
        let mut short = w.clone();
        short.ciphertext.truncate(len);
        assert_eq!(
            b.unwrap(&short, b"ctx").await.unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "length {len}"
        );
    }
}

#[tokio::test]
async fn another_escrow_key_pair_cannot_open_the_wrap() {
    for kem in BOTH {
        let (k1, k2) = (keys_of(kem), keys_of(kem));
        let b1 = backend(&k1.public, Some(&k1.private)).unwrap();
        let b2 = backend(&k2.public, Some(&k2.private)).unwrap();
        let w = b1
            .wrap(&SecretBytes::copy_from(&[8u8; 32]), b"ctx")
            .await
            .unwrap();
        // Under its own version it is another key's wrap.
        assert_eq!(
            b2.unwrap(&w, b"ctx").await.unwrap_err().kind(),
            ErrorKind::KeyUnavailable
        );
        // Relabelled with b2's version, b2's private key still cannot open it.
        let relabelled = WrappedKey::new(b2.key_version().await.unwrap(), w.ciphertext);
        assert_eq!(
            b2.unwrap(&relabelled, b"ctx").await.unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }
}

#[test]
fn a_private_key_of_another_pair_is_refused_at_load_by_fingerprint() {
    for kem in BOTH {
        let (k1, k2) = (keys_of(kem), keys_of(kem));
        let err = backend(&k1.public, Some(&k2.private)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let msg = err.message();
        assert!(msg.starts_with("private_key_file:"), "{msg}");
        assert!(msg.contains("is the private key of escrow:"), "{msg}");
        assert!(msg.contains(&k1.public.display().to_string()), "{msg}");
    }
}

#[test]
fn a_group_readable_private_key_is_refused_at_load() {
    let k = keys();
    fs::set_permissions(&k.private, fs::Permissions::from_mode(0o644)).unwrap();
    let err = backend(&k.public, Some(&k.private)).unwrap_err();
    assert!(err.message().contains("chmod 600"), "{err}");
}

#[test]
fn a_missing_public_key_names_the_setting() {
    let k = keys();
    let err = backend(&k.public.with_extension("absent"), None).unwrap_err();
    assert!(err.message().starts_with("public_key_file:"), "{err}");
}

#[test]
fn debug_and_describe_show_no_key_material() {
    let k = keys();
    let b = backend(&k.public, Some(&k.private)).unwrap();
    let key_text = fs::read_to_string(&k.private).unwrap();
    let secret_line = key_text
        .lines()
        .find(|l| !l.starts_with('#') && !l.starts_with("-----"))
        .unwrap();
    for shown in [format!("{b:?}"), b.describe()] {
        assert!(!shown.contains(secret_line), "{shown}");
    }
    assert!(b.describe().contains("recovery mode"));
    assert!(
        backend(&k.public, None)
            .unwrap()
            .describe()
            .contains("wrap-only")
    );
}

#[test]
fn config_lists_both_key_files_for_reload_and_path_resolution() {
    use polykms_backend::ConfigFiles;
    let mut c = EscrowConfig {
        public_key_file: "e.pub".into(),
        private_key_file: Some("e.key".into()),
    };
    assert_eq!(c.file_paths_mut().len(), 2);
    c.private_key_file = None;
    assert_eq!(c.file_paths_mut().len(), 1);
}
