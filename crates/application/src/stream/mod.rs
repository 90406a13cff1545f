//! The transport-free core of the WebSocket stream (`GET /v1/stream`): its frames, each
//! connection's bounded outbound queue, replay-then-live delivery per subscription, and who
//! may subscribe to which channel. The WebSocket gateway in `sba-delivery` drives these.
//!
//! How a connection uses them: each text frame is parsed ([`protocol::ClientOp::parse`];
//! a refusal is answered with [`protocol::ErrorFrame::bad_request`]) and charged to its
//! op's rate limit (`ratelimit_ws`). A `subscribe` is decided by
//! [`authorize::StreamAuthorizer`], which names the bus channel to listen on, and gets a
//! [`subscription::SubscriptionFeed`]; the bus messages of that channel go through the feed,
//! and the history reads it asks for through a [`replay::ReplaySource`]. Every frame to send
//! (acks, errors, the events the feeds deliver) goes through the connection's
//! [`outbound::OutboundQueue`], which the socket writer drains; an
//! [`outbound::Overflow`] closes the connection with 1013. History pages are best read
//! while the queue is below its high-water mark, so that a long replay paces itself to the
//! client instead of overflowing the queue. The socket writer sends event frames at the
//! rates [`throttle::BroadcastThrottle`] allows per tenant and per user, marking the queue
//! throttled meanwhile so that deltas merge.

pub mod authorize;
pub mod outbound;
pub mod protocol;
pub mod replay;
pub mod subscription;
pub mod throttle;
