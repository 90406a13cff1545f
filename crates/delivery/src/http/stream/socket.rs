//! The WebSocket framing of an upgraded connection (RFC 6455, server side, no extensions),
//! straight on its TCP stream (ADR 0018, "Transport"): an idle connection holds no buffer
//! at all, frames shared by the subscribers of a channel are written from their one copy,
//! and the frames queued for a connection go out in one vectored write.
//!
//! [`SocketReader`] reads the client's messages (continuations aggregated, control frames
//! between them, every limit of the RFC checked); it is cancel-safe, so it can sit in a
//! `select!` beside the connection's other work. [`SocketWriter`] writes the queued frames,
//! with the pings and pongs framed before them, as an owned future that the connection's
//! task polls beside the rest of its work, so a write is never torn by a timeout.

use std::io::{self, IoSlice};

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The largest payload of a control frame.
const MAX_CONTROL_PAYLOAD: usize = 125;
/// How much is read at a time when the size of what comes is not known yet.
const READ_CHUNK: usize = 512;

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A binary message (its content is not read).
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Why a client's frames could not be read; each closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// A frame or a message over the size limit (1009).
    TooBig,
    /// A broken rule of RFC 6455: an unmasked frame, reserved bits, an unknown opcode, a
    /// fragmented or oversized control frame, a continuation out of place (1002).
    Protocol,
    /// A text message that is not UTF-8 (1007).
    InvalidText,
    /// The connection failed.
    Io,
}

/// Splits an upgraded connection into its reader and writer. `read` holds what the client
/// sent after its upgrade request and was read with it.
pub fn split(io: TcpStream, read: &[u8], max_message: usize) -> (SocketReader, SocketWriter) {
    // Nagle's algorithm stays on (as for every actix connection): under load it gathers the
    // frames of several writes into one packet; with TCP_NODELAY, a packet per frame gave
    // 800k deliveries/s against 906k at 1,000 × 1,000 (docs/benchmarks.md, "Third run").
    let (reader, writer) = io.into_split();
    let reader = SocketReader { io: reader, buf: read.to_vec(), message: None, max_message, wanted: 0 };
    let writer = SocketWriter { io: writer };
    (reader, writer)
}

/// The client's side of the connection.
#[derive(Debug)]
pub struct SocketReader {
    io: OwnedReadHalf,
    /// Read and not parsed yet; empty, and without an allocation, between messages.
    buf: Vec<u8>,
    /// The fragments of a message whose last frame has not come yet.
    message: Option<Partial>,
    max_message: usize,
    /// How many bytes the frame being read needs in all (0: not known yet).
    wanted: usize,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    payload: Vec<u8>,
}

/// One frame, unmasked.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

impl SocketReader {
    /// The next message; `None` once the client closed the TCP connection. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            match self.parse() {
                Ok(Some(incoming)) => return Some(Ok(incoming)),
                Ok(None) => {}
                Err(error) => return Some(Err(error)),
            }
            // Waiting holds no buffer: it is reserved once there is something to read.
            if self.io.readable().await.is_err() {
                return Some(Err(ReadError::Io));
            }
            let room = self.wanted.saturating_sub(self.buf.len()).max(READ_CHUNK);
            self.buf.reserve(room);
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    // The readiness was stale: nothing came, so nothing is kept to wait with.
                    if self.buf.is_empty() {
                        self.buf = Vec::new();
                    }
                }
                Err(_) => return Some(Err(ReadError::Io)),
            }
        }
    }

    /// The next complete message in what was read, if there is one.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        while let Some(frame) = self.frame()? {
            match frame.opcode {
                OP_CLOSE => return Ok(Some(Incoming::Close)),
                OP_PING => return Ok(Some(Incoming::Ping(frame.payload))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_TEXT | OP_BINARY => {
                    if self.message.is_some() {
                        return Err(ReadError::Protocol);
                    }
                    let text = frame.opcode == OP_TEXT;
                    if frame.fin {
                        return message(text, frame.payload).map(Some);
                    }
                    self.message = Some(Partial { text, payload: frame.payload });
                }
                OP_CONTINUATION => {
                    let partial = self.message.as_mut().ok_or(ReadError::Protocol)?;
                    if partial.payload.len() + frame.payload.len() > self.max_message {
                        return Err(ReadError::TooBig);
                    }
                    partial.payload.extend_from_slice(&frame.payload);
                    if frame.fin {
                        let Partial { text, payload } = self.message.take().ok_or(ReadError::Protocol)?;
                        return message(text, payload).map(Some);
                    }
                }
                _ => return Err(ReadError::Protocol),
            }
        }
        Ok(None)
    }

    /// The next whole frame in what was read, taken out of it.
    fn frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let buf = &self.buf;
        let (Some(&first), Some(&second)) = (buf.first(), buf.get(1)) else { return Ok(None) };
        if first & 0x70 != 0 || second & 0x80 == 0 {
            // Reserved bits without an extension, or a frame the client did not mask.
            return Err(ReadError::Protocol);
        }
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let (length, mut at) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|bytes| <[u8; 8]>::try_from(bytes).ok()) {
                Some(bytes) => (u64::from_be_bytes(bytes), 10),
                None => return Ok(None),
            },
            short => (u64::from(short), 2),
        };
        if opcode >= OP_CLOSE && (!fin || length > MAX_CONTROL_PAYLOAD as u64) {
            return Err(ReadError::Protocol);
        }
        let length = usize::try_from(length).map_err(|_| ReadError::TooBig)?;
        if length > self.max_message {
            return Err(ReadError::TooBig);
        }
        let total = at + 4 + length;
        if buf.len() < total {
            self.wanted = total;
            return Ok(None);
        }
        let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        let payload = buf[at..total].iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key).collect();
        self.wanted = 0;
        if total == self.buf.len() {
            // Nothing left: an idle connection keeps no buffer.
            self.buf = Vec::new();
        } else {
            self.buf.drain(..total);
        }
        Ok(Some(Frame { fin, opcode, payload }))
    }
}

fn message(text: bool, payload: Vec<u8>) -> Result<Incoming, ReadError> {
    if text {
        String::from_utf8(payload).map(Incoming::Text).map_err(|_| ReadError::InvalidText)
    } else {
        Ok(Incoming::Binary)
    }
}

/// The server's side of the connection, owned by the connection's task. A write takes it
/// and gives it back when done ([`SocketWriter::write`]), so the task can go on reading the
/// client and the bus while a write waits for room in the socket's buffer; a write
/// abandoned part way (the connection dropped) drops the writer with it, and nothing can be
/// framed after it.
#[derive(Debug)]
pub struct SocketWriter {
    io: OwnedWriteHalf,
}

impl SocketWriter {
    /// Writes `control` (control frames framed by [`push_ping`] and [`push_pong`]), then
    /// `frames` as text frames, in order, in as few system calls as the socket allows, and
    /// gives the writer and the frames back. Not cancel-safe: see the type.
    ///
    /// # Errors
    /// When the connection failed.
    pub async fn write<F: AsRef<[u8]>>(
        mut self,
        control: Vec<u8>,
        frames: Vec<F>,
    ) -> io::Result<(Self, Vec<F>)> {
        let mut headers = Vec::with_capacity(frames.len() * 10);
        let mut ends = Vec::with_capacity(frames.len());
        for frame in &frames {
            push_header(&mut headers, OP_TEXT, frame.as_ref().len());
            ends.push(headers.len());
        }
        let mut slices = Vec::with_capacity(1 + frames.len() * 2);
        slices.push(IoSlice::new(&control));
        let mut start = 0;
        for (frame, end) in frames.iter().zip(ends) {
            slices.push(IoSlice::new(&headers[start..end]));
            slices.push(IoSlice::new(frame.as_ref()));
            start = end;
        }
        write_all_vectored(&mut self.io, &mut slices).await?;
        drop(slices);
        Ok((self, frames))
    }

    /// Sends the close frame and ends the server's side of the TCP connection.
    ///
    /// # Errors
    /// When the connection failed.
    pub async fn close(mut self, code: u16, reason: &str) -> io::Result<()> {
        let reason = truncate(reason, MAX_CONTROL_PAYLOAD - 2);
        let mut frame = Vec::with_capacity(4 + reason.len());
        push_header(&mut frame, OP_CLOSE, 2 + reason.len());
        frame.extend_from_slice(&code.to_be_bytes());
        frame.extend_from_slice(reason.as_bytes());
        self.io.write_all(&frame).await?;
        self.io.shutdown().await
    }
}

/// Frames a ping into `out`.
pub fn push_ping(out: &mut Vec<u8>) {
    push_control(out, OP_PING, &[]);
}

/// Frames the pong answering a ping of `payload` into `out`.
pub fn push_pong(out: &mut Vec<u8>, payload: &[u8]) {
    push_control(out, OP_PONG, payload);
}

fn push_control(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    push_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// A server frame's header (never masked) for a payload of `length` bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, length: usize) {
    out.push(0x80 | opcode);
    match u16::try_from(length) {
        Ok(short) if short < 126 => out.push(u8::try_from(short).unwrap_or(125)),
        Ok(medium) => {
            out.push(126);
            out.extend_from_slice(&medium.to_be_bytes());
        }
        Err(_) => {
            out.push(127);
            out.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn write_all_vectored(io: &mut OwnedWriteHalf, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !slices.is_empty() {
        let written = io.write_vectored(slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// A client frame: masked, as RFC 6455 requires.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            short @ 0..126 => out.push(0x80 | u8::try_from(short).unwrap()),
            medium @ 126..65536 => {
                out.push(0x80 | 0x7E);
                out.extend_from_slice(&u16::try_from(medium).unwrap().to_be_bytes());
            }
            long => {
                out.push(0x80 | 0x7F);
                out.extend_from_slice(&(long as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(byte, key)| byte ^ key));
        out
    }

    /// A connected pair: the server's reader and writer, and the client's stream.
    async fn pair(already_read: &[u8], max: usize) -> (SocketReader, SocketWriter, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (reader, writer) = split(server, already_read, max);
        (reader, writer, client)
    }

    #[tokio::test]
    async fn messages_are_read_across_reads_with_continuations_and_controls_between() {
        let early = client_frame(true, OP_TEXT, b"early");
        let (mut reader, _writer, mut client) = pair(&early, 1 << 16).await;
        let mut bytes = client_frame(false, OP_TEXT, "h\u{e9}l".as_bytes());
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(true, OP_CONTINUATION, b"lo"));
        bytes.extend(client_frame(true, OP_BINARY, &[0, 1]));
        bytes.extend(client_frame(true, OP_TEXT, &vec![b'x'; 70_000][..40_000]));
        bytes.extend(client_frame(true, OP_PONG, b""));
        bytes.extend(client_frame(true, OP_CLOSE, &1000u16.to_be_bytes()));
        // One byte at a time: every frame is cut at every point.
        for byte in bytes {
            client.write_all(&[byte]).await.unwrap();
        }
        let expected = [
            Incoming::Text("early".into()),
            Incoming::Ping(b"p".to_vec()),
            Incoming::Text("h\u{e9}llo".into()),
            Incoming::Binary,
            Incoming::Text("x".repeat(40_000)),
            Incoming::Pong,
            Incoming::Close,
        ];
        for message in expected {
            assert_eq!(reader.recv().await, Some(Ok(message)));
        }
        assert_eq!(reader.buf.capacity(), 0, "nothing held between messages");
        drop(client);
        assert_eq!(reader.recv().await, None, "the client's end of the connection");
    }

    #[tokio::test]
    async fn frames_that_break_the_protocol_or_the_size_are_errors() {
        let cases: Vec<(Vec<u8>, ReadError)> = vec![
            (client_frame(true, OP_TEXT, &[b'a'; 101]), ReadError::TooBig),
            (
                [client_frame(false, OP_TEXT, &[b'a'; 60]), client_frame(true, OP_CONTINUATION, &[b'a'; 60])]
                    .concat(),
                ReadError::TooBig,
            ),
            (client_frame(true, OP_CONTINUATION, b"x"), ReadError::Protocol),
            (
                [client_frame(false, OP_TEXT, b"a"), client_frame(true, OP_TEXT, b"b")].concat(),
                ReadError::Protocol,
            ),
            (client_frame(false, OP_PING, b""), ReadError::Protocol),
            (client_frame(true, 0x3, b""), ReadError::Protocol),
            (vec![0x81, 0x01, b'a'], ReadError::Protocol),
            (
                {
                    let mut frame = client_frame(true, OP_TEXT, b"a");
                    frame[0] |= 0x40;
                    frame
                },
                ReadError::Protocol,
            ),
            (client_frame(true, OP_TEXT, &[0xff, 0xfe]), ReadError::InvalidText),
        ];
        for (bytes, expected) in cases {
            let (mut reader, _writer, mut client) = pair(&[], 100).await;
            client.write_all(&bytes).await.unwrap();
            assert_eq!(reader.recv().await, Some(Err(expected)), "{bytes:?}");
        }
        // An oversized control frame is refused from its header alone.
        let (mut reader, _writer, mut client) = pair(&[], 1 << 16).await;
        client.write_all(&[0x89, 0x80 | 0x7E, 0, 200]).await.unwrap();
        assert_eq!(reader.recv().await, Some(Err(ReadError::Protocol)));
    }

    #[tokio::test]
    async fn texts_pings_pongs_and_the_close_frame_are_framed_for_the_client() {
        let (_reader, writer, mut client) = pair(&[], 1 << 16).await;
        let long = "y".repeat(70_000);
        let frames = vec!["one".to_owned(), "x".repeat(300), long.clone()];
        let (writer, frames) = writer.write(Vec::new(), frames).await.unwrap();
        assert_eq!(frames.len(), 3, "the frames come back");
        let mut control = Vec::new();
        push_ping(&mut control);
        push_pong(&mut control, b"p");
        let (writer, _) = writer.write(control, vec!["z"]).await.unwrap();
        writer.close(1013, "slow_consumer").await.unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        let mut expected = vec![0x81, 3];
        expected.extend_from_slice(b"one");
        expected.extend_from_slice(&[0x81, 126, 1, 44]);
        expected.extend_from_slice("x".repeat(300).as_bytes());
        expected.extend_from_slice(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        expected.extend_from_slice(long.as_bytes());
        expected.extend_from_slice(&[0x89, 0, 0x8A, 1, b'p', 0x81, 1, b'z', 0x88, 15, 0x03, 0xF5]);
        expected.extend_from_slice(b"slow_consumer");
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "frames differ");
    }

    #[test]
    fn a_control_frame_payload_is_cut_to_what_the_protocol_allows() {
        let mut out = Vec::new();
        push_pong(&mut out, &[7; 200]);
        assert_eq!(out.len(), 2 + MAX_CONTROL_PAYLOAD);
        assert_eq!(out[..2], [0x8A, 125]);
    }

    #[test]
    fn a_close_reason_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("h\u{e9}llo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
