//! The run use cases: start, read and cancel agent runs.

mod service;

pub use service::{CreateRun, RunService, RunServiceError, SYSTEM_ACTOR};
