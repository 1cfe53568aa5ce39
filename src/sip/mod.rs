//! SIP messages: parsing, typed access and writing. Pure: no I/O, no
//! async, no clock.
//!
//! The parser is zero-copy over [`Bytes`]: header values are slices of the
//! received buffer and are typed lazily by the accessors on [`Request`],
//! [`Response`] and [`Headers`]. [`parse_datagram`] frames UDP,
//! [`StreamParser`] frames TCP. [`validate_request`] decides, in one place,
//! which status answers a semantically broken request.
//!
//! This module owns the wire format only; transactions, transport and
//! dialogs live elsewhere.

mod access;
mod bytestr;
mod grammar;
mod header;
mod message;
mod method;
mod name_addr;
mod params;
mod parser;
#[cfg(test)]
mod proptests;
mod uri;
mod validate;
mod values;
mod via;
mod wire;

pub use bytes::Bytes;

pub use access::HeaderError;
pub use bytestr::ByteStr;
pub use grammar::{quote_escape, unescape, unquote};
pub use header::{Header, HeaderName, Headers, InvalidHeaderName};
pub use message::{Message, Request, Response};
pub use method::{InvalidMethod, Method, StatusCode, Version, NAMED_METHODS};
pub use name_addr::{Contact, NameAddr};
pub use params::Params;
pub use parser::{parse_datagram, Limits, ParseError, ParseErrorKind, StreamParser};
pub use uri::{Host, SipUri, TelUri, Uri, UriError};
pub use validate::{validate_request, validate_request_with, validate_response, Policy, Rejection};
pub use values::{CSeq, Challenge, Credentials, MediaType, RAck};
pub use via::{Transport, Via, MAGIC_COOKIE};
pub use wire::shared_copy;
