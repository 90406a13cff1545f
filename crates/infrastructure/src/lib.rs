//! Adapters behind SBA's ports, grouped by technology, plus configuration loading.
//!
//! Nothing here is chosen at random: `sba-delivery`'s `startup.rs` picks which adapter
//! serves which port from the [`config::Settings`].

pub mod auth;
pub mod cache;
pub mod config;
pub mod embedded;
pub mod internal_store;
pub mod memory;
mod observe;
pub mod redis;
mod sql;
pub mod supabase;
pub mod system;
mod tenant_data;
pub mod trace_context;
