use tokio::io::AsyncReadExt;

use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    put_frame_header(&mut out, payload.len(), kind, flags, &stream.to_be_bytes());
    out.extend_from_slice(payload);
    out.to_vec()
}

/// Raw-literal header block: POST, http, :path, and the given :authority, all indexed.
fn block(authority: &[u8]) -> Vec<u8> {
    let mut b = vec![0x83, 0x86, 0x44, 5];
    b.extend_from_slice(b"/a/b1");
    b.push(0x41);
    b.push(authority.len() as u8);
    b.extend_from_slice(authority);
    b
}

/// Reads from a byte slice a few bytes at a time, like a slow socket.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .step
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

async fn run(input: Vec<u8>, step: usize) -> Vec<u8> {
    let mut s = AuthorityFixStream::new(Trickle {
        data: input,
        pos: 0,
        step,
    });
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

/// Splits a server-side byte stream back into (type, flags, stream, payload) frames.
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE));
    let mut rest = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    out
}

#[tokio::test]
async fn rewrites_socket_path_authority_across_any_read_sizes() {
    let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    let headers = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &block(b"/run/kms.sock"));
    let data = frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 2, 8, 1]);
    let input = [PREFACE.to_vec(), settings.clone(), headers, data.clone()].concat();
    for step in [1, 2, 7, 9, 64, 4096] {
        let out = frames(&run(input.clone(), step).await);
        assert_eq!(out.len(), 3, "step {step}");
        assert_eq!(frame(out[0].0, out[0].1, out[0].2, &out[0].3), settings);
        let (kind, flags, stream, payload) = &out[1];
        assert_eq!(
            (*kind, *flags, *stream),
            (TYPE_HEADERS, FLAG_END_HEADERS, 1)
        );
        let headers = ::hpack::Decoder::new().decode(payload).unwrap();
        assert!(headers.contains(&(b":authority".to_vec(), b"xrunxkms.sock".to_vec())));
        assert_eq!(frame(out[2].0, out[2].1, out[2].2, &out[2].3), data);
    }
}

#[tokio::test]
async fn valid_blocks_pass_byte_for_byte_including_padding() {
    let mut padded = vec![3u8];
    padded.extend(block(b"localhost"));
    padded.extend([0, 0, 0]);
    let input = [
        PREFACE.to_vec(),
        frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &padded),
    ]
    .concat();
    assert_eq!(run(input.clone(), 5).await, input);
}

#[tokio::test]
async fn padded_priority_continuation_block_is_reassembled_and_reframed() {
    let b = block(b"a/b");
    let (head, tail) = b.split_at(6);
    let mut first = vec![2u8];
    first.extend([0x80, 0, 0, 0, 16]); // priority: exclusive, dep 0, weight 16
    first.extend_from_slice(head);
    first.extend([0, 0]);
    let input = [
        PREFACE.to_vec(),
        frame(
            TYPE_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
            3,
            &first,
        ),
        frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, tail),
    ]
    .concat();
    let out = frames(&run(input, 3).await);
    assert_eq!(out.len(), 1);
    let (kind, flags, stream, payload) = &out[0];
    assert_eq!(*kind, TYPE_HEADERS);
    assert_eq!(*flags, FLAG_PRIORITY | FLAG_END_STREAM | FLAG_END_HEADERS);
    assert_eq!(*stream, 3);
    assert_eq!(&payload[..5], &[0x80, 0, 0, 0, 16]);
    let headers = ::hpack::Decoder::new().decode(&payload[5..]).unwrap();
    assert!(headers.contains(&(b":authority".to_vec(), b"axb".to_vec())));
}

#[tokio::test]
async fn garbage_is_passed_through_for_h2_to_reject() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    assert_eq!(run(input.clone(), 4).await, input);
    // A CONTINUATION where a HEADERS should be: forwarded verbatim.
    let bad = [
        PREFACE.to_vec(),
        frame(TYPE_HEADERS, 0, 1, &[0x83]),
        frame(0x0, 0, 1, b"xx"),
    ]
    .concat();
    assert_eq!(run(bad.clone(), 4).await, bad);
}

#[tokio::test]
async fn large_rewritten_block_is_split_into_continuations() {
    let mut b = block(b"/big");
    // A 20 KiB literal header without indexing, raw.
    b.push(0x00);
    b.extend([0x05]);
    b.extend_from_slice(b"x-big");
    let big = vec![b'v'; 20_000];
    encode_integer_for_test(&mut b, big.len());
    b.extend_from_slice(&big);
    let input = [
        PREFACE.to_vec(),
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 5, &b),
    ]
    .concat();
    let out = frames(&run(input, 1000).await);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].0, out[0].1), (TYPE_HEADERS, 0));
    assert_eq!((out[1].0, out[1].1), (TYPE_CONTINUATION, FLAG_END_HEADERS));
    let joined = [out[0].3.clone(), out[1].3.clone()].concat();
    let headers = ::hpack::Decoder::new().decode(&joined).unwrap();
    assert!(headers.contains(&(b":authority".to_vec(), b"xbig".to_vec())));
}

fn encode_integer_for_test(out: &mut Vec<u8>, mut v: usize) {
    out.push(0x7f);
    v -= 127;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}
