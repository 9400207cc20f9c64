//! /healthz (alive) and /readyz (caches synced, not draining, and not standing by for every
//! LoopService it sees because another release works them), open to the kubelet's probes; and
//! /metrics on a listener of its own, for a token allowed to read it, over TLS when given a
//! certificate (controller-runtime's probe and secure metrics ports).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tracing::warn;

use crate::metrics::Metrics;
use crate::metrics_auth::{Authorizer, Verdict};
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
        .with_state(state)
}

/// What /metrics needs: the registry, and who may read it (anyone when `auth` is `None`).
#[derive(Clone)]
pub struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub auth: Option<Arc<Authorizer>>,
}

pub fn metrics_router(state: MetricsState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn metrics(State(s): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(auth) = &s.auth {
        match auth.check(&headers).await {
            Ok(Verdict::Allowed) => {}
            Ok(Verdict::Unauthenticated) => {
                return (StatusCode::UNAUTHORIZED, [("www-authenticate", "Bearer")], "Unauthorized\n").into_response()
            }
            Ok(Verdict::Forbidden) => return (StatusCode::FORBIDDEN, "Forbidden\n").into_response(),
            Err(e) => {
                warn!(error = %e, "could not review a /metrics request's token");
                return (StatusCode::SERVICE_UNAVAILABLE, "cannot review the token now\n").into_response();
            }
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// A certificate and key, PEM files (a kubernetes.io/tls Secret's `tls.crt` and `tls.key`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How often the certificate files are read again: a Secret mounted in a Pod is updated in
/// place when it is renewed (by cert-manager, say).
const TLS_RELOAD: Duration = Duration::from_secs(60);

/// Binds `addr` and returns the bound address (useful with port 0) and the server future.
pub async fn bind(
    addr: SocketAddr,
    state: HttpState,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, async move { axum::serve(listener, router(state)).await }))
}

/// Binds `addr` for /metrics, over TLS when `tls` is given (the files are read now, and again
/// every minute), and returns the bound address and the server future.
pub async fn bind_metrics(
    addr: SocketAddr,
    state: MetricsState,
    tls: Option<TlsFiles>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = std::io::Result<()>>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let app = metrics_router(state).into_make_service();
    let serve = match tls {
        None => {
            let server = axum_server::from_tcp(listener)?;
            futures::future::Either::Left(async move { server.serve(app).await })
        }
        Some(files) => {
            let config = RustlsConfig::from_pem_file(&files.cert, &files.key)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("reading {} and {}: {e}", files.cert.display(), files.key.display())))?;
            tokio::spawn(reload(config.clone(), files));
            let server = axum_server::tls_rustls::from_tcp_rustls(listener, config)?;
            futures::future::Either::Right(async move { server.serve(app).await })
        }
    };
    Ok((local, serve))
}

/// Reads the certificate and key again every [`TLS_RELOAD`]; a bad pair is logged and the
/// one in use kept.
async fn reload(config: RustlsConfig, files: TlsFiles) {
    loop {
        tokio::time::sleep(TLS_RELOAD).await;
        if let Err(e) = config.reload_from_pem_file(&files.cert, &files.key).await {
            warn!(error = %e, cert = %files.cert.display(), "could not reload the metrics certificate; keeping the one in use");
        }
    }
}
