//! Integration tests: the real `vpbx` binary on free loopback ports, driven
//! with real SIP over real sockets (the crate's own test UA and SIPp).

// Helpers outside #[test] fns too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod calls;
mod config;
mod connect;
mod daemon;
mod fork;
mod lanes;
mod sipp;
mod torture;
mod transport;
mod ua;
