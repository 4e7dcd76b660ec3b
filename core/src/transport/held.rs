//! Held requests: requests whose response stays open for a long time (a Server-Sent Events stream) are served on
//! the client socket itself instead of inside hyper, the HTTP layer under every listener.
//!
//! hyper keeps a read buffer and a write buffer of 8 KiB each for every connection it serves, and its connection
//! future of about 5 KiB lives as long as the response does; for a WebSocket this ends at the upgrade, but an SSE
//! response never ends, so each idle SSE client would pay them for its whole life. A listener that has held paths
//! reads the head of each connection's first request itself ([`read_head`]): a plain HTTP/1.1 `GET` of a held
//! path without a body is answered here ([`respond`]) through the same router (so the same handlers, headers,
//! refusals and CORS apply), with its response head and chunked body written straight to the socket, and the
//! connection idles with nothing but the response body and the socket. Any other request, or anything this
//! module does not parse, goes to hyper untouched: the bytes read so far are replayed to it ([`Rewind`]).
//!
//! After a held response has ended the connection may carry another request, read the same way; a connection
//! handed to hyper stays with hyper. While a held response is waiting or streaming, what the client sends is kept
//! for its next request (up to [`MAX_HEAD`]); its end of the connection ends the response, as it does in hyper.
//!
//! This module knows nothing of what is served: it matches paths and writes what the router answers.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version, header};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// Longest request head read here, and most bytes a client may send while its held response runs; a longer head
/// is left to hyper (whose own limits then apply).
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Most header fields of a held request (hyper's default).
const MAX_HEADERS: usize = 100;

/// The paths whose `GET` requests are read here: held paths, and WebSocket paths whose upgrade requests the
/// listener answers itself (see `transport::ws::serve_upgrade`). Each is matched exactly, as the router matches
/// them.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldPaths {
    held: Vec<String>,
    upgrades: Vec<String>,
}

impl HeldPaths {
    pub(crate) fn new(paths: impl IntoIterator<Item = String>) -> Self {
        Self { held: paths.into_iter().collect(), upgrades: Vec::new() }
    }

    /// Also reads the requests of these WebSocket paths, so that their upgrades are answered outside hyper.
    pub(crate) fn with_upgrades(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.upgrades = paths.into_iter().collect();
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty() && self.upgrades.is_empty()
    }

    fn is_upgrade_path(&self, path: &str) -> bool {
        self.upgrades.iter().any(|p| p == path)
    }

    /// Whether `head` (the first bytes of a request) can still be a `GET` of a held path: `Some(true)` once its
    /// target's path is known to be one, `Some(false)` as soon as it cannot be, `None` while too short to tell.
    fn matches(&self, head: &[u8]) -> Option<bool> {
        const GET: &[u8] = b"GET ";
        if head.len() < GET.len() {
            return if GET.starts_with(head) { None } else { Some(false) };
        }
        if !head.starts_with(GET) {
            return Some(false);
        }
        let target = &head[GET.len()..];
        let mut undecided = false;
        for path in self.held.iter().chain(&self.upgrades).map(String::as_bytes) {
            if target.len() <= path.len() {
                undecided |= path.starts_with(target);
            } else if target.starts_with(path) && matches!(target[path.len()], b' ' | b'?') {
                return Some(true);
            }
        }
        if undecided { None } else { Some(false) }
    }
}

/// What the start of a connection (or the next request on it) turned out to be.
pub(crate) enum Head {
    /// A held request, and the bytes after its head (the start of the next request, if any).
    Held(Box<Request<Body>>, Bytes),
    /// Anything else: hyper gets the connection with these bytes first.
    Other(Bytes),
    /// The client closed the connection, or it failed, before a request head.
    Closed,
    /// The head was not complete by its deadline.
    Late,
    /// The server stopped accepting while no request had arrived.
    Stopped,
}

/// Reads the next request head, after `input` (bytes the client sent already), until `deadline`.
pub(crate) async fn read_head<IO>(
    io: &mut IO,
    input: Bytes,
    paths: &HeldPaths,
    peer: SocketAddr,
    deadline: Instant,
    stop: &tokio_util::sync::CancellationToken,
) -> Head
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::from(input);
    loop {
        if !buf.is_empty() {
            match paths.matches(&buf) {
                Some(false) => return Head::Other(buf.freeze()),
                Some(true) => match parse_request(&buf, peer, paths) {
                    Parsed::Held(request, len) => {
                        // A copy, so that the head's buffer is not kept for the life of the response.
                        let rest = if buf.len() > len { Bytes::copy_from_slice(&buf[len..]) } else { Bytes::new() };
                        return Head::Held(request, rest);
                    }
                    Parsed::Other => return Head::Other(buf.freeze()),
                    Parsed::Partial if buf.len() >= MAX_HEAD => return Head::Other(buf.freeze()),
                    Parsed::Partial => {}
                },
                None => {}
            }
        }
        buf.reserve(if buf.is_empty() { 1024 } else { buf.len() });
        let read = tokio::select! {
            biased;
            read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)) => read,
            () = stop.cancelled(), if buf.is_empty() => return Head::Stopped,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return Head::Closed,
            Ok(Ok(_)) => {}
            Err(_) => return Head::Late,
        }
    }
}

enum Parsed {
    /// A held request, and the length of its head.
    Held(Box<Request<Body>>, usize),
    /// Not one for this module: hyper answers it.
    Other,
    Partial,
}

/// Parses a complete head into a request for the router, if it is one held here: HTTP/1.1, no body, no upgrade
/// (except on an upgrade path), no `Expect`, an origin-form target, header names and values the HTTP types accept.
fn parse_request(buf: &[u8], peer: SocketAddr, paths: &HeldPaths) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut fields);
    let len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if head.version != Some(1) || head.method != Some("GET") {
        return Parsed::Other;
    }
    let Some(uri) = head.path.filter(|t| t.starts_with('/')).and_then(|t| t.parse::<Uri>().ok()) else {
        return Parsed::Other;
    };
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for field in head.headers.iter() {
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(field.name.as_bytes()), HeaderValue::from_bytes(field.value))
        else {
            return Parsed::Other;
        };
        headers.append(name, value);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers.get_all(header::CONTENT_LENGTH).iter().any(|v| v.as_bytes() != b"0");
    let upgrade = headers.contains_key(header::UPGRADE) && !paths.is_upgrade_path(uri.path());
    if has_body || upgrade || headers.contains_key(header::EXPECT) {
        return Parsed::Other;
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(ConnectInfo(peer));
    Parsed::Held(Box::new(request), len)
}

/// A response to write: its head, its body, and whether the body goes in chunks (its length is not known).
pub(crate) struct Answer {
    head: BytesMut,
    body: Body,
    chunked: bool,
}

/// Answers `request` through `router`, with `connection: close` in the head when `close`. While the handler runs,
/// the client's end of the connection is watched: `None` when it closed first (the handler is then dropped).
pub(crate) async fn answer<IO>(
    io: &mut IO,
    router: &Router,
    request: Request<Body>,
    input: &mut BytesMut,
    close: bool,
) -> Option<Answer>
where
    IO: AsyncRead + Unpin,
{
    let mut response = std::pin::pin!(tower_service::Service::call(&mut router.clone(), request));
    let response: Response<Body> = std::future::poll_fn(|cx| {
        if let Poll::Ready(answered) = response.as_mut().poll(cx) {
            let Ok(response) = answered;
            return Poll::Ready(Some(response));
        }
        watch_input(io, input, cx).map(|()| None)
    })
    .await?;
    Some(respond(response, close))
}

/// A response made elsewhere, ready to send, with `connection: close` in its head when `close`.
pub(crate) fn respond(response: Response<Body>, close: bool) -> Answer {
    let (parts, body) = response.into_parts();
    let length = body.size_hint().exact();
    let mut head = BytesMut::with_capacity(256);
    write_head(&mut head, &parts, length, close);
    Answer { head, body, chunked: length.is_none() }
}

/// Whether a request read here asks for a protocol upgrade (only ever one of an upgrade path).
pub(crate) fn is_upgrade(request: &Request<Body>) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

/// Writes the answer's head, then the frames of its body as they come, then the end of the body: `Err` when the
/// client went away or the connection failed first. What the client sends meanwhile is kept in `input`.
pub(crate) async fn send<IO>(io: &mut IO, answer: Answer, input: &mut BytesMut) -> Result<(), ()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Answer { head: mut out, mut body, chunked } = answer;
    loop {
        if !out.is_empty() {
            // A new buffer for each write: an idle response keeps none.
            let written = std::mem::take(&mut out);
            io.write_all(&written).await.map_err(drop)?;
            io.flush().await.map_err(drop)?;
        }
        let frame = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Ok(frame));
            }
            watch_input(io, input, cx).map(Err)
        })
        .await?;
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    out.reserve(data.len() + 12);
                    out.put_slice(format!("{:X}\r\n", data.len()).as_bytes());
                    out.put_slice(&data);
                    out.put_slice(b"\r\n");
                } else {
                    out.put_slice(&data);
                }
            }
            None => {
                if chunked {
                    out.put_slice(b"0\r\n\r\n");
                }
                io.write_all(&out).await.map_err(drop)?;
                return io.flush().await.map_err(drop);
            }
            // A body that fails mid-way cannot be finished: the client sees the connection end without the last
            // chunk, as hyper ends it.
            Some(Err(error)) => {
                tracing::debug!(%error, "held response body failed");
                return Err(());
            }
        }
    }
}

/// Reads what the client sends meanwhile into `input`: `Ready` when the connection ended, failed or sent more
/// than [`MAX_HEAD`], `Pending` otherwise.
fn watch_input<IO: AsyncRead + Unpin>(io: &mut IO, input: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        let mut chunk = [0u8; 512];
        let mut read = ReadBuf::new(&mut chunk);
        match ready!(Pin::new(&mut *io).poll_read(cx, &mut read)) {
            Ok(()) if read.filled().is_empty() => return Poll::Ready(()),
            Ok(()) if input.len() + read.filled().len() > MAX_HEAD => return Poll::Ready(()),
            Ok(()) => input.extend_from_slice(read.filled()),
            Err(_) => return Poll::Ready(()),
        }
    }
}

/// Whether the request asks for the connection to close after its response.
pub(crate) fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// The status line and headers, as hyper writes them: the response's headers, then its length (`content-length`
/// when the body's size is known, else chunked), then the date.
fn write_head(out: &mut BytesMut, parts: &axum::http::response::Parts, length: Option<u64>, close: bool) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(parts.status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        put_field(out, name.as_str(), value.as_bytes());
    }
    match length {
        Some(length) => put_field(out, "content-length", length.to_string().as_bytes()),
        None => put_field(out, "transfer-encoding", b"chunked"),
    }
    if close && !parts.headers.contains_key(header::CONNECTION) {
        put_field(out, "connection", b"close");
    }
    if !parts.headers.contains_key(header::DATE) {
        put_field(out, "date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    }
    out.put_slice(b"\r\n");
}

fn put_field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// A connection handed to hyper: the bytes already read from it come first.
pub(crate) struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    pub(crate) fn new(read: Bytes, io: IO) -> Self {
        Self { read, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        if self.read.is_empty() {
            // Gives the buffer back.
            self.read = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

crate::forward::forward_async_write!(Rewind, io);

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn only_a_get_of_a_held_path_is_held_and_that_is_known_from_the_request_line() {
        let paths = HeldPaths::new(["/events".to_owned()]);
        for (head, expected) in [
            (&b"GE"[..], None),
            (b"GET /ev", None),
            (b"GET /events", None),
            (b"GET /events?stream=x HTTP/1.1\r\n", Some(true)),
            (b"GET /events HTTP/1.1\r\n", Some(true)),
            (b"GET /eventsx HTTP/1.1\r\n", Some(false)),
            (b"GET /events/x HTTP/1.1\r\n", Some(false)),
            (b"GET /cable HTTP/1.1\r\n", Some(false)),
            (b"POST /events HTTP/1.1\r\n", Some(false)),
            (b"\x16\x03\x01", Some(false)),
        ] {
            assert_eq!(paths.matches(head), expected, "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(HeldPaths::default().matches(b"GET /events "), Some(false));
        let paths = HeldPaths::default().with_upgrades(["/cable".to_owned()]);
        assert!(!paths.is_empty());
        assert_eq!(paths.matches(b"GET /cable?jid=x HTTP/1.1\r\n"), Some(true));
        assert_eq!(paths.matches(b"GET /events HTTP/1.1\r\n"), Some(false));
    }

    #[test]
    fn requests_with_a_body_an_upgrade_or_another_version_are_left_to_hyper() {
        let paths = HeldPaths::new(["/events".to_owned()]).with_upgrades(["/cable".to_owned()]);
        let held = |head: &str| match parse_request(head.as_bytes(), peer(), &paths) {
            Parsed::Held(request, len) => Some((request, len)),
            Parsed::Other => None,
            Parsed::Partial => panic!("partial: {head}"),
        };
        let (request, len) = held("GET /events?stream=x HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\nGET /next").unwrap();
        assert_eq!(len, "GET /events?stream=x HTTP/1.1\r\nHost: h\r\nCookie: a=b\r\n\r\n".len());
        assert_eq!(request.uri().query(), Some("stream=x"));
        assert_eq!(request.headers()["cookie"], "a=b");
        assert!(request.extensions().get::<ConnectInfo<SocketAddr>>().is_some());
        assert!(held("GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        for other in [
            "GET /events HTTP/1.0\r\n\r\n",
            "GET /events HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://h/events HTTP/1.1\r\n\r\n",
            "GET /events HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(held(other).is_none(), "{other:?}");
        }
        assert!(matches!(parse_request(b"GET /events HTTP/1.1\r\nHost:", peer(), &paths), Parsed::Partial));
        // The upgrade paths' upgrades are read here (and only theirs).
        let (upgrade, _) = held("GET /cable?jid=t HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap();
        assert!(is_upgrade(&upgrade));
        assert!(!is_upgrade(&held("GET /cable HTTP/1.1\r\n\r\n").unwrap().0));
        assert!(held("GET /cable HTTP/1.0\r\nUpgrade: websocket\r\n\r\n").is_none());
    }

    #[test]
    fn the_head_is_written_as_hyper_writes_it() {
        let response = Response::builder().status(200).header("content-type", "text/event-stream").body(()).unwrap();
        let (parts, ()) = response.into_parts();
        let mut out = BytesMut::new();
        write_head(&mut out, &parts, None, true);
        let head = String::from_utf8(out.to_vec()).unwrap();
        let (start, date) = head.split_once("date: ").unwrap();
        assert_eq!(
            start,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
        );
        assert!(date.ends_with(" GMT\r\n\r\n"), "{date}");
        let mut out = BytesMut::new();
        write_head(&mut out, &parts, Some(12), false);
        assert!(String::from_utf8(out.to_vec()).unwrap().contains("\r\ncontent-length: 12\r\ndate: "));
    }

    #[tokio::test]
    async fn hyper_reads_the_bytes_already_read_first() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(Bytes::from_static(b"GET / HTTP/1.1\r\n"), server);
        client.write_all(b"Host: h\r\n\r\n").await.unwrap();
        let mut read = vec![0u8; 27];
        rewound.read_exact(&mut read).await.unwrap();
        assert_eq!(read, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        rewound.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }
}
