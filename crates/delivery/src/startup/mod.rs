//! The composition root: the only place that chooses adapters for the application's ports.
//!
//! [`wiring`] connects the adapters the settings name and builds the application services
//! on them (one clock and one id generator for the whole process); [`Application`] serves
//! the HTTP API on them and [`Worker`] runs the background work; [`pipeline`] builds the
//! event pipeline's Redis adapters.

mod application;
mod pipeline;
mod signal;
mod wiring;
mod worker;

pub use application::{Application, standalone_admin_server};
pub use pipeline::{RedisPipeline, event_queue, event_sequencer, redis_pipeline};
pub use signal::shutdown_signal;
pub use wiring::{open_store, token_signer};
pub use worker::Worker;
