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

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
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
    })
}

/// Why a Huffman string is not valid HPACK.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InvalidHuffman;

/// Decodes `encoded`, calling `emit` for each symbol. Rejects EOS, codes that lead nowhere, and
/// padding that is longer than 7 bits or not all ones (RFC 7541 §5.2).
pub(super) fn decode(encoded: &[u8], mut emit: impl FnMut(u8)) -> Result<(), InvalidHuffman> {
    let tree = tree();
    let mut node = 0usize;
    let mut depth = 0u32; // bits consumed since the last symbol
    let mut all_ones = true;
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
                emit((next & !LEAF) as u8);
                node = 0;
                depth = 0;
                all_ones = true;
            } else {
                node = next as usize;
            }
        }
    }
    if depth > 7 || !all_ones {
        return Err(InvalidHuffman);
    }
    Ok(())
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

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
