//! Action Cable v1 client pieces: connecting from a chosen loopback source address, the welcome and
//! subscription handshakes, and a minimal keep-alive HTTP/1.1 client for broadcasts.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// Where and how clients connect.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub cookie: Option<String>,
    pub timeout: Duration,
    /// A small socket receive buffer (bytes) for clients that stop reading, so the server notices sooner.
    pub receive_buffer: Option<u32>,
    /// The TCP maximum segment size the client announces (`TCP_MAXSEG`): over loopback both sides use a 64 KiB
    /// segment, which lets the server's kernel grow its send buffer far beyond what a client across a network
    /// would see.
    pub mss: Option<u32>,
}

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
        Ok(Self { url: url.to_owned(), addr, sources, cookie, timeout, receive_buffer: None, mss: None })
    }

    /// Opens a WebSocket from the `n`-th source address offering `actioncable-v1-json`.
    pub async fn connect(&self, n: usize) -> anyhow::Result<Ws> {
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
        let mut request = self.url.as_str().into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "actioncable-v1-json".parse()?);
        if let Some(cookie) = &self.cookie {
            request.headers_mut().insert("Cookie", cookie.parse()?);
        }
        let config = WebSocketConfig::default().read_buffer_size(8192).write_buffer_size(0);
        let (ws, _) = tokio::time::timeout(
            self.timeout,
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)),
        )
        .await
        .context("handshake timeout")??;
        Ok(ws)
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

/// Reads frames until one satisfies `want`; pings are skipped.
pub async fn wait_for(
    ws: &mut Ws,
    timeout: Duration,
    what: &str,
    want: impl Fn(&Frame<'_>) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("timed out waiting for {what}"))?
            .ok_or_else(|| anyhow!("closed while waiting for {what}"))??;
        if let Message::Text(text) = msg {
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
        } else if let Message::Close(_) = msg {
            bail!("closed while waiting for {what}");
        }
    }
}

/// Connects and waits for the welcome frame.
pub async fn connect_welcomed(target: &Target, n: usize) -> anyhow::Result<Ws> {
    let mut ws = target.connect(n).await?;
    wait_for(&mut ws, target.timeout, "welcome", |f| f.kind == Some("welcome")).await?;
    Ok(ws)
}

/// Subscribes with `identifier` and waits for the confirmation.
pub async fn subscribe(ws: &mut Ws, identifier: &str, timeout: Duration) -> anyhow::Result<()> {
    let cmd = serde_json::json!({"command":"subscribe","identifier":identifier}).to_string();
    ws.send(Message::Text(cmd.into())).await?;
    wait_for(ws, timeout, "confirm_subscription", |f| f.kind == Some("confirm_subscription")).await
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
