//! The accept loop: HTTP/1 connections served by hyper with a deadline for
//! a request's headers (a client that sends half a request is dropped, not
//! kept open for ever) and a cap on open connections (beyond it a new one
//! is closed at once, so a flood cannot exhaust file descriptors).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

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
