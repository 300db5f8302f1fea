//! The operator's own HTTP endpoint: /healthz (the process answers), /readyz (every controller
//! runs and its cache is synced; 503 with the reason otherwise), /metrics (Prometheus text:
//! reconciles, writes per kind, API requests by verb and resource, cached objects).

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
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn metrics(ctx: &Context) -> String {
    let mut out = String::from(
        "# HELP stateward_reconciles_total Reconciles run.\n# TYPE stateward_reconciles_total counter\n",
    );
    out.push_str(&format!(
        "stateward_reconciles_total {}\n",
        ctx.reconciles.load(Ordering::Relaxed)
    ));
    out.push_str("# HELP stateward_writes_total API writes, by kind.\n# TYPE stateward_writes_total counter\n");
    for (kind, count) in ctx.writes.by_kind() {
        out.push_str(&format!(
            "stateward_writes_total{{kind=\"{kind}\"}} {count}\n"
        ));
    }
    out.push_str(
        "# HELP stateward_api_requests_total Requests to the Kubernetes API, by verb and resource.\n\
         # TYPE stateward_api_requests_total counter\n",
    );
    for ((verb, resource), count) in ctx.requests.snapshot() {
        out.push_str(&format!(
            "stateward_api_requests_total{{verb=\"{verb}\",resource=\"{resource}\"}} {count}\n"
        ));
    }
    out.push_str(
        "# HELP stateward_cached_objects Objects the operator owns, in its caches, by kind.\n\
         # TYPE stateward_cached_objects gauge\n",
    );
    for (kind, count) in ctx.caches.sizes() {
        out.push_str(&format!(
            "stateward_cached_objects{{kind=\"{kind}\"}} {count}\n"
        ));
    }
    out
}
