//! The accept loop: HTTP/1 connections served by hyper with a deadline for
//! a request's headers (a client that sends half a request is dropped, not
//! kept open for ever) and a cap on open connections (beyond it a new one
//! is closed at once, so a flood cannot exhaust file descriptors). A first
//! request line longer than hyper accepts (64 KiB) is answered here, with
//! the JSON error every other error has, instead of hyper's empty 414.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of an over-long request line read (and dropped) after
/// answering it.
const DRAIN_BYTES: usize = 1 << 20;

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 4_096;

/// Serves `app` on `listener` until `stop` fires.
pub async fn accept_loop(listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or the like: wait, do not spin.
                    tracing::warn!(%error, "http accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream); // over the cap: closed at once
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            let first = tokio::time::timeout(HEADER_TIMEOUT, first_line_fits(&mut stream)).await;
            let Ok(Ok(Some(prefix))) = first else {
                return; // answered (414), too slow, or gone
            };
            let stream = Prefixed {
                prefix,
                at: 0,
                inner: stream,
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(super::guard::MAX_URI_BYTES * 16)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "http connection");
            }
            drop(slot);
        });
    }
}

/// Reads the connection's first request line. `None` once it has answered
/// a line longer than any target the API accepts with a JSON 414 itself;
/// else the bytes read, for hyper to read again.
async fn first_line_fits(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    // "METHOD " + target + " HTTP/1.1\r\n"
    let limit = super::guard::MAX_URI_BYTES + 64;
    let mut read = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        if read.contains(&b'\n') {
            return Ok(Some(read));
        }
        if read.len() > limit {
            let body = format!(
                r#"{{"error":"request target over {} bytes; at most {}"}}"#,
                limit,
                super::guard::MAX_URI_BYTES
            );
            let answer = format!(
                "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await?;
            // Read on to the end of the line (a bounded amount) before
            // closing, so that the client can finish sending and read the
            // answer instead of a reset.
            let mut drained = 0;
            while drained < DRAIN_BYTES {
                let n = stream.read(&mut buf).await?;
                if n == 0 || buf[..n].contains(&b'\n') {
                    break;
                }
                drained += n;
            }
            stream.shutdown().await?;
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(Some(read)); // hyper sees the end
        }
        read.extend_from_slice(&buf[..n]);
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
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
}
