//! [`TransportSink`] for the daemon's [`Transports`]: how the layer's
//! encoded messages reach the sockets.

use std::net::SocketAddr;

use bytes::Bytes;

use super::layer::{SendError, SendFuture, TransportSink, TrySend};
use crate::transport::{Destination, Sent, Source, TransportError, Transports};

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

    /// UDP datagrams the socket takes at once, TCP messages queued on
    /// their connection (or the one being opened: the outcome comes later);
    /// the rest waits.
    fn try_send_request(&self, data: Bytes, dest: Destination) -> TrySend {
        match self.try_send_bytes(&data, &dest) {
            Some(sent) => try_sent(sent, dest),
            None => TrySend::WouldWait(data),
        }
    }

    fn try_send_response(&self, data: Bytes, source: Source, dest: Destination) -> TrySend {
        match self.try_send_encoded_response(&data, &source, dest) {
            Some(sent) => try_sent(sent, dest),
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

/// What a send that did not wait did, for the layer.
fn try_sent(sent: Result<Sent, TransportError>, dest: Destination) -> TrySend {
    match sent {
        Ok(Sent::Now) => TrySend::Done(Ok(())),
        Ok(Sent::Connecting(pending)) => TrySend::Queued(Box::pin(async move {
            pending.outcome().await.map_err(|e| SendError {
                dest,
                source: Box::new(e),
            })
        })),
        Err(e) => TrySend::Done(Err(SendError {
            dest,
            source: Box::new(e),
        })),
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
    }

    /// Over TCP, a send never waits: queued on the connection being opened,
    /// with its outcome for later (the connect's success, or its failure
    /// as a transport error); on the open one, done at once.
    #[tokio::test]
    async fn tcp_sends_are_queued_and_their_outcome_comes_later() {
        let listen: ListenAddr = "tcp:127.0.0.1:0".parse().unwrap();
        let (transports, _inbound) = Transports::bind(&[listen], TransportConfig::default())
            .await
            .unwrap();
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dest = Destination::tcp(peer.local_addr().unwrap());
        let TrySend::Queued(outcome) =
            transports.try_send_request(Bytes::from_static(b"one "), dest)
        else {
            panic!("not queued behind the connect");
        };
        assert!(matches!(
            transports.try_send_request(Bytes::from_static(b"two "), dest),
            TrySend::Queued(_)
        ));
        let (mut stream, _) = peer.accept().await.unwrap();
        outcome.await.unwrap();
        assert!(matches!(
            transports.try_send_request(Bytes::from_static(b"three"), dest),
            TrySend::Done(Ok(()))
        ));
        let mut got = [0u8; 13];
        tokio::io::AsyncReadExt::read_exact(&mut stream, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"one two three");

        // Nothing listens on a port just freed: refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let TrySend::Queued(outcome) =
            transports.try_send_request(Bytes::from_static(b"lost"), Destination::tcp(closed))
        else {
            panic!("not queued behind the connect");
        };
        let err = outcome.await.unwrap_err();
        assert_eq!(err.dest, Destination::tcp(closed));
    }
}
