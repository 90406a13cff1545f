//! HTTP-level tests of the `sba` API, each against a server bound to port 0, on SQLite and
//! on the private PostgreSQL started by `scripts/test.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code fails by panicking")]

mod admin_port;
mod auth;
mod client_addr;
mod config;
mod cors;
mod deploy;
mod echo;
mod health;
mod helpers;
mod idempotency;
mod ingest;
mod ingest_redis;
mod lists;
mod logs;
mod openapi;
mod permissions;
mod playground;
mod ratelimit;
mod ratelimit_redis;
mod runs;
mod stream;
mod system;
mod tenant_data;
mod traces;
mod unauthenticated_load;
mod usage;
mod worker;
