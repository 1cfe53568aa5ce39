//! Integration tests: one binary that drives the real `vpbx` executable.

mod config;
