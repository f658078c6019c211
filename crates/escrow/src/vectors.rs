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

use std::collections::HashMap;

use hpke::{Deserializable, Kem as _, OpModeR, Serializable};
use x_wing::{Decapsulate, Decapsulator, KeyExport};

use crate::suite::{Aead, Kdf, Kem, PrivateKey, PublicKey};

const HPKE_PQ_A5: &str = include_str!("../testdata/draft-ietf-hpke-pq-05-A.5.txt");
const XWING_KEM: &str = include_str!("../testdata/xwing-kem-vectors.json");

/// The draft's `name: hex` fields (hex continued on indented lines), in order of appearance.
fn fields(text: &str) -> Vec<(String, Vec<u8>)> {
    let body = text
        .split_once("A.5.1.  Base Setup Information")
        .expect("the vector file holds section A.5.1")
        .1;
    let mut out: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("A.5") {
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
    assert_eq!(ids["kdf_id"], <Kdf as hpke::kdf::Kdf>::KDF_ID.to_string());
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
    let mut ctx = hpke::setup_receiver::<Aead, Kdf, Kem>(&OpModeR::Base, &sk, &enc, &info).unwrap();
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
    let opened = hpke::single_shot_open::<Aead, Kdf, Kem>(
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
        hpke::single_shot_open::<Aead, Kdf, Kem>(
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
