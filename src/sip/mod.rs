//! SIP messages: parsing and writing. Pure: no I/O, no async.
