//! Plain-HTTP/1 calls to an upstream, with the connection driven by the
//! calling task itself.
//!
//! reqwest (hyper's pooled client) runs every connection as a task of its
//! own: a proxied call then hops handler → connection task → handler for
//! the request, the head and the body, and on a multi-threaded runtime
//! each hop may wake another worker thread. On a small, busy machine those
//! wake-ups are where a proxy's latency tail comes from. Here the handler
//! polls the request and its connection together, so a whole exchange is
//! socket readiness on one task. Idle connections wait in a pool, unpolled;
//! one that the upstream closed meanwhile is noticed when taken (or, at
//! worst, on its first write) and replaced before anything is answered.
//!
//! Used for whole (non-streaming) answers from `http://` targets; streams
//! and `https://` targets go through reqwest.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error_chain;

type Io = TokioIo<TcpStream>;

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    conn: Connection<Io, Full<Bytes>>,
}

/// Idle connections kept per target.
const MAX_IDLE: usize = 64;

/// One target's connections.
pub struct DirectPool {
    /// `host:port`, for connecting and the `Host` header.
    authority: String,
    host: HeaderValue,
    idle: Mutex<Vec<Conn>>,
    connect_timeout: Duration,
}

/// What came back: status, headers, the whole body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no answer came back (always a transport failure).
pub struct Failed(pub String);

impl DirectPool {
    /// `None` unless `url` is `http://host[:port]/…`.
    pub fn for_url(url: &reqwest::Url, connect_timeout: Duration) -> Option<Self> {
        if url.scheme() != "http" {
            return None;
        }
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        // host_str keeps an IPv6 address's brackets
        let authority = format!("{host}:{port}");
        let host = HeaderValue::from_str(&authority).ok()?;
        Some(Self {
            authority,
            host,
            idle: Mutex::new(Vec::new()),
            connect_timeout,
        })
    }

    /// POSTs `body` to `path` (`/v1/…`) and reads the whole answer. The
    /// caller bounds the time.
    pub async fn post(
        &self,
        path: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, Failed> {
        // a pooled connection the upstream closed while idle fails before
        // any answer: then once more on a fresh one
        for fresh in [false, true] {
            let (mut c, reused) = match (!fresh).then(|| self.take()).flatten() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let mut req = Request::new(Full::new(body.clone()));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = path.clone();
            *req.headers_mut() = headers.clone();
            req.headers_mut().insert(header::HOST, self.host.clone());
            let head = drive(c.sender.send_request(req), &mut c.conn).await;
            let resp = match head {
                Ok(Ok(r)) => r,
                Ok(Err(e)) if reused && unanswered(&e) => continue,
                Ok(Err(e)) => return Err(Failed(error_chain(&e))),
                Err(_) if reused => continue,
                Err(e) => return Err(Failed(e)),
            };
            let (parts, incoming) = resp.into_parts();
            let body = match drive(incoming.collect(), &mut c.conn).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return Err(Failed(error_chain(&e))),
                Err(e) => return Err(Failed(e)),
            };
            self.give_back(c);
            return Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            });
        }
        Err(Failed(format!("{}: connection closed", self.authority)))
    }

    /// An idle connection still open (polled once: a close the upstream
    /// sent meanwhile completes the connection future).
    fn take(&self) -> Option<Conn> {
        loop {
            let mut c = self.idle.lock().ok()?.pop()?;
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            if Pin::new(&mut c.conn).poll(&mut cx).is_pending() && !c.sender.is_closed() {
                return Some(c);
            }
        }
    }

    fn give_back(&self, c: Conn) {
        if c.sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(c);
        }
    }

    async fn connect(&self) -> Result<Conn, Failed> {
        let fail = |e: String| Failed(format!("connect to {}: {e}", self.authority));
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| fail(format!("no connection within {:?}", self.connect_timeout)))?
            .map_err(|e| fail(e.to_string()))?;
        // small requests and answers: no Nagle delay
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Conn { sender, conn })
    }
}

/// Polls `fut` and the connection together until `fut` is done. `Err`:
/// the connection failed or ended first.
async fn drive<F: Future>(
    fut: F,
    conn: &mut Connection<Io, Full<Bytes>>,
) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    let mut ended = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if !ended {
            match Pin::new(&mut *conn).poll(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(error_chain(&e))),
                Poll::Ready(Ok(())) => ended = true,
                Poll::Pending => return Poll::Pending,
            }
            // the connection ended: the exchange resolves now, with the
            // error hyper gave it
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(v));
            }
        }
        Poll::Ready(Err("the upstream closed the connection".into()))
    })
    .await
}

/// A failure before any of the answer arrived on a reused connection.
fn unanswered(e: &hyper::Error) -> bool {
    e.is_canceled() || e.is_incomplete_message() || e.is_closed()
}
