//! The run use cases: start, read and cancel agent runs.

mod access;
mod queries;
mod service;

pub use access::{RUN_ACCESS_NAMESPACE, RunAccess};
pub use queries::RunQueries;
pub use service::{CreateRun, RunService, RunServiceError, SYSTEM_ACTOR};
