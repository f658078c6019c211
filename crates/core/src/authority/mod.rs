//! Accepting any HTTP/2 `:authority` on the plugin socket.
//!
//! kube-apiserver 1.27–1.31 sends the socket path as `:authority`, grpcio sends things like
//! `tmp%2Fkms.sock`; h2 resets such streams before tonic sees them, and offers no switch. The
//! one hook before h2 is the byte stream itself: [`AuthorityFixStream`] wraps each accepted
//! connection, follows HTTP/2 framing on the client→server direction, and hands every
//! complete header block to [`hpack::BlockRewriter`], which replaces an invalid `:authority`
//! value in place. Server→client bytes pass untouched, and so does every block that needs no
//! change, byte for byte.

mod huffman;
#[rustfmt::skip]
mod huffman_table;
mod hpack;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hpack::BlockRewriter;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// h2's default SETTINGS_MAX_FRAME_SIZE, which the server advertises: re-framed blocks stay
/// within it.
const MAX_FRAME_SIZE: usize = 16_384;
/// A header block larger than this is not buffered: h2 rejects it anyway (its header list limit
/// is far smaller), so the adapter steps aside and lets h2 say so.
const MAX_BLOCK: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
enum State {
    Preface,
    FrameHeader,
    /// Forwarding the payload of a frame that is not part of a header block.
    Forward {
        remaining: usize,
    },
    /// Collecting HEADERS + CONTINUATION frames until END_HEADERS.
    Block(PendingBlock),
    /// Something did not parse: pass everything through and let h2 judge it.
    Passthrough,
}

#[derive(Debug)]
struct PendingBlock {
    stream_id: [u8; 4],
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    raw: Vec<u8>,
    awaiting: Option<usize>, // payload length of the frame being read
}

/// A connection whose client→server bytes have invalid `:authority` values made valid.
#[derive(Debug)]
pub struct AuthorityFixStream<S> {
    inner: S,
    state: State,
    input: BytesMut,
    output: BytesMut,
    hpack: BlockRewriter,
    eof: bool,
}

impl<S> AuthorityFixStream<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFixStream {
            inner,
            state: State::Preface,
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::new(),
            hpack: BlockRewriter::default(),
            eof: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Copies the first `n` input bytes to the output. A copy, not a split: splitting would
    /// share `input`'s allocation with `output`, and the next read would then need a fresh
    /// buffer; copying keeps both buffers unique and reused for the life of the connection.
    fn forward(&mut self, n: usize) {
        self.output.extend_from_slice(&self.input[..n]);
        self.input.advance(n);
    }

    /// Moves as much of `input` as can be judged into `output`.
    fn process(&mut self) {
        loop {
            match &mut self.state {
                State::Passthrough => {
                    self.forward(self.input.len());
                    return;
                }
                State::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.state = State::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.forward(PREFACE.len());
                    self.state = State::FrameHeader;
                }
                State::FrameHeader => {
                    if self.input.len() < FRAME_HEADER_LEN {
                        return;
                    }
                    let h = &self.input[..FRAME_HEADER_LEN];
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                    if h[3] == TYPE_HEADERS && len <= MAX_BLOCK {
                        let mut stream_id = [0u8; 4];
                        stream_id.copy_from_slice(&h[5..9]);
                        self.state = State::Block(PendingBlock {
                            stream_id,
                            end_stream: false,
                            priority: None,
                            fragment: Vec::new(),
                            raw: Vec::new(),
                            awaiting: None,
                        });
                    } else {
                        self.forward(FRAME_HEADER_LEN);
                        self.state = State::Forward { remaining: len };
                    }
                }
                State::Forward { remaining } => {
                    let n = (*remaining).min(self.input.len());
                    *remaining -= n;
                    let done = *remaining == 0;
                    self.forward(n);
                    if !done {
                        return;
                    }
                    self.state = State::FrameHeader;
                }
                State::Block(pending) => match step_block(pending, &mut self.input) {
                    BlockStep::NeedMore => return,
                    BlockStep::Broken => {
                        let raw = std::mem::take(&mut pending.raw);
                        self.output.extend_from_slice(&raw);
                        self.state = State::Passthrough;
                    }
                    BlockStep::Complete => {
                        let pending = match std::mem::replace(&mut self.state, State::FrameHeader) {
                            State::Block(p) => p,
                            _ => unreachable!("state was Block a moment ago"),
                        };
                        match self.hpack.process(&pending.fragment) {
                            Ok(None) => self.output.extend_from_slice(&pending.raw),
                            Ok(Some(block)) => write_block(&mut self.output, &pending, &block),
                            Err(_) => {
                                self.output.extend_from_slice(&pending.raw);
                                self.state = State::Passthrough;
                            }
                        }
                    }
                },
            }
        }
    }
}

enum BlockStep {
    NeedMore,
    Complete,
    Broken,
}

/// Consumes HEADERS/CONTINUATION frames of one header block from `input`.
fn step_block(p: &mut PendingBlock, input: &mut BytesMut) -> BlockStep {
    loop {
        let Some(len) = p.awaiting else {
            if input.len() < FRAME_HEADER_LEN {
                return BlockStep::NeedMore;
            }
            let h = &input[..FRAME_HEADER_LEN];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let first = p.raw.is_empty();
            let want_type = if first {
                TYPE_HEADERS
            } else {
                TYPE_CONTINUATION
            };
            if h[3] != want_type || h[5..9] != p.stream_id || p.raw.len() + len > MAX_BLOCK {
                // Not a well-formed block; h2 answers with a connection error.
                return BlockStep::Broken;
            }
            p.awaiting = Some(len);
            continue;
        };
        if input.len() < FRAME_HEADER_LEN + len {
            return BlockStep::NeedMore;
        }
        let frame = input.split_to(FRAME_HEADER_LEN + len);
        p.raw.extend_from_slice(&frame);
        p.awaiting = None;
        let flags = frame[4];
        let mut payload = &frame[FRAME_HEADER_LEN..];
        if frame[3] == TYPE_HEADERS {
            p.end_stream = flags & FLAG_END_STREAM != 0;
            let mut pad = 0usize;
            if flags & FLAG_PADDED != 0 {
                let Some((&pad_len, rest)) = payload.split_first() else {
                    return BlockStep::Broken;
                };
                pad = pad_len as usize;
                payload = rest;
            }
            if flags & FLAG_PRIORITY != 0 {
                if payload.len() < 5 {
                    return BlockStep::Broken;
                }
                let mut prio = [0u8; 5];
                prio.copy_from_slice(&payload[..5]);
                p.priority = Some(prio);
                payload = &payload[5..];
            }
            if pad > payload.len() {
                return BlockStep::Broken;
            }
            payload = &payload[..payload.len() - pad];
        }
        p.fragment.extend_from_slice(payload);
        if flags & FLAG_END_HEADERS != 0 {
            return BlockStep::Complete;
        }
    }
}

/// Writes `block` as HEADERS (+ CONTINUATION) frames, unpadded, keeping END_STREAM and
/// PRIORITY of the original.
fn write_block(out: &mut BytesMut, p: &PendingBlock, block: &[u8]) {
    let prio_len = if p.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME_SIZE - prio_len;
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = 0u8;
    if p.end_stream {
        flags |= FLAG_END_STREAM;
    }
    if p.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    put_frame_header(
        out,
        first.len() + prio_len,
        TYPE_HEADERS,
        flags,
        &p.stream_id,
    );
    if let Some(prio) = &p.priority {
        out.put_slice(prio);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_SIZE));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, &p.stream_id);
        out.put_slice(chunk);
        rest = tail;
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream_id: &[u8; 4]) {
    let len = (len as u32).to_be_bytes();
    out.put_slice(&len[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_slice(stream_id);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFixStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.state, State::Passthrough) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.input.reserve(READ_CHUNK);
            let spare = this.input.spare_capacity_mut();
            let mut rb = ReadBuf::uninit(spare);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        // EOF: whatever is half-collected goes to h2 as it came.
                        this.eof = true;
                        if let State::Block(p) = &mut this.state {
                            let raw = std::mem::take(&mut p.raw);
                            this.output.extend_from_slice(&raw);
                        }
                        let n = this.input.len();
                        this.forward(n);
                        continue;
                    }
                    // SAFETY: `poll_read` initialised the first `n` bytes of the spare capacity.
                    unsafe { this.input.set_len(this.input.len() + n) };
                    this.process();
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFixStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFixStream<tokio::net::UnixStream> {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests;
