//! Inbound call routing data: dialed numbers normalized to E.164
//! ([`Number`]), forward targets ([`Target`], [`OnFailure`]) and the routing
//! table ([`RoutingTable`]), an immutable snapshot swapped atomically on
//! reload through [`Routes`].
//!
//! This module is pure data and lookups: it never does I/O and never decides
//! SIP statuses (the b2bua maps "no route" to 404, "disabled" to 480).

mod number;
mod table;
mod target;

pub use number::{Number, NumberError, MAX_DIGITS, MIN_DIGITS};
pub(crate) use table::NumberHashBuilder;
pub use table::{DuplicateRoute, Route, Routes, RoutingTable};
pub use target::{
    is_valid_id, DigestCredentials, ExternalPbx, OnFailure, PbxId, Target, TargetError, TargetKind,
    TargetSpec,
};
