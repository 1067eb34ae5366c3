//! The handle of a server task the lab runs (DNS, health): stop it, or drop it, and its
//! sockets are closed.

use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. Stopping or dropping it closes its sockets; `stop` waits until they are.
#[derive(Debug)]
pub struct TaskHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TaskHandle {
    /// Wraps a server task that ends when `stop` fires (or its sender is dropped).
    pub(crate) fn new(
        local_addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    ) -> Self {
        TaskHandle {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The address it listens on, with the port actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server and waits until its sockets are closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::debug!(%error, addr = %self.local_addr, "server task ended abnormally");
            }
        }
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        // Dropping the sender wakes the task, which shuts the server down.
        self.stop.take();
    }
}
