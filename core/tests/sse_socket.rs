//! Server-Sent Events clients are served on the client socket itself, outside the HTTP layer (see
//! `transport::held`): over raw sockets, plain and TLS, these tests check what the client reads (the response head,
//! chunked events, pings, broadcasts, refusals), that a connection goes on serving requests after a held response
//! ends, that a partial head is held to `read_header_timeout`, and that a client going away gets its Disconnect
//! call and gives its place back.

mod common;

use std::time::Duration;

use common::tls::Pki;
use common::{Fixture, Mode, eventually};
use ferrocable::Publication;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

const CHAT_A: &str = r#"{"channel":"ChatChannel","room":"a"}"#;

/// An HTTP/1.1 client on one connection that reads responses as they arrive, chunked bodies decoded.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Self { stream, buf: Vec::new() }
    }

    async fn send(&mut self, request: &str) {
        self.stream.write_all(request.as_bytes()).await.unwrap();
    }

    async fn get(&mut self, target: &str, cookie: &str) {
        self.send(&format!("GET {target} HTTP/1.1\r\nHost: test\r\nCookie: {cookie}\r\n\r\n")).await;
    }

    /// Reads until `buf` holds `n` bytes; false when the connection ended first.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let read = tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf)).await;
            if !matches!(read.expect("nothing read within 10 s"), Ok(n) if n > 0) {
                return false;
            }
        }
        true
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                self.buf.drain(..end + 2);
                return line;
            }
            let len = self.buf.len() + 1;
            assert!(self.fill(len).await, "the connection ended in a line: {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    /// The status and the header lines (lower-case names) of the next response.
    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status = self.line().await;
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return (status[9..12].parse().unwrap(), headers);
            }
            let (name, value) = line.split_once(": ").unwrap();
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
    }

    /// The next chunk of a chunked body (empty for the last one).
    async fn chunk(&mut self) -> String {
        let size = usize::from_str_radix(&self.line().await, 16).expect("a chunk size");
        assert!(self.fill(size + 2).await, "the connection ended in a chunk");
        let data = String::from_utf8(self.buf[..size].to_vec()).unwrap();
        assert_eq!(&self.buf[size..size + 2], b"\r\n");
        self.buf.drain(..size + 2);
        data
    }

    /// Reads chunks until the events read so far contain `what`; returns them.
    async fn events_until(&mut self, what: &str) -> String {
        let mut events = String::new();
        while !events.contains(what) {
            let chunk = self.chunk().await;
            assert!(!chunk.is_empty(), "the stream ended before {what:?}: {events}");
            events.push_str(&chunk);
        }
        events
    }

    /// A body of `content-length` bytes.
    async fn body(&mut self, headers: &[(String, String)]) -> String {
        let length: usize = header(headers, "content-length").expect("a content-length").parse().unwrap();
        assert!(self.fill(length).await, "the connection ended in the body");
        String::from_utf8(self.buf.drain(..length).collect()).unwrap()
    }

    /// Whether the server closed the connection within `wait` (with nothing more to read).
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(wait, self.stream.read_buf(&mut rest)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&rest)),
            Err(_) => false,
        }
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn events_url() -> String {
    let identifier: String = url_encode(CHAT_A);
    format!("/events?identifier={identifier}")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens the stream on `conn` and reads it up to the subscription's confirmation.
async fn subscribed<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, user: &str) {
    conn.get(&events_url(), &format!("user={user}")).await;
    let (status, headers) = conn.head().await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("text/event-stream; charset=utf-8"));
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    assert!(header(&headers, "date").is_some(), "{headers:?}");
    let events = conn.events_until("event: confirm_subscription").await;
    assert!(events.starts_with("event: welcome\ndata: {"), "{events}");
}

fn disconnects_of(fx: &Fixture, user: &str) -> usize {
    let connects = fx.app.calls.connects.lock().unwrap();
    let sids: Vec<&String> = connects
        .iter()
        .filter(|(_, req)| {
            req.env.as_ref().is_some_and(|env| env.headers.get("cookie").is_some_and(|c| c.contains(user)))
        })
        .map(|(sid, _)| sid)
        .collect();
    fx.app.calls.disconnects.lock().unwrap().iter().filter(|(sid, _)| sids.contains(&sid)).count()
}

#[tokio::test]
async fn an_sse_client_gets_its_events_pings_and_broadcasts_and_its_disconnect_when_it_goes() {
    let fx = Fixture::start(Mode::InProcess, &[("sse", "true"), ("ping_interval", "1")]).await;
    let mut conn = Conn::new(TcpStream::connect(fx.server.local_addr()).await.unwrap());
    subscribed(&mut conn, "sam").await;
    conn.events_until("event: ping\ndata: {\"type\":\"ping\",\"message\":").await;
    fx.server.broadcast(Publication::new("chat_a", r#"{"text":"hi"}"#)).await;
    conn.events_until("data: {\"text\":\"hi\"}\n\n").await;
    assert_eq!(fx.server.stats().clients_num, 1);

    drop(conn);
    eventually("the Disconnect call of the client that went", || disconnects_of(&fx, "sam") == 1).await;
    eventually("its place given back", || fx.server.stats().clients_num == 0).await;
    fx.server.shutdown().await;
}

#[tokio::test]
async fn a_connection_goes_on_after_a_refused_or_ended_stream_and_a_partial_head_is_held_to_its_deadline() {
    let fx = Fixture::start(Mode::InProcess, &[("sse", "true"), ("read_header_timeout", "1")]).await;
    let addr = fx.server.local_addr();

    // A refusal has a length; the same connection then opens a stream, and after it a request for the HTTP layer.
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    conn.get("/events", "user=ann").await;
    let (status, headers) = conn.head().await;
    assert_eq!(status, 400);
    assert!(conn.body(&headers).await.starts_with("no channel"));
    conn.get(&events_url(), "user=bad").await;
    let (status, headers) = conn.head().await;
    assert_eq!((status, conn.body(&headers).await.as_str()), (401, "unauthorized\n"));
    subscribed(&mut conn, "ann").await;

    let mut other = Conn::new(TcpStream::connect(addr).await.unwrap());
    other.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let (status, headers) = other.head().await;
    assert_eq!((status, other.body(&headers).await.as_str()), (200, "OK"));

    let mut partial = Conn::new(TcpStream::connect(addr).await.unwrap());
    partial.send("GET /events?stream=x HTTP/1.1\r\nHost:").await;
    assert!(!partial.closed_within(Duration::from_millis(500)).await, "open before the deadline");
    assert!(partial.closed_within(Duration::from_secs(2)).await, "closed at read_header_timeout");
    assert_eq!(fx.server.stats().read_header_timeout_total, 1);

    // Shutdown ends the stream: its disconnect event, then the last chunk, then the connection closes.
    let shutdown = tokio::spawn(async move {
        fx.server.shutdown().await;
        fx
    });
    let events = conn.events_until("event: disconnect").await;
    assert!(events.contains(r#"{"type":"disconnect","reason":"server_restart","reconnect":true}"#), "{events}");
    assert_eq!(conn.chunk().await, "", "the body ends with its last chunk");
    assert!(conn.closed_within(Duration::from_secs(5)).await);
    let fx = shutdown.await.unwrap();
    assert_eq!(disconnects_of(&fx, "ann"), 1);
}

#[tokio::test]
async fn after_a_stream_the_application_ended_the_connection_serves_the_next_requests() {
    let fx = Fixture::start(Mode::InProcess, &[("sse", "true")]).await;
    let mut conn = Conn::new(TcpStream::connect(fx.server.local_addr()).await.unwrap());
    for round in 0..2 {
        subscribed(&mut conn, "dora").await;
        assert_eq!(fx.server.disconnect(r#"{"current_user":"dora"}"#, true), 1, "round {round}");
        let events = conn.events_until("event: disconnect").await;
        assert!(events.contains(r#""reason":"remote","reconnect":true"#), "{events}");
        assert_eq!(conn.chunk().await, "", "the body ends with its last chunk");
        eventually("the Disconnect call", || disconnects_of(&fx, "dora") == round + 1).await;
    }
    // Then a request for the HTTP layer, on the same connection.
    conn.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let (status, headers) = conn.head().await;
    assert_eq!((status, conn.body(&headers).await.as_str()), (200, "OK"));
    assert_eq!(fx.app.calls.connects.lock().unwrap().len(), 2);
    fx.server.shutdown().await;
}

#[tokio::test]
async fn sse_over_tls_is_served_on_the_tls_stream() {
    let pki = Pki::new("sse");
    let [(_, cert), (_, key)] = pki.listener_options();
    let fx = Fixture::start(Mode::InProcess, &[("sse", "true"), ("ssl_cert", &cert), ("ssl_key", &key)]).await;
    let tcp = TcpStream::connect(fx.server.local_addr()).await.unwrap();
    let tls = TlsConnector::from(pki.client_config(b"http/1.1"));
    let stream = tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let mut conn = Conn::new(stream);
    subscribed(&mut conn, "tia").await;
    fx.server.broadcast(Publication::new("chat_a", r#"{"text":"over tls"}"#)).await;
    conn.events_until("data: {\"text\":\"over tls\"}\n\n").await;
    let url = fx.app.calls.connects.lock().unwrap()[0].1.env.clone().unwrap().url;
    assert!(url.starts_with("https://"), "the application sees the TLS URL: {url}");
    drop(conn);
    eventually("the Disconnect call over TLS", || disconnects_of(&fx, "tia") == 1).await;
    fx.server.shutdown().await;
}
