//! The run use cases: start, read and cancel agent runs.

mod queries;
mod service;

pub use queries::RunQueries;
pub use service::{CreateRun, RunService, RunServiceError, SYSTEM_ACTOR};
