//! vpbx: a SIP B2BUA and call-routing daemon for a hosted virtual PBX.
//!
//! Layers, bottom up (see `docs/architecture.md`): [`sip`] (pure parsing and
//! writing), `transport`, `transaction`, `b2bua`, `routing`, with `config`
//! and `cdr` beside them and `app` wiring them together.

pub mod app;
pub mod b2bua;
pub mod cdr;
pub mod config;
pub mod dialog;
pub mod routing;
pub mod sip;
pub mod transaction;
pub mod transport;
