//! [`TransportSink`] for the daemon's [`Transports`]: how the layer's
//! encoded messages reach the sockets.

use bytes::Bytes;

use super::layer::{SendError, SendFuture, TransportSink, TrySend};
use crate::transport::{Destination, Source, Transports};

impl TransportSink for Transports {
    fn send_request(&self, data: Bytes, dest: Destination) -> SendFuture<'_> {
        Box::pin(async move {
            self.send_bytes(data, &dest).await.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })
        })
    }

    /// RFC 3261 §18.2.2: over TCP on the request's connection while it is
    /// open, else (and over UDP) to `dest`.
    fn send_response(&self, data: Bytes, source: Source, dest: Destination) -> SendFuture<'_> {
        Box::pin(async move {
            self.send_encoded_response(data, &source, dest)
                .await
                .map_err(|e| SendError {
                    dest,
                    source: Box::new(e),
                })
        })
    }

    /// UDP datagrams the socket takes at once; the rest waits.
    fn try_send_request(&self, data: Bytes, dest: Destination) -> TrySend {
        match self.try_send_bytes(&data, &dest) {
            Some(result) => TrySend::Done(result.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })),
            None => TrySend::WouldWait(data),
        }
    }

    fn try_send_response(&self, data: Bytes, source: Source, dest: Destination) -> TrySend {
        match self.try_send_encoded_response(&data, &source, dest) {
            Some(result) => TrySend::Done(result.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })),
            None => TrySend::WouldWait(data),
        }
    }
}
