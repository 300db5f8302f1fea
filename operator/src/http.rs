//! The operator's own HTTP endpoint: /healthz (the process answers), /readyz (every controller
//! runs and its cache is synced; 503 with the reason otherwise), /metrics (OpenMetrics text, see
//! [`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::context::Context;
use crate::metrics::{Snapshot, render};

pub async fn serve(addr: SocketAddr, ctx: Arc<Context>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    loop {
        let (tcp, _) = listener.accept().await?;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(req.uri().path(), &ctx)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                warn!(error = %e, "metrics connection");
            }
        });
    }
}

fn respond(path: &str, ctx: &Context) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => match ctx.readiness.report() {
            (true, text) => (StatusCode::OK, text),
            (false, text) => (StatusCode::SERVICE_UNAVAILABLE, text),
        },
        "/metrics" => (StatusCode::OK, metrics(ctx)),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let content_type = if path == "/metrics" {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn metrics(ctx: &Context) -> String {
    let mut clusters = std::collections::BTreeMap::<(String, String), usize>::new();
    let mut operations = std::collections::BTreeMap::<(String, String, String), usize>::new();
    for sample in ctx.clusters.samples() {
        *clusters
            .entry((sample.kind.clone(), sample.phase))
            .or_default() += 1;
        if let Some((operation, phase)) = sample.operation {
            *operations
                .entry((sample.kind, operation, phase))
                .or_default() += 1;
        }
    }
    let snapshot = Snapshot {
        reconciles: ctx.reconciles.load(Ordering::Relaxed),
        leader: ctx.readiness.leading().unwrap_or(true),
        writes: ctx.writes.by_kind().into_iter().collect(),
        api_requests: ctx.requests.snapshot().into_iter().collect(),
        cached_objects: ctx
            .caches
            .sizes()
            .into_iter()
            .map(|(kind, n)| (kind.to_string(), n))
            .collect(),
        clusters: clusters.into_iter().collect(),
        operations: operations.into_iter().collect(),
        pilots: ctx.pilots.samples(),
    };
    render(&ctx.metrics, snapshot)
}
