//! SIP transport layer (RFC 3261 §18, RFC 3581): UDP and TCP sockets on IPv4
//! and IPv6, framing into [`crate::sip`] messages, the TCP connection table,
//! and where responses and requests are sent.
//!
//! Owns: sockets, per-connection buffers (bounded by the message size limit),
//! the `received`/`rport` parameters of inbound requests, 400 answers to
//! malformed requests, and the transport counters. Does not own: transaction
//! matching, retransmissions or any request semantics (the layers above).

mod addr;
mod metrics;

pub use addr::{AddrParseError, ConnectionId, Destination, ListenAddr, Protocol, Source};
pub use metrics::TransportMetrics;
