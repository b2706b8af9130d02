//! Integration tests: the real server, real Postgres, real sockets. One test binary so that
//! the test run shares one private Postgres cluster (see `support`).

// Tests state their expectations with unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

mod auth;
mod auth_abuse;
mod auth_mail;
mod capture;
mod cors;
mod deploy;
mod drain;
mod embedded;
mod foundation;
mod hostile;
mod instances;
mod observability;
mod realtime;
mod relational;
mod rest;
mod rest_grammar;
mod rest_support;
mod tidy;
mod tls;
mod typegen;
