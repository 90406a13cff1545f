//! Readiness of the dependencies a node needs to serve.

use async_trait::async_trait;

/// One dependency whose reachability decides whether this node is ready.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait DependencyCheck: std::fmt::Debug + Send + Sync + 'static {
    /// The component name shown in readiness reports (`database`, `redis`, ...).
    fn component(&self) -> &'static str;

    /// # Errors
    /// Why the dependency cannot be used right now (for operators; never sent to clients).
    async fn check(&self) -> anyhow::Result<()>;
}
