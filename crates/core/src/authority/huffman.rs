//! HPACK Huffman decoding (RFC 7541 §5.2, Appendix B): enough to learn a string's decoded
//! length and, for `:authority`, its bytes. Encoding is never needed: rewritten values are sent
//! as raw literals.

use std::sync::OnceLock;

use super::huffman_table::{ENCODE_CODE_LENGTHS, ENCODE_CODES};

/// A binary decoding tree: node `i` has children `nodes[i][0]` and `nodes[i][1]`.
/// A child value `>= LEAF` is the leaf for symbol `value - LEAF`; 0 means "no child".
struct Tree {
    nodes: Vec<[u16; 2]>,
}

const LEAF: u16 = 0x8000;

fn build_tree() -> Tree {
    let mut nodes = vec![[0u16; 2]];
    for (sym, (&code, &len)) in ENCODE_CODES.iter().zip(&ENCODE_CODE_LENGTHS).enumerate() {
        let mut node = 0usize;
        for bit_index in (0..len).rev() {
            let bit = ((code >> bit_index) & 1) as usize;
            if bit_index == 0 {
                nodes[node][bit] = LEAF | sym as u16;
            } else {
                if nodes[node][bit] == 0 {
                    nodes.push([0, 0]);
                    nodes[node][bit] = (nodes.len() - 1) as u16;
                }
                node = nodes[node][bit] as usize;
            }
        }
    }
    Tree { nodes }
}

/// One step of the decoder: from a tree node, four input bits lead to `next`, emitting at
/// most one symbol (codes are at least 5 bits long).
#[derive(Clone, Copy, Default)]
struct Step {
    next: u16,
    symbol: u8,
    flags: u8,
}

const EMIT: u8 = 1;
const FAIL: u8 = 2;

/// The tree turned into a table walked a nibble at a time (as h2's decoder does), and which
/// nodes may end a string: those reached by at most 7 one-bits (valid padding).
struct Steps {
    steps: Vec<[Step; 16]>,
    accepting: Vec<bool>,
}

fn steps() -> &'static Steps {
    static STEPS: OnceLock<Steps> = OnceLock::new();
    STEPS.get_or_init(|| {
        let tree = build_tree();
        let n = tree.nodes.len();
        // Depth and "path is all ones" of every internal node, parents before children.
        let mut accepting = vec![false; n];
        let mut path = vec![(0u32, true); n];
        accepting[0] = true;
        for node in 0..n {
            let (depth, ones) = path[node];
            for (bit, &child) in tree.nodes[node].iter().enumerate() {
                if child != 0 && child & LEAF == 0 {
                    let c = child as usize;
                    path[c] = (depth + 1, ones && bit == 1);
                    accepting[c] = depth < 7 && ones && bit == 1;
                }
            }
        }
        let steps = (0..n)
            .map(|start| {
                let mut row = [Step::default(); 16];
                for (nibble, step) in row.iter_mut().enumerate() {
                    let mut node = start;
                    for shift in (0..4).rev() {
                        let next = tree.nodes[node][(nibble >> shift) & 1];
                        if next == 0 {
                            step.flags = FAIL;
                            break;
                        }
                        if next & LEAF != 0 {
                            step.symbol = (next & !LEAF) as u8;
                            step.flags |= EMIT;
                            node = 0;
                        } else {
                            node = next as usize;
                        }
                    }
                    step.next = node as u16;
                }
                row
            })
            .collect();
        Steps { steps, accepting }
    })
}

/// Why a Huffman string is not valid HPACK.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InvalidHuffman;

/// Decodes `encoded`, calling `emit` for each symbol. Rejects EOS, codes that lead nowhere, and
/// padding that is longer than 7 bits or not all ones (RFC 7541 §5.2).
pub(super) fn decode(encoded: &[u8], mut emit: impl FnMut(u8)) -> Result<(), InvalidHuffman> {
    let table = steps();
    let mut node = 0usize;
    for &byte in encoded {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = table.steps[node][nibble as usize];
            if step.flags & FAIL != 0 {
                return Err(InvalidHuffman);
            }
            if step.flags & EMIT != 0 {
                emit(step.symbol);
            }
            node = step.next as usize;
        }
    }
    if table.accepting[node] {
        Ok(())
    } else {
        Err(InvalidHuffman)
    }
}

#[cfg(test)]
pub(super) fn encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in input {
        acc = (acc << ENCODE_CODE_LENGTHS[b as usize]) | ENCODE_CODES[b as usize] as u64;
        bits += ENCODE_CODE_LENGTHS[b as usize] as u32;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_vec(e: &[u8]) -> Result<Vec<u8>, InvalidHuffman> {
        let mut v = Vec::new();
        decode(e, |b| v.push(b)).map(|()| v)
    }

    #[test]
    fn decodes_rfc7541_example_c4_1() {
        // "www.example.com" from RFC 7541 C.4.1.
        let enc = hex_bytes("f1e3c2e5f23a6ba0ab90f4ff");
        assert_eq!(decode_vec(&enc).unwrap(), b"www.example.com");
    }

    #[test]
    fn round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(decode_vec(&encode(&all)).unwrap(), all);
        assert_eq!(
            decode_vec(&encode(b"/var/run/kmsplugin/socket.sock")).unwrap(),
            b"/var/run/kmsplugin/socket.sock"
        );
    }

    #[test]
    fn rejects_bad_padding() {
        // 'a' is 00011 (5 bits); pad with zeros instead of ones.
        assert_eq!(decode_vec(&[0b0001_1000]), Err(InvalidHuffman));
        // A whole byte of ones is more than 7 bits of padding.
        let mut e = encode(b"a");
        e.push(0xff);
        assert_eq!(decode_vec(&e), Err(InvalidHuffman));
    }

    /// The tree walked a bit at a time: the reference the table is checked against.
    fn decode_bitwise(encoded: &[u8]) -> Result<Vec<u8>, InvalidHuffman> {
        let tree = build_tree();
        let (mut node, mut depth, mut all_ones, mut out) = (0usize, 0u32, true, Vec::new());
        for &byte in encoded {
            for shift in (0..8).rev() {
                let bit = ((byte >> shift) & 1) as usize;
                all_ones &= bit == 1;
                depth += 1;
                let next = tree.nodes[node][bit];
                if next == 0 {
                    return Err(InvalidHuffman);
                }
                if next & LEAF != 0 {
                    out.push((next & !LEAF) as u8);
                    (node, depth, all_ones) = (0, 0, true);
                } else {
                    node = next as usize;
                }
            }
        }
        if depth > 7 || !all_ones {
            return Err(InvalidHuffman);
        }
        Ok(out)
    }

    #[test]
    fn rejects_eos() {
        // EOS is 30 one-bits; four bytes of ones contain it.
        assert_eq!(decode_vec(&[0xff; 4]), Err(InvalidHuffman));
        assert_eq!(decode_bitwise(&[0xff; 4]), Err(InvalidHuffman));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        #[test]
        fn table_decoder_agrees_with_the_bitwise_one_on_any_input(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)
        ) {
            proptest::prop_assert_eq!(decode_vec(&bytes), decode_bitwise(&bytes));
        }

        #[test]
        fn table_decoder_agrees_on_encodings_and_their_mutations(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
            flip in proptest::prelude::any::<(usize, u8)>(),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let mut e = encode(&text);
            proptest::prop_assert_eq!(decode_vec(&e), Ok(text));
            if !e.is_empty() {
                let i = flip.0 % e.len();
                e[i] ^= flip.1;
                proptest::prop_assert_eq!(decode_vec(&e), decode_bitwise(&e));
                e.truncate(cut % e.len());
                proptest::prop_assert_eq!(decode_vec(&e), decode_bitwise(&e));
            }
        }
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
