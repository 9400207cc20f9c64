//! /healthz (alive), /readyz (caches synced, not draining, and not standing by for every
//! LoopService it sees because another release works them) and /metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::reconcile::claim::{Claims, Standing};

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub claims: Arc<Claims>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<HttpState>| async move {
                if !s.ready.load(Ordering::SeqCst) {
                    return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
                }
                match s.claims.standing() {
                    Standing::Working => (StatusCode::OK, "ready\n".to_string()),
                    Standing::Partly(why) => (StatusCode::OK, format!("ready\n{why}\n")),
                    Standing::Only(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<HttpState>| async move { ([("content-type", "text/plain; version=0.0.4")], s.metrics.render()) }),
        )
        .with_state(state)
}

/// Binds `addr` and returns the bound address (useful with port 0) and the server future.
pub async fn bind(
    addr: SocketAddr,
    state: HttpState,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, async move { axum::serve(listener, router(state)).await }))
}
