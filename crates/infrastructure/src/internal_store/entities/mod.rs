//! sea-orm entities of the internal schema. Private to `internal_store/`: they are mapped to domain
//! types before anything leaves this module.

pub(super) mod agent_events;
pub(super) mod agent_runs;
pub(super) mod agent_steps;
pub(super) mod audit_logs;
pub(super) mod idempotency_keys;
pub(super) mod system_health;
pub(super) mod tool_calls;
pub(super) mod usage_metrics;
