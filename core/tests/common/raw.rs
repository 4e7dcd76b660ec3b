//! A WebSocket client that writes frames byte by byte, so tests can send what no client library will: invalid
//! UTF-8, oversized or fragmented control frames, stray continuations, a frame header promising 10 MB.
//! It does the upgrade handshake itself and reads server frames (never masked, never fragmented here).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// Every client frame is masked with this key; any key will do.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

const WAIT: Duration = Duration::from_secs(5);

/// One frame as read from the server.
#[derive(Debug)]
pub struct Frame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

pub struct RawClient {
    stream: TcpStream,
    /// Bytes read but not yet taken as a frame.
    buffer: Vec<u8>,
}

impl RawClient {
    /// Opens a WebSocket connection on `path` with a `user=<user>` cookie.
    pub async fn connect(addr: SocketAddr, path: &str, user: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: actioncable-v1-json\r\nCookie: user={user}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "connection closed during the handshake");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buffer.drain(..end);
        Self { stream, buffer }
    }

    /// The header of a masked client frame whose payload is `len` bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => header.push(0x80 | len as u8),
            126..=0xffff => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&len.to_be_bytes());
            }
        }
        header.extend_from_slice(&MASK);
        header
    }

    fn masked(payload: &[u8]) -> Vec<u8> {
        payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]).collect()
    }

    /// Writes one complete frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut bytes = Self::header(fin, opcode, payload.len() as u64);
        bytes.extend(Self::masked(payload));
        self.send_bytes(&bytes).await;
    }

    /// Writes a frame header promising `len` bytes, followed by only the first `payload` bytes of it.
    pub async fn send_partial_frame(&mut self, opcode: u8, len: u64, payload: &[u8]) {
        let mut bytes = Self::header(true, opcode, len);
        bytes.extend(Self::masked(payload));
        self.send_bytes(&bytes).await;
    }

    /// Writes bytes as they are, framing and masking up to the caller. A write the server no longer takes
    /// (it may close on the first bad frame while later ones are on the way) is not an error here: what the
    /// server answered is read with [`RawClient::closed`].
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Writes bytes as they are and says whether the server took them: a reset (the server closed with input
    /// unread) fails the write.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// A masked text frame holding `payload`, as bytes to send.
    pub fn text_frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = Self::header(true, TEXT, payload.len() as u64);
        bytes.extend(Self::masked(payload));
        bytes
    }

    /// Sends a text frame holding `value` as JSON.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_frame(true, TEXT, value.to_string().as_bytes()).await;
    }

    /// The next frame, or `None` when the server closed the TCP connection (or reset it) first.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await;
            match read.unwrap_or_else(|_| panic!("no frame within {WAIT:?}")) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next text frame that is not a ping, as JSON; panics on anything else.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = self.read_frame().await.expect("connection closed while waiting for a frame");
            match frame.opcode {
                TEXT => {
                    let value: Value = serde_json::from_slice(&frame.payload).unwrap();
                    if value["type"] != "ping" {
                        return value;
                    }
                }
                PONG => {}
                other => panic!("expected a text frame, got opcode {other:#x}: {:?}", frame.payload),
            }
        }
    }

    /// The next pong, skipping text frames; panics on anything else.
    pub async fn pong(&mut self) -> Vec<u8> {
        loop {
            let frame = self.read_frame().await.expect("connection closed while waiting for a pong");
            match frame.opcode {
                PONG => return frame.payload,
                TEXT => {}
                other => panic!("expected a pong, got opcode {other:#x}"),
            }
        }
    }

    /// Waits for the server's close frame, skipping text frames; returns its code, and checks that the server
    /// then ends the TCP connection.
    pub async fn closed(&mut self) -> u16 {
        loop {
            let frame = self.read_frame().await.expect("connection ended without a close frame");
            match frame.opcode {
                CLOSE => {
                    assert!(frame.payload.len() >= 2, "close frame without a code");
                    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                    assert!(self.read_frame().await.is_none(), "the server keeps the connection after closing");
                    return code;
                }
                TEXT | PONG => {}
                other => panic!("expected a close frame, got opcode {other:#x}"),
            }
        }
    }
}

/// One complete unmasked server frame at the start of `bytes`, with the number of bytes it takes.
fn parse_server_frame(bytes: &[u8]) -> Option<(Frame, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    assert_eq!(bytes[0] & 0x80, 0x80, "the server fragmented a frame");
    assert_eq!(bytes[1] & 0x80, 0, "the server masked a frame");
    let opcode = bytes[0] & 0x0f;
    let (len, start) = match bytes[1] & 0x7f {
        126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
        127 if bytes.len() >= 10 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
        126 | 127 => return None,
        len => (len as usize, 2),
    };
    if bytes.len() < start + len {
        return None;
    }
    Some((Frame { opcode, payload: bytes[start..start + len].to_vec() }, start + len))
}
