//! SBA's delivery layer: the HTTP API, the `sba` command line, and `startup.rs`, the only
//! place where adapters are chosen and wired to the application's ports.

pub mod cli;
pub mod http;
pub mod startup;
pub mod telemetry;
