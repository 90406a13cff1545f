//! In-process adapters for development mode and single-node deployments.

mod tenant_directory;

pub use tenant_directory::StaticTenantDirectory;
