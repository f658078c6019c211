//! TTLV, KMIP's binary encoding (KMIP 1.x specification §9.1): every item is a 3-byte tag, a
//! 1-byte type, a 4-byte big-endian length and a value padded with zeros to a multiple of 8.
//!
//! No maintained, permissively licensed Rust crate covers KMIP Encrypt/Decrypt with AES-GCM and
//! additional data over a current TLS stack (`kmip-protocol` 0.4 lacks Encrypt/Decrypt and pins
//! rustls 0.19; `cosmian_kmip` is BUSL-1.1), so the few items polykms sends and reads are
//! encoded here. Decoding is for untrusted bytes: it never panics, checks every length against
//! the input before allocating, and bounds nesting.

use std::fmt;

use zeroize::Zeroize;

/// How deep structures may nest in a message we accept (KMIP responses need about 6).
const MAX_DEPTH: usize = 16;

/// A TTLV tag (`0x42xxxx` for the KMIP-defined ones).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({:#08X})", self.0)
    }
}

/// One TTLV item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: Tag,
    pub value: Value,
}

/// The value of an item, by TTLV type.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// 0x01: items, in order.
    Structure(Vec<Ttlv>),
    /// 0x02: 32-bit signed.
    Integer(i32),
    /// 0x03: 64-bit signed.
    LongInteger(i64),
    /// 0x04: two's complement, big-endian, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    /// 0x05: 32-bit unsigned.
    Enumeration(u32),
    /// 0x06: 8 bytes, 0 or 1.
    Boolean(bool),
    /// 0x07: UTF-8.
    TextString(String),
    /// 0x08: bytes.
    ByteString(Vec<u8>),
    /// 0x09: seconds since the Unix epoch, 64-bit signed.
    DateTime(i64),
    /// 0x0A: seconds, 32-bit unsigned.
    Interval(u32),
}

/// Byte and text strings carry seeds, plaintexts and passwords: every value wipes them when
/// it is dropped, so no copy made while encoding, sending, decoding or cloning a message
/// outlives it in memory (also when a call is cancelled or times out).
impl Drop for Value {
    fn drop(&mut self) {
        match self {
            Value::ByteString(b) | Value::BigInteger(b) => b.zeroize(),
            Value::TextString(s) => s.zeroize(),
            _ => {}
        }
    }
}

impl fmt::Debug for Value {
    // Byte strings can be key material or plaintext, text strings the Credential's password:
    // both are shown by length only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger([{} bytes])", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#X})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString([{} bytes])", v.len()),
            Value::ByteString(v) => write!(f, "ByteString([{} bytes])", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

impl Value {
    fn type_code(&self) -> u8 {
        match self {
            Value::Structure(_) => 0x01,
            Value::Integer(_) => 0x02,
            Value::LongInteger(_) => 0x03,
            Value::BigInteger(_) => 0x04,
            Value::Enumeration(_) => 0x05,
            Value::Boolean(_) => 0x06,
            Value::TextString(_) => 0x07,
            Value::ByteString(_) => 0x08,
            Value::DateTime(_) => 0x09,
            Value::Interval(_) => 0x0A,
        }
    }
}

/// Why bytes are not the TTLV we expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlvError(pub String);

impl fmt::Display for TtlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed TTLV: {}", self.0)
    }
}

impl std::error::Error for TtlvError {}

fn err<T>(message: impl Into<String>) -> Result<T, TtlvError> {
    Err(TtlvError(message.into()))
}

impl Ttlv {
    pub fn new(tag: Tag, value: Value) -> Self {
        Ttlv { tag, value }
    }
    pub fn structure(tag: Tag, items: Vec<Ttlv>) -> Self {
        Ttlv::new(tag, Value::Structure(items))
    }
    pub fn integer(tag: Tag, v: i32) -> Self {
        Ttlv::new(tag, Value::Integer(v))
    }
    pub fn enumeration(tag: Tag, v: u32) -> Self {
        Ttlv::new(tag, Value::Enumeration(v))
    }
    pub fn text(tag: Tag, v: impl Into<String>) -> Self {
        Ttlv::new(tag, Value::TextString(v.into()))
    }
    pub fn bytes(tag: Tag, v: impl Into<Vec<u8>>) -> Self {
        Ttlv::new(tag, Value::ByteString(v.into()))
    }

    /// The items of a structure (empty for other types).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first item of this structure with `tag`.
    pub fn find(&self, tag: Tag) -> Option<&Ttlv> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every item of this structure with `tag`.
    pub fn find_all(&self, tag: Tag) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    pub fn as_integer(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }
    pub fn as_date_time(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }

    /// The encoded item.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Length of the encoding, header included.
    pub fn encoded_len(&self) -> usize {
        8 + padded(self.value_len())
    }

    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(items) => items.iter().map(Ttlv::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(v) | Value::ByteString(v) => v.len(),
            Value::TextString(v) => v.len(),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let len = self.value_len();
        out.extend_from_slice(&self.tag.0.to_be_bytes()[1..]);
        out.push(self.value.type_code());
        // Messages are built by polykms and stay far below 4 GiB.
        out.extend_from_slice(&(len as u32).to_be_bytes());
        match &self.value {
            Value::Structure(items) => items.iter().for_each(|i| i.encode_into(out)),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::BigInteger(v) | Value::ByteString(v) => out.extend_from_slice(v),
            Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
        }
        out.resize(out.len() + padded(len) - len, 0);
    }

    /// Decodes exactly one item that spans all of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Ttlv, TtlvError> {
        let (item, used) = decode_item(bytes, 0)?;
        if used != bytes.len() {
            return err(format!(
                "{} bytes after the top-level item",
                bytes.len() - used
            ));
        }
        Ok(item)
    }
}

/// The header of an item: tag, type code and value length (unpadded).
pub fn header(bytes: &[u8; 8]) -> (Tag, u8, u32) {
    let tag = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
    let length = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    (Tag(tag), bytes[3], length)
}

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

/// Decodes one item at the start of `bytes`; returns it and the bytes it used (padding
/// included).
fn decode_item(bytes: &[u8], depth: usize) -> Result<(Ttlv, usize), TtlvError> {
    if depth > MAX_DEPTH {
        return err(format!("structures nested deeper than {MAX_DEPTH}"));
    }
    let Some(head) = bytes.first_chunk::<8>() else {
        return err(format!("{} bytes left, an item needs 8", bytes.len()));
    };
    let (tag, type_code, length) = header(head);
    let length = length as usize;
    let total = 8usize
        .checked_add(padded(length))
        .filter(|t| *t <= bytes.len())
        .ok_or_else(|| {
            TtlvError(format!(
                "item {tag:?} claims {length} bytes, {} are left",
                bytes.len() - 8
            ))
        })?;
    let raw = &bytes[8..8 + length];
    let fixed = |want: usize| -> Result<(), TtlvError> {
        if length == want {
            Ok(())
        } else {
            err(format!(
                "item {tag:?} of type {type_code:#04x} has length {length}, expected {want}"
            ))
        }
    };
    let value = match type_code {
        0x01 => {
            // A structure's length is its items' padded encodings, so it is a multiple of 8.
            if !length.is_multiple_of(8) {
                return err(format!("structure {tag:?} length {length} is not padded"));
            }
            let mut items = Vec::new();
            let mut at = 0;
            while at < length {
                let (item, used) = decode_item(&raw[at..], depth + 1)?;
                items.push(item);
                at += used;
            }
            Value::Structure(items)
        }
        0x02 => {
            fixed(4)?;
            Value::Integer(i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        }
        0x03 => {
            fixed(8)?;
            Value::LongInteger(i64::from_be_bytes(array8(raw)))
        }
        0x04 => {
            if !length.is_multiple_of(8) {
                return err(format!(
                    "big integer {tag:?} length {length} is not a multiple of 8"
                ));
            }
            Value::BigInteger(raw.to_vec())
        }
        0x05 => {
            fixed(4)?;
            Value::Enumeration(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        }
        0x06 => {
            fixed(8)?;
            match u64::from_be_bytes(array8(raw)) {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                other => return err(format!("boolean {tag:?} has value {other}")),
            }
        }
        0x07 => match std::str::from_utf8(raw) {
            Ok(s) => Value::TextString(s.to_owned()),
            Err(_) => return err(format!("text string {tag:?} is not UTF-8")),
        },
        0x08 => Value::ByteString(raw.to_vec()),
        0x09 => {
            fixed(8)?;
            Value::DateTime(i64::from_be_bytes(array8(raw)))
        }
        0x0A => {
            fixed(4)?;
            Value::Interval(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]))
        }
        other => return err(format!("item {tag:?} has unknown type {other:#04x}")),
    };
    Ok((Ttlv { tag, value }, total))
}

fn array8(raw: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&raw[..8]);
    a
}

#[cfg(test)]
mod tests;
