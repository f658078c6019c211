//! Published test vectors for the cryptography escrow wraps rely on (sources in the files).
//!
//! - `testdata/draft-ietf-hpke-pq-05-A.5.txt`: HPKE (RFC 9180 key schedule, base mode) with
//!   exactly our suite — X-Wing, HKDF-SHA256, ChaCha20-Poly1305 — from draft-ietf-hpke-pq-05
//!   Appendix A.5, verbatim. Checks key derivation, the receiver's decapsulation and key
//!   schedule, all ten sequenced AEAD openings and the exporter.
//! - `testdata/xwing-kem-vectors.json`: the X-Wing KEM alone (key generation from a seed,
//!   deterministic encapsulation, decapsulation) from draft-connolly-cfrg-xwing-kem
//!   (github.com/dconnolly/draft-connolly-cfrg-xwing-kem, spec/test-vectors.json), as shipped
//!   by RustCrypto's x-wing 0.1.1 in tests/test-vectors.json.
//! - `testdata/draft-ietf-hpke-pq-05-A.3.txt`: HPKE with ML-KEM-1024, HKDF-SHA384, AES-256-GCM
//!   from draft-ietf-hpke-pq-05 Appendix A.3: checks AWS-LC's ML-KEM-1024 (the vector's 64-byte
//!   seed expanded by RustCrypto's ml-kem, a test-only dependency, then decapsulated by AWS-LC),
//!   the generic key schedule with the ML-KEM-1024 suite id and Nk = 32, and AES-256-GCM
//!   opening through `polykms_backend::crypto`.
//! - RFC 9180 A.3.1 (DHKEM(P-256), HKDF-SHA256, AES-128-GCM) and the A.5 vector above: the key
//!   schedule on HKDF-SHA256 exactly as the ML-KEM-1024 suite runs it, for Nk = 16 and 32.

use std::collections::HashMap;

use hpke::{Deserializable, Kem as _, OpModeR, Serializable};
use x_wing::{Decapsulate, Decapsulator, KeyExport};

use polykms_backend::crypto::{Aes256Gcm, CryptoError};

use crate::mlkem;
use crate::schedule::{HkdfSha256, Kdf, Schedule};
use crate::xwing::{Aead, Kdf as XWingKdf, Kem, PrivateKey, PublicKey};

const HPKE_PQ_A5: &str = include_str!("../testdata/draft-ietf-hpke-pq-05-A.5.txt");
const XWING_KEM: &str = include_str!("../testdata/xwing-kem-vectors.json");
const HPKE_PQ_A3: &str = include_str!("../testdata/draft-ietf-hpke-pq-05-A.3.txt");

/// The draft's `name: hex` fields (hex continued on indented lines), in order of appearance.
fn fields(text: &str) -> Vec<(String, Vec<u8>)> {
    let body = text
        .split_once(".1.  Base Setup Information")
        .expect("the vector file holds a Base Setup Information section")
        .1;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("A.") {
            continue;
        }
        match trimmed.split_once(": ") {
            // Hex continuation lines never hold ": " (field names such as `aad` can look hex).
            Some((name, value)) => {
                out.push((name.to_string(), value.replace(' ', "")));
            }
            _ => out
                .last_mut()
                .expect("a continuation line follows a field")
                .1
                .push_str(&trimmed.replace(' ', "")),
        }
    }
    out.into_iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "mode" | "kem_id" | "kdf_id" | "aead_id" | "L" | "sequence number"
            )
        })
        .map(|(name, value)| {
            let bytes = hex::decode(&value).unwrap_or_else(|e| panic!("field {name}: {e}"));
            (name, bytes)
        })
        .collect()
}

fn suite_ids(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(k, _)| matches!(*k, "mode" | "kem_id" | "kdf_id" | "aead_id"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_vector_is_for_the_suite_escrow_uses() {
    let ids = suite_ids(HPKE_PQ_A5);
    assert_eq!(ids["mode"], "0");
    assert_eq!(ids["kem_id"], Kem::KEM_ID.to_string());
    assert_eq!(
        ids["kdf_id"],
        <XWingKdf as hpke::kdf::Kdf>::KDF_ID.to_string()
    );
    assert_eq!(
        ids["aead_id"],
        <Aead as hpke::aead::Aead>::AEAD_ID.to_string()
    );
}

#[test]
fn hpke_xwing_hkdf_sha256_chacha20poly1305_matches_draft_ietf_hpke_pq_a5() {
    let f = fields(HPKE_PQ_A5);
    let one = |name: &str| {
        f.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("field {name} in the vector"))
    };
    let all = |name: &str| -> Vec<Vec<u8>> {
        f.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };

    // DeriveKeyPair(ikmR) and the key encodings.
    let (sk, pk) = Kem::derive_keypair(&one("ikmR"));
    assert_eq!(sk.to_bytes().as_slice(), one("skRm"));
    assert_eq!(pk.to_bytes().as_slice(), one("pkRm"));
    let sk = PrivateKey::from_bytes(&one("skRm")).unwrap();
    assert_eq!(
        Kem::sk_to_pk(&sk),
        PublicKey::from_bytes(&one("pkRm")).unwrap()
    );

    // Decap + key schedule + every sequenced opening, as the receiver does it.
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&one("enc")).unwrap();
    let info = one("info");
    let mut ctx =
        hpke::setup_receiver::<Aead, XWingKdf, Kem>(&OpModeR::Base, &sk, &enc, &info).unwrap();
    let (pts, aads, cts) = (all("pt"), all("aad"), all("ct"));
    assert_eq!((pts.len(), aads.len(), cts.len()), (10, 10, 10));
    for i in 0..10 {
        assert_eq!(ctx.open(&cts[i], &aads[i]).unwrap(), pts[i], "sequence {i}");
    }
    for (context, expected) in all("exporter_context").iter().zip(all("exported_value")) {
        let mut out = [0u8; 32];
        ctx.export(context, &mut out).unwrap();
        assert_eq!(out.as_slice(), expected);
    }

    // The single-shot path the backend calls opens sequence 0, and nothing else opens.
    let opened = hpke::single_shot_open::<Aead, XWingKdf, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        &info,
        &cts[0],
        &aads[0],
    )
    .unwrap();
    assert_eq!(opened, pts[0]);
    assert!(
        hpke::single_shot_open::<Aead, XWingKdf, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            &info,
            &cts[0],
            &aads[1]
        )
        .is_err()
    );
}

#[derive(serde::Deserialize)]
struct XWingVector {
    seed: String,
    eseed: String,
    ss: String,
    sk: String,
    pk: String,
    ct: String,
}

#[test]
fn xwing_kem_matches_draft_connolly_cfrg_xwing_kem_vectors() {
    let vectors: Vec<XWingVector> = serde_json::from_str(XWING_KEM).unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let h = |s: &str| hex::decode(s).unwrap();
        let seed: [u8; 32] = h(&v.seed)[..32].try_into().unwrap();
        let dk = x_wing::DecapsulationKey::from(seed);
        assert_eq!(dk.as_bytes().as_slice(), h(&v.sk));
        let ek = dk.encapsulation_key();
        assert_eq!(ek.to_bytes().as_slice(), h(&v.pk));
        let eseed: [u8; 64] = h(&v.eseed).try_into().unwrap();
        let (ct, ss) = ek.encapsulate_deterministic(&eseed.into());
        assert_eq!(ct.as_slice(), h(&v.ct));
        assert_eq!(ss.as_slice(), h(&v.ss));
        assert_eq!(dk.decapsulate(&ct).as_slice(), h(&v.ss));

        // The HPKE crate's X-Wing keys are the same keys.
        let sk = PrivateKey::from_bytes(&h(&v.sk)).unwrap();
        assert_eq!(Kem::sk_to_pk(&sk).to_bytes().as_slice(), h(&v.pk));
    }
}

fn field(f: &[(String, Vec<u8>)], name: &str) -> Vec<u8> {
    f.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("field {name} in the vector"))
}

/// HKDF-SHA384 (KDF id 0x0002) on AWS-LC, only to run the A.3 vector through `Schedule`.
struct HkdfSha384;

impl Kdf for HkdfSha384 {
    const ID: u16 = 0x0002;

    fn extract(salt: &[u8], ikm: &[&[u8]]) -> zeroize::Zeroizing<Vec<u8>> {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA384, salt);
        let mut ctx = hmac::Context::with_key(&key);
        for part in ikm {
            ctx.update(part);
        }
        zeroize::Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    fn expand(prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        polykms_backend::crypto::hkdf_expand(polykms_backend::crypto::HKDF_SHA384, prk, info, out)
    }
}

#[test]
fn key_schedule_matches_rfc9180_a3_dhkem_p256_hkdf_sha256_aes128gcm() {
    // RFC 9180 Appendix A.3.1 (base mode): shared_secret and info in; key, base_nonce and
    // exporter_secret out. KEM 0x0010, KDF 0x0001, AEAD 0x0001 (Nk = 16).
    let h = |s: &str| hex::decode(s).unwrap();
    let s = Schedule::<HkdfSha256>::base(
        0x0010,
        0x0001,
        &h("c0d26aeab536609a572b07695d933b589dcf363ff9d93c93adea537aeabb8cb8"),
        &h("4f6465206f6e2061204772656369616e2055726e"),
    );
    assert_eq!(*s.key(16).unwrap(), h("868c066ef58aae6dc589b6cfdd18f97e"));
    assert_eq!(
        s.base_nonce().unwrap().to_vec(),
        h("4e0bc5018beba4bf004cca59")
    );
    assert_eq!(
        *s.exporter_secret(32).unwrap(),
        h("14ad94af484a7ad3ef40e9f3be99ecc6fa9036df9d4920548424df127ee0d99f")
    );
}

#[test]
fn key_schedule_matches_draft_ietf_hpke_pq_a5_with_nk_32() {
    let f = fields(HPKE_PQ_A5);
    let s = Schedule::<HkdfSha256>::base(
        0x647a,
        0x0003,
        &field(&f, "shared_secret"),
        &field(&f, "info"),
    );
    assert_eq!(*s.key(32).unwrap(), field(&f, "key"));
    assert_eq!(s.base_nonce().unwrap().to_vec(), field(&f, "base_nonce"));
    assert_eq!(
        *s.exporter_secret(32).unwrap(),
        field(&f, "exporter_secret")
    );
}

#[test]
#[allow(deprecated)] // ml-kem calls the FIPS 203 expanded key form legacy; AWS-LC imports only it.
fn ml_kem_1024_suite_matches_draft_ietf_hpke_pq_a3() {
    use ml_kem::{ExpandedKeyEncoding, KeyExport};

    let ids = suite_ids(HPKE_PQ_A3);
    assert_eq!(ids["kem_id"], mlkem::KEM_ID.to_string());
    assert_eq!(ids["aead_id"], mlkem::AEAD_ID.to_string());
    let f = fields(HPKE_PQ_A3);

    // The 64-byte seed (d ‖ z), expanded to the FIPS 203 key AWS-LC imports.
    let seed: [u8; 64] = field(&f, "skRm").try_into().unwrap();
    let reference = ml_kem::DecapsulationKey1024::from_seed(seed.into());
    assert_eq!(
        reference.encapsulation_key().to_bytes().as_slice(),
        field(&f, "pkRm")
    );
    let expanded = reference.to_expanded_bytes();
    let private = mlkem::PrivateKey::from_bytes(expanded.as_slice()).unwrap();
    assert_eq!(private.public_bytes(), field(&f, "pkRm"));
    let public = mlkem::PublicKey::from_bytes(&field(&f, "pkRm")).unwrap();
    assert_eq!(public.as_bytes(), field(&f, "pkRm"));

    // AWS-LC decapsulates the vector's enc to its shared secret.
    let shared_secret = mlkem::decapsulate(&private, &field(&f, "enc")).unwrap();
    assert_eq!(*shared_secret, field(&f, "shared_secret"));

    // The key schedule with the ML-KEM-1024 suite id and Nk = 32 (on the vector's KDF).
    let s = Schedule::<HkdfSha384>::base(
        mlkem::KEM_ID,
        mlkem::AEAD_ID,
        &shared_secret,
        &field(&f, "info"),
    );
    let key = s.key(32).unwrap();
    assert_eq!(*key, field(&f, "key"));
    assert_eq!(s.base_nonce().unwrap().to_vec(), field(&f, "base_nonce"));
    assert_eq!(
        *s.exporter_secret(48).unwrap(),
        field(&f, "exporter_secret")
    );

    // AES-256-GCM through polykms_backend::crypto opens every listed encryption.
    let aead = Aes256Gcm::new(&key).unwrap();
    let all = |name: &str| -> Vec<Vec<u8>> {
        f.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (pts, aads, nonces, cts) = (all("pt"), all("aad"), all("nonce"), all("ct"));
    assert_eq!(cts.len(), 3);
    for i in 0..cts.len() {
        let nonce: [u8; 12] = nonces[i].clone().try_into().unwrap();
        let opened = aead.open(&nonce, &aads[i], &cts[i]).unwrap();
        assert_eq!(opened.expose(), pts[i].as_slice(), "sequence {i}");
        assert!(aead.open(&nonce, b"other", &cts[i]).is_err());
    }
}
