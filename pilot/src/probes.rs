//! The pod's probe endpoints (plain HTTP, loopback or pod network):
//! - `/healthz/startup`: 200 once the configuration is rendered and the pilot serves
//!   (the kubelet starts the database container only after this succeeds);
//! - `/healthz/ready`: 200 when the node is ready (see `NodeStatus.ready`);
//! - `/healthz/live`: 200 when the pilot and the database process answer;
//! - `/metrics`: action durations and the database's health (see [`crate::metrics`]);
//! - `/lifecycle/pre-stop`: drains the database and answers when done; meant for the
//!   database container's preStop hook (with a native sidecar, the pilot itself is
//!   stopped only after the database container).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::driver::Driver;
use crate::metrics::PilotMetrics;
use crate::status::StatusHub;

pub async fn serve<D: Driver>(
    listener: TcpListener,
    driver: Arc<D>,
    hub: StatusHub,
    metrics: Arc<PilotMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    warn!("accepting a probe connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let driver = driver.clone();
        let hub = hub.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let driver = driver.clone();
                let hub = hub.clone();
                let metrics = metrics.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        let text = metrics.render(&hub.latest(), crate::fsutil::now_ms());
                        return Ok::<_, Infallible>(openmetrics(text));
                    }
                    Ok(handle(req.uri().path(), &*driver, &hub).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn handle<D: Driver>(path: &str, driver: &D, hub: &StatusHub) -> Response<Full<Bytes>> {
    match path {
        // Reaching this code means rendering succeeded and every listener is bound.
        "/healthz/startup" => reply(StatusCode::OK, "started"),
        "/healthz/ready" => {
            let s = hub.latest();
            if s.ready {
                reply(StatusCode::OK, "ready")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("not ready: {}", s.not_ready_reason),
                )
            }
        }
        "/healthz/live" => {
            if tokio::time::timeout(Duration::from_secs(3), driver.process_answers())
                .await
                .unwrap_or(false)
            {
                reply(StatusCode::OK, "live")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database process does not answer",
                )
            }
        }
        "/lifecycle/pre-stop" => {
            info!("preStop: draining the database");
            match driver.prepare_stop().await {
                Ok(()) => reply(StatusCode::OK, "drained"),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("drain failed: {e:#}"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "not found"),
    }
}

fn openmetrics(text: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    resp
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *resp.status_mut() = status;
    resp
}
