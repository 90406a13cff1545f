//! HTTP-level tests of the `sba` API, each against a server bound to port 0, on SQLite and
//! on the private PostgreSQL started by `scripts/test.sh`.

mod config;
mod health;
mod helpers;
mod runs;
