//! The transport-free core of the WebSocket stream (`GET /v1/stream`): its frames, each
//! connection's bounded outbound queue, replay-then-live delivery per subscription, and who
//! may subscribe to which channel. The actix-ws gateway in `sba-delivery` drives these.

pub mod authorize;
pub mod outbound;
pub mod protocol;
pub mod replay;
pub mod subscription;
