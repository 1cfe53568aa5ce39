//! [`TransportSink`] for the daemon's [`Transports`]: how the layer's
//! encoded messages reach the sockets.

use bytes::Bytes;

use super::layer::{SendError, SendFuture, TransportSink};
use crate::transport::{Destination, Protocol, Source, Transports};

impl TransportSink for Transports {
    fn send_request(&self, data: Bytes, dest: Destination) -> SendFuture<'_> {
        Box::pin(async move {
            self.send_bytes(data, &dest).await.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })
        })
    }

    /// RFC 3261 §18.2.2: over TCP, first the connection the request came on
    /// (the connection table finds it by the peer address), then a new
    /// connection to `dest` (received address, sent-by port); over UDP to
    /// `dest`.
    fn send_response(&self, data: Bytes, source: Source, dest: Destination) -> SendFuture<'_> {
        Box::pin(async move {
            if source.protocol == Protocol::Tcp && source.conn.is_some() {
                let same = Destination::tcp(source.peer);
                if self.send_bytes(data.clone(), &same).await.is_ok() {
                    return Ok(());
                }
            }
            self.send_bytes(data, &dest).await.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })
        })
    }
}
