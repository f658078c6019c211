use proptest::prelude::*;

use super::*;

/// Bytes from a spec example written as hex with `|` and spaces between fields.
fn spec(hex_text: &str) -> Vec<u8> {
    let digits: String = hex_text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(digits).expect("spec examples are hex")
}

const T: Tag = Tag(0x420020);

/// The encoding examples of the KMIP specification, §9.1.2 "Examples" (the same text in
/// KMIP 1.0 through 1.4), each encoded and decoded.
#[test]
fn encodes_and_decodes_the_specification_examples() {
    let examples = [
        // "An Integer containing the decimal value 8"
        (
            Ttlv::integer(T, 8),
            "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
        ),
        // "A Long Integer containing the decimal value 123456789000000000"
        (
            Ttlv::new(T, Value::LongInteger(123_456_789_000_000_000)),
            "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
        ),
        // "A Big Integer containing the decimal value 1234567890000000000000000000"
        (
            Ttlv::new(
                T,
                Value::BigInteger(spec("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")),
            ),
            "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
        ),
        // "An Enumeration with value 255"
        (
            Ttlv::enumeration(T, 255),
            "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        ),
        // "A Boolean with the value True"
        (
            Ttlv::new(T, Value::Boolean(true)),
            "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
        ),
        // "A Text String with the value 'Hello World'"
        (
            Ttlv::text(T, "Hello World"),
            "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
        ),
        // "A Byte String with the value { 0x01, 0x02, 0x03 }"
        (
            Ttlv::bytes(T, vec![1, 2, 3]),
            "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
        ),
        // "A Date-Time, containing the value for Friday, March 14, 2008, 11:56:40 GMT"
        (
            Ttlv::new(T, Value::DateTime(1_205_495_800)),
            "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
        ),
        // "An Interval, containing the value for 10 days"
        (
            Ttlv::new(T, Value::Interval(864_000)),
            "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
        ),
        // "A Structure containing an Enumeration, value 254, followed by an Integer, value
        // 255, having tags 420004 and 420005 respectively"
        (
            Ttlv::structure(
                T,
                vec![
                    Ttlv::enumeration(Tag(0x420004), 254),
                    Ttlv::integer(Tag(0x420005), 255),
                ],
            ),
            "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 \
             | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        ),
    ];
    for (item, text) in examples {
        let bytes = spec(text);
        assert_eq!(item.encode(), bytes, "{item:?}");
        assert_eq!(Ttlv::decode(&bytes).unwrap(), item, "{text}");
    }
}

#[test]
fn rejects_truncated_oversized_and_mistyped_items() {
    let good = Ttlv::text(T, "Hello World").encode();
    for cut in 0..good.len() {
        assert!(Ttlv::decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 8]);
    assert!(Ttlv::decode(&trailing).unwrap_err().0.contains("after"));
    // An Integer must be 4 bytes long.
    assert!(
        Ttlv::decode(&spec(
            "42 00 20 | 02 | 00 00 00 08 | 00 00 00 00 00 00 00 08"
        ))
        .is_err()
    );
    // A Boolean is 0 or 1.
    assert!(
        Ttlv::decode(&spec(
            "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02"
        ))
        .is_err()
    );
    // Type 0x0B (Date-Time Extended, KMIP 2.0) and unknown types are refused.
    assert!(
        Ttlv::decode(&spec(
            "42 00 20 | 0B | 00 00 00 08 | 00 00 00 00 00 00 00 02"
        ))
        .is_err()
    );
    // A length past the end, however large, fails before allocating.
    assert!(
        Ttlv::decode(&spec(
            "42 00 20 | 08 | FF FF FF FF | 00 00 00 00 00 00 00 00"
        ))
        .is_err()
    );
    // Text that is not UTF-8.
    assert!(
        Ttlv::decode(&spec(
            "42 00 20 | 07 | 00 00 00 01 | FF 00 00 00 00 00 00 00"
        ))
        .is_err()
    );
}

#[test]
fn bounds_structure_nesting() {
    let mut item = Ttlv::integer(T, 1);
    for _ in 0..=MAX_DEPTH {
        item = Ttlv::structure(T, vec![item]);
    }
    assert!(
        Ttlv::decode(&item.encode())
            .unwrap_err()
            .0
            .contains("deeper")
    );
    let Value::Structure(inner) = &mut item.value else {
        unreachable!()
    };
    let shallower = inner.pop().unwrap();
    assert_eq!(Ttlv::decode(&shallower.encode()).unwrap(), shallower);
}

#[test]
fn debug_shows_byte_and_text_strings_by_length_only() {
    let item = Ttlv::bytes(T, b"secret seed bytes".to_vec());
    let shown = format!("{item:?}");
    assert!(
        !shown.contains("secret") && shown.contains("17 bytes"),
        "{shown}"
    );
    let password = Ttlv::structure(T, vec![Ttlv::text(T, "hunter2")]);
    let shown = format!("{password:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("TextString([7 bytes])"),
        "{shown}"
    );
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i64>().prop_map(Value::LongInteger),
        proptest::collection::vec(any::<[u8; 8]>(), 0..4)
            .prop_map(|v| Value::BigInteger(v.concat())),
        any::<u32>().prop_map(Value::Enumeration),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,40}".prop_map(Value::TextString),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::ByteString),
        any::<i64>().prop_map(Value::DateTime),
        any::<u32>().prop_map(Value::Interval),
    ]
}

fn item() -> impl Strategy<Value = Ttlv> {
    let tag = (0u32..=0xFF_FFFF).prop_map(Tag);
    let leaf_item = (tag.clone(), leaf()).prop_map(|(tag, value)| Ttlv { tag, value });
    leaf_item.prop_recursive(4, 64, 8, move |inner| {
        (tag.clone(), proptest::collection::vec(inner, 0..8))
            .prop_map(|(tag, items)| Ttlv::structure(tag, items))
    })
}

proptest! {
    #[test]
    fn decode_inverts_encode(item in item()) {
        let bytes = item.encode();
        prop_assert_eq!(bytes.len() % 8, 0);
        prop_assert_eq!(bytes.len(), item.encoded_len());
        prop_assert_eq!(Ttlv::decode(&bytes).unwrap(), item);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Ttlv::decode(&bytes);
    }

    #[test]
    fn decoding_a_corrupted_encoding_never_panics(item in item(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = item.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Ok(decoded) = Ttlv::decode(&bytes) {
            // Whatever decodes re-encodes to the same length (padding bytes are not kept).
            prop_assert_eq!(decoded.encoded_len(), bytes.len());
        }
    }
}
