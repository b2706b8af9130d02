//! The one LISTEN primitive: a dedicated (non-pooled) connection that LISTENs on a channel
//! and turns its notifications into doorbells. Change capture's wake-up (`rowcast_changes`)
//! and the REST schema cache's DDL doorbell both use it.

use std::future::Future;

use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use super::{connect::describe, quote_ident, Connector, StoreError};

/// A listening connection. Doorbells carry no payload: the reader of the doorbell goes to
/// the source of truth (the change log, the catalog) for the data.
pub struct Listener {
    client: tokio_postgres::Client,
    doorbells: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl Listener {
    /// Open the connection. The returned future drives it and forwards notifications: the
    /// caller polls it (spawns it, or selects on it) while using the listener. It ends when
    /// the connection does, with the error that ended it, or when the listener is dropped.
    pub async fn connect(
        connector: &Connector,
    ) -> Result<
        (
            Listener,
            impl Future<Output = Result<(), StoreError>> + Send + 'static,
        ),
        StoreError,
    > {
        let (client, mut connection) = connector
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        let (tx, doorbells) = tokio::sync::mpsc::unbounded_channel::<()>();
        let driver = async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => {
                        if tx.send(()).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(StoreError::Unavailable(describe(&e))),
                }
            }
            Err(StoreError::Unavailable(
                "the server closed the connection".into(),
            ))
        };
        Ok((Listener { client, doorbells }, driver))
    }

    /// Start listening on `channel` (a name from the code, never from a client). Needs the
    /// driver polled to complete.
    pub async fn listen(&self, channel: &str) -> Result<(), StoreError> {
        self.client
            .batch_execute(&format!("listen {}", quote_ident(channel)))
            .await?;
        Ok(())
    }

    /// The next doorbell; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<()> {
        self.doorbells.recv().await
    }

    /// Forget the doorbells already received (one read of the source covers them all).
    pub fn drain(&mut self) {
        while self.doorbells.try_recv().is_ok() {}
    }

    /// The connection, for the store's own statements on it.
    pub(super) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }
}
