//! The HTTP/1.1 server loop, on hyper directly rather than `axum::serve`: axum's sets no timer,
//! so a client that sends its request head slowly, or never finishes it, would hold its
//! connection (and a task) forever (slowloris). Here a request head must arrive whole within
//! [`crate::limits::Limits::header_read_timeout`]; so must the next one on a kept-alive
//! connection, so an idle connection is closed after the same time.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` completes, then lets the connections in flight
/// finish their requests (an upgraded stream lives on in its own task) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver: the sender sees them all gone at the end.
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // A client that gave up before its connection was accepted is no matter;
                    // anything else (out of file descriptors) passes with time, not by spinning.
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        eprintln!("pmargin: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers (and stream frames) go out at once rather than waiting, under Nagle's rule,
        // for the acknowledgement of an earlier small segment.
        let _ = stream.set_nodelay(true);
        // (With the client's address: failed authentications are throttled per address.)
        let service = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(addr));
                req
            });
        let mut stop = stop_rx.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                stopped = stop.wait_for(|s| *s) => {
                    drop(stopped);
                    true
                }
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
            drop(open);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    open_tx.closed().await;
    Ok(())
}
