use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

const BOTH: [Kem; 2] = [Kem::MlKem1024, Kem::XWing];

/// A key pair as a default build writes it (X-Wing keys exist in FIPS builds' tests too).
fn pair(dir: &Path, kem: Kem) -> (PathBuf, PathBuf, KeyVersion) {
    let (public, private) = (
        dir.join(format!("{kem}.pub")),
        dir.join(format!("{kem}.key")),
    );
    let v = write_key_pair(&public, &private, kem, false).unwrap();
    (public, private, v)
}

#[test]
fn generated_pair_reads_back_with_matching_fingerprint() {
    for kem in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (public, private, v) = pair(dir.path(), kem);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&public), 0o644);
        let pk = read_public_key_file(&public, false).unwrap();
        let sk = read_private_key_file(&private, false).unwrap();
        assert_eq!((pk.kem(), sk.kem()), (kem, kem));
        assert_eq!(fingerprint(&pk.to_bytes()), v);
        assert_eq!(fingerprint(&sk.public_bytes()), v);
        assert!(v.as_str().starts_with("escrow:") && v.as_str().len() == 7 + 16);
        let text = fs::read_to_string(&public).unwrap();
        assert!(text.contains(v.as_str()), "{text}");
        assert!(text.contains(kem.suite_name()), "{text}");
    }
}

#[test]
fn key_files_name_their_suite_in_the_label() {
    let dir = tempfile::tempdir().unwrap();
    let (public, private, _) = pair(dir.path(), Kem::MlKem1024);
    let text = fs::read_to_string(&public).unwrap();
    assert!(text.contains("-----BEGIN POLYKMS ESCROW MLKEM1024 PUBLIC KEY-----"));
    let pk = read_public_key_file(&public, false).unwrap();
    assert_eq!(pk.to_bytes().len(), mlkem::PUBLIC_KEY_LEN);
    let text = fs::read_to_string(&private).unwrap();
    assert!(text.contains("-----BEGIN POLYKMS ESCROW MLKEM1024 PRIVATE KEY-----"));
    let (public, _, _) = pair(dir.path(), Kem::XWing);
    let text = fs::read_to_string(&public).unwrap();
    assert!(text.contains("-----BEGIN POLYKMS ESCROW XWING PUBLIC KEY-----"));
}

/// An X-Wing pair as the first escrow release wrote it: it must keep loading, byte for byte.
#[test]
fn an_x_wing_key_file_of_the_first_format_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = xwing::generate();
    let public_path = dir.path().join("old.pub");
    let private_path = dir.path().join("old.key");
    fs::write(
        &public_path,
        armor_text(
            "POLYKMS ESCROW XWING PUBLIC KEY",
            "# polykms escrow public key: X-Wing (ML-KEM-768 + X25519) for HPKE\n",
            &public.to_bytes(),
        ),
    )
    .unwrap();
    fs::write(
        &private_path,
        armor_text(
            "POLYKMS ESCROW XWING PRIVATE KEY",
            "# polykms escrow PRIVATE key: keep it offline\n",
            &private.to_bytes(),
        ),
    )
    .unwrap();
    fs::set_permissions(&private_path, fs::Permissions::from_mode(0o600)).unwrap();
    let pk = read_public_key_file(&public_path, false).unwrap();
    let sk = read_private_key_file(&private_path, false).unwrap();
    assert_eq!(pk.kem(), Kem::XWing);
    assert_eq!(pk.to_bytes(), public.to_bytes().to_vec());
    assert_eq!(sk.public_bytes(), pk.to_bytes());
}

#[test]
fn fingerprint_is_sha256_of_the_public_key_bytes() {
    // SHA-256("abc") (FIPS 180-2, B.1) starts ba7816bf8f01cfea.
    assert_eq!(fingerprint(b"abc").as_str(), "escrow:ba7816bf8f01cfea");
}

#[test]
fn a_fips_build_refuses_x_wing_key_files_naming_the_file_and_the_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let (public, private, _) = pair(dir.path(), Kem::XWing);
    for (half, err) in [
        ("public", read_public_key_file(&public, true).err()),
        ("private", read_private_key_file(&private, true).err()),
    ] {
        let err = err.expect("refused in a FIPS build");
        let msg = err.message();
        let path = if half == "public" { &public } else { &private };
        assert!(
            msg.starts_with(&format!("escrow {half} key file {}", path.display())),
            "{msg}"
        );
        assert!(msg.contains("X25519 and ChaCha20-Poly1305"), "{msg}");
        assert!(msg.contains("not FIPS-approved"), "{msg}");
        assert!(
            msg.contains("polykms escrow keygen --kem ml-kem-1024"),
            "{msg}"
        );
    }
    // The default build reads them, and a FIPS build reads ML-KEM-1024 keys.
    assert!(read_public_key_file(&public, false).is_ok());
    assert!(read_private_key_file(&private, false).is_ok());
    let (public, private, _) = pair(dir.path(), Kem::MlKem1024);
    assert!(read_public_key_file(&public, true).is_ok());
    assert!(read_private_key_file(&private, true).is_ok());
}

#[test]
fn a_fips_build_refuses_to_make_x_wing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (public, private) = (dir.path().join("x.pub"), dir.path().join("x.key"));
    let err = write_key_pair(&public, &private, Kem::XWing, true).unwrap_err();
    assert!(err.message().contains("not FIPS-approved"), "{err}");
    assert!(!public.exists() && !private.exists());
    write_key_pair(&public, &private, Kem::MlKem1024, true).unwrap();
}

#[test]
fn a_damaged_ml_kem_private_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, private, _) = pair(dir.path(), Kem::MlKem1024);
    let raw = read_private_file(&private, "test").unwrap();
    let (_, mut bytes) = decode_armor(&raw, Half::Private).unwrap();
    // A bit in the secret polynomial part, then one in the embedded public key.
    for i in [100, 2000] {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x04;
        let msg = mlkem::PrivateKey::from_bytes(&damaged)
            .err()
            .expect("refused");
        assert!(msg.contains("ML-KEM-1024"), "{msg}");
    }
    bytes.truncate(100);
    assert!(mlkem::PrivateKey::from_bytes(&bytes).is_err());
}

#[test]
fn keygen_never_overwrites_either_file() {
    let dir = tempfile::tempdir().unwrap();
    let (public, private, _) = pair(dir.path(), Kem::MlKem1024);
    let before = (fs::read(&public).unwrap(), fs::read(&private).unwrap());
    let fresh = dir.path().join("new.key");
    let err = write_key_pair(&public, &fresh, Kem::MlKem1024, false).unwrap_err();
    assert!(err.message().contains("exists"), "{err}");
    assert!(!fresh.exists(), "no private key is left behind");
    let err = write_key_pair(&dir.path().join("new.pub"), &private, Kem::XWing, false).unwrap_err();
    assert!(err.message().contains("exists"), "{err}");
    assert_eq!(
        before,
        (fs::read(&public).unwrap(), fs::read(&private).unwrap())
    );
}

#[test]
fn group_readable_private_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, private, _) = pair(dir.path(), Kem::MlKem1024);
    fs::set_permissions(&private, fs::Permissions::from_mode(0o640)).unwrap();
    let err = read_private_key_file(&private, false)
        .err()
        .expect("refused");
    assert!(err.message().contains("chmod 600"), "{err}");
}

#[test]
fn keys_of_the_wrong_kind_are_refused_naming_the_file() {
    for kem in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let (public, private, _) = pair(dir.path(), kem);
        // The private key given as the public key, and the reverse.
        let err = read_public_key_file(&private, false)
            .err()
            .expect("refused");
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
        let err = read_private_key_file(&swapped, false)
            .err()
            .expect("refused");
        assert!(
            err.message().contains("public key, not the private key"),
            "{err}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let rsa = dir.path().join("rsa.pem");
    fs::write(
        &rsa,
        "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let err = read_public_key_file(&rsa, false).err().expect("refused");
    assert!(
        err.message().contains("holds a 'PUBLIC KEY' block"),
        "{err}"
    );

    let raw = dir.path().join("raw.bin");
    fs::write(&raw, [0xffu8, 0xfe, 0x00, 0x80]).unwrap();
    let err = read_public_key_file(&raw, false).err().expect("refused");
    assert!(err.message().contains("binary content"), "{err}");
}

#[test]
fn a_public_key_of_the_wrong_length_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (label, len) in [
        ("POLYKMS ESCROW XWING PUBLIC KEY", "1216"),
        ("POLYKMS ESCROW MLKEM1024 PUBLIC KEY", "1568"),
    ] {
        let short = dir.path().join("short.pub");
        fs::write(&short, armor_text(label, "", &[7u8; 800])).unwrap();
        let err = read_public_key_file(&short, false).err().expect("refused");
        assert!(err.message().contains("holds 800 bytes"), "{err}");
        assert!(err.message().contains(len), "{err}");
    }
    assert!(read_public_key_file(&dir.path().join("absent.pub"), false).is_err());
}

#[test]
fn truncated_or_trailing_armor_is_refused() {
    let label = "POLYKMS ESCROW MLKEM1024 PUBLIC KEY";
    let good = armor_text(label, "# c\n", &[1u8; mlkem::PUBLIC_KEY_LEN]);
    let cut = good.replace(&format!("-----END {label}-----\n"), "");
    assert!(
        decode_armor(cut.as_bytes(), Half::Public)
            .err()
            .expect("refused")
            .contains("no '-----END")
    );
    let trailing = format!("{good}extra\n");
    assert!(
        decode_armor(trailing.as_bytes(), Half::Public)
            .err()
            .expect("refused")
            .contains("after")
    );
    let (armor, bytes) = decode_armor(good.as_bytes(), Half::Public).unwrap();
    assert_eq!(
        (armor.kem, bytes.len()),
        (Kem::MlKem1024, mlkem::PUBLIC_KEY_LEN)
    );
}
