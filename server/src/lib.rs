//! Rowcast: a realtime backend on plain Postgres. This crate is the server; `main.rs` is a
//! thin command-line wrapper around [`app::start`].

// `pub` means "part of the crate's interface" (integration tests and the bench use it);
// anything else is `pub(crate)` or narrower, so the difference stays visible.
#![warn(unreachable_pub)]
// A std mutex held across an await stalls a runtime thread; our locks guard short sections.
#![deny(clippy::await_holding_lock)]

pub mod app;
pub mod auth;
pub mod backoff;
pub mod capture;
pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod readiness;
pub mod realtime;
pub mod rest;
pub mod store;
pub mod typegen;
