//! The accept loop every device listener shares: a bound on open connections, the shutdown
//! guard that keeps the store open while a connection works, the optional TLS handshake, and the
//! connection gauge. Protocols supply only what to do with an accepted stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::server::TlsStream;

use crate::App;
use crate::tls::DeviceTls;

/// Resolves once shutdown has begun (or the runtime is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Accepts connections on `listener` until shutdown begins, at most `max_connections` open at
/// once (more are closed at once and counted). Each runs `plain`, or after a TLS handshake (when
/// `tls` is given) `secure`, in a task of its own that holds the adapter guard.
pub(crate) async fn accept_loop<P, PF, S, SF>(
    app: App,
    listener: TcpListener,
    protocol: &'static str,
    max_connections: usize,
    tls: Option<DeviceTls>,
    plain: P,
    secure: S,
) where
    P: Fn(App, TcpStream) -> PF,
    PF: Future<Output = ()> + Send + 'static,
    S: Fn(App, TlsStream<TcpStream>) -> SF + Clone + Send + 'static,
    SF: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut shutdown = app.0.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopping(&mut shutdown) => break,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, protocol, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(protocol, "connection refused: too many open connections");
            app.0.metrics.protocol_event(protocol, "connection_refused");
            continue;
        };
        let Some(guard) = app.adapter_guard() else {
            break;
        };
        let _ = stream.set_nodelay(true);
        app.0.metrics.connections(protocol, 1);
        let open = Open {
            app: app.clone(),
            protocol,
            _held: (permit, guard),
        };
        // Plain connections get a task type of their own: one async block covering both would
        // size every plain connection's task for a TLS stream (about 7 KB instead of 2.5 KB).
        match &tls {
            None => {
                let connection = plain(app.clone(), stream);
                tokio::spawn(async move {
                    connection.await;
                    drop(open);
                });
            }
            Some(tls) => {
                let (tls, secure, app) = (tls.clone(), secure.clone(), app.clone());
                tokio::spawn(async move {
                    match tls.accept(stream).await {
                        Ok(stream) => secure(app, stream).await,
                        Err(error) => {
                            app.0
                                .metrics
                                .protocol_event(protocol, "tls_handshake_failed");
                            tracing::info!(%error, protocol, "TLS handshake failed");
                        }
                    }
                    drop(open);
                });
            }
        }
    }
}

/// An open connection's bookkeeping: released (gauge, connection bound, shutdown guard) when the
/// connection's task ends, however it ends.
struct Open {
    app: App,
    protocol: &'static str,
    _held: (
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedRwLockReadGuard<()>,
    ),
}

impl Drop for Open {
    fn drop(&mut self) {
        self.app.0.metrics.connections(self.protocol, -1);
    }
}
