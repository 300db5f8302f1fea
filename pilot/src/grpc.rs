//! The `stateward.pilot.v1.Pilot` service over mutual TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::ReloadingServerConfig;
use futures::Stream;
use stateward_proto::v1::pilot_server::{Pilot, PilotServer};
use stateward_proto::v1::{
    ActionState, GetActionRequest, GetStatusRequest, Heartbeat, NodeStatus, StartActionRequest,
    WatchActionRequest, WatchStatusRequest, WatchStatusResponse, watch_status_response,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::actions::{ActionManager, StartError};
use crate::driver::Driver;
use crate::fsutil::now_ms;
use crate::status::StatusHub;

const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(1000);
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

pub async fn serve<D: Driver>(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    hub: StatusHub,
    actions: ActionManager<D>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (conn_tx, conn_rx) = mpsc::channel::<Result<_, std::io::Error>>(16);
    // Handshakes run on their own tasks so a slow or hostile client cannot hold up others.
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("accepting a gRPC connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.current());
            let tx = conn_tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => warn!(%peer, "TLS handshake refused: {e}"),
                    Err(_) => warn!(%peer, "TLS handshake timed out"),
                }
            });
            if conn_tx.is_closed() {
                break;
            }
        }
    });
    let service = PilotService { hub, actions };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(PilotServer::new(service))
        .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

struct PilotService<D> {
    hub: StatusHub,
    actions: ActionManager<D>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<D: Driver> Pilot for PilotService<D> {
    async fn get_status(
        &self,
        _: Request<GetStatusRequest>,
    ) -> Result<Response<NodeStatus>, Status> {
        Ok(Response::new(self.hub.latest()))
    }

    type WatchStatusStream = BoxStream<WatchStatusResponse>;

    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let heartbeat = match request.get_ref().heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_HEARTBEAT),
        };
        let mut rx = self.hub.subscribe();
        let (tx, out) = mpsc::channel(8);
        tokio::spawn(async move {
            let mut last = rx.borrow_and_update().clone();
            let first = WatchStatusResponse {
                event: Some(watch_status_response::Event::Status(last.clone())),
            };
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                let event = tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        last = rx.borrow_and_update().clone();
                        watch_status_response::Event::Status(last.clone())
                    }
                    _ = tokio::time::sleep(heartbeat) => watch_status_response::Event::Heartbeat(Heartbeat {
                        status_sequence: last.sequence,
                        sent_at_unix_ms: now_ms(),
                    }),
                };
                if tx
                    .send(Ok(WatchStatusResponse { event: Some(event) }))
                    .await
                    .is_err()
                {
                    debug!("status watcher went away");
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn start_action(
        &self,
        request: Request<StartActionRequest>,
    ) -> Result<Response<ActionState>, Status> {
        let req = request.into_inner();
        self.actions
            .start(&req.action_id, req.spec)
            .map(Response::new)
            .map_err(|e| match e {
                StartError::InvalidId(_) | StartError::MissingSpec => {
                    Status::invalid_argument(e.to_string())
                }
                StartError::Conflict(_) => Status::already_exists(e.to_string()),
                StartError::Busy(_) => Status::failed_precondition(e.to_string()),
                StartError::Unsupported(_) => Status::unimplemented(e.to_string()),
                StartError::Journal(_) => Status::internal(e.to_string()),
            })
    }

    async fn get_action(
        &self,
        request: Request<GetActionRequest>,
    ) -> Result<Response<ActionState>, Status> {
        let id = &request.get_ref().action_id;
        self.actions
            .get(id)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no action {id:?} on this node")))
    }

    type WatchActionStream = BoxStream<ActionState>;

    async fn watch_action(
        &self,
        request: Request<WatchActionRequest>,
    ) -> Result<Response<Self::WatchActionStream>, Status> {
        let id = request.into_inner().action_id;
        let mut rx = self
            .actions
            .watch(&id)
            .ok_or_else(|| Status::not_found(format!("no action {id:?} on this node")))?;
        let (tx, out) = mpsc::channel(8);
        tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                let done = state.phase().is_terminal();
                if tx.send(Ok(state)).await.is_err() || done {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
