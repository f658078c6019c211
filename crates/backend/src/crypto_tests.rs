//! Every primitive against its published test vectors (run in the FIPS build too:
//! `cargo test -p polykms-backend --features fips`).

use super::*;
use aws_lc_rs::aead;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sha256_matches_fips_180_examples() {
    assert_eq!(
        sha256(b"abc").to_vec(),
        unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    let mut h = Sha256::new();
    h.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"[..10].as_ref());
    h.update(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"[10..].as_ref());
    assert_eq!(
        h.finish().to_vec(),
        unhex("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    );
}

#[test]
fn hmac_sha256_matches_rfc_4231() {
    // Test case 1.
    let tag = hmac_sha256(&[0x0b; 20], &[b"Hi ", b"There"]);
    assert_eq!(
        tag.to_vec(),
        unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    );
    // Test case 2.
    let tag = hmac_sha256(b"Jefe", &[b"what do ya want for nothing?"]);
    assert_eq!(
        tag.to_vec(),
        unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    let verify = |parts: &[&[u8]], tag: &[u8]| {
        let mut mac = HmacSha256::new(b"Jefe");
        for part in parts {
            mac.update(part);
        }
        mac.verify(tag)
    };
    assert!(verify(&[b"what do ya want ", b"for nothing?"], &tag));
    for i in 0..tag.len() {
        for bit in 0..8 {
            let mut bad = tag;
            bad[i] ^= 1 << bit;
            assert!(!verify(&[b"what do ya want for nothing?"], &bad));
        }
    }
    assert!(!verify(&[b"what do ya want for nothing?"], &tag[..31]));
}

#[test]
fn hkdf_sha256_matches_rfc_5869() {
    // Test case 1.
    let mut okm = [0u8; 42];
    hkdf_sha256(
        &unhex("000102030405060708090a0b0c"),
        &[0x0b; 22],
        &[&unhex("f0f1f2f3f4"), &unhex("f5f6f7f8f9")],
        &mut okm,
    )
    .unwrap();
    assert_eq!(
        okm.to_vec(),
        unhex(
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        )
    );
    // Test case 3: no salt, no info.
    hkdf_sha256(&[], &[0x0b; 22], &[], &mut okm).unwrap();
    assert_eq!(
        okm.to_vec(),
        unhex(
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        )
    );
}

#[test]
fn aes_256_gcm_matches_the_gcm_specification_test_case_16() {
    let key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let nonce: [u8; 12] = unhex("cafebabefacedbaddecaf888").try_into().unwrap();
    let plaintext = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let expected = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
         76fc6ece0f4e1768cddf8853bb2d551b",
    );
    // Encryption under a chosen nonce is not offered (the module makes every nonce), so the
    // vector checks decryption, and the module's own GCM under the vector's nonce its encryption.
    let mut fixed = plaintext.clone();
    aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &key).unwrap())
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(&aad),
            &mut fixed,
        )
        .unwrap();
    assert_eq!(fixed, expected);
    let gcm = Aes256Gcm::new(&key).unwrap();
    let sealed = expected;
    assert_eq!(
        gcm.open(&nonce, &aad, &sealed).unwrap().expose(),
        &plaintext[..]
    );
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut bad = sealed.clone();
            bad[i] ^= 1 << bit;
            assert_eq!(gcm.open(&nonce, &aad, &bad), Err(CryptoError::Open));
        }
    }
    assert_eq!(gcm.open(&nonce, b"other", &sealed), Err(CryptoError::Open));
    assert_eq!(
        gcm.open(&nonce, &aad, &sealed[..15]),
        Err(CryptoError::Open)
    );
}

#[test]
fn aes_256_gcm_seals_under_fresh_nonces_and_opens_its_own_output() {
    let gcm = Aes256Gcm::new(&[7u8; 32]).unwrap();
    let (n1, c1) = gcm.seal(b"aad", b"seed").unwrap();
    let (n2, c2) = gcm.seal(b"aad", b"seed").unwrap();
    assert_ne!(n1, n2);
    assert_ne!(c1, c2);
    assert_eq!(c1.len(), 4 + GCM_TAG_LEN);
    assert_eq!(gcm.open(&n1, b"aad", &c1).unwrap().expose(), b"seed");
    assert_eq!(gcm.open(&n2, b"aad", &c1), Err(CryptoError::Open));
}

#[test]
fn aes_256_gcm_refuses_keys_of_other_lengths() {
    for len in [0, 16, 24, 31, 33] {
        assert_eq!(
            Aes256Gcm::new(&vec![0u8; len]).unwrap_err(),
            CryptoError::KeyLength {
                algorithm: "AES-256-GCM",
                expected: 32,
                got: len
            }
        );
    }
}

#[test]
fn random_bytes_differ_and_jitter_stays_in_range() {
    let a = random_secret(32).unwrap();
    let b = random_secret(32).unwrap();
    assert_ne!(a, b);
    assert_ne!(a.expose(), &[0u8; 32]);
    for _ in 0..1000 {
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
        let d = jitter(Duration::from_secs(10), 0.5, 1.0);
        assert!(d >= Duration::from_secs(5) && d < Duration::from_secs(10));
    }
}

#[test]
fn the_module_reports_its_mode_and_passes_its_self_tests() {
    let module = self_check().unwrap();
    assert_eq!(module.fips_mode, FIPS_BUILD);
    assert!(!module.version.is_empty());
    if FIPS_BUILD {
        assert_eq!(module.name, "AWS-LC FIPS");
        assert!(module.fips_branch.is_some());
        assert!(module.to_string().ends_with("(FIPS mode)"));
    } else {
        assert_eq!(module.name, "AWS-LC");
    }
}

#[test]
fn the_start_up_verdict_refuses_a_module_out_of_fips_mode_or_failing_its_self_tests() {
    let on = Module {
        name: "AWS-LC FIPS",
        version: "4.0.0",
        fips_branch: Some(4),
        fips_mode: true,
    };
    assert_eq!(judge(on.clone(), Ok(())), Ok(on.clone()));
    let off = Module {
        fips_mode: false,
        ..on.clone()
    };
    let err = judge(off, Ok(())).unwrap_err().to_string();
    assert!(
        err.contains("not in FIPS mode") && err.contains("FIPS_mode() returned 0"),
        "{err}"
    );
    let err = judge(on, Err(())).unwrap_err().to_string();
    assert!(err.contains("self tests failed"), "{err}");
}
