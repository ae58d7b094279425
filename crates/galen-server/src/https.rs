//! Serving the HTTP surface over plain TCP or over TLS (HTTPS), with the connection's address
//! and transport ([`Peer`]) attached to every request for the hardening middleware.
//!
//! `TcpListener -> acceptor task (TLS handshakes in tasks of their own, bounded by a timeout and
//! a number in flight) -> channel of ready TLS streams -> HttpsListener -> axum::serve`.
//!
//! Handshakes run outside axum's accept loop so that a client that connects and sends nothing
//! cannot hold up the next one. The acceptor stops when shutdown begins.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::App;
use crate::hardening::Peer;
use crate::listener::stopping;
use crate::tls::DeviceTls;

/// Handshakes in flight at once; more connections are closed at once (and counted).
const MAX_HANDSHAKES: usize = 512;

/// A listener whose connections have completed the TLS handshake.
pub(crate) struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The acceptor stopped (shutdown): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            tls: false,
        }
    }
}

impl Connected<IncomingStream<'_, HttpsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, HttpsListener>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            tls: true,
        }
    }
}

impl HttpsListener {
    /// Starts accepting on `listener` and handshaking with `tls`.
    fn start(app: &App, listener: TcpListener, tls: DeviceTls) -> std::io::Result<HttpsListener> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let mut shutdown = app.0.shutdown.subscribe();
        let metrics = app.0.metrics.clone();
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(MAX_HANDSHAKES));
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stopping(&mut shutdown) => break,
                    () = sender.closed() => break,
                };
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    metrics.protocol_event("https", "connection_refused");
                    continue;
                };
                let (tls, sender, metrics) = (tls.clone(), sender.clone(), metrics.clone());
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    match tls.accept(stream).await {
                        Ok(stream) => {
                            drop(permit);
                            // The server is gone when this fails: the connection just closes.
                            let _ = sender.send((stream, peer)).await;
                        }
                        Err(error) => {
                            metrics.protocol_event("https", "tls_handshake_failed");
                            tracing::debug!(%error, "HTTPS handshake failed");
                        }
                    }
                });
            }
        });
        Ok(HttpsListener { ready, local })
    }
}

/// Serves `app`'s router on `listener` (over TLS when `tls` is given) until `graceful`
/// completes, then waits for in-flight requests.
pub(crate) async fn serve(
    app: &App,
    listener: TcpListener,
    tls: Option<DeviceTls>,
    graceful: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app.router().into_make_service_with_connect_info::<Peer>();
    match tls {
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(graceful)
                .await
        }
        Some(tls) => {
            let listener = HttpsListener::start(app, listener, tls)?;
            axum::serve(listener, service)
                .with_graceful_shutdown(graceful)
                .await
        }
    }
}
