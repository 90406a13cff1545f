//! sea-orm entities of the internal schema. Private to `postgres/`: they are mapped to domain
//! types before anything leaves this module.

pub(super) mod agent_runs;
pub(super) mod audit_logs;
