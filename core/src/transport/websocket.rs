//! The WebSocket protocol (RFC 6455), server side, on an upgraded connection: the handshake's answer, reading
//! client frames with every check a server owes them (masking, reserved bits and opcodes, the control frame
//! rules, fragmentation, UTF-8 of text, `max_message_size` decided from a frame's header) and writing frames.
//!
//! Built for the idle connection and for fan-out. While no frame is partly read, a connection holds its socket
//! and a few words: input is read into a buffer on the stack of the read and only the unfinished rest of a
//! frame is kept, in an allocation that goes once it is used up. Nothing is buffered for writing: a frame is its
//! header (at most 10 bytes, the only thing encoded per client) and the bytes the hub encoded once for every
//! subscriber, written together with one vectored write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::client::close_code;

const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// How much one read takes from the socket (on the stack of the read, not kept).
const READ_CHUNK: usize = 4096;

/// A whole message from the client, or a control frame the connection acts on. Pongs are consumed here.
#[derive(Debug, PartialEq)]
pub(crate) enum Message {
    Text(String),
    Binary(Bytes),
    /// To be answered with a pong carrying the same bytes.
    Ping(Bytes),
    /// The client's close frame and its status code, if it sent one.
    Close(Option<u16>),
}

/// Why the server closes a connection over what its client sent: the close code and reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refusal {
    /// A frame or a message over `max_message_size` (1009).
    TooBig,
    /// A text message (or close reason) that is not UTF-8 (1007).
    InvalidUtf8,
    /// A violation of the framing rules (1002).
    Protocol(&'static str),
}

impl Refusal {
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::TooBig => close_code::MESSAGE_TOO_BIG,
            Self::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            Self::Protocol(_) => close_code::PROTOCOL_ERROR,
        }
    }

    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::TooBig => "message too big",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::Protocol(what) => what,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// What reading failed with.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed (the client has gone away).
    Io(io::Error),
    /// The client broke the protocol: the connection is closed with this code.
    Refused(Refusal),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => error.fmt(f),
            Self::Refused(refusal) => refusal.fmt(f),
        }
    }
}

/// The byte stream under a WebSocket.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The client's close frame arrived: a client sends nothing after it, so the socket can be closed outright
    /// once the server's answer is written (no reading and dropping of what the peer still sends).
    fn client_closed(&mut self) {}
}

/// A server-side WebSocket connection on `IO`.
pub(crate) struct WebSocket<IO> {
    io: IO,
    /// Input past the last whole frame and the message being assembled; `None` while there is neither.
    partial: Option<Box<Partial>>,
    max_message_size: usize,
    /// Set once reading ended (end of input, a failure, a refusal or the client's close): nothing more is read.
    ended: bool,
}

#[derive(Default)]
struct Partial {
    input: BytesMut,
    /// The opcode of a fragmented message and what has arrived of it.
    message: Option<(u8, BytesMut)>,
}

impl<IO: Socket> WebSocket<IO> {
    pub(crate) fn new(io: IO, max_message_size: usize) -> Self {
        Self { io, partial: None, max_message_size, ended: false }
    }

    /// A WebSocket whose client already sent `input` after its upgrade request (read with the request's head).
    pub(crate) fn with_input(io: IO, max_message_size: usize, input: &[u8]) -> Self {
        let mut socket = Self::new(io, max_message_size);
        if !input.is_empty() {
            socket.partial.get_or_insert_default().input.extend_from_slice(input);
        }
        socket
    }

    /// The next message; `None` once reading has ended.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, ReadError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            if let Some(partial) = self.partial.as_mut() {
                let parsed = parse(partial, self.max_message_size);
                if partial.input.is_empty() && partial.message.is_none() {
                    self.partial = None;
                }
                match parsed {
                    Some(Ok(Message::Close(code))) => {
                        self.ended = true;
                        self.io.client_closed();
                        return Poll::Ready(Some(Ok(Message::Close(code))));
                    }
                    Some(Ok(message)) => return Poll::Ready(Some(Ok(message))),
                    Some(Err(refusal)) => {
                        self.ended = true;
                        return Poll::Ready(Some(Err(ReadError::Refused(refusal))));
                    }
                    None => {}
                }
            }
            // Not zeroed: the socket writes into it and only what it filled is looked at.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(error) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                self.ended = true;
                return Poll::Ready(Some(Err(ReadError::Io(error))));
            }
            if buf.filled().is_empty() {
                self.ended = true;
                return Poll::Ready(None);
            }
            self.partial.get_or_insert_default().input.extend_from_slice(buf.filled());
        }
    }

    /// Reads what the client still sends until its close frame, the end of input or a failure.
    pub(crate) async fn until_closed(&mut self) {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| self.poll_next(cx)).await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    }

    /// Writes `before` (bytes that are not a frame: the answer to the upgrade request, or nothing) and then data
    /// frames (`opcode` [`TEXT`] or [`BINARY`]): one write for a single frame and one per batch otherwise.
    pub(crate) async fn write_data_after(&mut self, before: &[u8], opcode: u8, frames: &[Bytes]) -> io::Result<()> {
        match frames {
            [] if before.is_empty() => Ok(()),
            [frame] if before.is_empty() => self.write_frame(opcode, frame).await,
            frames => {
                let total = before.len() + frames.iter().map(|f| f.len() + 10).sum::<usize>();
                let mut batch = Vec::with_capacity(total);
                batch.extend_from_slice(before);
                for frame in frames {
                    let (head, len) = frame_head(opcode, frame.len());
                    batch.extend_from_slice(&head[..len]);
                    batch.extend_from_slice(frame);
                }
                self.io.write_all(&batch).await?;
                self.io.flush().await
            }
        }
    }

    /// Answers a ping.
    pub(crate) async fn write_pong(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_frame(PONG, data).await
    }

    /// Writes a close frame with `code` and `reason` (cut to the 123 bytes a control frame leaves for it).
    pub(crate) async fn write_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut payload = Vec::with_capacity(2 + cut);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        self.write_frame(CLOSE, &payload).await
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let (head, len) = frame_head(opcode, payload.len());
        let (mut head, mut payload) = (&head[..len], payload);
        while !head.is_empty() || !payload.is_empty() {
            let written = self.io.write_vectored(&[IoSlice::new(head), IoSlice::new(payload)]).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let from_head = written.min(head.len());
            head = &head[from_head..];
            payload = &payload[written - from_head..];
        }
        self.io.flush().await
    }
}

/// The header of an unmasked final frame carrying `len` bytes, and its length.
fn frame_head(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | opcode;
    match len {
        0..=125 => {
            head[1] = len as u8;
            (head, 2)
        }
        126..=0xFFFF => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            (head, 4)
        }
        _ => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            (head, 10)
        }
    }
}

/// The next message in `partial.input`, `None` when more input is needed.
fn parse(partial: &mut Partial, max_message_size: usize) -> Option<Result<Message, Refusal>> {
    loop {
        let input = &partial.input;
        if input.len() < 2 {
            return None;
        }
        let (first, second) = (input[0], input[1]);
        if first & 0x70 != 0 {
            return Some(Err(Refusal::Protocol("reserved bit set")));
        }
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
            return Some(Err(Refusal::Protocol("reserved opcode")));
        }
        if second & 0x80 == 0 {
            return Some(Err(Refusal::Protocol("unmasked client frame")));
        }
        let (len, length_bytes) = match second & 0x7F {
            126 if input.len() < 4 => return None,
            126 => (u64::from(u16::from_be_bytes([input[2], input[3]])), 2),
            127 if input.len() < 10 => return None,
            127 => (u64::from_be_bytes(input[2..10].try_into().expect("8 bytes")), 8),
            short => (u64::from(short), 0),
        };
        let control = opcode & 0x8 != 0;
        if control {
            if !fin {
                return Some(Err(Refusal::Protocol("fragmented control frame")));
            }
            if len > 125 {
                return Some(Err(Refusal::Protocol("control frame over 125 bytes")));
            }
        } else {
            match (opcode, partial.message.is_some()) {
                (CONTINUATION, false) => return Some(Err(Refusal::Protocol("continuation with nothing to continue"))),
                (TEXT | BINARY, true) => return Some(Err(Refusal::Protocol("new message inside a fragmented one"))),
                _ => {}
            }
            // Decided from the header: a frame too big is refused before its payload is waited for or kept.
            let so_far = partial.message.as_ref().map_or(0, |(_, m)| m.len()) as u64;
            if so_far.saturating_add(len) > max_message_size as u64 {
                return Some(Err(Refusal::TooBig));
            }
        }
        let head_len = 2 + length_bytes + 4;
        let len = len as usize;
        if partial.input.len() < head_len + len {
            return None;
        }
        let mask: [u8; 4] = partial.input[head_len - 4..head_len].try_into().expect("4 bytes");
        partial.input.advance(head_len);
        let mut payload = partial.input.split_to(len);
        unmask(&mut payload, mask);
        match opcode {
            PING => return Some(Ok(Message::Ping(payload.freeze()))),
            PONG => continue,
            CLOSE => return Some(close_frame(&payload)),
            _ => {}
        }
        let (opcode, payload) = match partial.message.take() {
            None if fin => (opcode, payload),
            None => {
                partial.message = Some((opcode, payload));
                continue;
            }
            Some((opcode, mut message)) => {
                message.extend_from_slice(&payload);
                if !fin {
                    partial.message = Some((opcode, message));
                    continue;
                }
                (opcode, message)
            }
        };
        return Some(if opcode == TEXT {
            String::from_utf8(payload.into()).map(Message::Text).map_err(|_| Refusal::InvalidUtf8)
        } else {
            Ok(Message::Binary(payload.freeze()))
        });
    }
}

fn close_frame(payload: &[u8]) -> Result<Message, Refusal> {
    match payload {
        [] => Ok(Message::Close(None)),
        [_] => Err(Refusal::Protocol("close frame with a one-byte payload")),
        [high, low, reason @ ..] => {
            if std::str::from_utf8(reason).is_err() {
                return Err(Refusal::InvalidUtf8);
            }
            Ok(Message::Close(Some(u16::from_be_bytes([*high, *low]))))
        }
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i];
    }
}

/// The close code to answer a client's close frame with: its own when it is one a peer may send, 1002 when
/// it is not, 1000 when it sent none.
pub(crate) fn close_reply_code(code: Option<u16>) -> u16 {
    match code {
        None => close_code::NORMAL,
        Some(code @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => code,
        Some(_) => close_code::PROTOCOL_ERROR,
    }
}

/// Checks that a request asks for a WebSocket this server speaks; returns its `Sec-WebSocket-Key`, or the
/// status and message to refuse it with.
pub(crate) fn handshake_key<'h>(
    method: &Method,
    headers: &'h HeaderMap,
) -> Result<&'h HeaderValue, (StatusCode, &'static str)> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|v| {
            v.trim().eq_ignore_ascii_case(token)
        })
    };
    if method != Method::GET {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "a WebSocket upgrade must be a GET request\n"));
    }
    if !has_token(header::CONNECTION, "upgrade") {
        return Err((StatusCode::UPGRADE_REQUIRED, "Connection header did not include 'upgrade'\n"));
    }
    if !has_token(header::UPGRADE, "websocket") {
        return Err((StatusCode::BAD_REQUEST, "Upgrade header did not include 'websocket'\n"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err((StatusCode::BAD_REQUEST, "Sec-WebSocket-Version header did not include '13'\n"));
    }
    headers.get(header::SEC_WEBSOCKET_KEY).ok_or((StatusCode::BAD_REQUEST, "Sec-WebSocket-Key header missing\n"))
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
pub(crate) fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn parse_all(bytes: &[u8], max: usize) -> Vec<Result<Message, Refusal>> {
        let mut partial = Partial::default();
        let mut out = Vec::new();
        // Byte by byte: every split point of every frame is a place a read can end.
        for byte in bytes {
            partial.input.extend_from_slice(&[*byte]);
            while let Some(result) = parse(&mut partial, max) {
                let refused = result.is_err();
                out.push(result);
                if refused {
                    return out;
                }
            }
        }
        out
    }

    #[test]
    fn the_accept_key_is_the_one_of_the_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn messages_of_every_length_form_arrive_whole_whatever_the_reads() {
        let long = "x".repeat(300);
        let huge = "y".repeat(70_000);
        let mut bytes = frame(true, TEXT, b"{}");
        bytes.extend(frame(true, TEXT, long.as_bytes()));
        bytes.extend(frame(true, BINARY, huge.as_bytes()));
        bytes.extend(frame(true, PONG, b"ignored"));
        bytes.extend(frame(true, PING, b"p"));
        let got = parse_all(&bytes, 100_000);
        assert_eq!(got, [
            Ok(Message::Text("{}".into())),
            Ok(Message::Text(long)),
            Ok(Message::Binary(Bytes::from(huge))),
            Ok(Message::Ping(Bytes::from_static(b"p"))),
        ]);
    }

    #[test]
    fn fragments_are_joined_with_control_frames_between_them() {
        let mut bytes = frame(false, TEXT, "{\"a\":\"€".as_bytes().split_at(7).0);
        bytes.extend(frame(true, PING, b"between"));
        bytes.extend(frame(false, CONTINUATION, &"€".as_bytes()[1..]));
        bytes.extend(frame(true, CONTINUATION, b"\"}"));
        assert_eq!(parse_all(&bytes, 1024), [
            Ok(Message::Ping(Bytes::from_static(b"between"))),
            Ok(Message::Text("{\"a\":\"€\"}".into())),
        ]);
    }

    #[test]
    fn violations_are_refused_with_their_code() {
        let unmasked = [0x81u8, 0x02, b'{', b'}'];
        let cases: [(&str, Vec<u8>, Refusal); 10] = [
            ("ping over 125", frame(true, PING, &[0; 126]), Refusal::Protocol("control frame over 125 bytes")),
            ("fragmented ping", frame(false, PING, b"a"), Refusal::Protocol("fragmented control frame")),
            ("stray continuation", frame(true, CONTINUATION, b"{}"), Refusal::Protocol("continuation with nothing to continue")),
            ("new message inside", [frame(false, TEXT, b"{"), frame(true, TEXT, b"}")].concat(), Refusal::Protocol("new message inside a fragmented one")),
            ("reserved opcode", frame(true, 0x3, b""), Refusal::Protocol("reserved opcode")),
            ("unmasked", unmasked.to_vec(), Refusal::Protocol("unmasked client frame")),
            ("rsv1", { let mut f = frame(true, TEXT, b"{}"); f[0] |= 0x40; f }, Refusal::Protocol("reserved bit set")),
            ("invalid utf-8", frame(true, TEXT, b"\xff"), Refusal::InvalidUtf8),
            ("split invalid utf-8", [frame(false, TEXT, b"\xe2\x82"), frame(true, CONTINUATION, b"\xff")].concat(), Refusal::InvalidUtf8),
            ("one-byte close", frame(true, CLOSE, b"x"), Refusal::Protocol("close frame with a one-byte payload")),
        ];
        for (what, bytes, refusal) in cases {
            assert_eq!(parse_all(&bytes, 1024).pop(), Some(Err(refusal)), "{what}");
        }
    }

    #[test]
    fn size_is_decided_from_the_header_before_the_payload_arrives() {
        let mut partial = Partial::default();
        // A header promising 10 MB and no payload yet.
        partial.input.extend_from_slice(&[0x81, 0x80 | 127]);
        partial.input.extend_from_slice(&(10u64 << 20).to_be_bytes());
        assert_eq!(parse(&mut partial, 1 << 20), Some(Err(Refusal::TooBig)));
        // Fragments that fit one by one but not together.
        let bytes = [frame(false, TEXT, &[b' '; 600]), frame(true, CONTINUATION, &[b' '; 600])].concat();
        assert_eq!(parse_all(&bytes, 1024), [Err(Refusal::TooBig)]);
        // The largest length a header can carry.
        let mut partial = Partial::default();
        partial.input.extend_from_slice(&[0x82, 0xFF]);
        partial.input.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        assert_eq!(parse(&mut partial, 1 << 20), Some(Err(Refusal::TooBig)));
    }

    #[test]
    fn close_frames_carry_their_code() {
        assert_eq!(parse_all(&frame(true, CLOSE, b""), 10), [Ok(Message::Close(None))]);
        let close = [&1001u16.to_be_bytes()[..], b"bye"].concat();
        assert_eq!(parse_all(&frame(true, CLOSE, &close), 10), [Ok(Message::Close(Some(1001)))]);
        assert_eq!(close_reply_code(Some(1001)), 1001);
        assert_eq!(close_reply_code(Some(1005)), 1002);
        assert_eq!(close_reply_code(None), 1000);
    }

    #[test]
    fn headers_use_the_shortest_length_form() {
        assert_eq!(frame_head(TEXT, 125).1, 2);
        assert_eq!(frame_head(TEXT, 126), ([0x81, 126, 0, 126, 0, 0, 0, 0, 0, 0], 4));
        assert_eq!(frame_head(BINARY, 70_000).1, 10);
        assert_eq!(&frame_head(BINARY, 70_000).0[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    impl Socket for tokio::io::DuplexStream {}

    async fn next<IO: Socket>(ws: &mut WebSocket<IO>) -> Option<Result<Message, ReadError>> {
        std::future::poll_fn(|cx| ws.poll_next(cx)).await
    }

    #[tokio::test]
    async fn reads_and_writes_over_a_socket() {
        let (client, server) = tokio::io::duplex(64);
        let mut ws = WebSocket::new(server, 1024);
        let (mut read_half, mut write_half) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            write_half.write_all(&frame(true, TEXT, b"hello")).await.unwrap();
            write_half.write_all(&frame(true, CLOSE, &1000u16.to_be_bytes())).await.unwrap();
            write_half
        });
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::Text("hello".into()));
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::Close(Some(1000)));
        assert!(next(&mut ws).await.is_none(), "nothing is read after the close");
        let _write_half = writer.await.unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut read_half, &mut got).await.unwrap();
            got
        });
        ws.write_data_after(&[], TEXT, &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")]).await.unwrap();
        ws.write_data_after(&[], TEXT, &[Bytes::from(vec![b'z'; 200])]).await.unwrap();
        ws.write_close(1000, "").await.unwrap();
        drop(ws);
        let got = reader.await.unwrap();
        let mut expected = vec![0x81, 1, b'a', 0x81, 2, b'b', b'c', 0x81, 126, 0, 200];
        expected.extend([b'z'; 200]);
        expected.extend([0x88, 2, 0x03, 0xE8]);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn input_read_with_the_upgrade_comes_first_and_the_answer_goes_out_with_the_first_frame() {
        let (mut client, server) = tokio::io::duplex(256);
        let early = frame(true, TEXT, b"early");
        let mut ws = WebSocket::with_input(server, 1024, &early[..3]);
        client.write_all(&early[3..]).await.unwrap();
        assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::Text("early".into()));
        ws.write_data_after(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", TEXT, &[Bytes::from_static(b"hi")])
            .await
            .unwrap();
        let mut got = vec![0u8; 40];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut got).await.unwrap();
        assert_eq!(&got[..36], b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert_eq!(&got[36..], &[0x81, 2, b'h', b'i']);
    }
}
