//! [`TransportSink`] for the daemon's [`Transports`]: how the layer's
//! encoded messages reach the sockets.

use std::net::SocketAddr;

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

    /// The UDP socket's count of drains by its receive loop
    /// ([`Transports::receive_drains`]).
    fn receive_drains(&self, local: Option<SocketAddr>, dest: Destination) -> Option<u32> {
        Transports::receive_drains(self, local, &dest)
    }

    /// ([`Transports::drained_since`]: an idle socket is drained too.)
    fn drained_since(&self, local: Option<SocketAddr>, dest: Destination, drains: u32) -> bool {
        Transports::drained_since(self, local, &dest, drains)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{ListenAddr, Protocol, TransportConfig};

    /// Once the socket has been seen writable, UDP sends take the
    /// synchronous path (no future, no waiting) and arrive; TCP never does.
    #[tokio::test]
    async fn udp_sends_go_through_without_waiting() {
        let listen: ListenAddr = "udp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let local = transports.local_addrs()[0].addr;
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest = Destination::udp(peer.local_addr().unwrap());
        let mut buf = [0u8; 64];
        // The first send waits for the socket's first writable event.
        TransportSink::send_request(&transports, Bytes::from_static(b"first"), dest)
            .await
            .unwrap();
        let (n, _) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"first");
        assert!(matches!(
            transports.try_send_request(Bytes::from_static(b"request"), dest),
            TrySend::Done(Ok(()))
        ));
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"request"[..], local));
        let source = Source {
            protocol: Protocol::Udp,
            peer: dest.addr,
            local,
            conn: None,
        };
        assert!(matches!(
            transports.try_send_response(Bytes::from_static(b"response"), source, dest),
            TrySend::Done(Ok(()))
        ));
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"response"[..], local));
        let tcp = Destination::tcp(dest.addr);
        assert!(matches!(
            transports.try_send_request(Bytes::from_static(b"tcp"), tcp),
            TrySend::WouldWait(b) if b.as_ref() == b"tcp"
        ));
    }
}
