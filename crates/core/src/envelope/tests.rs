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

#[test]
fn single_wrap_round_trips_inline() {
    let env = EnvelopeV1 {
        wraps: vec![wrap("local", "local:0011223344556677", 60)],
    };
    let (bytes, ann) = env.encode().unwrap();
    assert!(ann.is_empty());
    assert_eq!(&bytes[..3], b"PK\x01");
    assert_eq!(EnvelopeV1::decode(&bytes, &none()).unwrap(), env);
}

#[test]
fn wraps_that_do_not_fit_move_to_annotations() {
    // Two RSA-4096 wraps (512 bytes each) cannot both be inline.
    let env = EnvelopeV1 {
        wraps: vec![
            wrap("azure-a", "v1", 512),
            wrap("azure-b", "v7", 512),
            wrap("c", "v", 60),
        ],
    };
    let (bytes, ann) = env.encode().unwrap();
    assert!(bytes.len() <= MAX_CIPHERTEXT);
    assert!(ann.contains_key("wrap-1.polykms.io"));
    for key in ann.keys() {
        assert!(key.ends_with(".polykms.io") && key == &key.to_lowercase());
    }
    assert_eq!(EnvelopeV1::decode(&bytes, &ann).unwrap(), env);
}

#[test]
fn added_missing_or_renamed_annotations_are_rejected() {
    let env = EnvelopeV1 {
        wraps: vec![wrap("a", "v1", 600), wrap("b", "v2", 600)],
    };
    let (bytes, ann) = env.encode().unwrap();
    assert_eq!(ann.len(), 1);
    assert!(matches!(
        EnvelopeV1::decode(&bytes, &none()),
        Err(EnvelopeError::Annotations(_))
    ));
    let mut extra = ann.clone();
    extra.insert("evil.example.com".into(), vec![1]);
    assert!(matches!(
        EnvelopeV1::decode(&bytes, &extra),
        Err(EnvelopeError::Annotations(_))
    ));
    let renamed: BTreeMap<_, _> = ann
        .values()
        .map(|v| ("wrap-9.polykms.io".to_string(), v.clone()))
        .collect();
    assert!(matches!(
        EnvelopeV1::decode(&bytes, &renamed),
        Err(EnvelopeError::Annotations(_))
    ));
    // Same key, altered value: the inline digest catches it.
    let mut altered = ann.clone();
    altered.values_mut().for_each(|v| v[0] ^= 1);
    assert!(
        matches!(EnvelopeV1::decode(&bytes, &altered), Err(EnvelopeError::Annotations(m)) if m.contains("altered"))
    );
    // Annotations on an envelope that has no external wrap.
    let (small, _) = EnvelopeV1 {
        wraps: vec![wrap("a", "v", 10)],
    }
    .encode()
    .unwrap();
    assert!(EnvelopeV1::decode(&small, &ann).is_err());
}

#[test]
fn first_wrap_alone_too_large_is_an_error() {
    let env = EnvelopeV1 {
        wraps: vec![wrap("a", "v", 1100)],
    };
    assert!(matches!(env.encode(), Err(EnvelopeError::TooLarge(_))));
}

#[test]
fn rejects_foreign_truncated_and_padded_input() {
    let (bytes, _) = EnvelopeV1 {
        wraps: vec![wrap("a", "v", 40)],
    }
    .encode()
    .unwrap();
    assert_eq!(
        EnvelopeV1::decode(b"k8s:enc:whatever", &none()),
        Err(EnvelopeError::NotEnvelope)
    );
    assert_eq!(
        EnvelopeV1::decode(b"PK\x02\x01", &none()),
        Err(EnvelopeError::UnsupportedVersion(2))
    );
    for cut in 0..bytes.len() {
        assert!(
            EnvelopeV1::decode(&bytes[..cut], &none()).is_err(),
            "cut at {cut}"
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert_eq!(
        EnvelopeV1::decode(&padded, &none()),
        Err(EnvelopeError::Malformed("trailing bytes"))
    );
}

fn arb_envelope() -> impl Strategy<Value = EnvelopeV1> {
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
    proptest::collection::vec(w, 1..=4).prop_map(|wraps| EnvelopeV1 { wraps })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trips(env in arb_envelope()) {
        match env.encode() {
            Ok((bytes, ann)) => {
                prop_assert!(bytes.len() <= MAX_CIPHERTEXT);
                prop_assert_eq!(EnvelopeV1::decode(&bytes, &ann).unwrap(), env);
            }
            Err(e) => prop_assert!(matches!(e, EnvelopeError::TooLarge(_))),
        }
    }

    #[test]
    fn decode_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let _ = EnvelopeV1::decode(&bytes, &BTreeMap::new());
        let mut prefixed = b"PK\x01".to_vec();
        prefixed.extend_from_slice(&bytes);
        let _ = EnvelopeV1::decode(&prefixed, &BTreeMap::new());
    }

    #[test]
    fn decode_never_panics_on_mutated_envelopes(
        env in arb_envelope(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        if let Ok((mut bytes, ann)) = env.encode() {
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = EnvelopeV1::decode(&bytes, &ann);
        }
    }
}
