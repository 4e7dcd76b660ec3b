//! Action Cable v1 client pieces: connecting from a chosen loopback source address (in the plain or the extended
//! protocol, in JSON, MessagePack or Protobuf, optionally restoring a session by its sid), the welcome and
//! subscription handshakes, and a minimal keep-alive HTTP/1.1 client for broadcasts. Binary server frames are read
//! as the JSON text they stand for, so every scenario looks at frames one way.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ferrocable::protocol::{Encoding, Protocol, msgpack, protobuf};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Ws = WebSocketStream<TcpStream>;

/// Where and how clients connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
    /// A small socket receive buffer (bytes) for clients that stop reading, so the server notices sooner.
    pub receive_buffer: Option<u32>,
    /// The TCP maximum segment size the client announces (`TCP_MAXSEG`): over loopback both sides use a 64 KiB
    /// segment, which lets the server's kernel grow its send buffer far beyond what a client across a network
    /// would see.
    pub mss: Option<u32>,
    /// The sub-protocol offered, which the server must pick.
    pub protocol: &'static str,
    /// The opening handshake request up to its `Sec-WebSocket-Key` value, the same for every client.
    request_head: std::sync::Arc<str>,
}

/// The Action Cable sub-protocol.
pub const PLAIN_PROTOCOL: &str = "actioncable-v1-json";
/// AnyCable's extended protocol: broadcasts carry their stream position, sessions can be restored.
pub const EXTENDED_PROTOCOL: &str = "actioncable-v1-ext-json";
/// Longest handshake response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

impl Target {
    pub fn new(url: &str, sources: usize, cookie: Option<String>, timeout: Duration) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| anyhow!("only ws:// URLs are supported: {url}"))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .with_context(|| format!("cannot resolve {hostport}"))?
            .next()
            .ok_or_else(|| anyhow!("no address for {hostport}"))?;
        if !addr.ip().is_loopback() {
            bail!("load is only sent to loopback addresses, not {addr}");
        }
        // Several 127.0.0.x source addresses lift the ~28k ephemeral ports limit per source.
        let sources = (1..=sources.max(1)).map(|i| IpAddr::from([127, 0, 0, i as u8])).collect();
        let path = match &rest[hostport.len()..] {
            "" => "/",
            path => path,
        };
        if let Some(bad) = [path, hostport, cookie.as_deref().unwrap_or("")].iter().find(|p| p.contains(['\r', '\n'])) {
            bail!("line break in the URL or cookie: {bad:?}");
        }
        let cookie_line = cookie.as_deref().map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
        let request_head = format!(
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {PLAIN_PROTOCOL}\r\n{cookie_line}Sec-WebSocket-Key: "
        );
        Ok(Self {
            addr,
            sources,
            timeout,
            receive_buffer: None,
            mss: None,
            protocol: PLAIN_PROTOCOL,
            request_head: request_head.into(),
        })
    }

    /// The same target offering (and requiring) the plain or extended protocol in `encoding`.
    pub fn with_protocol(mut self, extended: bool, encoding: Encoding) -> Self {
        let name = format!("actioncable-v1-{}{}", if extended { "ext-" } else { "" }, encoding.name());
        let protocol = Protocol::from_name(Some(&name)).name();
        let current = format!("Sec-WebSocket-Protocol: {}\r\n", self.protocol);
        let wanted = format!("Sec-WebSocket-Protocol: {protocol}\r\n");
        self.request_head = self.request_head.replacen(&current, &wanted, 1).into();
        self.protocol = protocol;
        self
    }

    pub fn is_extended(&self) -> bool {
        Protocol::from_name(Some(self.protocol)).is_extended()
    }

    /// Opens a WebSocket from the `n`-th source address offering the target's sub-protocol.
    ///
    /// The opening handshake is written and checked here (the request is prepared once per run; the response
    /// must be `101` with `Upgrade: websocket`, `Connection: Upgrade`, the `Sec-WebSocket-Accept` of this
    /// client's key and the sub-protocol), which costs the tool far less per connection than a general HTTP
    /// client, so that it can keep up with the servers it measures.
    pub async fn connect(&self, n: usize) -> anyhow::Result<Ws> {
        self.connect_restoring(n, None).await
    }

    /// Opens a WebSocket like [`Target::connect`], bringing `previous_sid` (the `sid` query parameter, as the
    /// AnyCable client does) so that the server restores that session.
    pub async fn connect_restoring(&self, n: usize, previous_sid: Option<&str>) -> anyhow::Result<Ws> {
        let source = self.sources[n % self.sources.len()];
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = self.receive_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        if let Some(mss) = self.mss {
            set_mss(&socket, mss)?;
        }
        socket.bind(SocketAddr::new(source, 0))?;
        let stream =
            tokio::time::timeout(self.timeout, socket.connect(self.addr)).await.context("connect timeout")??;
        stream.set_nodelay(true)?;
        let config = WebSocketConfig::default().read_buffer_size(8192).write_buffer_size(0);
        let (stream, leftover) = tokio::time::timeout(self.timeout, self.handshake(stream, previous_sid))
            .await
            .context("handshake timeout")??;
        Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config)).await)
    }

    /// The opening handshake; returns the stream and whatever the server sent after the response head.
    async fn handshake(
        &self,
        mut stream: TcpStream,
        previous_sid: Option<&str>,
    ) -> anyhow::Result<(TcpStream, Vec<u8>)> {
        let key = generate_key();
        let mut request = String::with_capacity(self.request_head.len() + key.len() + 4);
        match previous_sid {
            Some(sid) => request.push_str(&restoring_head(&self.request_head, sid)?),
            None => request.push_str(&self.request_head),
        }
        request.push_str(&key);
        request.push_str("\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(512);
        let head_len = loop {
            let searched = buf.len().saturating_sub(3);
            if stream.read_buf(&mut buf).await? == 0 {
                bail!("connection closed during the handshake");
            }
            if let Some(end) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
                break searched + end + 4;
            }
            if buf.len() > MAX_RESPONSE_HEAD {
                bail!("handshake response head longer than {MAX_RESPONSE_HEAD} bytes");
            }
        };
        check_handshake_response(&buf[..head_len], &derive_accept_key(key.as_bytes()), self.protocol)?;
        Ok((stream, buf.split_off(head_len)))
    }
}

/// `head` with `sid=<previous_sid>` added to the query of its request line.
fn restoring_head(head: &str, previous_sid: &str) -> anyhow::Result<String> {
    if !previous_sid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) {
        bail!("a sid to restore must be URL-safe: {previous_sid:?}");
    }
    let (path, rest) = head.split_once(" HTTP/1.1\r\n").ok_or_else(|| anyhow!("no request line"))?;
    let separator = if path.contains('?') { '&' } else { '?' };
    Ok(format!("{path}{separator}sid={previous_sid} HTTP/1.1\r\n{rest}"))
}

/// Checks a handshake response head as RFC 6455 §4.1 asks of a client (and as tungstenite does), including that
/// the server picked `protocol`.
fn check_handshake_response(head: &[u8], accept_key: &str, protocol: &str) -> anyhow::Result<()> {
    let head = std::str::from_utf8(head).context("handshake response is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.split(' ').next());
    if code != Some("101") {
        bail!("handshake refused: {status}");
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        bail!("handshake response without Upgrade: websocket");
    }
    if !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")) {
        bail!("handshake response without Connection: Upgrade");
    }
    if header("sec-websocket-accept") != Some(accept_key) {
        bail!("handshake response with a wrong Sec-WebSocket-Accept");
    }
    match header("sec-websocket-protocol") {
        Some(picked) if picked == protocol => Ok(()),
        Some(other) => bail!("server picked sub-protocol {other:?}, not {protocol}"),
        None => bail!("server picked no sub-protocol ({protocol} was offered)"),
    }
}

/// Sets `TCP_MAXSEG` on a socket before it connects.
fn set_mss(socket: &TcpSocket, mss: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(mss).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt on a socket this function borrows, with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// The parts of a server frame the tool looks at.
#[derive(Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type")]
    pub kind: Option<&'a str>,
    #[serde(borrow)]
    pub message: Option<&'a RawValue>,
    pub reason: Option<&'a str>,
}

/// The next frame before `deadline` as JSON text (a binary frame of `protocol` read as the JSON it stands for);
/// other frames are skipped, a close ends the wait with an error.
pub async fn next_text(
    ws: &mut Ws,
    deadline: tokio::time::Instant,
    what: &str,
    protocol: &str,
) -> anyhow::Result<Utf8Bytes> {
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .ok_or_else(|| anyhow!("closed while waiting for {what}"))??;
        match msg {
            Message::Text(text) => return Ok(text),
            Message::Binary(bytes) => return binary_as_json(protocol, &bytes),
            Message::Close(_) => bail!("closed while waiting for {what}"),
            _ => {}
        }
    }
}

/// A binary server frame of `protocol` as the JSON text of the same frame (Protobuf's empty fields left out).
pub fn binary_as_json(protocol: &str, bytes: &[u8]) -> anyhow::Result<Utf8Bytes> {
    let protocol = Protocol::from_name(Some(protocol));
    let value = match protocol.encoding() {
        Encoding::Json => bail!("binary frame on a JSON connection"),
        Encoding::Msgpack => msgpack::read_value(bytes)?,
        Encoding::Protobuf => {
            let (kind, identifier, message, reason) = if protocol.is_extended() {
                let r = protobuf::Reply::decode(bytes)?;
                let mut extra = serde_json::Map::new();
                if !r.stream_id.is_empty() {
                    extra.insert("stream_id".into(), r.stream_id.into());
                    extra.insert("epoch".into(), r.epoch.into());
                    extra.insert("offset".into(), r.offset.into());
                }
                (r.r#type, r.identifier, r.message, (r.reason, extra))
            } else {
                let m = protobuf::Message::decode(bytes)?;
                (m.r#type, m.identifier, m.message, (m.reason, serde_json::Map::new()))
            };
            let (reason, mut frame) = reason;
            let kind = protobuf::Type::try_from(kind).unwrap_or(protobuf::Type::NoType).name();
            if kind != "no_type" {
                frame.insert("type".into(), kind.into());
            }
            for (key, text) in [("identifier", identifier), ("reason", reason)] {
                if !text.is_empty() {
                    frame.insert(key.into(), text.into());
                }
            }
            if !message.is_empty() {
                frame.insert("message".into(), msgpack::read_value(&message)?);
            }
            serde_json::Value::Object(frame)
        }
    };
    Ok(value.to_string().into())
}

/// Reads frames until one satisfies `want`; pings are skipped.
pub async fn wait_for(
    ws: &mut Ws,
    target: &Target,
    what: &str,
    want: impl Fn(&Frame<'_>) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + target.timeout;
    loop {
        let text = next_text(ws, deadline, what, target.protocol).await?;
        let frame: Frame<'_> = serde_json::from_str(&text).with_context(|| format!("bad frame {text}"))?;
        if frame.kind == Some("disconnect") {
            bail!("disconnected ({}) while waiting for {what}", frame.reason.unwrap_or("?"));
        }
        if frame.kind == Some("reject_subscription") {
            bail!("subscription rejected");
        }
        if want(&frame) {
            return Ok(());
        }
    }
}

/// Connects and waits for the welcome frame.
pub async fn connect_welcomed(target: &Target, n: usize) -> anyhow::Result<Ws> {
    let mut ws = target.connect(n).await?;
    wait_for(&mut ws, target, "welcome", |f| f.kind == Some("welcome")).await?;
    Ok(ws)
}

/// A command given as its JSON form, as a frame of `protocol`; prepared once when every client sends the same.
pub fn command_frame(command: &serde_json::Value, protocol: &str) -> Message {
    let protocol = Protocol::from_name(Some(protocol));
    match protocol.encoding() {
        Encoding::Json => Message::Text(command.to_string().into()),
        Encoding::Msgpack => {
            let mut out = Vec::new();
            msgpack::write_value(&mut out, command);
            Message::Binary(out.into())
        }
        Encoding::Protobuf => {
            let text = |key: &str| command[key].as_str().unwrap_or_default().to_owned();
            let kind = protobuf::Command::from_name(command["command"].as_str().unwrap_or_default());
            let message = protobuf::Message {
                command: kind as i32,
                identifier: text("identifier"),
                data: text("data"),
                ..Default::default()
            };
            Message::Binary(message.encode_to_vec().into())
        }
    }
}

/// The `subscribe` command for `identifier` in the target's protocol.
pub fn subscribe_command(identifier: &str, target: &Target) -> Message {
    command_frame(&serde_json::json!({"command":"subscribe","identifier":identifier}), target.protocol)
}

/// Subscribes with `identifier` and waits for the confirmation.
pub async fn subscribe(ws: &mut Ws, identifier: &str, target: &Target) -> anyhow::Result<()> {
    send_subscribe(ws, subscribe_command(identifier, target), target).await
}

/// Sends a prepared `subscribe` command and waits for the confirmation.
pub async fn send_subscribe(ws: &mut Ws, command: Message, target: &Target) -> anyhow::Result<()> {
    ws.send(command).await?;
    wait_for(ws, target, "confirm_subscription", |f| f.kind == Some("confirm_subscription")).await
}

/// A keep-alive HTTP/1.1 connection for POSTing broadcasts.
pub struct HttpClient {
    host: String,
    addr: SocketAddr,
    path: String,
    auth: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

impl HttpClient {
    pub fn new(url: &str, key: Option<&str>) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("broadcast URL must be http://: {url}"))?;
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let addr: SocketAddr =
            std::net::ToSocketAddrs::to_socket_addrs(host)?.next().ok_or_else(|| anyhow!("no address"))?;
        if !addr.ip().is_loopback() {
            bail!("broadcasts are only sent to loopback addresses, not {addr}");
        }
        Ok(Self { host: host.to_owned(), addr, path, auth: key.map(|k| format!("Bearer {k}")), conn: None })
    }

    /// POSTs `body`; returns the status code.
    pub async fn post(&mut self, body: &str) -> anyhow::Result<u16> {
        for attempt in 0..2 {
            if self.conn.is_none() {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                self.conn = Some(BufReader::new(stream));
            }
            match self.exchange(body).await {
                Ok(status) => return Ok(status),
                Err(e) if attempt == 0 => {
                    self.conn = None;
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on the second attempt")
    }

    async fn exchange(&mut self, body: &str) -> anyhow::Result<u16> {
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.path,
            self.host,
            body.len()
        );
        if let Some(auth) = &self.auth {
            head.push_str(&format!("Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        conn.get_mut().write_all(head.as_bytes()).await?;
        conn.get_mut().write_all(body.as_bytes()).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let status: u16 =
            line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut sink = vec![0u8; length];
        conn.read_exact(&mut sink).await?;
        if close {
            self.conn = None;
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: &str, headers: &[&str]) -> Vec<u8> {
        let mut text = format!("{status}\r\n");
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    #[test]
    fn handshake_responses_are_checked_as_rfc_6455_asks() {
        // The example key and accept value of RFC 6455 §1.3.
        let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = [
            "Upgrade: websocket",
            "connection: upgrade",
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "sec-websocket-protocol: actioncable-v1-json",
        ];
        assert!(
            check_handshake_response(&head("HTTP/1.1 101 Switching Protocols", &good), &accept, PLAIN_PROTOCOL).is_ok()
        );
        let without = |skip: usize| -> Vec<&str> {
            good.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, h)| *h).collect()
        };
        for skip in 0..good.len() {
            assert!(
                check_handshake_response(
                    &head("HTTP/1.1 101 Switching Protocols", &without(skip)),
                    &accept,
                    PLAIN_PROTOCOL
                )
                .is_err()
            );
        }
        assert!(check_handshake_response(&head("HTTP/1.1 400 Bad Request", &good), &accept, PLAIN_PROTOCOL).is_err());
        assert!(
            check_handshake_response(&head("HTTP/1.1 101 Switching Protocols", &good), "other", PLAIN_PROTOCOL)
                .is_err()
        );
        let mut other_protocol = without(3);
        other_protocol.push("Sec-WebSocket-Protocol: actioncable-unsupported");
        assert!(
            check_handshake_response(
                &head("HTTP/1.1 101 Switching Protocols", &other_protocol),
                &accept,
                PLAIN_PROTOCOL
            )
            .is_err()
        );
    }

    #[test]
    fn the_request_is_prepared_once_with_path_query_and_cookie() {
        let t =
            Target::new("ws://127.0.0.1:8080/cable?jid=a.b", 2, Some("user=x".into()), Duration::from_secs(1)).unwrap();
        assert!(t.request_head.starts_with("GET /cable?jid=a.b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(t.request_head.contains("\r\nCookie: user=x\r\n"));
        assert!(t.request_head.ends_with("\r\nSec-WebSocket-Key: "));
        let root = Target::new("ws://127.0.0.1:8080", 1, None, Duration::from_secs(1)).unwrap();
        assert!(root.request_head.starts_with("GET / HTTP/1.1\r\n"));
        assert!(!root.request_head.contains("Cookie"));
        assert!(Target::new("ws://127.0.0.1:8080/a", 1, Some("x\r\nEvil: 1".into()), Duration::from_secs(1)).is_err());
        assert!(Target::new("ws://10.0.0.1:8080/a", 1, None, Duration::from_secs(1)).is_err(), "loopback only");
    }

    #[test]
    fn the_extended_target_offers_and_requires_the_extended_protocol_and_restores_by_query() {
        let t = Target::new("ws://127.0.0.1:8080/cable?jid=a.b", 1, None, Duration::from_secs(1))
            .unwrap()
            .with_protocol(true, Encoding::Json);
        assert!(t.is_extended());
        assert!(t.request_head.contains("\r\nSec-WebSocket-Protocol: actioncable-v1-ext-json\r\n"));
        assert!(!t.request_head.contains("actioncable-v1-json"));
        let restoring = restoring_head(&t.request_head, "AbC-12_x").unwrap();
        assert!(restoring.starts_with("GET /cable?jid=a.b&sid=AbC-12_x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        let root = Target::new("ws://127.0.0.1:8080/cable", 1, None, Duration::from_secs(1)).unwrap();
        assert!(restoring_head(&root.request_head, "s1").unwrap().starts_with("GET /cable?sid=s1 HTTP/1.1\r\n"));
        assert!(restoring_head(&root.request_head, "a b\r\nEvil: 1").is_err());
        let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        let ext = [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            "Sec-WebSocket-Protocol: actioncable-v1-ext-json",
        ];
        let response = head("HTTP/1.1 101 Switching Protocols", &ext);
        assert!(check_handshake_response(&response, &accept, EXTENDED_PROTOCOL).is_ok());
        assert!(
            check_handshake_response(&response, &accept, PLAIN_PROTOCOL).is_err(),
            "a server that picked the other one"
        );
    }

    #[test]
    fn binary_frames_read_as_the_json_frame_they_stand_for() {
        use ferrocable::protocol::binary_message_frame;
        let packed = msgpack::pack_json(br#"{"seq":3,"ts":17,"p":0}"#);
        for (protocol, encoding) in
            [("actioncable-v1-msgpack", Encoding::Msgpack), ("actioncable-v1-protobuf", Encoding::Protobuf)]
        {
            let frame = binary_message_frame(encoding, "id", &packed, None);
            let json: serde_json::Value = serde_json::from_str(&binary_as_json(protocol, &frame).unwrap()).unwrap();
            assert_eq!(json, serde_json::json!({"identifier": "id", "message": {"seq": 3, "ts": 17, "p": 0}}));
        }
        let frame = binary_message_frame(Encoding::Protobuf, "id", &packed, Some(("s", "e", 9)));
        let json: serde_json::Value =
            serde_json::from_str(&binary_as_json("actioncable-v1-ext-protobuf", &frame).unwrap()).unwrap();
        assert_eq!((json["stream_id"].as_str(), json["offset"].as_u64()), (Some("s"), Some(9)));
        let subscribe =
            command_frame(&serde_json::json!({"command": "subscribe", "identifier": "id"}), "actioncable-v1-protobuf");
        let Message::Binary(bytes) = subscribe else { panic!("a binary frame") };
        let decoded = ferrocable::protocol::decode_binary_command(Encoding::Protobuf, &bytes).unwrap();
        assert_eq!(decoded, ferrocable::protocol::ClientCommand::Subscribe { identifier: "id".into(), history: None, presence: None });
    }
}
