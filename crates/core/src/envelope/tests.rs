use proptest::prelude::*;

use super::*;

fn wrap(name: &str, version: &str, len: usize) -> Wrap {
    Wrap {
        backend: name.into(),
        key_version: version.into(),
        ciphertext: vec![0xa5; len],
    }
}

fn none() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::new()
}

fn seed(b: u8) -> SecretBytes {
    SecretBytes::new(vec![b; 32])
}

/// Parses and verifies, as Decrypt does once a backend returned `seed`.
fn open(bytes: &[u8], ann: &Annotations, seed: &SecretBytes) -> Result<Vec<Wrap>, EnvelopeError> {
    let env = Envelope::decode(bytes, ann)?;
    env.verify(seed)?;
    Ok(env.wraps)
}

#[test]
fn single_wrap_round_trips_inline_with_a_commitment() {
    let wraps = vec![wrap("local", "local:0011223344556677", 60)];
    let (bytes, ann) = seal(&wraps, &seed(1)).unwrap();
    assert!(ann.is_empty());
    assert_eq!(&bytes[..3], b"PK\x03");
    assert_eq!(format_version(&bytes), Some(FORMAT_V3));
    let env = Envelope::decode(&bytes, &none()).unwrap();
    assert_eq!(env.version, FORMAT_V3);
    assert_eq!(env.wraps, wraps);
    assert!(!env.is_legacy_multi_wrap());
    env.verify(&seed(1)).unwrap();
    assert_eq!(env.verify(&seed(2)), Err(EnvelopeError::Altered));
}

#[test]
fn version_1_envelopes_still_parse_and_have_nothing_to_verify() {
    let wraps = vec![wrap("a", "v1", 60), wrap("b", "v2", 60)];
    let (bytes, ann) = encode_v1(&wraps).unwrap();
    assert_eq!(&bytes[..3], b"PK\x01");
    let env = Envelope::decode(&bytes, &ann).unwrap();
    assert_eq!((env.version, &env.wraps), (FORMAT_V1, &wraps));
    assert!(env.is_legacy_multi_wrap());
    env.verify(&seed(9)).unwrap();
    let (single, _) = encode_v1(&wraps[..1]).unwrap();
    assert!(
        !Envelope::decode(&single, &none())
            .unwrap()
            .is_legacy_multi_wrap()
    );
}

#[test]
fn wraps_that_do_not_fit_move_to_annotations() {
    // Two RSA-4096 wraps (512 bytes each) cannot both be inline.
    let wraps = vec![
        wrap("azure-a", "v1", 512),
        wrap("azure-b", "v7", 512),
        wrap("c", "v", 60),
    ];
    let (bytes, ann) = seal(&wraps, &seed(3)).unwrap();
    assert!(bytes.len() <= MAX_CIPHERTEXT);
    assert!(ann.contains_key("wrap-1.polykms.io"));
    for key in ann.keys() {
        assert!(key.ends_with(".polykms.io") && key == &key.to_lowercase());
    }
    assert_eq!(open(&bytes, &ann, &seed(3)).unwrap(), wraps);
}

#[test]
fn the_commitment_counts_towards_the_size_bound() {
    // 4 + (1+1+1+2+1+2+c) = 12 + c bytes of head: c = 1012 fits in version 1 but not with the
    // 32-byte commitment; version 2 could not move a single wrap to an annotation, version 3
    // does.
    let wraps = vec![wrap("a", "v", 1012)];
    assert_eq!(encode_v1(&wraps).unwrap().0.len(), MAX_CIPHERTEXT);
    assert_eq!(
        seal_v2(&wraps, &seed(1)),
        Err(EnvelopeError::TooLarge(MAX_CIPHERTEXT + COMMITMENT_LEN))
    );
    let (bytes, ann) = seal(&wraps, &seed(1)).unwrap();
    assert!(bytes.len() <= MAX_CIPHERTEXT && ann.len() == 1);
    let wraps = vec![wrap("a", "v", 1012 - COMMITMENT_LEN)];
    assert_eq!(seal(&wraps, &seed(1)).unwrap().0.len(), MAX_CIPHERTEXT);
    assert!(seal(&wraps, &seed(1)).unwrap().1.is_empty());
    // Two wraps that fit together in version 1 overflow once the commitment is added.
    let wraps = vec![wrap("a", "v", 500), wrap("b", "v", 500)];
    assert!(encode_v1(&wraps).unwrap().1.is_empty());
    let (bytes, ann) = seal(&wraps, &seed(1)).unwrap();
    assert_eq!(ann.len(), 1);
    assert!(bytes.len() <= MAX_CIPHERTEXT);
}

#[test]
fn added_missing_or_renamed_annotations_are_rejected() {
    let wraps = vec![wrap("a", "v1", 600), wrap("b", "v2", 600)];
    let (bytes, ann) = seal(&wraps, &seed(1)).unwrap();
    assert_eq!(ann.len(), 1);
    assert!(matches!(
        Envelope::decode(&bytes, &none()),
        Err(EnvelopeError::Annotations(_))
    ));
    let mut extra = ann.clone();
    extra.insert("evil.example.com".into(), vec![1]);
    assert!(matches!(
        Envelope::decode(&bytes, &extra),
        Err(EnvelopeError::Annotations(_))
    ));
    let renamed: BTreeMap<_, _> = ann
        .values()
        .map(|v| ("wrap-9.polykms.io".to_string(), v.clone()))
        .collect();
    assert!(matches!(
        Envelope::decode(&bytes, &renamed),
        Err(EnvelopeError::Annotations(_))
    ));
    // Same key, altered value: the inline digest catches it before any backend call.
    let mut altered = ann.clone();
    altered.values_mut().for_each(|v| v[0] ^= 1);
    assert!(
        matches!(Envelope::decode(&bytes, &altered), Err(EnvelopeError::Annotations(m)) if m.contains("altered"))
    );
    // Annotations on an envelope that has no external wrap.
    let (small, _) = seal(&[wrap("a", "v", 10)], &seed(1)).unwrap();
    assert!(Envelope::decode(&small, &ann).is_err());
}

#[test]
fn every_bit_of_a_sealed_envelope_and_its_annotations_is_covered() {
    let s = seed(7);
    let wraps = vec![
        wrap("a", "a:v1", 60),
        wrap("b", "b:v2", 500),
        wrap("c", "c:v3", 500),
    ];
    let (bytes, ann) = seal(&wraps, &s).unwrap();
    assert!(!ann.is_empty());
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut altered = bytes.clone();
            altered[i] ^= 1 << bit;
            assert!(
                open(&altered, &ann, &s).is_err(),
                "flip of bit {bit} in byte {i} went unnoticed"
            );
        }
    }
    for key in ann.keys() {
        for i in 0..ann[key].len() {
            let mut altered = ann.clone();
            altered.get_mut(key).unwrap()[i] ^= 0x10;
            assert!(open(&bytes, &altered, &s).is_err(), "{key}[{i}]");
        }
    }
}

#[test]
fn a_wrap_swapped_for_another_seeds_wrap_does_not_verify() {
    // An etcd writer replaces wrap b by a wrap of their own seed, keeping everything else.
    let s = seed(1);
    let (bytes, _) = seal(&[wrap("a", "v", 60), wrap("b", "v", 60)], &s).unwrap();
    let mut swapped = bytes.clone();
    let b_start = bytes.len() - COMMITMENT_LEN - 60;
    swapped[b_start..bytes.len() - COMMITMENT_LEN].fill(0x11);
    let env = Envelope::decode(&swapped, &none()).unwrap();
    // Whichever seed a backend returns, the altered envelope is refused.
    assert_eq!(env.verify(&s), Err(EnvelopeError::Altered));
    assert_eq!(env.verify(&seed(2)), Err(EnvelopeError::Altered));
}

#[test]
fn an_envelope_whose_head_alone_is_too_large_is_an_error() {
    // Even with every wrap in an annotation, a 1100-byte key version does not fit.
    let long = "v".repeat(1100);
    assert!(matches!(
        seal(&[wrap("a", &long, 40)], &seed(1)),
        Err(EnvelopeError::TooLarge(_))
    ));
    assert!(matches!(
        seal_v2(&[wrap("a", "v", 1100)], &seed(1)),
        Err(EnvelopeError::TooLarge(_))
    ));
}

#[test]
fn a_first_wrap_too_large_for_the_bound_moves_to_an_annotation_in_version_3_only() {
    // One wrap larger than the whole ciphertext bound (a post-quantum escrow wrap).
    let wraps = vec![wrap("escrow", "escrow:00", 1200)];
    let (bytes, ann) = seal(&wraps, &seed(1)).unwrap();
    assert!(bytes.len() <= MAX_CIPHERTEXT);
    assert_eq!(ann.keys().collect::<Vec<_>>(), vec!["wrap-0.polykms.io"]);
    assert_eq!(open(&bytes, &ann, &seed(1)).unwrap(), wraps);
    // Older formats never moved the first wrap: such an envelope is malformed there.
    let mut as_v2 = bytes.clone();
    as_v2[2] = FORMAT_V2;
    assert_eq!(
        Envelope::decode(&as_v2, &ann),
        Err(EnvelopeError::Malformed("misplaced external wrap"))
    );
}

#[test]
fn rejects_foreign_truncated_and_padded_input() {
    let (bytes, _) = seal(&[wrap("a", "v", 40)], &seed(1)).unwrap();
    assert_eq!(
        Envelope::decode(b"k8s:enc:whatever", &none()),
        Err(EnvelopeError::NotEnvelope)
    );
    assert_eq!(
        Envelope::decode(b"PK\x04\x01", &none()),
        Err(EnvelopeError::UnsupportedVersion(4))
    );
    assert_eq!(format_version(b"PK"), None);
    assert_eq!(format_version(b"PQ\x02"), None);
    for cut in 0..bytes.len() {
        assert!(
            open(&bytes[..cut], &none(), &seed(1)).is_err(),
            "cut at {cut}"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(open(&padded, &none(), &seed(1)).is_err());
    let (v1, _) = encode_v1(&[wrap("a", "v", 40)]).unwrap();
    let mut padded = v1.clone();
    padded.push(0);
    assert_eq!(
        Envelope::decode(&padded, &none()),
        Err(EnvelopeError::Malformed("trailing bytes"))
    );
}

fn arb_wraps() -> impl Strategy<Value = Vec<Wrap>> {
    let w = (
        "[a-z][a-z0-9-]{0,20}",
        "[ -~]{1,80}",
        proptest::collection::vec(any::<u8>(), 1..600),
    )
        .prop_map(|(backend, key_version, ciphertext)| Wrap {
            backend,
            key_version,
            ciphertext,
        });
    proptest::collection::vec(w, 1..=4)
}

fn arb_seed() -> impl Strategy<Value = SecretBytes> {
    proptest::collection::vec(any::<u8>(), 1..=64).prop_map(SecretBytes::new)
}

/// Cases per property: `PROPTEST_CASES` when set (the README's long run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), ..ProptestConfig::default() })]

    #[test]
    fn seal_decode_verify_round_trips(wraps in arb_wraps(), s in arb_seed()) {
        match seal(&wraps, &s) {
            Ok((bytes, ann)) => {
                prop_assert!(bytes.len() <= MAX_CIPHERTEXT);
                prop_assert_eq!(open(&bytes, &ann, &s).unwrap(), wraps);
            }
            Err(e) => prop_assert!(matches!(e, EnvelopeError::TooLarge(_))),
        }
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = Envelope::decode(&bytes, &BTreeMap::new());
        for version in [FORMAT_V1, FORMAT_V2, FORMAT_V3] {
            let mut prefixed = vec![b'P', b'K', version];
            prefixed.extend_from_slice(&bytes);
            if let Ok(env) = Envelope::decode(&prefixed, &BTreeMap::new()) {
                // Random bytes never carry a commitment that verifies.
                if version != FORMAT_V1 {
                    prop_assert!(env.verify(&seed(0)).is_err());
                }
            }
        }
    }

    /// Any change to a sealed envelope or its annotations — bytes overwritten anywhere, the
    /// envelope cut short or extended — is refused under the sealing seed and under any other.
    #[test]
    fn altered_sealed_envelopes_never_verify(
        wraps in arb_wraps(),
        s in arb_seed(),
        other in arb_seed(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
        in_annotation in any::<bool>(),
        resize in -3i32..=3,
    ) {
        let Ok((sealed, sealed_ann)) = seal(&wraps, &s) else { return Ok(()) };
        let (mut bytes, mut ann) = (sealed.clone(), sealed_ann.clone());
        if in_annotation && !ann.is_empty() {
            let value = ann.values_mut().next().expect("not empty");
            for (at, xor) in &flips {
                let i = at.index(value.len());
                value[i] ^= xor;
            }
        } else {
            for (at, xor) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= xor;
            }
        }
        match resize {
            r if r < 0 => bytes.truncate(bytes.len().saturating_sub((-r) as usize)),
            r => bytes.extend(std::iter::repeat_n(0x5a, r as usize)),
        }
        // XOR flips at the same index can cancel out; only a real change must be refused.
        if (&bytes, &ann) != (&sealed, &sealed_ann) {
            prop_assert!(open(&bytes, &ann, &s).is_err());
            prop_assert!(open(&bytes, &ann, &other).is_err());
        }
    }
}

#[test]
fn version_2_envelopes_still_verify_and_a_format_change_breaks_the_commitment() {
    let wraps = vec![wrap("a", "va", 40), wrap("b", "vb", 40)];
    let (v2, _) = seal_v2(&wraps, &seed(1)).unwrap();
    assert_eq!(&v2[..3], b"PK\x02");
    let env = Envelope::decode(&v2, &none()).unwrap();
    assert_eq!(env.version, FORMAT_V2);
    env.verify(&seed(1)).unwrap();
    // The same wraps sealed as version 3 carry another tag; either tag under the other
    // format byte fails (the commitment covers the format byte and uses a per-format key).
    let (v3, _) = seal(&wraps, &seed(1)).unwrap();
    assert_ne!(
        v2[v2.len() - COMMITMENT_LEN..],
        v3[v3.len() - COMMITMENT_LEN..]
    );
    for (bytes, to) in [(&v2, FORMAT_V3), (&v3, FORMAT_V2)] {
        let mut changed = bytes.clone();
        changed[2] = to;
        let env = Envelope::decode(&changed, &none()).unwrap();
        assert_eq!(env.verify(&seed(1)), Err(EnvelopeError::Altered), "to {to}");
    }
}

#[test]
fn each_format_binds_its_wraps_to_its_own_aad() {
    let v1 = wrap_aad("p", FORMAT_V1);
    assert_eq!(v1, b"polykms:v1:p");
    assert_eq!(
        wrap_aad("p", FORMAT_V2),
        v1,
        "version 2 kept version 1's AAD"
    );
    let v3 = wrap_aad("p", FORMAT_V3);
    assert_eq!(v3, b"polykms:envelope-v3:p");
    assert_ne!(wrap_aad("q", FORMAT_V3), v3);
}
