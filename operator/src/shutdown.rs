//! One shutdown signal for the whole process. The first SIGTERM or SIGINT asks for a graceful
//! stop: controllers finish their reconciles, then the lease is freed. A second one exits at
//! once, without freeing the lease: reconciles may still be writing, so the next leader must
//! wait for the lease to expire rather than start beside them.

use tokio::sync::watch;
use tracing::{error, info};

#[derive(Clone)]
pub struct Shutdown(Option<watch::Receiver<bool>>);

impl Shutdown {
    /// Listens for SIGTERM and SIGINT from now on, for the life of the process.
    pub fn on_signals() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let (requested, receiver) = watch::channel(false);
        tokio::spawn(async move {
            let name = |term: bool| if term { "SIGTERM" } else { "SIGINT" };
            let first = tokio::select! {
                _ = terminate.recv() => true,
                _ = interrupt.recv() => false,
            };
            info!(
                signal = name(first),
                "shutting down: finishing reconciles, then freeing the lease"
            );
            requested.send_replace(true);
            let second = tokio::select! {
                _ = terminate.recv() => true,
                _ = interrupt.recv() => false,
            };
            error!(
                signal = name(second),
                "second signal: exiting now, the lease left to expire"
            );
            std::process::exit(1);
        });
        Ok(Shutdown(Some(receiver)))
    }

    /// Never requested (the controllers run until their task is dropped): for tests.
    pub fn never() -> Self {
        Shutdown(None)
    }

    /// Resolves once a shutdown is requested.
    pub async fn requested(self) {
        match self.0 {
            Some(mut receiver) => {
                // A dropped sender cannot happen (its task lives as long as the process);
                // treat it as a request all the same.
                let _ = receiver.wait_for(|requested| *requested).await;
            }
            None => std::future::pending().await,
        }
    }
}
