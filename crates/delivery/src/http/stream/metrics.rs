//! The gateway's metrics, all with bounded labels (never a tenant, user, run or token):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `sba_ws_connections` | gauge | |
//! | `sba_ws_subscriptions` | gauge | |
//! | `sba_ws_outbound_queue_depth` | histogram (frames queued after each send) | |
//! | `sba_ws_coalesced_deltas_total` | counter | |
//! | `sba_ws_throttled_total` | counter (events queued over a broadcast rate, to merge) | |
//! | `sba_ws_frames_total` | counter | `direction` = `in`, `out` |
//! | `sba_ws_closes_total` | counter | `code` (1000, 1001, 1002, 1008, 1009, 1013), `reason` |

/// Why the server closed a connection (the `reason` label), and with which code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The client closed, or went away.
    Client,
    /// The node is shutting down.
    Shutdown,
    /// The connection's token expired.
    TokenExpired,
    /// The client kept sending after its rate-limit refusals.
    Flooding,
    /// Nothing came back from the client within the heartbeat timeout.
    HeartbeatTimeout,
    /// A frame over the configured size.
    FrameTooBig,
    /// The outbound queue overflowed: the client reads too slowly.
    SlowConsumer,
    /// The client broke the WebSocket protocol.
    ProtocolError,
}

impl CloseCause {
    pub const fn code(self) -> u16 {
        match self {
            Self::Client => 1000,
            Self::Shutdown => 1001,
            Self::TokenExpired | Self::Flooding | Self::HeartbeatTimeout => 1008,
            Self::FrameTooBig => 1009,
            Self::ProtocolError => 1002,
            Self::SlowConsumer => 1013,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Shutdown => "shutdown",
            Self::TokenExpired => "token_expired",
            Self::Flooding => "flooding",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::FrameTooBig => "frame_too_big",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError => "protocol_error",
        }
    }
}

pub fn closed(cause: CloseCause) {
    metrics::counter!(
        "sba_ws_closes_total",
        "code" => cause.code().to_string(),
        "reason" => cause.reason()
    )
    .increment(1);
}

pub fn connections(delta: f64) {
    metrics::gauge!("sba_ws_connections").increment(delta);
}

pub fn subscriptions(delta: f64) {
    metrics::gauge!("sba_ws_subscriptions").increment(delta);
}

pub fn frame_in() {
    metrics::counter!("sba_ws_frames_total", "direction" => "in").increment(1);
}

pub fn frame_out(queue_depth: usize) {
    metrics::counter!("sba_ws_frames_total", "direction" => "out").increment(1);
    #[allow(clippy::cast_precision_loss, reason = "a queue depth is far below 2^52")]
    metrics::histogram!("sba_ws_outbound_queue_depth").record(queue_depth as f64);
}

pub fn coalesced_delta() {
    metrics::counter!("sba_ws_coalesced_deltas_total").increment(1);
}

pub fn throttled() {
    metrics::counter!("sba_ws_throttled_total").increment(1);
}
