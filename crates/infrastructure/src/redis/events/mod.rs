//! The Redis side of the event pipeline (ADR 0017): the sequencer script and the keys of
//! run events.

pub mod keys;
mod queue;
mod script;
mod sequencer;
mod stored;

pub use queue::{FredEventQueue, FredEventQueueSettings, UNDECODABLE};
pub use sequencer::{FredEventSequencer, FredEventSequencerSettings};
