//! A walk over HPACK header blocks (RFC 7541) that keeps the decoder's dynamic table in step
//! with the client and rewrites an invalid `:authority` value in place.
//!
//! Nothing is re-encoded but that one string: the replacement has the same decoded length, so
//! every table entry keeps its size and later indexed references (which the client emits once
//! the value is in its table) resolve, in h2's table, to the sanitised value.

use std::collections::VecDeque;

use super::huffman;

/// Name lengths of the HPACK static table (RFC 7541 Appendix A), index 1..=61.
const STATIC_NAME_LENS: [usize; 61] = [
    10, 7, 7, 5, 5, 7, 7, 7, 7, 7, 7, 7, 7, 7, // :authority .. :status
    14, 15, 15, 13, 6, 27, 3, 5, 13, 13, 19, 16, 16, 14, 16, 13, 12, 6, 4, 4, 6, 7, 4, 4, 8, 17,
    13, 8, 19, 13, 4, 8, 12, 18, 19, 5, 7, 7, 11, 6, 10, 25, 17, 10, 4, 3, 16,
];
const STATIC_AUTHORITY_INDEX: usize = 1;
const ENTRY_OVERHEAD: usize = 32;
/// HPACK's default and h2's advertised SETTINGS_HEADER_TABLE_SIZE.
pub(super) const DEFAULT_TABLE_SIZE: usize = 4096;

/// The header block is not valid HPACK; the connection is left to h2 to reject.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InvalidBlock(pub(super) &'static str);

#[derive(Debug, Clone, Copy)]
struct Entry {
    is_authority: bool,
    name_len: usize,
    size: usize,
}

/// The client's encoder state as the server's decoder sees it: sizes and which entries are
/// `:authority`, never header values.
#[derive(Debug)]
pub(super) struct BlockRewriter {
    entries: VecDeque<Entry>, // front = most recently inserted (dynamic index 62)
    size: usize,
    max_size: usize,
    limit: usize,
}

impl Default for BlockRewriter {
    fn default() -> Self {
        BlockRewriter {
            entries: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            limit: DEFAULT_TABLE_SIZE,
        }
    }
}

/// A decoded string literal: where its bytes sit in the block and its decoded length.
struct Literal {
    start: usize, // first byte of the length prefix
    end: usize,   // one past the last byte of the string
    huffman: bool,
    data_start: usize,
    decoded_len: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, InvalidBlock> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(InvalidBlock("truncated block"))?;
        self.pos += 1;
        Ok(b)
    }

    /// RFC 7541 §5.1 integer with an `n`-bit prefix.
    fn integer(&mut self, n: u32) -> Result<usize, InvalidBlock> {
        let mask = (1u16 << n) as usize - 1;
        let mut value = (self.byte()? as usize) & mask;
        if value < mask {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift > 21 {
                return Err(InvalidBlock("integer overflow"));
            }
            value += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, InvalidBlock> {
        let start = self.pos;
        let huffman = self
            .buf
            .get(self.pos)
            .ok_or(InvalidBlock("truncated block"))?
            & 0x80
            != 0;
        let len = self.integer(7)?;
        let data_start = self.pos;
        let end = data_start.checked_add(len).filter(|e| *e <= self.buf.len());
        let end = end.ok_or(InvalidBlock("string past end of block"))?;
        self.pos = end;
        let decoded_len = if huffman {
            let mut n = 0usize;
            huffman::decode(&self.buf[data_start..end], |_| n += 1)
                .map_err(|_| InvalidBlock("bad huffman string"))?;
            n
        } else {
            len
        };
        Ok(Literal {
            start,
            end,
            huffman,
            data_start,
            decoded_len,
        })
    }

    fn decoded(&self, lit: &Literal) -> Vec<u8> {
        let raw = &self.buf[lit.data_start..lit.end];
        if !lit.huffman {
            return raw.to_vec();
        }
        let mut out = Vec::with_capacity(lit.decoded_len);
        // Already validated by `literal`.
        let _ = huffman::decode(raw, |b| out.push(b));
        out
    }
}

impl BlockRewriter {
    /// Walks one complete header block. Returns the rewritten block when an `:authority` value
    /// had to be replaced, `None` when the block is fine as it is.
    pub(super) fn process(&mut self, block: &[u8]) -> Result<Option<Vec<u8>>, InvalidBlock> {
        let mut r = Reader { buf: block, pos: 0 };
        let mut splices: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        while r.pos < block.len() {
            let first = block[r.pos];
            if first & 0x80 != 0 {
                // Indexed header field: no table change.
                let index = r.integer(7)?;
                self.check_index(index)?;
            } else if first & 0xc0 == 0x40 {
                // Literal with incremental indexing.
                let (is_authority, name_len, value) =
                    self.literal_field(&mut r, 6, &mut splices)?;
                self.insert(Entry {
                    is_authority,
                    name_len,
                    size: name_len + value + ENTRY_OVERHEAD,
                });
            } else if first & 0xe0 == 0x20 {
                let new_max = r.integer(5)?;
                if new_max > self.limit {
                    return Err(InvalidBlock("table size update above the limit"));
                }
                self.max_size = new_max;
                self.evict();
            } else {
                // Literal without indexing (0000) or never indexed (0001).
                self.literal_field(&mut r, 4, &mut splices)?;
            }
        }
        if splices.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(block.len() + 16);
        let mut at = 0;
        for (start, end, bytes) in splices {
            out.extend_from_slice(&block[at..start]);
            out.extend_from_slice(&bytes);
            at = end;
        }
        out.extend_from_slice(&block[at..]);
        Ok(Some(out))
    }

    /// Reads a literal field's name and value; returns (is `:authority`, decoded name length,
    /// decoded value length) and queues a splice when the value must be sanitised.
    fn literal_field(
        &self,
        r: &mut Reader<'_>,
        prefix: u32,
        splices: &mut Vec<(usize, usize, Vec<u8>)>,
    ) -> Result<(bool, usize, usize), InvalidBlock> {
        let index = r.integer(prefix)?;
        let (is_authority, name_len) = if index == 0 {
            let name = r.literal()?;
            (r.decoded(&name) == b":authority", name.decoded_len)
        } else {
            self.name_at(index)?
        };
        let value = r.literal()?;
        if is_authority {
            let decoded = r.decoded(&value);
            if let Some(fixed) = sanitise_authority(&decoded) {
                splices.push((value.start, value.end, raw_literal(&fixed)));
            }
        }
        Ok((is_authority, name_len, value.decoded_len))
    }

    fn check_index(&self, index: usize) -> Result<(), InvalidBlock> {
        self.name_at(index).map(|_| ())
    }

    fn name_at(&self, index: usize) -> Result<(bool, usize), InvalidBlock> {
        match index {
            0 => Err(InvalidBlock("index 0")),
            1..=61 => Ok((index == STATIC_AUTHORITY_INDEX, STATIC_NAME_LENS[index - 1])),
            _ => self
                .entries
                .get(index - 62)
                .map(|e| (e.is_authority, e.name_len))
                .ok_or(InvalidBlock("index past the dynamic table")),
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.entries.push_front(entry);
        self.size += entry.size;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size,
                None => break,
            }
        }
    }
}

/// `None` when h2 would accept the value as it is; otherwise a valid value of the same length
/// (every byte outside the authority alphabet replaced by `x`). An empty value cannot be
/// repaired in place and is left for h2 to judge.
fn sanitise_authority(value: &[u8]) -> Option<Vec<u8>> {
    if value.is_empty() || http::uri::Authority::try_from(value).is_ok() {
        return None;
    }
    Some(
        value
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                    b
                } else {
                    b'x'
                }
            })
            .collect(),
    )
}

/// A raw (non-Huffman) string literal.
fn raw_literal(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    encode_integer(&mut out, value.len(), 7, 0);
    out.extend_from_slice(value);
    out
}

fn encode_integer(out: &mut Vec<u8>, mut value: usize, prefix: u32, flags: u8) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests;
